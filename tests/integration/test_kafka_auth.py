"""Kafka authentication: the services work against a broker that requires SASL/SCRAM-SHA-512 logins
(as Strimzi's KafkaUser gives them in Kubernetes), and a wrong password keeps a service unready."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from kp.local import LocalStack
from kp.stack import KafkaNode
from shared.kafka import ensure_topics
from shared.settings import KPSettings
from tests.factories import usage_event
from tests.ingest_keys import bearer, ingest_key
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
USERS = {"kp-ingest": uuid.uuid4().hex, "kp-aggregator": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def scram_kafka() -> Iterator[KafkaNode]:
    node = KafkaNode(ROOT / ".run" / f"scram-{uuid.uuid4().hex[:8]}", scram_users=USERS)
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.root, ignore_errors=True)


def _sasl_env(node: KafkaNode, user: str, password: str) -> dict[str, str]:
    return {"KP_KAFKA_BOOTSTRAP": node.sasl_bootstrap, "KP_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512", "KP_KAFKA_SASL_USERNAME": user,
            "KP_KAFKA_SASL_PASSWORD": password}


class TestScramAuthentication:
    async def test_ingest_and_aggregator_count_events_through_an_authenticated_broker(
        self, scram_kafka: KafkaNode, stack: LocalStack, database_url: str, db: asyncpg.Connection
    ) -> None:
        admin = KPSettings.model_validate({
            "kafka_bootstrap": scram_kafka.sasl_bootstrap, "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_username": "kp-ingest", "kafka_sasl_password": USERS["kp-ingest"],
        })
        await ensure_topics(scram_kafka.sasl_bootstrap, client_options=admin.kafka_client_options())
        ags = "98" + f"{uuid.uuid4().int % 10**6:06d}"
        group = f"kp-aggregator-{uuid.uuid4().hex[:8]}"
        member = {"KP_EXTRA_MUNICIPALITIES": ags}  # a municipality of this test alone, accepted as a member
        ingest = stack.service("ingest", {**_sasl_env(scram_kafka, "kp-ingest", USERS["kp-ingest"]), **member})
        aggregator = stack.service("aggregator", {
            **_sasl_env(scram_kafka, "kp-aggregator", USERS["kp-aggregator"]), **member,
            "KP_CONSUMER_GROUP": group, "KP_WORKFLOW_CONSUMER_GROUP": f"{group}-wf",
        })
        ingest.start()
        aggregator.start()
        try:
            ingest.wait_ready()
            aggregator.wait_ready()
            key = await ingest_key(database_url, ags)
            batch = [usage_event("usage.session.started", municipality=ags) for _ in range(6)]
            async with httpx.AsyncClient(base_url=ingest.url, timeout=30, headers=bearer(key)) as client:
                resp = await client.post("/v1/events", json=batch)
            assert resp.status_code == 200, resp.text
            assert len(resp.json()["accepted"]) == 6

            async def counted() -> int:
                value = await db.fetchval(
                    """SELECT coalesce(sum(value), 0) FROM kpi_values WHERE municipality = $1
                       AND granularity = 'day' AND metric = 'sessions_started'""", ags)
                return int(value)

            assert await eventually(counted, lambda n: n == 6, timeout=60) == 6
        finally:
            ingest.stop()
            aggregator.stop()

    async def test_wrong_password_is_refused(self, scram_kafka: KafkaNode, stack: LocalStack) -> None:
        ingest = stack.service("ingest", _sasl_env(scram_kafka, "kp-ingest", "not-the-password"))
        ingest.start()
        try:
            async def ready_status() -> int | None:
                if ingest.proc is not None and ingest.proc.poll() is not None:
                    return -1  # refused to start: authentication failed at connect
                try:
                    async with httpx.AsyncClient(timeout=5) as client:
                        return (await client.get(f"{ingest.url}/readyz")).status_code
                except httpx.HTTPError:
                    return None

            status = await eventually(ready_status, lambda s: s in (-1, 503), timeout=60)
            assert status in (-1, 503)
        finally:
            ingest.stop()
