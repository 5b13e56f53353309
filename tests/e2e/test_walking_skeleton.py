"""HTTP in, open data out: usage events posted to ingest become KPIs in the publisher, exactly once."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from kp.local import ServiceProcess
from services.aggregator.settings import AggregatorSettings
from shared import ckm
from tests.e2e.conftest import TEST_MUNICIPALITIES
from tests.factories import application_submitted, usage_event
from tests.ingest_keys import bearer, ingest_key
from tests.waiting import eventually

WOHNSITZ = "99115005104000"


def _random_ags() -> str:
    # An AGS no other test uses (an extra member of the system), so counts are exact for this test alone.
    return TEST_MUNICIPALITIES.pop()


class TestUsageToOpenData:
    async def test_posted_events_appear_as_kpis_once_even_when_posted_twice(
        self, system: dict[str, ServiceProcess], database_url: str
    ) -> None:
        ags = _random_ags()
        key = await ingest_key(database_url, ags)
        batch = [usage_event("usage.session.started", municipality=ags) for _ in range(7)]
        batch += [usage_event("usage.session.submitted", municipality=ags) for _ in range(6)]
        batch += [usage_event("usage.session.abandoned", municipality=ags) for _ in range(5)]
        async with httpx.AsyncClient(base_url=system["ingest"].url, timeout=30, headers=bearer(key)) as client:
            for _ in range(2):  # a client retry of the same batch must not double-count
                resp = await client.post("/v1/events", json=batch)
                assert resp.status_code == 200, resp.text
                assert len(resp.json()["accepted"]) == len(batch)

        async def counts() -> dict[str, int]:
            async with httpx.AsyncClient(base_url=system["publisher"].url, timeout=10) as client:
                r = await client.get("/v1/kpis/totals", params={"municipality": ags, "service": WOHNSITZ,
                                                                "family": "funnel"})
                r.raise_for_status()
                return {row["metric"]: row["value"] for row in r.json()["items"]
                        if row["metric"].startswith("sessions_")}

        # each total is the true count perturbed at the sum of its events' record keys (Cell Key Method)
        secret = AggregatorSettings().ckm_key()
        expected = {
            f"sessions_{t.rsplit('.', 1)[1]}": ckm.perturb(n, ckm.cell_key(
                [ckm.record_key(secret, uuid.UUID(e["id"])) for e in batch if e["type"] == t]))
            for t, n in Counter(e["type"] for e in batch).items()
        }
        assert await eventually(counts, lambda c: c == expected, timeout=60) == expected

    async def test_bad_events_are_rejected_with_paths_and_good_ones_accepted(
        self, system: dict[str, ServiceProcess], database_url: str
    ) -> None:
        key = await ingest_key(database_url)
        good = usage_event()
        bad = usage_event()
        bad["municipality"] = "123"
        async with httpx.AsyncClient(base_url=system["ingest"].url, timeout=30, headers=bearer(key)) as client:
            resp = await client.post("/v1/events", json=[good, bad])
        body: dict[str, Any] = resp.json()
        assert body["accepted"] == [good["id"]]
        assert body["rejected"][0]["index"] == 1
        assert body["rejected"][0]["reasons"][0]["loc"][-1] == "municipality"


class TestApplicationToWorkflow:
    async def test_submitted_application_opens_case_and_is_acknowledged(
        self, system: dict[str, ServiceProcess], kafka_bootstrap: str, db: asyncpg.Connection
    ) -> None:
        event = application_submitted()
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            for _ in range(2):  # duplicate delivery is ignored by the inbox
                await producer.send_and_wait("application.events.v1", orjson.dumps(event), key=b"k")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            "workflow.events.v1", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest",
            group_id=f"test-{uuid.uuid4().hex}",
        )
        await consumer.start()
        seen: list[dict[str, Any]] = []
        try:
            async def mine() -> list[dict[str, Any]]:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for r in records:
                        payload = orjson.loads(r.value)
                        if payload["application_id"] == event["application_id"]:
                            seen.append(payload)
                return seen

            await eventually(mine, lambda s: {e["type"] for e in s} >= {"workflow.case.opened",
                                                                          "workflow.step.completed"}, timeout=60)
        finally:
            await consumer.stop()
        case_id = seen[0]["case_id"]
        async with httpx.AsyncClient(base_url=system["workflow"].url, timeout=10) as client:
            resp = await client.get(f"/v1/cases/{case_id}")
        assert resp.status_code == 401  # case details need a clerk or operator token
        assert resp.headers["content-type"].startswith("application/problem+json")
        case = await db.fetchrow("SELECT application_id, state, current_step FROM wf_cases WHERE case_id = $1",
                                 uuid.UUID(case_id))
        assert case is not None
        assert case["application_id"] == event["application_id"]
        # no documents came with it: after the Eingangsbestätigung the case waits for them (Nachforderung)
        assert (case["state"], case["current_step"]) == ("waiting", "warten_unterlagen")
        assert len([e for e in seen if e["type"] == "workflow.case.opened"]) == 1
