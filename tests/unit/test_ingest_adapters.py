"""The Kafka sink wired to the ingest service: which records reach which topic and partition, with a fake producer."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from services.ingest import service
from services.ingest.adapters import KafkaSink
from services.ingest.service import ApiKey, Item, Policy
from shared.events import usage_event_adapter
from tests.factories import MARBURG, OFFENBACH, usage_event

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
POLICY = Policy(clock_skew=timedelta(minutes=5), late_horizon=timedelta(days=7))
KEY = ApiKey(id=uuid.uuid4(), platform="p", municipalities=frozenset({OFFENBACH}), rate_per_s=1.0, burst=2)
TOPIC, REJECTED = "usage.events.v1", "usage.events.rejected.v1"
PARTITIONS = {TOPIC: {0, 1, 2, 3, 4, 5}, REJECTED: {0, 1, 2}}


class FakeProducer:
    """Records what is sent; every send is acknowledged at once, or fails with `fail`."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.started = self.stopped = False
        self.fail = fail

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def partitions_for(self, topic: str) -> set[int]:
        return PARTITIONS[topic]

    async def send(self, topic: str, value: bytes, key: bytes, partition: int) -> asyncio.Future[Any]:
        ack: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if self.fail is not None:
            ack.set_exception(self.fail)
        else:
            self.sent.append((topic, key, value, partition))
            ack.set_result(None)
        return ack


def _sink(*producers: FakeProducer) -> KafkaSink:
    made = iter(producers)
    return KafkaSink(lambda: next(made), TOPIC, REJECTED, timeout_s=5)


class TestKafkaSink:
    async def test_accepted_event_and_rejection_reach_their_topics_on_the_key_partition(self) -> None:
        producer = FakeProducer()
        sink = _sink(producer)
        await sink.start()
        good, bad = usage_event(time=NOW), usage_event(time=NOW, municipality=MARBURG)
        await service.ingest([Item(0, good, good), Item(1, bad, bad)], KEY, sink, POLICY, now=NOW)

        (topic, key, value, partition), (r_topic, r_key, r_value, r_partition) = producer.sent
        assert (topic, key) == (TOPIC, f"{OFFENBACH}:{good['service']}".encode())
        assert usage_event_adapter.validate_json(value).id == uuid.UUID(good["id"])
        assert partition == DefaultPartitioner()(key, sorted(PARTITIONS[TOPIC]), sorted(PARTITIONS[TOPIC]))
        assert r_topic == REJECTED
        assert orjson.loads(r_value)["event_id"] == bad["id"]
        assert r_partition in PARTITIONS[REJECTED]
        assert r_key

    async def test_failed_write_replaces_the_producer(self) -> None:
        broken, fresh = FakeProducer(fail=KafkaTimeoutError()), FakeProducer()
        sink = _sink(broken, fresh)
        event = usage_event(time=NOW)
        with pytest.raises(KafkaTimeoutError):
            await service.ingest([Item(0, event, event)], KEY, sink, POLICY, now=NOW)
        await service.ingest([Item(0, event, event)], KEY, sink, POLICY, now=NOW)
        await sink.stop()
        assert (sink.replacements, broken.stopped, [s[0] for s in fresh.sent]) == (1, True, [TOPIC])

    async def test_record_too_large_keeps_the_producer(self) -> None:
        producer = FakeProducer(fail=MessageSizeTooLargeError())
        sink = _sink(producer)
        event = usage_event(time=NOW)
        with pytest.raises(MessageSizeTooLargeError):
            await service.ingest([Item(0, event, event)], KEY, sink, POLICY, now=NOW)
        assert (sink.replacements, producer.stopped) == (0, False)
