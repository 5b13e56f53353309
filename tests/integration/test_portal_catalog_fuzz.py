"""Arbitrary unicode in every field of a registered dataset, through the real API and database: registration
answers 201 or a 4xx naming the field, and the catalog never answers 5xx and stays valid RDF in all formats."""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from typing import Any

import asyncpg
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdflib import Graph, URIRef

from kp.local import ServiceProcess
from services.publisher.portal import service
from tests.dcat_shapes import SHAPES_DIR, assert_conforms
from tests.factories import OFFENBACH, portal_dataset

RDF_FORMATS = {"ttl": "turtle", "rdf": "xml", "jsonld": "json-ld"}
# Every field a data officer writes, as a path into the dataset document.
FIELDS: list[tuple[str | int, ...]] = [
    ("name",), ("municipality",), ("title",), ("description",), ("keywords", 0), ("themes", 0), ("licence",),
    ("contact_point", "name"), ("contact_point", "email"), ("contact_point", "url"), ("publisher", "name"),
    ("publisher", "url"), ("temporal", "start"), ("frequency",), ("landing_page",),
    ("distributions", 0, "title"), ("distributions", 0, "description"), ("distributions", 0, "access_url"),
    ("distributions", 0, "download_url"), ("distributions", 0, "format"), ("distributions", 0, "media_type"),
    ("distributions", 0, "licence"),
]
# Any code point, surrogates and controls included; and the same behind a plausible URL prefix, so that values
# close to valid IRIs (the ArcGIS query with `{"`) are tried as often as plain text.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=60)
VALUES = st.one_of(ANY_TEXT, ANY_TEXT.map(lambda t: "https://example.org/" + t),
                   ANY_TEXT.map(lambda t: "https://services.arcgis.com/x/query?where={\"" + t))



async def _key(database_url: str, label: str) -> str:
    conn = await asyncpg.connect(database_url)
    try:
        return await service.issue_key(conn, label, [OFFENBACH])
    finally:
        await conn.close()


def _put(doc: dict[str, Any], path: tuple[str | int, ...], value: str) -> None:
    target: Any = doc
    for part in path[:-1]:
        if isinstance(part, str) and part not in target:
            target[part] = {}
        target = target[part]
    target[path[-1]] = value


def _catalog(http: httpx.Client, suffix: str) -> Graph:
    r = http.get(f"/catalog.{suffix}", params={"page_size": 1000})
    assert r.status_code == 200, r.text[:500]
    return Graph().parse(data=r.content, format=RDF_FORMATS[suffix])


async def _spoil_stored_rows(database_url: str, names: list[str]) -> None:
    """Rows written around the API (or before a rule tightened): a non-IRI URL and a control character."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            """UPDATE portal_datasets SET document = jsonb_set(document, '{distributions,0,access_url}',
                   to_jsonb('https://services.arcgis.com/x/query?where={"a":1}'::text)) WHERE name = $1""", names[0])
        await conn.execute(
            """UPDATE portal_datasets SET document = jsonb_set(document, '{title}', to_jsonb(E'Park\\x0bplätze'::text))
               WHERE name = $1""", names[1])
    finally:
        await conn.close()


class TestArbitraryDatasetFields:
    def test_registration_never_fails_the_server_and_the_catalog_stays_valid(
        self, publisher: ServiceProcess, database_url: str
    ) -> None:
        unique = uuid.uuid4().hex[:8]
        key = asyncio.run(_key(database_url, f"fuzz-catalog-{unique}"))
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        accepted: list[str] = []
        statuses: list[int] = []
        with httpx.Client(base_url=publisher.url, timeout=60) as http:

            @given(field=st.sampled_from(FIELDS), value=VALUES)
            @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def register(field: tuple[str | int, ...], value: str) -> None:
                doc = copy.deepcopy(portal_dataset(f"zz-fuzz-{unique}-{len(statuses)}"))
                _put(doc, field, value)
                # json.dumps writes unpaired surrogates as escapes, as a careless client would send them
                r = http.post("/v1/portal/datasets", content=json.dumps(doc).encode(), headers=headers)
                statuses.append(r.status_code)
                assert r.status_code < 500, (field, value, r.text[:300])
                if r.status_code == 201:
                    accepted.append(r.json()["name"])
                else:
                    assert 400 <= r.status_code < 500
                    assert r.headers["content-type"].startswith("application/problem+json")

            register()
            assert any(s == 201 for s in statuses)
            assert any(s == 422 for s in statuses)

            graphs = {suffix: _catalog(http, suffix) for suffix in RDF_FORMATS}
            datasets = {str(s) for s in graphs["ttl"].subjects() if isinstance(s, URIRef)}
            for name in accepted:  # every accepted dataset is in the catalog, none left out
                assert any(s.endswith(f"/catalog/datasets/{name}") for s in datasets), name
            assert len(graphs["ttl"]) == len(graphs["rdf"]) == len(graphs["jsonld"])

            # Rows that break the rules in the database are left out; the rest of the catalog still answers.
            spoiled = [f"zz-spoiled-{unique}-{i}" for i in range(2)]
            for name in spoiled:
                r = http.post("/v1/portal/datasets", content=json.dumps(portal_dataset(name)).encode(),
                              headers=headers)
                assert r.status_code == 201, r.text
            asyncio.run(_spoil_stored_rows(database_url, spoiled))
            after = {suffix: _catalog(http, suffix) for suffix in RDF_FORMATS}
            subjects = {str(s) for s in after["ttl"].subjects()}
            assert not any(s.endswith(f"/catalog/datasets/{n}") for n in spoiled for s in subjects)
            assert any(s.endswith(f"/catalog/datasets/{accepted[0]}") for s in subjects)

            # Leave the shared catalog as it was for other tests (withdrawn datasets leave the catalog).
            for name in [*accepted, *spoiled]:
                assert http.delete(f"/v1/portal/datasets/{name}", headers=headers).status_code == 200, name

        if (SHAPES_DIR / "dcat-ap-SHACL-DE.ttl").is_file():
            for graph in after.values():
                assert_conforms(graph)
