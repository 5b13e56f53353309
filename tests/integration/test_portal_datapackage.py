"""A Frictionless Data Package for each hosted portal dataset, validated with `frictionless` against the files
the publisher (a process, real PostgreSQL) serves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from frictionless import Package

from kp.local import LocalStack, ServiceProcess
from services.publisher.portal import service
from tests.factories import OFFENBACH, portal_dataset

CSV = b"stelle;datum;anzahl\nMarktplatz;2024-05-01;1203\nBahnhof;2024-05-01;877\n"
JSON = b'{"stellen": 2}'


@pytest.fixture(scope="module")
def publisher(stack: LocalStack) -> Iterator[ServiceProcess]:
    with stack.running("publisher") as sp:
        yield sp


@pytest.fixture
async def hosted(publisher: ServiceProcess, db: asyncpg.Connection, unique: str) -> dict[str, Any]:
    key = await service.issue_key(db, f"dp-{unique}", [OFFENBACH])
    doc = portal_dataset(f"zaehlung-{unique}", title="Passantenzählung")
    async with httpx.AsyncClient(base_url=publisher.url, headers={"X-API-Key": key}) as c:
        assert (await c.post("/v1/portal/datasets", json=doc)).status_code == 201
        for filename, body in (("Zählung 2024.csv", CSV), ("stellen.json", JSON)):
            r = await c.put(f"/v1/portal/datasets/{doc['name']}/files/{filename}", content=body)
            assert r.status_code == 201, r.text
    return doc


async def _package(publisher: ServiceProcess, name: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=publisher.url) as c:
        return await c.get(f"/v1/portal/datasets/{name}/datapackage.json")


class TestDataPackage:
    async def test_package_of_the_hosted_files_is_valid(self, publisher: ServiceProcess,
                                                        hosted: dict[str, Any]) -> None:
        r = await _package(publisher, hosted["name"])
        assert r.status_code == 200
        descriptor = r.json()
        assert descriptor["name"] == hosted["name"]
        assert descriptor["licenses"][0]["path"] == hosted["licence"]
        by_format = {res["format"]: res for res in descriptor["resources"]}
        assert set(by_format) == {"csv", "json"}
        csv = by_format["csv"]
        assert csv["name"] == "z-hlung-2024.csv"
        assert csv["schema"]["fields"] == [{"name": "stelle", "type": "string"}, {"name": "datum", "type": "date"},
                                           {"name": "anzahl", "type": "integer"}]
        assert csv["bytes"] == len(CSV)
        # Frictionless reads every resource from the publisher and checks it against the descriptor
        report = await asyncio.to_thread(Package(descriptor).validate)
        assert report.valid, report.flatten(["type", "message"])

    async def test_a_descriptor_that_lies_about_the_file_is_invalid(
        self, publisher: ServiceProcess, hosted: dict[str, Any]
    ) -> None:
        descriptor = (await _package(publisher, hosted["name"])).json()
        csv = next(res for res in descriptor["resources"] if res["format"] == "csv")
        csv["schema"]["fields"][2]["type"] = "boolean"
        csv["bytes"] += 1
        report = await asyncio.to_thread(Package(descriptor).validate)
        assert not report.valid
        assert {"type-error", "byte-count"} <= {t for (t,) in report.flatten(["type"])}

    async def test_without_hosted_files_there_is_no_package(
        self, publisher: ServiceProcess, db: asyncpg.Connection, unique: str
    ) -> None:
        key = await service.issue_key(db, f"dp2-{unique}", [OFFENBACH])
        doc = portal_dataset(f"nur-links-{unique}")
        async with httpx.AsyncClient(base_url=publisher.url, headers={"X-API-Key": key}) as c:
            assert (await c.post("/v1/portal/datasets", json=doc)).status_code == 201
        r = await _package(publisher, doc["name"])
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/problem+json")
