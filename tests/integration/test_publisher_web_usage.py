"""Web usage in the open-data API: page views per device class and per referrer class, in JSON, CSV, the
KPI definitions and the data package."""

from __future__ import annotations

import asyncpg
import httpx
import pytest

from tests.integration.test_publisher_api_kpis import DAY1, DAY1_LOCAL, client, insert, random_ags, random_leika, served

__all__ = ["client", "served"]


@pytest.fixture
async def web_usage(db: asyncpg.Connection) -> tuple[str, str]:
    ags, svc = random_ags(), random_leika()
    rows = [("page_views", "/rathaus", 42), ("page_views_device", "desktop", 30), ("page_views_device", "mobile", 12),
            ("page_views_referrer", "search", 20), ("page_views_referrer", "portal", 22),
            ("page_views_referrer", "social", 25), ("page_views_referrer", "internal", 31)]
    await insert(db, "day", [(DAY1, ags, svc, metric, dim, value) for metric, dim, value in rows])
    return ags, svc


class TestWebUsage:
    async def test_device_and_referrer_classes_are_published(
        self, client: httpx.AsyncClient, web_usage: tuple[str, str]
    ) -> None:
        ags, svc = web_usage
        params = {"municipality": ags, "service": svc, "period": "day", "from": "2026-03-01", "to": "2026-03-01",
                  "family": "usage"}
        r = await client.get("/v1/kpis.json", params=params)
        assert r.status_code == 200, r.text
        got = {(i["metric"], i["dimension"]): i for i in r.json()["items"] if i["period_start"] == DAY1_LOCAL}
        for metric, dims in (("page_views_device", ("desktop", "mobile")),
                             ("page_views_referrer", ("search", "portal", "social", "internal"))):
            for dim in dims:
                assert (metric, dim) in got, (metric, dim, sorted(got))
        assert all(isinstance(got[(m, d)]["value"], int | float) or got[(m, d)]["suppressed"]
                   for m, d in got if m.startswith("page_views_"))
        csv_text = (await client.get("/v1/kpis.csv", params=params)).text
        assert ",page_views_device,desktop," in csv_text
        assert ",page_views_referrer,search," in csv_text
        assert ",page_views_referrer,social," in csv_text

    async def test_definitions_name_them(self, client: httpx.AsyncClient) -> None:
        items = (await client.get("/v1/kpi-definitions")).json()["items"]
        by_metric = {d["metric"]: d for d in items}
        assert by_metric["page_views_device"]["label_de"] == "Seitenaufrufe nach Gerätetyp"
        assert by_metric["page_views_referrer"]["label_en"] == "Page views per referrer class"
        assert "search, social, internal, municipal, portal" in by_metric["page_views_referrer"]["description_en"]
