"""Kafka adapter: batches of application events in; the engine changes cases and writes outbox rows.

A batch is split into lanes by application id (events of one application stay in order in one lane); each
lane commits in one transaction on its own connection, so many cases share one commit. If a lane's
transaction fails, its events are retried one transaction each; an event that still fails raises, and the
batch is redelivered (the inbox makes the committed ones no-ops).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Sequence
from typing import Any, cast

import asyncpg
from aiokafka import TopicPartition
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from services.workflow.service import Engine, Sink
from services.workflow.settings import WorkflowSettings
from shared.db import Conn
from shared.events import ApplicationEvent, application_event_adapter

log = logging.getLogger(__name__)


def parse(values: Sequence[bytes | None], engine: Engine) -> list[ApplicationEvent]:
    events = []
    for value in values:
        try:
            events.append(application_event_adapter.validate_json(value or b""))
        except ValidationError as exc:
            engine.metrics.events.labels("invalid", "skipped").inc()
            log.warning("invalid application event skipped", extra={"errors": exc.error_count()})
    return events


def lanes(events: list[ApplicationEvent], count: int) -> list[list[ApplicationEvent]]:
    """Split by application id, keeping each application's events in order within one lane."""
    out: list[list[ApplicationEvent]] = [[] for _ in range(count)]
    for e in events:
        out[zlib.crc32(e.application_id.encode()) % count].append(e)
    return [lane for lane in out if lane]


class SerialConnection:
    """One connection shared by the concurrent applications of a lane: statements run one at a time."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.executemany(*args, **kwargs)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.fetch(*args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.fetchrow(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.fetchval(*args, **kwargs)


async def apply_events(conn: Conn, engine: Engine, lane: list[ApplicationEvent], sink: Sink,
                       concurrency: int) -> list[str]:
    """Apply a prepared lane: each application's events in order, up to `concurrency` applications at a time
    (so their external calls, e.g. E-Akte filings, overlap) on the lane's one connection and transaction."""
    shared = cast(Conn, SerialConnection(conn))
    slots = asyncio.Semaphore(max(1, concurrency))
    by_application: dict[str, list[int]] = {}
    for i, e in enumerate(lane):
        by_application.setdefault(e.application_id, []).append(i)
    results = [""] * len(lane)

    async def one_application(indices: list[int]) -> None:
        async with slots:
            for i in indices:
                results[i] = await engine.on_application_event(shared, lane[i], sink)

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the rest; the lane is retried
            for indices in by_application.values():
                group.create_task(one_application(indices))
    except ExceptionGroup as failed:  # report the first cause as a one-event lane did before
        raise failed.exceptions[0] from failed
    return results


async def apply_lane(pool: asyncpg.Pool, engine: Engine, lane: list[ApplicationEvent], concurrency: int = 1) -> None:
    try:
        async with pool.acquire() as conn, conn.transaction():
            sink = Sink()
            await engine.prepare_lane(conn, lane, sink)
            results = await apply_events(conn, engine, lane, sink, concurrency)
            await sink.write(conn)
    except Exception:
        if len(lane) == 1:
            raise
        log.warning("lane of %d events failed; retrying them one by one", len(lane), exc_info=True)
        for e in lane:
            await apply_lane(pool, engine, [e], concurrency)
        return
    for e, result in zip(lane, results, strict=True):
        engine.metrics.event(e.type, result).inc()


async def apply_batch(pool: asyncpg.Pool, engine: Engine, values: Sequence[bytes | None], lane_count: int,
                      lane_concurrency: int = 1) -> None:
    engine.metrics.batch_size.observe(len(values))
    await asyncio.gather(*(apply_lane(pool, engine, lane, lane_concurrency)
                           for lane in lanes(parse(values, engine), lane_count)))


async def _no_decode(_msg: Any) -> None:
    """Bodies are validated from the raw bytes; skip FastStream's JSON decoding."""
    return None


def update_lag(engine: Engine, subscriber: Any, records: Sequence[Any]) -> None:
    """Lag = partition end (as last fetched) minus the next offset to consume; observability only."""
    consumer = getattr(subscriber, "consumer", None)
    if consumer is None:
        return
    positions: dict[tuple[str, int], int] = {}
    for r in records:
        positions[(r.topic, r.partition)] = max(positions.get((r.topic, r.partition), 0), r.offset + 1)
    for (topic, partition), nxt in positions.items():
        end = consumer.highwater(TopicPartition(topic, partition))
        if end is not None:
            engine.metrics.consumer_lag.labels(topic, str(partition)).set(max(end - nxt, 0))


def build_router(settings: WorkflowSettings, holder: dict[str, Any]) -> KafkaRouter:
    router = KafkaRouter()
    subscriber = router.subscriber(
        settings.application_topic,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        decoder=_no_decode,
        title="application-events-workflow",
        description="Opens and advances cases from application events (inbox dedup, outbox).",
    )

    async def on_application_events(_body: Any, message: KafkaMessage) -> None:
        engine: Engine = holder["engine"]
        try:
            await apply_batch(holder["pool"], engine, [r.value for r in message.raw_message], settings.lanes,
                              settings.lane_concurrency)
        except Exception:
            log.exception("batch failed; it will be redelivered")
            await asyncio.sleep(1.0)  # an outage of PostgreSQL must not become a busy loop
            raise
        try:
            update_lag(engine, subscriber, message.raw_message)
        except Exception:  # the batch is committed; a metrics problem must not redeliver it
            log.warning("updating the consumer lag failed", exc_info=True)

    subscriber(on_application_events)
    return router
