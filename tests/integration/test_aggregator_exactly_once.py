"""Exactly-once KPIs through real Kafka and PostgreSQL: duplicates, kill -9, broker restart, rebalance.

Each test gets its own topics, consumer groups and municipality (AGS), so totals are exact for that test alone.
The aggregator runs as a real process (`python -m services.aggregator`).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from kp.local import LocalStack, ServiceProcess
from kp.stack import KafkaNode, PostgresNode
from shared.db import migrate
from shared.kafka import Topic, ensure_topics, make_producer
from tests.factories import usage_event
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Lane:
    """One test's private slice of the system: topics, consumer groups, municipality, services."""

    stack: LocalStack
    unique: str
    bootstrap: str
    ags: str
    services: list[str]

    @property
    def usage_topic(self) -> str:
        return f"usage.events.test-{self.unique}"

    @property
    def workflow_topic(self) -> str:
        return f"workflow.events.test-{self.unique}"

    @property
    def rejected_topic(self) -> str:
        return f"usage.events.rejected.test-{self.unique}"

    @property
    def env(self) -> dict[str, str]:
        return {
            "KP_KAFKA_BOOTSTRAP": self.bootstrap,
            "KP_USAGE_TOPIC": self.usage_topic, "KP_WORKFLOW_TOPIC": self.workflow_topic,
            "KP_REJECTED_TOPIC": self.rejected_topic,
            "KP_CONSUMER_GROUP": f"agg-{self.unique}", "KP_WORKFLOW_CONSUMER_GROUP": f"agg-wf-{self.unique}",
            "KP_MAX_BATCH_RECORDS": "200", "KP_LOG_LEVEL": "WARNING", "KP_LAG_REFRESH_INTERVAL_S": "0.5",
            "KP_EXTRA_MUNICIPALITIES": self.ags, "KP_EXTRA_SERVICES": ",".join(self.services),
        }

    async def create_topics(self) -> None:
        await ensure_topics(self.bootstrap, (Topic(self.usage_topic, 4), Topic(self.workflow_topic, 2),
                                             Topic(self.rejected_topic, 1)))

    def aggregator(self, **extra: str) -> ServiceProcess:
        sp = self.stack.service("aggregator", extra_env={**self.env, **extra})
        sp.log_path = sp.log_path.with_name(f"aggregator-{self.unique}-{uuid.uuid4().hex[:6]}.log")
        return sp

    def started_events(self, n: int, time: datetime | None = None) -> list[dict[str, Any]]:
        now = time or datetime.now(UTC) - timedelta(minutes=1)
        return [usage_event("usage.session.started", municipality=self.ags,
                            service=self.services[i % len(self.services)], time=now) for i in range(n)]

    async def produce(self, events: list[dict[str, Any]], topic: str | None = None) -> None:
        producer = make_producer(self.bootstrap, linger_ms=20)
        await producer.start()
        try:
            futures = [await producer.send(topic or self.usage_topic, orjson.dumps(e),
                                           key=f"{e['municipality']}:{e['service']}".encode()) for e in events]
            for f in futures:
                await f
        finally:
            await producer.stop()

    async def produce_raw(self, value: bytes, key: str = "foreign",
                          headers: list[tuple[str, bytes]] | None = None) -> None:
        producer = make_producer(self.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(self.usage_topic, value, key=key.encode(), headers=headers)
        finally:
            await producer.stop()

    async def rejected(self, expected: int, timeout: float = 30) -> list[dict[str, Any]]:
        consumer = AIOKafkaConsumer(self.rejected_topic, bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", group_id=f"read-{uuid.uuid4().hex}")
        await consumer.start()
        seen: list[dict[str, Any]] = []
        try:
            async def poll() -> list[dict[str, Any]]:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    seen.extend(orjson.loads(r.value) for r in records)
                return seen

            return await eventually(poll, lambda s: len(s) >= expected, timeout=timeout)
        finally:
            await consumer.stop()


def random_ags() -> str:
    return "99" + f"{uuid.uuid4().int % 10**6:06d}"


@pytest.fixture
async def lane(stack: LocalStack, kafka_bootstrap: str, unique: str) -> Lane:
    services = [f"99{uuid.uuid4().int % 10**12:012d}" for _ in range(6)]
    lane = Lane(stack, unique, kafka_bootstrap, random_ags(), services)
    await lane.create_topics()
    return lane


async def total(db: asyncpg.Connection, ags: str, metric: str = "sessions_started",
                granularity: str = "day") -> int:
    value = await db.fetchval(
        "SELECT coalesce(sum(value), 0) FROM kpi_values WHERE municipality = $1 AND metric = $2 AND granularity = $3",
        ags, metric, granularity,
    )
    return int(value)


async def all_granularities(db: asyncpg.Connection, ags: str, metric: str = "sessions_started") -> dict[str, int]:
    return {g: await total(db, ags, metric, g) for g in ("hour", "day", "month")}


async def stored_position(db: asyncpg.Connection, group: str, topic: str) -> int:
    return int(await db.fetchval(
        "SELECT coalesce(sum(next_offset), 0) FROM agg_offsets WHERE consumer_group = $1 AND topic = $2",
        group, topic,
    ))


async def settled(db: asyncpg.Connection, lane: Lane, produced: int, counted: int | None = None,
                  metric: str = "sessions_started") -> None:
    """Wait until every produced record is behind the stored offsets, then assert the exact totals."""
    await eventually(lambda: stored_position(db, f"agg-{lane.unique}", lane.usage_topic),
                     lambda p: p >= produced, timeout=90)
    n = produced if counted is None else counted
    assert await all_granularities(db, lane.ags, metric) == {"hour": n, "day": n, "month": n}


def scrape(sp: ServiceProcess) -> dict[tuple[str, tuple[str, ...]], float]:
    """The service's Prometheus samples: (name, label values sorted by label name) -> value."""
    out: dict[tuple[str, tuple[str, ...]], float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{sp.url}/metrics", timeout=10).text):
        for sample in family.samples:
            out[(sample.name, tuple(v for _, v in sorted(sample.labels.items())))] = sample.value
    return out


def lag(values: dict[tuple[str, tuple[str, ...]], float], lane: Lane) -> float:
    """Sum of the exported consumer lag over the lane's usage partitions."""
    return sum(v for (name, labels), v in values.items()
               if name == "kp_aggregator_consumer_lag" and labels[1] == lane.usage_topic)


@pytest.fixture
def stopper() -> Iterator[list[ServiceProcess]]:
    procs: list[ServiceProcess] = []
    yield procs
    for p in procs:
        p.stop()


class TestDuplicates:
    async def test_the_same_events_sent_twice_count_once(
        self, lane: Lane, db: asyncpg.Connection, stopper: list[ServiceProcess]
    ) -> None:
        events = lane.started_events(500)
        agg = lane.aggregator()
        stopper.append(agg)
        agg.start()
        agg.wait_ready()
        await lane.produce(events)
        await lane.produce(events)  # a producer retry of the whole stream
        await settled(db, lane, produced=1000, counted=500)

        # and once more after everything was committed: still 500
        await lane.produce(events[:100])
        await eventually(lambda: stored_position(db, f"agg-{lane.unique}", lane.usage_topic),
                         lambda p: p >= 1100)
        assert await all_granularities(db, lane.ags) == {"hour": 500, "day": 500, "month": 500}


class TestCrash:
    async def test_kill_9_mid_stream_and_restart_keeps_exact_totals(
        self, lane: Lane, db: asyncpg.Connection, stopper: list[ServiceProcess]
    ) -> None:
        first, second = lane.started_events(20_000), lane.started_events(3_000)
        await lane.produce(first)
        agg = lane.aggregator()
        agg.start()
        progress = await eventually(lambda: total(db, lane.ags), lambda n: n > 0, timeout=60, interval=0.02)
        agg.kill()
        at_kill = await total(db, lane.ags)
        assert progress <= at_kill < len(first), "the kill should land mid-stream"

        await lane.produce(second)  # arrives while no aggregator runs
        again = lane.aggregator()
        stopper.append(again)
        again.start()
        await settled(db, lane, len(first) + len(second))


class TestResume:
    async def test_restart_resumes_from_the_offsets_in_postgres_not_from_kafka(
        self, lane: Lane, db: asyncpg.Connection, stopper: list[ServiceProcess]
    ) -> None:
        agg = lane.aggregator()
        agg.start()
        await lane.produce(lane.started_events(300))
        await settled(db, lane, 300)
        agg.stop()

        # Kafka's committed offsets go back to the start (as after a crash between DB commit and Kafka commit)
        group = f"agg-{lane.unique}"
        rewind = AIOKafkaConsumer(bootstrap_servers=lane.bootstrap, group_id=group, enable_auto_commit=False)
        await rewind.start()
        try:
            parts = [TopicPartition(lane.usage_topic, p) for p in range(4)]
            rewind.assign(parts)
            await rewind.commit(dict.fromkeys(parts, 0))
        finally:
            await rewind.stop()

        again = lane.aggregator()
        stopper.append(again)
        again.start()
        again.wait_ready()
        await lane.produce(lane.started_events(100))
        await settled(db, lane, 400)
        values = scrape(again)
        assert values[("kp_aggregator_events_total", ("counted", lane.usage_topic))] == 100
        assert values.get(("kp_aggregator_duplicates_skipped_total", (lane.usage_topic,)), 0) == 0


class TestBrokerRestart:
    async def test_broker_restart_mid_stream_keeps_exact_totals(
        self, stack: LocalStack, db: asyncpg.Connection, unique: str, stopper: list[ServiceProcess]
    ) -> None:
        node = KafkaNode(ROOT / ".run" / f"agg-broker-{unique}")
        node.start()
        try:
            lane = Lane(stack, unique, node.bootstrap, random_ags(),
                        [f"99{uuid.uuid4().int % 10**12:012d}" for _ in range(6)])
            await lane.create_topics()
            agg = lane.aggregator()
            stopper.append(agg)
            agg.start()
            agg.wait_ready()
            first, second = lane.started_events(10_000), lane.started_events(2_000)
            await lane.produce(first)
            await eventually(lambda: total(db, lane.ags), lambda n: n > 0, timeout=60, interval=0.02)
            node.stop()
            node.start()
            await lane.produce(second)
            await settled(db, lane, len(first) + len(second))
            agg.stop()
        finally:
            node.stop()
            shutil.rmtree(node.root, ignore_errors=True)


class TestPostgresRestart:
    async def test_postgres_restart_mid_stream_keeps_exact_totals(
        self, lane: Lane, unique: str, stopper: list[ServiceProcess]
    ) -> None:
        node = PostgresNode(ROOT / ".run" / f"agg-pg-{unique}")
        node.start()
        try:
            await migrate(node.url)
            agg = lane.aggregator(KP_DATABASE_URL=node.url)
            stopper.append(agg)
            agg.start()
            agg.wait_ready()
            first, second = lane.started_events(10_000), lane.started_events(2_000)
            await lane.produce(first)
            db = await asyncpg.connect(node.url)
            try:
                await eventually(lambda: total(db, lane.ags), lambda n: n > 0, timeout=60, interval=0.02)
            finally:
                await db.close()
            node.stop(mode="immediate")  # like a crash: in-flight transactions are lost, WAL recovery on start
            await lane.produce(second)
            # while PostgreSQL is down the service keeps exporting its (growing) lag and failing batches
            failed = ("kp_aggregator_batch_failures_total", (lane.usage_topic,))
            stuck = await eventually(lambda: asyncio.to_thread(scrape, agg),
                                     lambda v: lag(v, lane) >= len(second) and v.get(failed, 0) >= 1, timeout=60)
            assert stuck[failed] >= 1
            node.start()
            db = await asyncpg.connect(node.url)
            try:
                await settled(db, lane, len(first) + len(second))
            finally:
                await db.close()
            await eventually(lambda: asyncio.to_thread(scrape, agg), lambda v: lag(v, lane) == 0)
            agg.stop()
        finally:
            node.stop(mode="immediate")
            node.remove()


class TestRebalance:
    async def test_two_instances_with_a_rebalance_in_the_middle_keep_exact_totals(
        self, lane: Lane, db: asyncpg.Connection, stopper: list[ServiceProcess]
    ) -> None:
        first, second, third = lane.started_events(8_000), lane.started_events(8_000), lane.started_events(2_000)
        a = lane.aggregator()
        stopper.append(a)
        a.start()
        await lane.produce(first)
        await eventually(lambda: total(db, lane.ags), lambda n: n > 0, timeout=60, interval=0.02)

        b = lane.aggregator()  # joins the group: partitions move while batches are in flight
        stopper.append(b)
        b.start()
        await lane.produce(second)
        b.wait_ready()
        await eventually(lambda: total(db, lane.ags), lambda n: n > len(first), timeout=60, interval=0.02)

        a.stop()  # leaves the group: a second rebalance hands everything to b
        await lane.produce(third)
        await settled(db, lane, len(first) + len(second) + len(third))
