"""The CKAN Action API spoken to by clients written elsewhere, against the publisher as a process.

- ckanapi 4.11: `RemoteCKAN` for every read action and its CLI `ckanapi dump datasets --all`.
- ckanext-harvest 1.6.3, `ckanext/harvest/harvesters/ckanharvester.py` (`CKANHarvester.gather_stage`,
  `_search_for_datasets`, `_get_organization`, `_get_group`): the requests it sends, replayed byte for byte —
  `package_search?rows=100&start=N&sort=id+asc` paged until a page comes back empty, `fq` with
  `organization:a OR organization:b` (include filter), `-organization:a -organization:b` (exclude filter) and
  `metadata_modified:[<last run - 1 h>Z TO *]` for an incremental run, then `organization_show?id=<owner_org>`
  and `group_show?id=<group id>` for the remote organisations and groups.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import asyncpg
import ckanapi
import httpx
import pytest

from kp.local import LocalStack, ServiceProcess
from services.publisher.portal import service
from tests.factories import MARBURG, OFFENBACH, portal_dataset

THEME = "http://publications.europa.eu/resource/authority/data-theme/"
CSV = b"jahr,wert\n2023,1\n2024,2\n"


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    # no KP_PUBLIC_BASE_URL: the links must name the address the process really serves
    with stack.running("publisher") as sp:
        yield sp


@pytest.fixture
def ckan(publisher: ServiceProcess) -> ckanapi.RemoteCKAN:
    return ckanapi.RemoteCKAN(publisher.url, user_agent="kommunal-pulse-tests/1.0")


@pytest.fixture
async def seeded(publisher: ServiceProcess, db: asyncpg.Connection, unique: str) -> dict[str, Any]:
    """Offenbach (link + hosted CSV, theme TRAN) and Marburg (link, theme ENVI), sharing a tag of this test."""
    tag = f"h{unique}"
    keys = {OFFENBACH: await service.issue_key(db, f"o-{unique}", [OFFENBACH]),
            MARBURG: await service.issue_key(db, f"m-{unique}", [MARBURG])}
    offenbach = portal_dataset(f"parken-{unique}", keywords=["Parken", tag])
    marburg = portal_dataset(f"luft-{unique}", municipality=MARBURG, title="Luftqualität an Messstationen",
                             keywords=[tag], themes=[THEME + "ENVI"],
                             description="Stündliche Messwerte von Feinstaub und NO2.")
    async with httpx.AsyncClient(base_url=publisher.url) as c:
        for doc in (offenbach, marburg):
            r = await c.post("/v1/portal/datasets", json=doc, headers={"X-API-Key": keys[doc["municipality"]]})
            assert r.status_code == 201, r.text
        r = await c.put(f"/v1/portal/datasets/{offenbach['name']}/files/werte.csv", content=CSV,
                        headers={"X-API-Key": keys[OFFENBACH]})
        assert r.status_code == 201, r.text
    return {"tag": tag, "offenbach": offenbach, "marburg": marburg, "keys": keys}


class TestRemoteCkan:
    def test_status_and_site_read(self, ckan: ckanapi.RemoteCKAN, publisher: ServiceProcess) -> None:
        status = ckan.action.status_show()
        assert status["ckan_version"].startswith("2.10")
        assert status["site_url"] == publisher.url
        assert ckan.action.site_read() is True

    def test_package_list_holds_registered_and_kpi_datasets(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]
    ) -> None:
        names = ckan.action.package_list()
        assert names == sorted(names)
        assert {seeded["offenbach"]["name"], seeded["marburg"]["name"]} <= set(names)
        kpi = [n for n in names if n.startswith("kpi-")]
        assert len(kpi) == 49  # 7 KPI families x (6 cities + Hessen)
        assert ckan.action.package_list(limit=3, offset=1) == names[1:4]

    def test_package_show_by_name_and_id_for_both_kinds(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]
    ) -> None:
        pkg = ckan.action.package_show(id=seeded["marburg"]["name"])
        assert ckan.action.package_show(id=pkg["id"])["name"] == pkg["name"]
        kpi = ckan.action.package_show(id="kpi-funnel-06534014")
        assert kpi["organization"]["name"] == "marburg"
        assert {r["format"] for r in kpi["resources"]} == {"JSON", "CSV"}
        assert ckan.action.package_show(id=kpi["id"])["name"] == "kpi-funnel-06534014"
        assert [g["name"] for g in kpi["groups"]] == ["gove"]

    def test_resource_show_for_hosted_linked_and_kpi_resources(
        self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]
    ) -> None:
        pkg = ckan.action.package_show(id=seeded["offenbach"]["name"])
        for resource in pkg["resources"]:
            assert ckan.action.resource_show(id=resource["id"]) == resource
        hosted = next(r for r in pkg["resources"] if r["url_type"] == "upload")
        assert httpx.get(hosted["url"]).content == CSV
        kpi = ckan.action.package_show(id="kpi-usage-hessen")
        assert ckan.action.resource_show(id=kpi["resources"][1]["id"])["format"] == "CSV"
        with pytest.raises(ckanapi.NotFound):
            ckan.action.resource_show(id="7c2b0000-0000-4000-8000-000000000000")

    def test_q_with_field_and_free_text(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        by_name = ckan.action.package_search(q=f"name:{seeded['marburg']['name']}")
        assert [p["name"] for p in by_name["results"]] == [seeded["marburg"]["name"]]
        text = ckan.action.package_search(q=f"Feinstaub {seeded['tag']}")
        assert [p["name"] for p in text["results"]] == [seeded["marburg"]["name"]]

    def test_fq_or_negation_and_facets(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        tag = seeded["tag"]
        both = ckan.action.package_search(fq=f"tags:{tag} AND (groups:envi OR res_format:CSV)")
        assert both["count"] == 2
        not_marburg = ckan.action.package_search(fq=f"tags:{tag} -organization:marburg")
        assert [p["name"] for p in not_marburg["results"]] == [seeded["offenbach"]["name"]]
        facets = ckan.action.package_search(fq=f"tags:{tag}", rows=0, **{
            "facet.field": ["organization", "res_format"], "facet.limit": 1, "facet.mincount": 1})
        assert facets["results"] == []
        assert facets["facets"]["res_format"] == {"JSON": 2}
        assert len(facets["facets"]["organization"]) == 1

    def test_fl_returns_only_the_named_fields(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        found = ckan.action.package_search(fq=f"tags:{seeded['tag']}", fl="id,name", sort="name asc")
        assert [set(p) for p in found["results"]] == [{"id", "name"}, {"id", "name"}]

    def test_sort_rows_and_start(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        tag = seeded["tag"]
        names = [ckan.action.package_search(fq=f"tags:{tag}", sort="name desc", rows=1, start=i)["results"][0]["name"]
                 for i in (0, 1)]
        assert names == sorted([seeded["offenbach"]["name"], seeded["marburg"]["name"]], reverse=True)

    def test_kpi_datasets_are_found_by_organization_and_text(self, ckan: ckanapi.RemoteCKAN) -> None:
        found = ckan.action.package_search(fq="organization:wetzlar name:kpi-*", rows=100)
        assert found["count"] == 7
        assert {p["organization"]["name"] for p in found["results"]} == {"wetzlar"}

    def test_organizations(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        orgs = {o["name"]: o for o in ckan.action.organization_list(all_fields=True)}
        assert orgs["marburg"]["package_count"] >= 8  # 7 KPI datasets + the registered one
        org = ckan.action.organization_show(id="marburg", include_datasets=True)
        assert org["id"] == MARBURG
        assert seeded["marburg"]["name"] in {p["name"] for p in org["packages"]}
        assert ckan.action.organization_show(id=MARBURG)["name"] == "marburg"
        with pytest.raises(ckanapi.NotFound):
            ckan.action.organization_show(id="atlantis")

    def test_groups_tags_and_licences(self, ckan: ckanapi.RemoteCKAN, seeded: dict[str, Any]) -> None:
        assert len(ckan.action.group_list()) == 13
        envi = ckan.action.group_show(id="envi", include_datasets=True)
        assert seeded["marburg"]["name"] in {p["name"] for p in envi["packages"]}
        tag = ckan.action.tag_show(id=seeded["tag"], include_datasets=True)
        assert len(tag["packages"]) == 2
        with pytest.raises(ckanapi.NotFound):
            ckan.action.tag_show(id=f"kein-{seeded['tag']}")
        licences = {lic["id"]: lic for lic in ckan.action.license_list()}
        assert licences["http://dcat-ap.de/def/licenses/dl-by-de/2.0"]["od_conformance"] == "approved"

    def test_bad_fq_is_a_search_query_error(self, publisher: ServiceProcess) -> None:
        r = httpx.get(f"{publisher.url}/api/3/action/package_search", params={"fq": "organization:(marburg"})
        assert r.status_code == 409
        body = r.json()
        assert body["success"] is False
        assert body["error"]["__type"] == "Search Query Error"
        assert body["help"] == f"{publisher.url}/api/3/action/help_show?name=package_search"


class TestCkanapiCli:
    def test_dump_datasets_all(self, publisher: ServiceProcess, seeded: dict[str, Any], tmp_path: Path) -> None:
        out = tmp_path / "datasets.jsonl"
        cli = Path(sys.executable).parent / "ckanapi"
        result = subprocess.run([str(cli), "dump", "datasets", "--all", "-r", publisher.url, "-O", str(out),
                                 "-p", "2", "-q"], capture_output=True, text=True, timeout=240, check=False,
                                env={**os.environ, "PATH": f"{cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"})
        assert result.returncode == 0, result.stdout + result.stderr
        dumped = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        names = [d["name"] for d in dumped]
        listed = httpx.get(f"{publisher.url}/api/3/action/package_list").json()["result"]
        assert sorted(names) == listed
        assert {seeded["offenbach"]["name"], seeded["marburg"]["name"]} <= set(names)


def _harvest_search(base: str, fq_terms: list[str] | None = None) -> list[dict[str, Any]]:
    """`CKANHarvester._search_for_datasets`: the same URLs, paging and duplicate handling."""
    params = {"rows": "100", "start": "0", "sort": "id asc"}
    if fq_terms:
        params["fq"] = " ".join(fq_terms)
    packages: list[dict[str, Any]] = []
    ids: set[str] = set()
    previous = None
    while True:
        content = httpx.get(base + "/api/3/action/package_search?" + urlencode(params), timeout=60).text
        assert content != previous, "paging does not work"
        previous = content
        page = json.loads(content).get("result", {}).get("results", [])
        new = [p for p in page if p["id"] not in ids]
        ids |= {p["id"] for p in page}
        packages.extend(new)
        if not page:
            return packages
        params["start"] = str(int(params["start"]) + int(params["rows"]))


class TestCkanHarvesterRequests:
    def test_first_harvest_gets_every_dataset_once_in_id_order(
        self, publisher: ServiceProcess, seeded: dict[str, Any]
    ) -> None:
        packages = _harvest_search(publisher.url)
        ids = [p["id"] for p in packages]
        assert ids == sorted(ids)
        assert len(ids) == len(set(ids))
        listed = httpx.get(f"{publisher.url}/api/3/action/package_list").json()["result"]
        assert sorted(p["name"] for p in packages) == listed

    def test_organization_filters(self, publisher: ServiceProcess, seeded: dict[str, Any]) -> None:
        include = _harvest_search(publisher.url, ["organization:marburg OR organization:offenbach-am-main"])
        assert {p["organization"]["name"] for p in include} == {"marburg", "offenbach-am-main"}
        exclude = _harvest_search(publisher.url, ["-organization:marburg", "-organization:offenbach-am-main"])
        assert not {p["name"] for p in include} & {p["name"] for p in exclude}
        assert all((p["organization"] or {}).get("name") not in ("marburg", "offenbach-am-main") for p in exclude)
        everything = _harvest_search(publisher.url)
        assert len(include) + len(exclude) == len(everything)

    async def test_incremental_harvest_gets_what_changed_since_the_last_run(
        self, publisher: ServiceProcess, seeded: dict[str, Any], db: asyncpg.Connection
    ) -> None:
        old = seeded["marburg"]["name"]
        await db.execute("UPDATE portal_datasets SET modified_at = now() - interval '3 days' WHERE name = $1", old)
        last_run = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=1)
        since = (last_run - dt.timedelta(hours=1)).isoformat()
        changed = _harvest_search(publisher.url, [f"metadata_modified:[{since}Z TO *]"])
        names = {p["name"] for p in changed}
        assert seeded["offenbach"]["name"] in names
        assert old not in names
        assert all(p["metadata_modified"] >= since for p in changed)
        everything = _harvest_search(publisher.url)
        assert names == {p["name"] for p in everything if (p["metadata_modified"] or "") >= since}

    def test_remote_organization_and_group_lookups(self, publisher: ServiceProcess, seeded: dict[str, Any]) -> None:
        pkg = httpx.get(f"{publisher.url}/api/3/action/package_show",
                        params={"id": seeded["offenbach"]["name"]}).json()["result"]
        org = httpx.get(f"{publisher.url}/api/3/action/organization_show?id=" + pkg["owner_org"]).json()["result"]
        assert org["name"] == "offenbach-am-main"
        group = httpx.get(f"{publisher.url}/api/3/action/group_show?id=" + pkg["groups"][0]["id"]).json()
        assert group["result"]["name"] == "tran"
