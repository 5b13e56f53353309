"""Data portal against the real PostgreSQL: scoped write API, validation, history, uploads, search, catalog."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from asgi_lifespan import LifespanManager
from rdflib import Graph, Namespace, URIRef
from rdflib.namespace import DCAT, DCTERMS

from services.publisher.app import create_app
from services.publisher.portal import service
from services.publisher.settings import PublisherSettings
from tests.dcat_shapes import assert_conforms
from tests.factories import MARBURG, OFFENBACH, portal_dataset

BASE = "https://opendata.example.org"
MAX_UPLOAD = 4096
THEME = "http://publications.europa.eu/resource/authority/data-theme/"
HYDRA = Namespace("http://www.w3.org/ns/hydra/core#")
GOOD_CSV = "standort;stellplaetze\nMarktplatz;120\nBahnhof;340\n".replace(";", ",").encode()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(PublisherSettings(database_url=database_url, public_base_url=BASE,
                                       portal_max_upload_bytes=MAX_UPLOAD))
    async with LifespanManager(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as c:
        yield c


@pytest.fixture
async def offenbach_key(db: asyncpg.Connection, unique: str) -> str:
    return await service.issue_key(db, f"offenbach-{unique}", [OFFENBACH])


@pytest.fixture
async def marburg_key(db: asyncpg.Connection, unique: str) -> str:
    return await service.issue_key(db, f"marburg-{unique}", [MARBURG])


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create(client: httpx.AsyncClient, key: str, doc: dict[str, Any]) -> dict[str, Any]:
    r = await client.post("/v1/portal/datasets", json=doc, headers=auth(key))
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def versions(db: asyncpg.Connection, name: str) -> list[asyncpg.Record]:
    return await db.fetch(
        """SELECT v.version, v.status, v.action FROM portal_dataset_versions v JOIN portal_datasets d
           ON d.id = v.dataset_id WHERE d.name = $1 ORDER BY v.version""", name)


class TestCreate:
    async def test_dataset_is_published_with_geocoding_and_first_version(
        self, client: httpx.AsyncClient, offenbach_key: str, db: asyncpg.Connection
    ) -> None:
        doc = portal_dataset()
        body = await create(client, offenbach_key, doc)
        assert body["status"] == "published"
        assert body["version"] == 1
        assert body["spatial"] == f"http://dcat-ap.de/def/politicalGeocoding/municipalityKey/{OFFENBACH}"
        assert body["publisher"]["name"] == "Offenbach am Main"
        assert body["distributions"][0]["media_type"] == "application/json"
        assert body["distributions"][0]["licence"] == doc["licence"]
        got = (await client.get(f"/v1/portal/datasets/{doc['name']}")).json()
        assert got["title"] == doc["title"]
        assert [tuple(v) for v in await versions(db, doc["name"])] == [(1, "published", "created")]

    async def test_without_key_is_unauthorized(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/portal/datasets", json=portal_dataset())
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"

    async def test_unknown_key_is_unauthorized(self, client: httpx.AsyncClient) -> None:
        r = await client.post("/v1/portal/datasets", json=portal_dataset(), headers=auth("kpp_not-a-key"))
        assert r.status_code == 401

    async def test_key_of_another_city_is_forbidden_and_nothing_is_stored(
        self, client: httpx.AsyncClient, marburg_key: str, db: asyncpg.Connection
    ) -> None:
        doc = portal_dataset(municipality=OFFENBACH)
        r = await client.post("/v1/portal/datasets", json=doc, headers={"X-API-Key": marburg_key})
        assert r.status_code == 403
        assert OFFENBACH in r.json()["detail"]
        assert await db.fetchval("SELECT count(*) FROM portal_datasets WHERE name = $1", doc["name"]) == 0

    async def test_name_taken_is_a_conflict(self, client: httpx.AsyncClient, offenbach_key: str) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.post("/v1/portal/datasets", json=doc, headers=auth(offenbach_key))
        assert r.status_code == 409


def _drop(key: str) -> Any:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Any:
    return lambda d: d.__setitem__(key, value)


def _dist(**changes: Any) -> Any:
    return lambda d: d["distributions"][0].update(changes)


INVALID = [
    ("title", _drop("title")),
    ("title", _set("title", "  ")),
    ("description", _set("description", "kurz")),
    ("keywords", _set("keywords", [])),
    ("keywords[0]", _set("keywords", ["x"])),
    ("themes", _set("themes", [])),
    ("themes[0]", _set("themes", ["http://example.org/theme/TRAN"])),
    ("themes", _set("themes", [THEME + "TRAN", THEME + "TRAN"])),
    ("licence", _set("licence", "http://dcat-ap.de/def/licenses/other-closed")),
    ("licence", _drop("licence")),
    ("frequency", _set("frequency", "http://publications.europa.eu/resource/authority/frequency/SOMETIMES")),
    ("municipality", _set("municipality", "06999999")),
    ("municipality", _set("municipality", "Offenbach")),
    ("name", _set("name", "Mit Leerzeichen")),
    ("name", _set("name", "kpi-usage-06413000")),
    ("contact_point", _set("contact_point", {"name": "Team"})),
    ("contact_point.email", _set("contact_point", {"name": "Team", "email": "kein-mail"})),
    ("contact_point", _drop("contact_point")),
    ("publisher.name", _set("publisher", {"name": ""})),
    ("temporal", _set("temporal", {"start": "2024-12-31", "end": "2024-01-01"})),
    ("temporal.start", _set("temporal", {"start": "31.12.2024"})),
    ("landing_page", _set("landing_page", "ftp://example.org")),
    ("distributions[0].format", _dist(format="EXE")),
    ("distributions[0].access_url", _dist(access_url="datei.csv")),
    ("distributions[0]", _dist(format="CSV", media_type="application/pdf")),
    ("distributions[0].licence", _dist(licence="proprietär")),
    ("colour", _set("colour", "blau")),
    ("title", _set("title", "Park\x00plätze")),
    ("keywords", _set("keywords", ["Par\x00ken"])),
]


class TestValidation:
    @pytest.mark.parametrize(("field", "mutate"), INVALID, ids=[f"{f}-{i}" for i, (f, _) in enumerate(INVALID)])
    async def test_invalid_field_is_named_in_problem_details(
        self, client: httpx.AsyncClient, offenbach_key: str, db: asyncpg.Connection, field: str, mutate: Any
    ) -> None:
        doc = portal_dataset()
        mutate(doc)
        r = await client.post("/v1/portal/datasets", json=doc, headers=auth(offenbach_key))
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        problem = r.json()
        assert problem["status"] == 422
        assert field in [e["field"] for e in problem["errors"]], problem
        assert all(e["detail"] for e in problem["errors"])
        assert await db.fetchval("SELECT count(*) FROM portal_datasets WHERE name = $1", doc.get("name")) == 0

    async def test_every_invalid_field_is_reported_at_once(
        self, client: httpx.AsyncClient, offenbach_key: str
    ) -> None:
        doc = portal_dataset(licence="x", frequency="y", themes=["z"])
        doc["distributions"][0]["format"] = "EXE"
        r = await client.post("/v1/portal/datasets", json=doc, headers=auth(offenbach_key))
        fields = {e["field"] for e in r.json()["errors"]}
        assert fields == {"licence", "frequency", "themes[0]", "distributions[0].format"}

    async def test_body_that_is_not_json_is_refused(self, client: httpx.AsyncClient, offenbach_key: str) -> None:
        r = await client.post("/v1/portal/datasets", content=b"{nope", headers={
            **auth(offenbach_key), "Content-Type": "application/json"})
        assert r.status_code == 422
        assert r.headers["content-type"] == "application/problem+json"


class TestUpdate:
    async def test_update_replaces_description_and_records_a_version(
        self, client: httpx.AsyncClient, offenbach_key: str, db: asyncpg.Connection
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        doc["title"] = "Parkhäuser und Parkplätze"
        r = await client.put(f"/v1/portal/datasets/{doc['name']}", json=doc, headers=auth(offenbach_key))
        assert r.status_code == 200, r.text
        assert r.json()["version"] == 2
        assert (await client.get(f"/v1/portal/datasets/{doc['name']}")).json()["title"] == doc["title"]
        assert [v["action"] for v in await versions(db, doc["name"])] == ["created", "updated"]

    async def test_key_of_another_city_cannot_update(
        self, client: httpx.AsyncClient, offenbach_key: str, marburg_key: str
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        changed = {**doc, "title": "Übernommen"}
        r = await client.put(f"/v1/portal/datasets/{doc['name']}", json=changed, headers=auth(marburg_key))
        assert r.status_code == 403
        moved = {**doc, "municipality": MARBURG}
        r = await client.put(f"/v1/portal/datasets/{doc['name']}", json=moved, headers=auth(marburg_key))
        assert r.status_code == 403
        assert (await client.get(f"/v1/portal/datasets/{doc['name']}")).json()["title"] == doc["title"]

    async def test_name_in_body_must_match_url(self, client: httpx.AsyncClient, offenbach_key: str) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}", json={**doc, "name": "anderer-name"},
                             headers=auth(offenbach_key))
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "name"

    async def test_unknown_dataset_is_not_found(self, client: httpx.AsyncClient, offenbach_key: str) -> None:
        doc = portal_dataset()
        r = await client.put(f"/v1/portal/datasets/{doc['name']}", json=doc, headers=auth(offenbach_key))
        assert r.status_code == 404

    async def test_hosted_files_survive_an_update(self, client: httpx.AsyncClient, offenbach_key: str) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        up = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=GOOD_CSV,
                              headers=auth(offenbach_key))
        assert up.status_code == 201, up.text
        r = await client.put(f"/v1/portal/datasets/{doc['name']}", json={**doc, "distributions": []},
                             headers=auth(offenbach_key))
        assert [d["format"] for d in r.json()["distributions"]] == ["CSV"]


class TestWithdraw:
    async def test_withdrawn_dataset_leaves_api_search_and_catalog_but_stays_in_history(
        self, client: httpx.AsyncClient, offenbach_key: str, db: asyncpg.Connection, unique: str
    ) -> None:
        doc = portal_dataset(keywords=["Parken", f"w{unique}"])
        await create(client, offenbach_key, doc)
        r = await client.delete(f"/v1/portal/datasets/{doc['name']}", headers=auth(offenbach_key))
        assert r.status_code == 200
        assert r.json()["status"] == "withdrawn"
        assert (await client.get(f"/v1/portal/datasets/{doc['name']}")).status_code == 410
        found = (await client.get("/v1/portal/datasets", params={"q": f"w{unique}"})).json()
        assert found["count"] == 0
        ttl = await client.get("/catalog.ttl", params={"page_size": 1000})
        assert f"{BASE}/catalog/datasets/{doc['name']}" not in ttl.text
        history = (await client.get(f"/v1/portal/datasets/{doc['name']}/history")).json()
        assert [(v["version"], v["status"]) for v in history["versions"]] == [(1, "published"), (2, "withdrawn")]
        assert history["versions"][1]["document"]["title"] == doc["title"]

    async def test_key_of_another_city_cannot_withdraw(
        self, client: httpx.AsyncClient, offenbach_key: str, marburg_key: str
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.delete(f"/v1/portal/datasets/{doc['name']}", headers=auth(marburg_key))
        assert r.status_code == 403
        assert (await client.get(f"/v1/portal/datasets/{doc['name']}")).status_code == 200


class TestUpload:
    async def test_good_csv_is_published_with_report_checksum_media_type_and_etag(
        self, client: httpx.AsyncClient, offenbach_key: str, db: asyncpg.Connection
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=GOOD_CSV,
                             params={"title": "Parkplätze (CSV)"}, headers=auth(offenbach_key))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["report"]["valid"] is True
        assert body["report"]["rows"] == 2
        dist = body["distribution"]
        assert dist["file"]["sha256"] == hashlib.sha256(GOOD_CSV).hexdigest()
        assert dist["media_type"] == "text/csv"
        assert dist["download_url"].startswith(f"{BASE}/portal/files/")
        path = dist["download_url"].removeprefix(BASE)
        got = await client.get(path)
        assert got.status_code == 200
        assert got.content == GOOD_CSV
        assert got.headers["content-type"] == "text/csv; charset=utf-8"
        assert got.headers["etag"] == f'"{dist["file"]["sha256"]}"'
        again = await client.get(path, headers={"If-None-Match": got.headers["etag"]})
        assert again.status_code == 304
        assert again.content == b""
        assert [v["action"] for v in await versions(db, doc["name"])] == ["created", "file_added"]

    async def test_bad_csv_is_refused_with_the_report_and_nothing_is_published(
        self, client: httpx.AsyncClient, offenbach_key: str, db: asyncpg.Connection
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        bad = b"standort,stellplaetze\nMarktplatz,120\nBahnhof\nPost,1,2\n"
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=bad,
                             headers=auth(offenbach_key))
        assert r.status_code == 422
        problem = r.json()
        assert problem["report"]["valid"] is False
        assert {e["type"] for e in problem["report"]["errors"]} == {"missing-cell", "extra-cell"}
        assert {e["row"] for e in problem["report"]["errors"]} == {3, 4}
        ds = (await client.get(f"/v1/portal/datasets/{doc['name']}")).json()
        assert ds["version"] == 1
        assert [d["format"] for d in ds["distributions"]] == ["JSON"]
        assert await db.fetchval(
            "SELECT count(*) FROM portal_files f JOIN portal_datasets d ON d.id = f.dataset_id WHERE d.name = $1",
            doc["name"]) == 0

    @pytest.mark.parametrize(("filename", "content", "status"), [
        ("parken.csv", b"a,b\n" + b"1,2\n" * 2000, 413),
        ("parken.xlsx", b"PK\x03\x04", 415),
        ("parken.json", b"{not json", 422),
        ("parken.geojson", b'{"type": "Tabelle"}', 422),
        ("parken.csv", b"a,b\n\xff\xfe,1\n", 422),
        ("parken.csv", b"", 422),
    ])
    async def test_unfit_file_is_refused(
        self, client: httpx.AsyncClient, offenbach_key: str, filename: str, content: bytes, status: int
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/{filename}", content=content,
                             headers=auth(offenbach_key))
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/problem+json"
        assert (await client.get(f"/v1/portal/datasets/{doc['name']}")).json()["version"] == 1

    async def test_geojson_is_served_as_geo_json(self, client: httpx.AsyncClient, offenbach_key: str) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        geo = b'{"type": "FeatureCollection", "features": []}'
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.geojson", content=geo,
                             headers=auth(offenbach_key))
        assert r.status_code == 201, r.text
        assert r.json()["report"] is None
        got = await client.get(r.json()["distribution"]["download_url"].removeprefix(BASE))
        assert got.headers["content-type"] == "application/geo+json"

    async def test_file_name_with_spaces_and_umlauts_is_served_under_a_valid_url(
        self, client: httpx.AsyncClient, offenbach_key: str
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/Parkplätze 2024 停车.csv", content=GOOD_CSV,
                             headers=auth(offenbach_key))
        assert r.status_code == 201, r.text
        url = r.json()["distribution"]["download_url"]
        assert " " not in url
        got = await client.get(url.removeprefix(BASE))
        assert got.status_code == 200
        assert got.content == GOOD_CSV
        assert "filename*=UTF-8''Parkpl%C3%A4tze%202024" in got.headers["content-disposition"]

    async def test_upload_without_key_is_refused_before_the_body_counts(
        self, client: httpx.AsyncClient, offenbach_key: str
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=b"x" * (MAX_UPLOAD + 1))
        assert r.status_code == 401

    async def test_key_of_another_city_cannot_upload(
        self, client: httpx.AsyncClient, offenbach_key: str, marburg_key: str
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=GOOD_CSV,
                             headers=auth(marburg_key))
        assert r.status_code == 403

    async def test_files_of_a_withdrawn_dataset_are_no_longer_served(
        self, client: httpx.AsyncClient, offenbach_key: str
    ) -> None:
        doc = portal_dataset()
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=GOOD_CSV,
                             headers=auth(offenbach_key))
        path = r.json()["distribution"]["download_url"].removeprefix(BASE)
        await client.delete(f"/v1/portal/datasets/{doc['name']}", headers=auth(offenbach_key))
        assert (await client.get(path)).status_code == 404


class TestSearch:
    async def test_german_stemming_finds_parkplaetze_for_parkplatz(
        self, client: httpx.AsyncClient, offenbach_key: str, unique: str
    ) -> None:
        tag = f"s{unique}"
        hit = portal_dataset(title="Parkplätze am Bahnhof", keywords=[tag])
        miss = portal_dataset(title="Haushaltsplan der Stadt", description="Erträge und Aufwendungen je Produkt.",
                              keywords=[tag])
        await create(client, offenbach_key, hit)
        await create(client, offenbach_key, miss)
        r = await client.get("/v1/portal/datasets", params={"q": f"Parkplatz {tag}"})
        assert [d["name"] for d in r.json()["results"]] == [hit["name"]]

    async def test_facets_filters_and_sort(
        self, client: httpx.AsyncClient, offenbach_key: str, marburg_key: str, unique: str
    ) -> None:
        tag = f"f{unique}"
        older = portal_dataset(keywords=[tag], themes=[THEME + "TRAN"])
        newer = portal_dataset(keywords=[tag, "Umwelt"], themes=[THEME + "ENVI"], municipality=MARBURG,
                               description="Messwerte der Luftqualität an Parkplätzen und Straßen.")
        await create(client, offenbach_key, older)
        await create(client, marburg_key, newer)
        r = (await client.get("/v1/portal/datasets", params={"q": tag, "sort": "date"})).json()
        assert r["count"] == 2
        assert [d["name"] for d in r["results"]] == [newer["name"], older["name"]]
        munis = {f["value"]: f["count"] for f in r["facets"]["municipality"]}
        assert munis == {OFFENBACH: 1, MARBURG: 1}
        assert {f["label"] for f in r["facets"]["municipality"]} == {"Offenbach am Main", "Marburg"}
        assert {f["value"]: f["count"] for f in r["facets"]["theme"]} == {THEME + "TRAN": 1, THEME + "ENVI": 1}
        assert {f["value"]: f["count"] for f in r["facets"]["format"]} == {"JSON": 2}
        only = (await client.get("/v1/portal/datasets", params={"q": tag, "municipality": MARBURG})).json()
        assert [d["name"] for d in only["results"]] == [newer["name"]]
        themed = (await client.get("/v1/portal/datasets", params={"q": tag, "theme": THEME + "TRAN"})).json()
        assert [d["name"] for d in themed["results"]] == [older["name"]]

    async def test_relevance_ranks_title_matches_first(
        self, client: httpx.AsyncClient, offenbach_key: str, unique: str
    ) -> None:
        tag = f"r{unique}"
        in_description = portal_dataset(title="Verkehrszählung", keywords=[tag],
                                        description="Zählstellen, darunter auch Parkplätze am Rand der Stadt.")
        in_title = portal_dataset(title="Parkplätze", keywords=[tag])
        await create(client, offenbach_key, in_description)
        await create(client, offenbach_key, in_title)
        r = (await client.get("/v1/portal/datasets", params={"q": f"Parkplatz {tag}"})).json()
        assert [d["name"] for d in r["results"]] == [in_title["name"], in_description["name"]]

    async def test_nul_characters_are_refused_everywhere(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/portal/datasets", params={"q": "Park\x00platz"})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        assert (await client.get("/v1/portal/datasets/a%00b")).status_code == 400
        r = await client.get("/v1/portal/datasets", params=[("format", "\x00"), ("format", "CSV")])
        assert r.status_code == 400
        r = await client.get("/api/3/action/package_search", params={"q": "\x00"})
        assert r.status_code == 409
        assert r.json()["success"] is False
        assert (await client.get("/portal", params={"q": "\x00"})).status_code == 400
        assert (await client.get("/portal/datensaetze/a%00b")).status_code == 404

    async def test_bad_parameter_is_a_problem(self, client: httpx.AsyncClient) -> None:
        r = await client.get("/v1/portal/datasets", params={"sort": "zufall"})
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "query.sort"


class TestCatalog:
    @pytest.mark.parametrize(("suffix", "fmt"), [("ttl", "turtle"), ("rdf", "xml"), ("jsonld", "json-ld")])
    async def test_registered_datasets_join_the_catalog_and_conform(
        self, client: httpx.AsyncClient, offenbach_key: str, suffix: str, fmt: str
    ) -> None:
        doc = portal_dataset(publisher={"name": "Amt für Verkehr", "url": "https://example.org/verkehr"})
        await create(client, offenbach_key, doc)
        r = await client.put(f"/v1/portal/datasets/{doc['name']}/files/parken.csv", content=GOOD_CSV,
                             headers=auth(offenbach_key))
        assert r.status_code == 201
        resp = await client.get(f"/catalog.{suffix}", params={"page_size": 1000})
        assert resp.status_code == 200, resp.text
        g = Graph().parse(data=resp.content, format=fmt)
        node = URIRef(f"{BASE}/catalog/datasets/{doc['name']}")
        assert (None, DCAT.dataset, node) in g
        assert len(list(g.objects(node, DCAT.distribution))) == 2
        downloads = {str(o) for d in g.objects(node, DCAT.distribution) for o in g.objects(d, DCAT.downloadURL)}
        assert r.json()["distribution"]["download_url"] in downloads
        assert g.value(node, DCTERMS.spatial) == URIRef(
            f"http://dcat-ap.de/def/politicalGeocoding/municipalityKey/{OFFENBACH}")
        kpi = URIRef(f"{BASE}/catalog/datasets/kpi-usage-{OFFENBACH}")
        assert (None, DCAT.dataset, kpi) in g
        assert_conforms(g)

    async def test_hydra_paging_counts_published_datasets_with_distributions_only(
        self, client: httpx.AsyncClient, offenbach_key: str
    ) -> None:
        async def total() -> int:
            resp = await client.get("/catalog.ttl", params={"page_size": 5})
            assert resp.status_code == 200, resp.text
            g = Graph().parse(data=resp.content, format="turtle")
            (value,) = g.objects(None, HYDRA.totalItems)
            return int(value)

        before = await total()
        linked = portal_dataset()
        await create(client, offenbach_key, linked)
        await create(client, offenbach_key, portal_dataset(distributions=[]))
        assert await total() == before + 1
        await client.delete(f"/v1/portal/datasets/{linked['name']}", headers=auth(offenbach_key))
        assert await total() == before
