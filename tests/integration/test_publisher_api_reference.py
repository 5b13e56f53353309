"""Reference endpoints, comparison with Hessen and the size class, and the Frictionless data package."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import frictionless
import httpx
import pytest
from asgi_lifespan import LifespanManager

from services.publisher.app import create_app
from services.publisher.settings import PublisherSettings
from shared import ckm
from shared.reference import municipalities, services
from tests.integration.test_publisher_api_kpis import Keyed, insert, random_ags, random_leika

DAY = datetime(2026, 5, 9, 22, tzinfo=UTC)  # 2026-05-10 Europe/Berlin


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(PublisherSettings(database_url=database_url, environment="test"))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager, httpx.AsyncClient(
        transport=httpx.ASGITransport(app=manager.app), base_url="http://test"
    ) as c:
        yield c


class TestReference:
    async def test_municipalities_carry_keys_population_and_geocoding_uri(self, client: httpx.AsyncClient) -> None:
        items = (await client.get("/v1/municipalities")).json()["items"]
        assert [m["ags"] for m in items] == [m.ags for m in municipalities()]
        offenbach = next(m for m in items if m["ags"] == "06413000")
        assert offenbach["ars"] == "064130000000"
        assert offenbach["population"] == 132746
        assert offenbach["political_geocoding_uri"] == (
            "http://dcat-ap.de/def/politicalGeocoding/municipalityKey/06413000")
        assert offenbach["size_class"]["id"] == "grossstadt"
        assert next(m for m in items if m["name"] == "Limburg a. d. Lahn")["size_class"]["id"] == "kleine_mittelstadt"

    async def test_services_carry_leika_and_ozg_leistung(self, client: httpx.AsyncClient) -> None:
        items = (await client.get("/v1/services")).json()["items"]
        assert len(items) == len(services())
        wohnsitz = next(s for s in items if s["leika_key"] == "99115005104000")
        assert wohnsitz["ozg_leistung"] == "Wohnsitzmeldungen"

    async def test_every_published_metric_is_defined_in_both_languages(self, client: httpx.AsyncClient) -> None:
        items = (await client.get("/v1/kpi-definitions")).json()["items"]
        by_metric = {d["metric"]: d for d in items}
        assert by_metric["conversion_rate"]["formula"] == "sessions_submitted / sessions_started"
        assert all(d["label_de"] and d["label_en"] and d["description_de"] and d["description_en"] for d in items)
        assert "payment_amount_cents" not in by_metric


class TestComparison:
    async def test_city_against_hessen_and_its_size_class_pooled(
        self, client: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        svc = random_leika()  # a service no other test writes, so the six cities' numbers are exact
        # (started, submitted) per city; Marburg, Gießen, Fulda and Wetzlar form the size class of Gießen
        plan = {"06413000": (100, 50), "06534014": (40, 30), "06531005": (60, 30), "06533009": (20, 5),
                "06631009": (50, 20), "06532023": (50, 40)}
        stored: dict[str, Keyed] = {}
        for ags, (started, submitted) in plan.items():
            stored[ags] = await insert(db, "day", [(DAY, ags, svc, "sessions_started", "", started),
                                                   (DAY, ags, svc, "sessions_submitted", "", submitted)])
        r = await client.get("/v1/comparison", params={"municipality": "06531005", "service": svc,
                                                       "from": "2026-05-10", "to": "2026-05-10"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {i["service"] for i in body["items"]} == {svc}
        assert sorted(body["size_class_members"]) == ["06531005", "06532023", "06534014", "06631009"]
        got = {i["metric"]: i for i in body["items"]}

        def group(members: list[str], metric: str) -> int:
            """A group's count is a cell of its own: true counts and key sums added, then perturbed."""
            parts = [stored[a][(DAY, metric, "")] for a in members]
            return ckm.perturb(sum(v for v, _ in parts), ckm.cell_key([k for _, k in parts]))

        everyone = list(plan)
        size_class = body["size_class_members"]
        conv = got["conversion_rate"]
        assert conv["value"] == round(group(["06531005"], "sessions_submitted")
                                      / group(["06531005"], "sessions_started"), 4)
        assert conv["hessen"] == round(group(everyone, "sessions_submitted") / group(everyone, "sessions_started"), 4)
        assert conv["size_class"] == round(group(size_class, "sessions_submitted")
                                           / group(size_class, "sessions_started"), 4)
        pop = {m.ags: m.population for m in municipalities()}
        assert got["sessions_started_per_10k"]["value"] == round(
            group(["06531005"], "sessions_started") * 10_000 / pop["06531005"], 2)
        assert got["sessions_started_per_10k"]["hessen"] == round(
            group(everyone, "sessions_started") * 10_000 / sum(pop.values()), 2)
        assert not any(i["suppressed"] or i["hessen_suppressed"] or i["size_class_suppressed"]
                       for i in body["items"])

    async def test_unknown_municipality_is_a_problem_naming_it(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/comparison", params={"municipality": random_ags()})
        assert r.status_code == 422
        assert r.json()["invalid-params"][0]["name"] == "municipality"


class TestDataPackage:
    async def test_descriptor_describes_the_csv_of_the_same_query(
        self, client: httpx.AsyncClient, db: asyncpg.Connection
    ) -> None:
        ags, svc = random_ags(), random_leika()
        stored = await insert(db, "day", [(DAY, ags, svc, "sessions_started", "", 12),
                                          (DAY, ags, svc, "payment", "paypal", 2)])
        params = {"municipality": ags, "service": svc, "from": "2026-05-10", "to": "2026-05-10"}
        pkg = (await client.get("/v1/kpis/datapackage.json", params=params)).json()
        assert pkg["profile"] == "tabular-data-package"
        assert pkg["licenses"][0]["path"] == "http://dcat-ap.de/def/licenses/dl-by-de/2.0"
        resources: dict[str, Any] = {r["name"]: r for r in pkg["resources"]}
        for name, path in (("kpis", "/v1/kpis.csv"), ("kpi-totals", "/v1/kpis/totals.csv")):
            res = resources[name]
            assert res["schema"]["missingValues"] == ["."]
            csv_resp = await client.get(res["path"])
            assert csv_resp.status_code == 200
            assert res["path"].startswith(f"http://test{path}?")
            rows = list(csv.reader(io.StringIO(csv_resp.text)))
            assert rows[0] == [f["name"] for f in res["schema"]["fields"]]
            values = [r[-1] for r in rows[1:]]
            assert "." not in values  # nothing is withheld
            assert str(ckm.perturb(*stored[(DAY, "sessions_started", "")])) in values
        assert "perturbed" in pkg["description"]
        assert "höchstens" in pkg["description"]
        assert pkg["perturbation"]["max_deviation"] == ckm.MAX_DEVIATION

    async def test_frictionless_validates_the_package_with_its_csv(
        self, client: httpx.AsyncClient, db: asyncpg.Connection, tmp_path: Path
    ) -> None:
        ags, svc = random_ags(), random_leika()
        await insert(db, "day", [
            (DAY, ags, svc, "sessions_started", "", 12), (DAY, ags, svc, "sessions_submitted", "", 7),
            (DAY, ags, svc, "payment", "paypal", 2), (DAY, ags, svc, "page_views", "/a,b", 9),
        ])
        params = {"municipality": ags, "service": svc, "from": "2026-05-10", "to": "2026-05-10"}
        pkg = (await client.get("/v1/kpis/datapackage.json", params=params)).json()
        for res in pkg["resources"]:  # the same package, its CSV downloaded next to it
            local = f"{res['name']}.csv"
            (tmp_path / local).write_bytes((await client.get(res["path"])).content)
            res["path"] = local
        (tmp_path / "datapackage.json").write_text(json.dumps(pkg), encoding="utf-8")
        report = frictionless.validate(str(tmp_path / "datapackage.json"))
        assert report.valid, report.flatten(["type", "note"])
        assert [t.stats["rows"] > 0 for t in report.tasks] == [True, True]  # both CSVs were read and checked
