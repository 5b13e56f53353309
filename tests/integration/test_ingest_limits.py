"""Ingest refuses bad strings, oversize ids and non-members per event, permanently, and keeps the rest."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import orjson
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from tests.factories import OFFENBACH, usage_event
from tests.ingest_keys import bearer, ingest_key, read_topic


@pytest.fixture(scope="module")
async def app(kafka_bootstrap: str, database_url: str) -> AsyncIterator[FastAPI]:
    # The default body limit (1 MiB) lets an event with a 1 MB id through to the per-event checks.
    app = create_app(IngestSettings(kafka_bootstrap=kafka_bootstrap, database_url=database_url, api_key_cache_s=0.0))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        yield app


@pytest.fixture(scope="module")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingest", timeout=60) as c:
        yield c


@pytest.fixture
async def key(database_url: str) -> str:
    return await ingest_key(database_url, OFFENBACH, "99999999")


class TestIngestLimits:
    async def test_bad_events_are_refused_by_name_and_the_valid_ones_of_the_batch_accepted(
        self, app: FastAPI, client: httpx.AsyncClient, key: str, kafka_bootstrap: str
    ) -> None:
        marker = f"m{uuid.uuid4().hex}"
        good = [usage_event(session=marker + "a"), usage_event(session=marker + "b")]
        nul = usage_event("usage.page.viewed", session=marker + "c",
                          data={"page": "/antrag\u0000x", "device": "desktop", "referrer": "search"})
        c1 = usage_event("usage.step.completed", session=marker + "d", data={"step": 1, "step_name": "Start\u0085"})
        # The session first, so that the bounded raw payload of its rejected record still holds the marker.
        huge_id = {"session": marker + "e", **usage_event(session=marker + "e", event_id="x" * 1_000_000)}
        stranger = usage_event(session=marker + "f", municipality="99999999")
        batch = [good[0], nul, c1, huge_id, stranger, good[1]]
        resp = await client.post("/v1/events", content=orjson.dumps(batch),
                                 headers={**bearer(key), "Content-Type": "application/json"})
        assert resp.status_code == 200, resp.text[:500]
        body = resp.json()
        assert body["accepted"] == [good[0]["id"], good[1]["id"]]
        rejected = {r["index"]: r for r in body["rejected"]}
        assert set(rejected) == {1, 2, 3, 4}
        assert {r["reason"] for r in rejected.values()} == {"invalid_event"}
        assert [e["type"] for e in rejected[1]["reasons"]] == ["string_forbidden_character"]
        assert rejected[1]["reasons"][0]["loc"][-1] == "page"
        assert [e["type"] for e in rejected[2]["reasons"]] == ["string_forbidden_character"]
        assert rejected[3]["id"] is None
        assert [e["type"] for e in rejected[3]["reasons"]] == ["uuid_parsing"]
        assert [e["type"] for e in rejected[4]["reasons"]] == ["unknown_municipality"]
        assert len(resp.content) < 20_000  # nothing of the huge id is echoed

        # Every refused event is in the rejected topic, bounded; the accepted ones are on the events topic.
        records = await read_topic(kafka_bootstrap, USAGE_REJECTED.name, lambda v: marker in v.get("raw", ""), 4)
        assert sorted(r["index"] for r in records) == [1, 2, 3, 4]
        assert all(len(orjson.dumps(r)) < 64_000 for r in records)
        events = await read_topic(kafka_bootstrap, USAGE_EVENTS.name,
                                  lambda v: str(v.get("session", "")).startswith(marker), 2)
        assert {e["id"] for e in events} == {good[0]["id"], good[1]["id"]}

        # Refusing data is no infrastructure failure: the producer was kept.
        assert app.state.sink.replacements == 0

    async def test_a_huge_id_is_refused_the_same_way_on_every_retry(self, client: httpx.AsyncClient, key: str) -> None:
        event = usage_event(event_id="7" * 900_000)
        answers = []
        for _ in range(2):
            resp = await client.post("/v1/events", content=orjson.dumps([event]),
                                     headers={**bearer(key), "Content-Type": "application/json"})
            answers.append((resp.status_code, resp.json()["rejected_count"], resp.json()["accepted"]))
        assert answers == [(200, 1, []), (200, 1, [])]

    async def test_ndjson_line_with_nul_is_refused_alone(self, client: httpx.AsyncClient, key: str) -> None:
        good = usage_event()
        bad = usage_event("usage.step.completed", data={"step": 1, "step_name": "A\u0000"})
        resp = await client.post("/v1/events", content=orjson.dumps(good) + b"\n" + orjson.dumps(bad),
                                 headers={**bearer(key), "Content-Type": "application/x-ndjson"})
        assert resp.json()["accepted"] == [good["id"]]
        assert resp.json()["rejected"][0]["reasons"][0]["type"] == "string_forbidden_character"
