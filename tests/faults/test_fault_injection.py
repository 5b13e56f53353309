"""Fault injection: kill, stop and duplicate, then prove the counts are exact (accepted == counted)."""

from __future__ import annotations

import asyncio
import uuid

import orjson
from aiokafka import AIOKafkaProducer

from bench.load import Load, LoadConfig, LoadResult
from bench.probes import aggregator_lag, counted, end_offsets
from shared.kafka import USAGE_EVENTS, USAGE_REJECTED
from tests import exactly
from tests.faults.conftest import WOHNSITZ, FaultStack, read_partition
from tests.ingest_keys import read_topic
from tests.waiting import eventually


def load_for(fs: FaultStack, key: str, ags: str, *, rate: float, seconds: float,
             max_events: int | None = None) -> Load:
    """Simulator traffic for the test's own municipality; failed batches are re-sent with the same ids."""
    return Load(LoadConfig(url=fs.ingest.url, rate=rate, seconds=seconds, max_events=max_events, batch_size=50,
                           concurrency=4, seed=uuid.uuid4().int % 10**6, duplicate_share=0.05, api_key=key,
                           pair=(ags, WOHNSITZ), max_attempts=80, retry_grace_s=45))


async def wait_accepted(load: Load, at_least: int, timeout: float = 30.0) -> None:
    await exactly.wait_accepted(load, at_least, timeout)


async def assert_exact(stack: FaultStack, ags: str, result: LoadResult) -> None:
    await exactly.assert_exact(stack, ags, result, count_timeout=90, lag_timeout=60)


class TestIngestKilled:
    async def test_kill_9_mid_batch_then_client_retries_count_each_event_once(
        self, healthy: FaultStack, api_key: str, own_ags: str
    ) -> None:
        load = load_for(healthy, api_key, own_ags, rate=400, seconds=10)
        task = asyncio.create_task(load.run())
        await wait_accepted(load, 800)
        healthy.ingest.kill()
        await asyncio.to_thread(healthy.restart, "ingest")
        result = await task

        assert result.retries > 0, "the kill did not hit any request in flight"
        await assert_exact(healthy, own_ags, result)


class TestBrokerRestart:
    async def test_broker_stop_gives_503_with_retry_after_then_counts_are_exact(
        self, healthy: FaultStack, api_key: str, own_ags: str
    ) -> None:
        load = load_for(healthy, api_key, own_ags, rate=300, seconds=20)
        task = asyncio.create_task(load.run())
        try:
            await wait_accepted(load, 600)
            await asyncio.to_thread(healthy.kafka.stop)

            async def answered_503() -> int:
                return load.result.statuses.get("503", 0)

            await eventually(answered_503, lambda n: n > 0, timeout=60, interval=0.2)
            await asyncio.to_thread(healthy.kafka.start)
            result = await task

            assert result.retry_after_seen > 0, result.statuses
            await assert_exact(healthy, own_ags, result)
        finally:
            task.cancel()
            # Leave a fresh ingest for the next scenario, whatever state the outage left this one in.
            await asyncio.to_thread(healthy.ingest.stop)


class TestPostgresRestart:
    async def test_database_stop_under_load_aggregator_resumes_and_counts_are_exact(
        self, healthy: FaultStack, api_key: str, own_ags: str
    ) -> None:
        load = load_for(healthy, api_key, own_ags, rate=300, seconds=15)
        task = asyncio.create_task(load.run())
        await wait_accepted(load, 600)
        await asyncio.to_thread(healthy.postgres.stop, "immediate")
        # Ingest keeps accepting into Kafka (its key is cached) while the aggregator cannot commit.
        before = len(load.result.accepted_ids)
        await wait_accepted(load, before + 300)
        await asyncio.to_thread(healthy.postgres.start)
        result = await task

        await assert_exact(healthy, own_ags, result)


class TestDuplicateSegment:
    async def test_reproduced_offset_range_is_counted_once(
        self, healthy: FaultStack, api_key: str, own_ags: str
    ) -> None:
        before = await end_offsets(healthy.bootstrap)
        load = load_for(healthy, api_key, own_ags, rate=1000, seconds=20, max_events=600)
        result = await load.run()
        await assert_exact(healthy, own_ags, result)
        after = await end_offsets(healthy.bootstrap)
        total_before = await counted(healthy.database_url)

        # The whole segment our events went to (all of one partition's new offsets), produced again verbatim.
        partition = max(after, key=lambda p: after[p] - before.get(p, 0))
        records = await read_partition(healthy.bootstrap, USAGE_EVENTS.name, partition, before.get(partition, 0),
                                       after[partition])
        assert len(records) == after[partition] - before.get(partition, 0) >= 600
        producer = AIOKafkaProducer(bootstrap_servers=healthy.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(USAGE_EVENTS.name, value=r.value, key=r.key,
                                                       partition=partition) for r in records])
        finally:
            await producer.stop()

        async def lag() -> int:
            return await aggregator_lag(healthy.bootstrap, healthy.database_url)

        await eventually(lag, lambda n: n == 0, timeout=60, interval=0.25)
        assert await counted(healthy.database_url, own_ags) == len(result.accepted_ids)
        assert await counted(healthy.database_url) == total_before


class TestPoisonEvent:
    async def test_poison_lands_in_rejected_topic_and_processing_goes_on(
        self, healthy: FaultStack, api_key: str, own_ags: str
    ) -> None:
        marker = uuid.uuid4().hex
        not_json = f"\xff{{ not json {marker}".encode("latin-1")
        bad_event = orjson.dumps({"id": str(uuid.uuid4()), "type": "usage.session.started", "source": "poison",
                                  "time": "2026-01-01T00:00:00+00:00", "municipality": own_ags,
                                  "service": WOHNSITZ, "session": f"poison{marker}", "unexpected": marker,
                                  "data": {"channel": "web", "device": "desktop"}})
        key = f"{own_ags}:{WOHNSITZ}".encode()
        producer = AIOKafkaProducer(bootstrap_servers=healthy.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(USAGE_EVENTS.name, value=not_json, key=key)
            await producer.send_and_wait(USAGE_EVENTS.name, value=bad_event, key=key)
        finally:
            await producer.stop()
        # Valid events behind the poison, in the same partition (same key), must still be counted.
        load = load_for(healthy, api_key, own_ags, rate=1000, seconds=20, max_events=300)
        result = await load.run()
        await assert_exact(healthy, own_ags, result)

        rejected = await read_topic(healthy.bootstrap, USAGE_REJECTED.name,
                                    lambda v: v.get("origin") == "aggregator" and marker in v.get("raw", ""),
                                    count=2, timeout=30)
        assert sorted(r["reason"] for r in rejected) == ["invalid_event", "invalid_json"]
        assert all(r["topic"] == USAGE_EVENTS.name and r["offset"] is not None for r in rejected)

