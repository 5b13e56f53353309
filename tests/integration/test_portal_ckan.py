"""CKAN Action API of the data portal, spoken to by `ckanapi.RemoteCKAN` against the publisher as a process."""

from __future__ import annotations

from typing import Any

import asyncpg
import ckanapi
import httpx
import pytest

from kp.local import ServiceProcess
from services.publisher.portal import service
from tests.factories import MARBURG, OFFENBACH, portal_dataset

THEME = "http://publications.europa.eu/resource/authority/data-theme/"
CSV = b"jahr,parkplaetze\n2023,410\n2024,455\n"



@pytest.fixture
def ckan(publisher: ServiceProcess) -> ckanapi.RemoteCKAN:
    return ckanapi.RemoteCKAN(publisher.url, user_agent="kommunal-pulse-tests/1.0")


@pytest.fixture
async def seeded(publisher: ServiceProcess, db: asyncpg.Connection, unique: str) -> dict[str, Any]:
    """Two datasets sharing a tag of this test: Offenbach (link + hosted CSV) and Marburg (link)."""
    tag = f"c{unique}"
    keys = {OFFENBACH: await service.issue_key(db, f"o-{unique}", [OFFENBACH]),
            MARBURG: await service.issue_key(db, f"m-{unique}", [MARBURG])}
    offenbach = portal_dataset(keywords=["Parken", tag])
    marburg = portal_dataset(municipality=MARBURG, title="Luftqualität an Messstationen", keywords=[tag],
                             themes=[THEME + "ENVI"], description="Stündliche Messwerte von Feinstaub und NO2.")
    async with httpx.AsyncClient(base_url=publisher.url) as c:
        for doc in (offenbach, marburg):
            r = await c.post("/v1/portal/datasets", json=doc, headers={"X-API-Key": keys[doc["municipality"]]})
            assert r.status_code == 201, r.text
        r = await c.put(f"/v1/portal/datasets/{offenbach['name']}/files/parken.csv", content=CSV,
                        headers={"X-API-Key": keys[OFFENBACH]})
        assert r.status_code == 201, r.text
    return {"tag": tag, "offenbach": offenbach, "marburg": marburg, "keys": keys}


class TestPackageSearch:
    def test_ckanapi_gets_results_facets_and_search_facets(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]
    ) -> None:
        result = ckan.action.package_search(q=seeded["tag"], sort="metadata_modified desc",
                                            **{"facet.field": ["organization", "groups", "res_format"]})
        assert result["count"] == 2
        # the CSV upload made Offenbach's dataset the most recently modified one
        assert [p["name"] for p in result["results"]] == [seeded["offenbach"]["name"], seeded["marburg"]["name"]]
        assert result["facets"]["organization"] == {"offenbach-am-main": 1, "marburg": 1}
        assert result["facets"]["groups"] == {"tran": 1, "envi": 1}
        assert result["facets"]["res_format"] == {"JSON": 2, "CSV": 1}
        items = {i["name"]: i for i in result["search_facets"]["organization"]["items"]}
        assert items["offenbach-am-main"] == {"name": "offenbach-am-main", "display_name": "Offenbach am Main",
                                              "count": 1}
        assert result["search_facets"]["organization"]["title"] == "organization"

    def test_fq_filters_by_organization_and_tags(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        result = ckan.action.package_search(fq=f"organization:marburg tags:{seeded['tag']}")
        assert [p["name"] for p in result["results"]] == [seeded["marburg"]["name"]]

    def test_rows_and_start_page_through_matches(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]
    ) -> None:
        first = ckan.action.package_search(q=seeded["tag"], rows=1, start=0, sort="metadata_modified desc")
        second = ckan.action.package_search(q=seeded["tag"], rows=1, start=1, sort="metadata_modified desc")
        assert first["count"] == second["count"] == 2
        assert {first["results"][0]["name"], second["results"][0]["name"]} == {
            seeded["marburg"]["name"], seeded["offenbach"]["name"]}

    def test_envelope_matches_the_documented_shape(
        self, publisher: ServiceProcess, seeded: dict[str, Any]
    ) -> None:
        r = httpx.get(f"{publisher.url}/api/3/action/package_search",
                      params={"q": seeded["tag"], "facet.field": '["tags"]'})
        body = r.json()
        assert r.status_code == 200
        assert set(body) == {"help", "success", "result"}
        assert body["success"] is True
        assert body["help"].endswith("/api/3/action/help_show?name=package_search")
        assert {"count", "results", "facets", "search_facets"} <= set(body["result"])
        assert body["result"]["facets"]["tags"][seeded["tag"]] == 2

    def test_bad_parameters_get_the_error_envelope(self, publisher: ServiceProcess) -> None:
        r = httpx.get(f"{publisher.url}/api/3/action/package_search", params={"rows": "viele"})
        assert r.status_code == 409
        assert r.json()["success"] is False
        assert r.json()["error"]["__type"] == "Validation Error"
        assert "rows" in r.json()["error"]
        r = httpx.get(f"{publisher.url}/api/3/action/package_search", params={"fq": "farbe:blau"})
        assert r.status_code == 409
        assert r.json()["error"]["__type"] == "Search Query Error"
        r = httpx.get(f"{publisher.url}/api/3/action/package_create")
        assert r.status_code == 400
        assert r.json()["success"] is False


