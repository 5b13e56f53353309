"""DCAT-AP.de catalog built from descriptors: content, paging, provider registry and GovData's shapes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import pytest
from rdflib import Graph, Literal, URIRef
from rdflib import namespace as rns
from rdflib.namespace import DCTERMS, RDF

from services.publisher.catalog import service as catalog
from services.publisher.catalog.api import negotiate
from services.publisher.kpis.definitions import FAMILIES
from shared.reference import municipalities
from tests.dcat_shapes import assert_conforms, load_shapes, shacl_report

BASE = "https://opendata.example.org"
PUBLISHER = catalog.CatalogAgent(id="kommunal-pulse", name="Kommunal-Pulse")
INFO = catalog.CatalogInfo(base_url=BASE, title="Offene Daten", description="Kennzahlen", publisher=PUBLISHER)
MODIFIED = datetime(2026, 3, 2, 4, 5, 6, tzinfo=UTC)
OFFENBACH = municipalities()[0]


async def _coverage(_conn: Any) -> dict[tuple[str | None, str], catalog.Coverage]:
    return catalog.coverage_by_family([
        (OFFENBACH.ags, "feedback", date(2026, 1, 1), date(2026, 3, 1), MODIFIED),
        (OFFENBACH.ags, "sessions_started", date(2025, 12, 1), date(2026, 2, 1), MODIFIED),
    ])


async def _datasets(*extra: catalog.DatasetProvider) -> list[catalog.CatalogDataset]:
    registry = catalog.CatalogRegistry()
    registry.register("kpi", catalog.kpi_provider(_coverage, PUBLISHER, "opendata@example.org"))
    for i, provider in enumerate(extra):
        registry.register(f"extra{i}", provider)
    return await registry.collect(catalog.CatalogContext(conn=None, base_url=BASE))  # type: ignore[arg-type]


def _graph(datasets: Sequence[catalog.CatalogDataset], number: int = 1, size: int = 100,
           fmt: catalog.RdfFormat = "turtle") -> Graph:
    page = catalog.Page(number=number, size=size, total=len(datasets))
    data = catalog.serialize(catalog.build_graph(INFO, datasets, page, fmt, 100), fmt)
    return Graph().parse(data=data, format=fmt)


def _portal_dataset() -> catalog.CatalogDataset:
    return catalog.CatalogDataset(
        id="portal-06413000-baumkataster", title="Baumkataster", description="Straßenbäume der Stadt",
        keywords=("Bäume",), themes=("ENVI",), publisher=catalog.CatalogAgent(id="06413000", name="Offenbach am Main"),
        contact_point=catalog.CatalogContact(name="Umweltamt", email="umwelt@example.org"),
        spatial_ags="06413000", modified=MODIFIED, frequency="ANNUAL",
        distributions=(catalog.CatalogDistribution(
            title="Baumkataster (GeoJSON)", access_url="https://example.org/baeume.geojson",
            format="GEOJSON", media_type="application/geo+json",
        ),),
    )


class TestKpiDatasets:
    def test_families_are_those_of_the_open_data_api(self) -> None:
        assert tuple(f.key for f in catalog.KPI_FAMILIES) == FAMILIES

    async def test_one_dataset_per_municipality_and_family_plus_hessen(self) -> None:
        datasets = await _datasets()
        assert len(datasets) == len(catalog.KPI_FAMILIES) * (len(municipalities()) + 1)
        ids = {d.id for d in datasets}
        assert f"kpi-usage-{OFFENBACH.ags}" in ids
        assert "kpi-processing-hessen" in ids

    async def test_dataset_carries_geocoding_licence_formats_and_coverage(self) -> None:
        g = _graph(await _datasets())
        ds = catalog.dataset_uri(BASE, f"kpi-feedback-{OFFENBACH.ags}")
        spatial = URIRef(OFFENBACH.political_geocoding_uri)
        assert (ds, DCTERMS.spatial, spatial) in g
        assert (spatial, RDF.type, DCTERMS.Location) in g
        assert (ds, catalog.DCATDE.politicalGeocodingLevelURI,
                URIRef("http://dcat-ap.de/def/politicalGeocoding/Level/municipality")) in g
        assert not list(g.triples((None, catalog.DCATDE.politicalGeocodingURI, None)))
        assert (ds, rns.DCAT.theme, URIRef(catalog.EU + "data-theme/GOVE")) in g
        assert (ds, DCTERMS.modified, Literal("2026-03-02T04:05:06+00:00", datatype=catalog.XSD.dateTime)) in g
        period = g.value(ds, DCTERMS.temporal)
        assert g.value(period, rns.DCAT.startDate).toPython() == date(2026, 1, 1)
        assert g.value(period, rns.DCAT.endDate).toPython() == date(2026, 3, 1)
        formats = {}
        for dist in g.objects(ds, rns.DCAT.distribution):
            assert (dist, DCTERMS.license, URIRef(catalog.LICENCE_DL_BY_DE_2)) in g
            formats[str(g.value(dist, DCTERMS.format))] = (
                str(g.value(dist, rns.DCAT.mediaType)), str(g.value(dist, rns.DCAT.downloadURL))
            )
        assert formats == {
            catalog.EU + "file-type/JSON": (
                "https://www.iana.org/assignments/media-types/application/json",
                f"{BASE}/v1/kpis.json?municipality={OFFENBACH.ags}&family=feedback",
            ),
            catalog.EU + "file-type/CSV": (
                "https://www.iana.org/assignments/media-types/text/csv",
                f"{BASE}/v1/kpis.csv?municipality={OFFENBACH.ags}&family=feedback",
            ),
        }

    async def test_hessen_dataset_is_state_level_and_spans_all_cities(self) -> None:
        g = _graph(await _datasets())
        ds = catalog.dataset_uri(BASE, "kpi-usage-hessen")
        assert (ds, DCTERMS.spatial, URIRef("http://dcat-ap.de/def/politicalGeocoding/stateKey/06")) in g
        assert (ds, catalog.DCATDE.politicalGeocodingLevelURI,
                URIRef("http://dcat-ap.de/def/politicalGeocoding/Level/state")) in g
        period = g.value(ds, DCTERMS.temporal)
        assert g.value(period, rns.DCAT.startDate).toPython() == date(2025, 12, 1)

    async def test_dataset_without_data_has_no_temporal_or_modified(self) -> None:
        g = _graph(await _datasets())
        ds = catalog.dataset_uri(BASE, "kpi-payment-hessen")
        assert g.value(ds, DCTERMS.temporal) is None
        assert g.value(ds, DCTERMS.modified) is None


class TestShapes:
    @pytest.mark.parametrize("fmt", ["turtle", "xml", "json-ld"])
    async def test_every_representation_conforms_strictly(self, fmt: catalog.RdfFormat) -> None:
        datasets = await _datasets(lambda _ctx: _async([_portal_dataset()]))
        assert_conforms(_graph(datasets, fmt=fmt))

    async def test_last_partial_page_conforms(self) -> None:
        datasets = await _datasets()
        assert_conforms(_graph(datasets, number=3, size=20))

    async def test_deprecated_geocoding_property_is_caught(self) -> None:
        """Guards the check itself: the shapes flag what GovData warns about."""
        g = _graph(await _datasets())
        ds = catalog.dataset_uri(BASE, "kpi-usage-hessen")
        g.add((ds, catalog.DCATDE.politicalGeocodingURI, URIRef(OFFENBACH.political_geocoding_uri)))
        shapes, ontologies = load_shapes()
        conforms, text = shacl_report(g, shapes, ontologies)
        assert not conforms
        assert "politicalGeocodingURI" in text


async def _async(items: list[catalog.CatalogDataset]) -> list[catalog.CatalogDataset]:
    return items


class TestPaging:
    async def test_pages_link_first_next_last_and_cover_every_dataset_once(self) -> None:
        datasets = await _datasets()
        seen: list[str] = []
        number = 1
        while True:
            g = _graph(datasets, number=number, size=20)
            seen += [str(d) for d in g.objects(catalog.catalog_uri(BASE), rns.DCAT.dataset)]
            (paging,) = g.subjects(RDF.type, catalog.HYDRA.PagedCollection)
            assert str(g.value(paging, catalog.HYDRA.totalItems)) == str(len(datasets))
            assert str(g.value(paging, catalog.HYDRA.lastPage)) == f"{BASE}/catalog.ttl?page=3&page_size=20"
            nxt = g.value(paging, catalog.HYDRA.nextPage)
            if nxt is None:
                break
            assert str(nxt) == f"{BASE}/catalog.ttl?page={number + 1}&page_size=20"
            number += 1
        assert number == 3
        assert sorted(seen) == sorted(str(catalog.dataset_uri(BASE, d.id)) for d in datasets)


class TestRegistry:
    async def test_extra_provider_datasets_are_appended(self) -> None:
        datasets = await _datasets(lambda _ctx: _async([_portal_dataset()]))
        assert "portal-06413000-baumkataster" in {d.id for d in datasets}
        g = _graph(datasets)
        ds = catalog.dataset_uri(BASE, "portal-06413000-baumkataster")
        assert (catalog.catalog_uri(BASE), rns.DCAT.dataset, ds) in g
        assert (ds, rns.DCAT.theme, URIRef(catalog.EU + "data-theme/ENVI")) in g

    async def test_duplicate_dataset_id_is_refused(self) -> None:
        dup = _portal_dataset().model_copy(update={"id": f"kpi-usage-{OFFENBACH.ags}"})
        with pytest.raises(catalog.DuplicateDatasetError, match="kpi-usage"):
            await _datasets(lambda _ctx: _async([dup]))

    def test_unknown_municipality_is_refused(self) -> None:
        with pytest.raises(ValueError, match="unknown municipality"):
            _portal_dataset().model_validate({**_portal_dataset().model_dump(), "spatial_ags": "99999999"})


class TestCoverageCache:
    async def test_coverage_is_read_again_only_after_the_ttl(self) -> None:
        reads: list[int] = []
        now = [100.0]

        async def read(_conn: Any) -> dict[tuple[str | None, str], catalog.Coverage]:
            reads.append(1)
            return {}

        reader = catalog.cached(read, 60, clock=lambda: now[0])
        await reader(None)
        now[0] += 59
        await reader(None)
        assert len(reads) == 1
        now[0] += 1
        await reader(None)
        assert len(reads) == 2


class TestNegotiate:
    @pytest.mark.parametrize(("accept", "expected"), [
        (None, "turtle"),
        ("*/*", "turtle"),
        ("text/turtle", "turtle"),
        ("application/rdf+xml", "xml"),
        ("application/ld+json", "json-ld"),
        ("text/turtle;q=0.5, application/ld+json", "json-ld"),
        ("application/rdf+xml;q=0.9, text/turtle;q=0.1", "xml"),
        ("text/html,application/xhtml+xml,*/*;q=0.8", "turtle"),
        ("image/png", None),
    ])
    def test_accept_header_picks_format(self, accept: str | None, expected: str | None) -> None:
        assert negotiate(accept) == expected
