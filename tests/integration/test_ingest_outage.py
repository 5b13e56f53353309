"""Kafka down: ingest answers 503 with Retry-After and accepts nothing; after the broker is back, the
client's retries (same ids) land every event exactly once by id. Uses a broker of its own, not the session's."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from kp.stack import KafkaNode
from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.client import IngestClient
from shared.kafka import USAGE_EVENTS, USAGE_REJECTED, ensure_topics
from tests.factories import OFFENBACH, usage_event
from tests.ingest_keys import bearer, ingest_key, read_topic

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
async def own_kafka() -> AsyncIterator[KafkaNode]:
    node = KafkaNode(ROOT / ".run" / f"ingest-outage-{uuid.uuid4().hex[:8]}" / "kafka")
    await asyncio.to_thread(node.start)
    try:
        await ensure_topics(node.bootstrap)
        yield node
    finally:
        await asyncio.to_thread(node.stop)
        shutil.rmtree(node.root.parent, ignore_errors=True)


class TestBrokerOutage:
    async def test_503_while_down_then_client_retries_land_every_event_once(
        self, own_kafka: KafkaNode, database_url: str
    ) -> None:
        from asgi_lifespan import LifespanManager

        key = await ingest_key(database_url, OFFENBACH)
        settings = IngestSettings(kafka_bootstrap=own_kafka.bootstrap, database_url=database_url,
                                  produce_timeout_s=3.0, retry_after_s=1)
        app = create_app(settings)
        before = [usage_event() for _ in range(40)]
        during = [usage_event() for _ in range(60)]
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=60) as http:
                ok = await http.post("/v1/events", json=before, headers=bearer(key))
                assert ok.status_code == 200
                assert len(ok.json()["accepted"]) == 40

                await asyncio.to_thread(own_kafka.stop)
                down = await http.post("/v1/events", json=during, headers=bearer(key))
                assert down.status_code == 503, down.text
                assert down.headers["retry-after"] == "1"
                assert down.json()["code"] == "event_store_unavailable"
                assert "accepted" not in down.json()

                client = IngestClient("http://ingest", key, transport=transport, batch_size=25, max_attempts=60,
                                      backoff_max_s=1.0)
                sending = asyncio.create_task(client.send(during))
                await asyncio.sleep(0)  # let the first attempts fail against the stopped broker
                await asyncio.to_thread(own_kafka.start)
                result = await asyncio.wait_for(sending, timeout=240)
                await client.aclose()
                # The producer that failed during the outage was replaced (a fresh idempotent producer id,
                # so no sequence gap from expired batches blocks the partitions afterwards).
                assert app.state.sink.replacements >= 1
                after = [usage_event() for _ in range(10)]
                again = await http.post("/v1/events", json=after, headers=bearer(key))
                assert again.status_code == 200, again.text
                before += after
            assert sorted(result.accepted) == sorted(e["id"] for e in during)
            assert result.rejected == []
            assert result.attempts > 3  # the client really had to retry

        sent = {e["id"] for e in before + during}
        on_topic = await read_topic(own_kafka.bootstrap, USAGE_EVENTS.name, lambda v: v.get("id") in sent,
                                    len(sent), timeout=60)
        # Retries may put an id on the topic twice (dedup is downstream); no id is lost, none is invented.
        assert {e["id"] for e in on_topic} == sent
        consumer = AIOKafkaConsumer(bootstrap_servers=own_kafka.bootstrap)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(
                [TopicPartition(USAGE_REJECTED.name, p) for p in range(USAGE_REJECTED.partitions)])
        finally:
            await consumer.stop()
        assert sum(ends.values()) == 0  # nothing was rejected on the way