class TestPackageShow:
    def test_package_carries_resources_tags_organization_and_licence(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any], publisher: ServiceProcess
    ) -> None:
        doc = seeded["offenbach"]
        pkg = ckan.action.package_show(id=doc["name"])
        assert pkg["title"] == doc["title"]
        assert pkg["notes"] == doc["description"]
        assert pkg["license_id"] == doc["licence"]
        assert pkg["organization"]["name"] == "offenbach-am-main"
        assert sorted(t["name"] for t in pkg["tags"]) == sorted(doc["keywords"])
        assert pkg["num_resources"] == 2
        csv = next(r for r in pkg["resources"] if r["format"] == "CSV")
        assert csv["url_type"] == "upload"
        assert csv["mimetype"] == "text/csv"
        assert csv["size"] == len(CSV)
        got = httpx.get(csv["url"])
        assert got.status_code == 200
        assert got.content == CSV
        assert ckan.action.package_show(id=pkg["id"])["name"] == doc["name"]

    @pytest.mark.parametrize("ident", ["gibt-es-nicht", "-" * 36, "6f1c2a50-0000-4000-8000-000000000000"])
    def test_unknown_package_raises_not_found(self, ckan: ckanapi.RemoteCKAN, ident: str) -> None:
        with pytest.raises(ckanapi.NotFound):
            ckan.action.package_show(id=ident)

    def test_missing_id_raises_validation_error(self, ckan: ckanapi.RemoteCKAN) -> None:
        with pytest.raises(ckanapi.ValidationError):
            ckan.action.package_show()

    def test_withdrawn_package_is_not_found(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any], publisher: ServiceProcess
    ) -> None:
        doc = seeded["marburg"]
        r = httpx.delete(f"{publisher.url}/v1/portal/datasets/{doc['name']}",
                         headers={"X-API-Key": seeded["keys"][MARBURG]})
        assert r.status_code == 200
        with pytest.raises(ckanapi.NotFound):
            ckan.action.package_show(id=doc["name"])
        assert ckan.action.package_search(q=seeded["tag"])["count"] == 1


class TestOrganizationAndTagList:
    def test_organization_list_names_every_member_city(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]
    ) -> None:
        names = ckan.action.organization_list()
        assert names == sorted(names)
        assert {"offenbach-am-main", "marburg", "giessen", "limburg-a-d-lahn", "fulda", "wetzlar"} == set(names)
        full = {o["name"]: o for o in ckan.action.organization_list(all_fields=True)}
        assert full["marburg"]["title"] == "Marburg"
        assert full["offenbach-am-main"]["package_count"] >= 1

    def test_tag_list_filters_by_query(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        assert ckan.action.tag_list(query=seeded["tag"]) == [seeded["tag"]]
        assert "Parken" in ckan.action.tag_list()
