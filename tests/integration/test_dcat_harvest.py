"""The catalog as CKAN portals harvest it: ckanext-dcat 2.4.4's `RDFParser` (profile `euro_dcat_ap_3`).

The parser runs in the harvester environment `.venv-ckan` (CKAN 2.12 + ckanext-dcat, `make setup`), against the
publisher as a process, for every serialisation, following the Hydra pages; every field a harvester keeps
must arrive.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from kp.local import LocalStack, ServiceProcess
from services.publisher.portal import service
from tests.factories import MARBURG, portal_dataset

ROOT = Path(__file__).resolve().parents[2]
HARVESTER_PYTHON = ROOT / ".venv-ckan" / "bin" / "python"
PARSE = ROOT / "tests" / "harvester" / "dcat_parse.py"
PAGE_SIZE = 20
FIRST_DAY = dt.datetime(2020, 2, 1, 12, tzinfo=dt.UTC)  # before any day other tests write
GEOCODING = "http://dcat-ap.de/def/politicalGeocoding/"


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    if not HARVESTER_PYTHON.exists():
        pytest.skip("the harvester environment .venv-ckan is missing; `make setup` creates it")
    with stack.running("publisher", {"KP_CATALOG_PAGE_SIZE": str(PAGE_SIZE)}, public_url=True) as sp:
        yield sp


@pytest.fixture(scope="module")
async def registered(publisher: ServiceProcess, database_url: str) -> dict[str, Any]:
    """A registered Marburg dataset with temporal coverage and two linked distributions."""
    conn = await asyncpg.connect(database_url)
    try:
        key = await service.issue_key(conn, "dcat-harvest", [MARBURG])
        # three days of one KPI of Marburg, under a service key only this module uses
        await conn.executemany(
            """INSERT INTO kpi_values (granularity, period_start, municipality, service, metric, dimension, value)
               VALUES ('day', $1, $2, '99999999999902', 'page_views', '', 7) ON CONFLICT DO NOTHING""",
            [(FIRST_DAY + dt.timedelta(days=d), MARBURG) for d in range(3)])
    finally:
        await conn.close()
    doc = portal_dataset(municipality=MARBURG, title="Radverkehrszählung", distributions=[
        {"title": "Zählstellen (JSON)", "access_url": "https://example.org/rad.json", "format": "JSON"},
        {"title": "Zählstellen (CSV)", "access_url": "https://example.org/rad.csv",
         "download_url": "https://example.org/rad-download.csv", "format": "CSV",
         "licence": "http://dcat-ap.de/def/licenses/cc-by/4.0"},
    ])
    async with httpx.AsyncClient(base_url=publisher.url) as client:
        r = await client.post("/v1/portal/datasets", json=doc, headers={"X-API-Key": key})
    assert r.status_code == 201, r.text
    return doc


def _harvest(url: str, fmt: str) -> dict[str, Any]:
    result = subprocess.run([str(HARVESTER_PYTHON), str(PARSE), url, fmt], capture_output=True, text=True,
                            timeout=280, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _extras(d: dict[str, Any]) -> dict[str, str]:
    return {e["key"]: e["value"] for e in d["extras"]}


@pytest.mark.parametrize(("fmt", "suffix"), [("turtle", "ttl"), ("xml", "rdf"), ("json-ld", "jsonld")])
def test_every_dataset_arrives_with_its_fields(
    publisher: ServiceProcess, registered: dict[str, Any], fmt: str, suffix: str
) -> None:
    harvested = _harvest(f"{publisher.url}/catalog.{suffix}", fmt)
    datasets = harvested["datasets"]
    names = httpx.get(f"{publisher.url}/api/3/action/package_list").json()["result"]
    published_with_distributions = [
        n for n in names
        if httpx.get(f"{publisher.url}/api/3/action/package_show", params={"id": n}).json()["result"]["resources"]
    ]
    # every page was followed: all datasets, each once
    assert len(harvested["pages"]) == -(-len(published_with_distributions) // PAGE_SIZE)
    uris = [_extras(d)["uri"] for d in datasets]
    assert len(uris) == len(set(uris)) == len(published_with_distributions)

    for d in datasets:
        extras = _extras(d)
        name = extras["uri"].rsplit("/", 1)[-1]
        assert d["title"], name
        assert d["notes"], name
        assert extras["publisher_name"], name
        assert extras["contact_name"], name
        assert extras.get("contact_email") or extras.get("contact_url"), name
        assert extras["spatial_uri"].startswith(GEOCODING), name
        assert extras["spatial_text"], name
        assert extras["issued"], name
        assert extras.get("modified") or name.startswith("kpi-"), name
        assert json.loads(extras["theme"]), name
        assert d["resources"], name
        for r in d["resources"]:
            assert r["url"].startswith("http"), name
            assert r["format"].startswith("http://publications.europa.eu/resource/authority/file-type/"), name
            assert r["license"].startswith("http://dcat-ap.de/def/licenses/"), name
            assert r["availability"].endswith("/planned-availability/AVAILABLE"), name

    mine = next(d for d in datasets if _extras(d)["uri"].endswith("/" + registered["name"]))
    extras = _extras(mine)
    assert mine["title"] == registered["title"]
    assert mine["notes"] == registered["description"]
    assert extras["spatial_uri"] == GEOCODING + "municipalityKey/" + MARBURG
    assert extras["spatial_text"] == "Marburg"
    assert extras["publisher_name"] == "Marburg"
    assert extras["contact_email"] == registered["contact_point"]["email"]
    assert (extras["temporal_start"], extras["temporal_end"]) == ("2024-01-01", "2024-12-31")
    assert json.loads(extras["theme"]) == registered["themes"]
    by_url = {r["url"]: r for r in mine["resources"]}
    assert set(by_url) == {"https://example.org/rad.json", "https://example.org/rad-download.csv"}
    assert by_url["https://example.org/rad-download.csv"]["license"] == "http://dcat-ap.de/def/licenses/cc-by/4.0"
    assert by_url["https://example.org/rad.json"]["license"] == registered["licence"]

    usage = _extras(next(d for d in datasets if _extras(d)["uri"].endswith(f"/kpi-usage-{MARBURG}")))
    # the distributions serve the 30 days up to the last day with data: that is the coverage at least
    end = dt.date.fromisoformat(usage["temporal_end"])
    assert dt.date.fromisoformat(usage["temporal_start"]) <= end - dt.timedelta(days=30)
    assert dt.date.fromisoformat(usage["temporal_start"]) <= FIRST_DAY.date()
    assert usage["issued"].startswith(FIRST_DAY.date().isoformat())

    hessen = next(d for d in datasets if _extras(d)["uri"].endswith("/kpi-usage-hessen"))
    assert _extras(hessen)["spatial_text"] == "Hessen"
    assert _extras(hessen)["spatial_uri"] == GEOCODING + "stateKey/06"
