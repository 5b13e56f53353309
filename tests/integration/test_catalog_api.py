"""`/catalog` against the real PostgreSQL: content negotiation, paging, coverage from `kpi_values`, shapes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from rdflib import Graph, URIRef
from rdflib import namespace as rns
from rdflib.namespace import DCTERMS, RDF

from services.publisher.app import create_app
from services.publisher.catalog import service as catalog
from services.publisher.settings import PublisherSettings
from shared.reference import municipalities
from tests.dcat_shapes import SHAPES_DIR, assert_conforms, load_shapes

BASE = "https://opendata.example.org"
MARBURG = next(m for m in municipalities() if m.name == "Marburg")
FORMATS = {"turtle": ("text/turtle", "ttl"), "xml": ("application/rdf+xml", "rdf"),
           "json-ld": ("application/ld+json", "jsonld")}


EXTRA: list[catalog.CatalogDataset] = []


async def _extra(_ctx: catalog.CatalogContext) -> list[catalog.CatalogDataset]:
    return list(EXTRA)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(PublisherSettings(database_url=database_url, public_base_url=BASE, catalog_page_size=20))
    app.state.catalog_registry.register("extra", _extra)
    async with LifespanManager(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c
    EXTRA.clear()


async def _seed_processing(db: asyncpg.Connection, service: str) -> datetime:
    """Processing KPIs for Marburg on two days, in a service of its own so other tests' rows don't matter."""
    await db.executemany(
        """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value)
           VALUES ('day', $1::date::timestamp AT TIME ZONE 'Europe/Berlin', $2, $3, $4, '', $5)""",
        [(date(2020, 1, 3), MARBURG.ags, service, "cases_opened", 7),
         (date(2020, 1, 5), MARBURG.ags, service, "cases_parked", 1)],
    )
    return await db.fetchval(
        "SELECT max(updated_at) FROM kpi_values WHERE municipality = $1 AND service = $2", MARBURG.ags, service
    )


def _parse(resp: httpx.Response, fmt: str) -> Graph:
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith(FORMATS[fmt][0])
    return Graph().parse(data=resp.content, format=fmt)


class TestGetCatalog:
    @pytest.mark.parametrize("fmt", list(FORMATS))
    async def test_accept_header_and_suffix_give_the_same_conforming_graph(
        self, client: httpx.AsyncClient, fmt: str
    ) -> None:
        media, suffix = FORMATS[fmt]
        by_accept = _parse(await client.get("/catalog", headers={"Accept": media}), fmt)
        by_suffix = _parse(await client.get(f"/catalog.{suffix}"), fmt)
        assert len(by_accept) == len(by_suffix) > 0
        assert (catalog.catalog_uri(BASE), RDF.type, rns.DCAT.Catalog) in by_accept
        assert_conforms(by_accept)

    @pytest.mark.parametrize("fmt", list(FORMATS))
    async def test_govdata_validate_script_strict_accepts_every_representation(
        self, client: httpx.AsyncClient, fmt: str, tmp_path: Path
    ) -> None:
        """The folder's own `validate.py --strict` (zero violations, zero warnings) on what the endpoint serves."""
        load_shapes()  # skips with the reason when the folder is absent
        resp = await client.get(f"/catalog.{FORMATS[fmt][1]}", params={"page_size": 1000})
        assert resp.status_code == 200
        path = tmp_path / f"catalog.{FORMATS[fmt][1]}"
        path.write_bytes(resp.content)
        run = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(SHAPES_DIR / "validate.py"), str(path), "--format", fmt, "--strict"],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
        assert "conforms: True" in run.stdout

    async def test_dataset_temporal_and_modified_come_from_kpi_values(
        self, client: httpx.AsyncClient, db: asyncpg.Connection, unique: str
    ) -> None:
        service = "99" + str(int(unique, 16) % 10**12).zfill(12)
        modified = await _seed_processing(db, service)
        ds = catalog.dataset_uri(BASE, f"kpi-processing-{MARBURG.ags}")
        g = _parse(await client.get("/catalog.ttl", params={"page_size": 100}), "turtle")
        period = g.value(ds, DCTERMS.temporal)
        assert period is not None
        # other tests may add later days for Marburg; this test's rows set the earliest day
        assert g.value(period, rns.DCAT.startDate).toPython() <= date(2020, 1, 3)
        assert g.value(period, rns.DCAT.endDate).toPython() >= date(2020, 1, 5)
        assert g.value(ds, DCTERMS.modified).toPython() >= modified.astimezone(UTC).replace(microsecond=0)
        assert (ds, DCTERMS.spatial, URIRef(MARBURG.political_geocoding_uri)) in g
        assert_conforms(g)

    async def test_hydra_next_pages_reach_every_dataset(self, client: httpx.AsyncClient) -> None:
        url: str | None = f"{BASE}/catalog.jsonld?page=1"
        seen: set[str] = set()
        pages = 0
        while url:
            resp = await client.get(url.removeprefix(BASE))
            g = _parse(resp, "json-ld")
            pages += 1
            seen |= {str(d) for d in g.objects(catalog.catalog_uri(BASE), rns.DCAT.dataset)}
            (paging,) = g.subjects(RDF.type, catalog.HYDRA.PagedCollection)
            total = int(g.value(paging, catalog.HYDRA.totalItems))
            nxt = g.value(paging, catalog.HYDRA.nextPage)
            url = str(nxt) if nxt else None
            if url is None:
                assert str(g.value(paging, catalog.HYDRA.lastPage)) == str(paging)
                assert_conforms(g)
        assert len(seen) == total
        assert pages == -(-total // 20)
        # other providers (the data portal) may add datasets; every KPI dataset is there
        kpi_ids = {f"kpi-{f.key}-{m.ags}" for f in catalog.KPI_FAMILIES for m in municipalities()}
        kpi_ids |= {f"kpi-{f.key}-hessen" for f in catalog.KPI_FAMILIES}
        assert {str(catalog.dataset_uri(BASE, i)) for i in kpi_ids} <= seen

    async def test_etag_answers_304_until_a_dataset_changes(self, client: httpx.AsyncClient, unique: str) -> None:
        first = await client.get("/catalog.ttl")
        etag = first.headers["etag"]
        again = await client.get("/catalog.ttl", headers={"If-None-Match": etag})
        assert again.status_code == 304
        assert again.content == b""
        EXTRA.append(catalog.CatalogDataset(
            id=f"extra-{unique}", title="Zusatz", description="Ein weiterer Datensatz",
            publisher=catalog.CatalogAgent(id="extra", name="Zusatz"),
            contact_point=catalog.CatalogContact(name="Stelle", email="stelle@example.org"),
            distributions=(catalog.CatalogDistribution(
                title="CSV", access_url="https://example.org/x.csv", format="CSV", media_type="text/csv"),),
        ))
        changed = await client.get("/catalog.ttl", headers={"If-None-Match": etag})
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag
        assert f"extra-{unique}".encode() in changed.content
        assert_conforms(Graph().parse(data=changed.content, format="turtle"))

    async def test_dataset_iri_dereferences_to_its_description(self, client: httpx.AsyncClient) -> None:
        iri = catalog.dataset_uri(BASE, f"kpi-feedback-{MARBURG.ags}")
        resp = await client.get(str(iri).removeprefix(BASE), headers={"Accept": "application/ld+json"})
        g = _parse(resp, "json-ld")
        assert (iri, RDF.type, rns.DCAT.Dataset) in g
        assert len(list(g.objects(iri, rns.DCAT.distribution))) == 2
        assert_conforms(g)
        missing = await client.get("/catalog/datasets/kpi-feedback-00000000")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

    async def test_head_answers_like_get_without_body(self, client: httpx.AsyncClient) -> None:
        resp = await client.head("/catalog", headers={"Accept": "application/rdf+xml"})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("application/rdf+xml")
        assert resp.content == b""

    async def test_unsupported_accept_is_406_problem(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/catalog", headers={"Accept": "image/png"})
        assert resp.status_code == 406
        assert resp.headers["content-type"] == "application/problem+json"
        assert "text/turtle" in resp.json()["detail"]

    async def test_page_past_the_end_is_404_problem(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/catalog.ttl", params={"page": 99})
        assert resp.status_code == 404
        assert resp.json()["status"] == 404

    @pytest.mark.parametrize("params", [{"page": "0"}, {"page": "x"}, {"page_size": "5000"}])
    async def test_bad_paging_parameter_is_rejected(self, client: httpx.AsyncClient, params: dict[str, str]) -> None:
        resp = await client.get("/catalog", params=params)
        assert resp.status_code in (400, 422)
        assert next(iter(params)) in resp.text

    async def test_unknown_suffix_is_404(self, client: httpx.AsyncClient) -> None:
        resp = await client.get("/catalog.pdf")
        assert resp.status_code == 404
