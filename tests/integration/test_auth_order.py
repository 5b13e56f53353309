"""Ingest and the portal's write API authenticate before they read or validate a body (real Kafka and DB)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from services.ingest.app import create_app as create_ingest
from services.ingest.settings import IngestSettings
from services.publisher.app import create_app as create_publisher
from services.publisher.settings import PublisherSettings
from services.workflow.api import api_routes

WRITES = {"POST", "PUT", "PATCH", "DELETE"}
INVALID_BODIES = [b"{not json", b'[{"id": "x", "page": "\\u0000"}]', b"\x00\xff", b'{"name": 1}']
# Write routes that anyone may call: the CKAN Action API answers POST for reads, as CKAN does; the web tracker's
# collect endpoint is called by browsers with a public site token and checked by Origin instead (docs/tracker.md).
PUBLIC_WRITES = {"/api/3/action/{action}", "/api/action/{action}", "/v1/collect"}


def _writes(app: FastAPI) -> list[tuple[str, str]]:
    calls = []
    for route in api_routes(app.routes):
        if route.path in PUBLIC_WRITES:
            continue
        for method in sorted((route.methods or set()) & WRITES):
            calls.append((method, re.sub(r"\{[^}]+\}", "x-1", route.path)))
    return calls


@pytest.fixture(scope="module")
async def ingest(kafka_bootstrap: str, database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_ingest(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingest"
    ) as client:
        yield app, client


@pytest.fixture(scope="module")
async def publisher(database_url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_publisher(PublisherSettings(database_url=database_url, public_base_url="https://od.example.org"))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://publisher"
    ) as client:
        yield app, client


async def _assert_401_everywhere(app: FastAPI, client: httpx.AsyncClient, body: bytes) -> None:
    calls = _writes(app)
    assert calls, "no write routes found"
    for method, path in calls:
        for headers in ({}, {"Authorization": "Bearer kpk_unknown"}):
            resp = await client.request(method, path, content=body,
                                        headers={**headers, "Content-Type": "application/json"})
            assert resp.status_code == 401, (method, path, resp.status_code, resp.text[:200])
            assert resp.headers["content-type"].startswith("application/problem+json")


class TestAuthenticationBeforeBody:
    @pytest.mark.parametrize("body", INVALID_BODIES)
    async def test_ingest_answers_401_whatever_the_body(
        self, ingest: tuple[FastAPI, httpx.AsyncClient], body: bytes
    ) -> None:
        await _assert_401_everywhere(*ingest, body)

    @pytest.mark.parametrize("body", INVALID_BODIES)
    async def test_portal_writes_answer_401_whatever_the_body(
        self, publisher: tuple[FastAPI, httpx.AsyncClient], body: bytes
    ) -> None:
        await _assert_401_everywhere(*publisher, body)

    async def test_the_write_routes_are_the_expected_ones(
        self, ingest: tuple[FastAPI, httpx.AsyncClient], publisher: tuple[FastAPI, httpx.AsyncClient]
    ) -> None:
        assert {p for _, p in _writes(ingest[0])} >= {"/v1/events", "/v1/platforms/x-1/events"}
        assert {p for _, p in _writes(publisher[0])} >= {"/v1/portal/datasets", "/v1/portal/datasets/x-1"}
