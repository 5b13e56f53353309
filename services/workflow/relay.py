"""Outbox relay: publishes committed outbox rows to Kafka, marks them after the broker acknowledged.

An event the broker can never take (larger than its limit, or refused as a data error) must not block the
relay: it goes to the rejected topic (`workflow.events.rejected.v1`) with reason and bounded payload, its row
notes `rejected_reason`, and the rest of the slice is published (`shared.poison`). Infrastructure errors leave
the slice unpublished and are retried.

Runs inside the service by default; `python -m services.workflow.relay` runs it as a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import RecordTooLargeError
from aiokafka.partitioner import DefaultPartitioner

from services.workflow import repository
from services.workflow.metrics import WorkflowMetrics
from services.workflow.settings import WorkflowSettings
from shared.kafka import make_producer
from shared.poison import error_detail, isolate, reason_of
from shared.rejections import DEFAULT_MAX_RECORD_BYTES, Reason, rejected_payload
from shared.runner import poll

log = logging.getLogger(__name__)


_PARTITIONER = DefaultPartitioner()
RELAY_MAX_BATCH_BYTES = 512 * 1024
"""Record batch size of the relay's producer: a slice of the outbox goes out in a few requests per partition."""


CONSUMER = "relay"
RELAY_REASONS: tuple[Reason, ...] = ("oversize", "unprocessable")


async def publish_rows(producer: AIOKafkaProducer, rows: Sequence[Mapping[str, Any]]) -> None:
    """Send the events of outbox rows as record batches, one stream per (topic, partition) in row order and in
    each row's order; return when all are acknowledged.

    The partition of a key is Kafka's default (murmur2 of the key, as `send` and the Java client choose it),
    computed once per key and slice. Whole batches instead of one `send` per row cost a fraction of the CPU.
    """
    streams: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    partitions: dict[tuple[str, bytes], int] = {}
    for r in rows:
        topic, key = r["topic"], bytes(r["key"])
        partition = partitions.get((topic, key))
        if partition is None:
            available = sorted(await producer.partitions_for(topic))
            partition = partitions[(topic, key)] = _PARTITIONER(key, available, available)
        streams.setdefault((topic, partition), []).extend((key, bytes(p)) for p in r["payloads"])
    futures: list[asyncio.Future[Any]] = []
    for (topic, partition), records in streams.items():
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:  # full: send it, start the next
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise RecordTooLargeError(f"outbox event of {len(value)} bytes does not fit a record batch")
        futures.append(await producer.send_batch(batch, topic, partition=partition))
    await asyncio.gather(*futures)


async def relay_once(pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int,
                     metrics: WorkflowMetrics | None = None, rejected_topic: str | None = None,
                     max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> int:
    """Publish one slice of the outbox (rows, each with one or more events); return how many rows.

    Events larger than `max_bytes` and rows the broker refuses as data are reported to `rejected_topic`
    instead; every row of the slice is marked, so none blocks the relay.
    """
    async with pool.acquire() as conn, conn.transaction():
        rows = await repository.take_unpublished(conn, batch)
        if not rows:
            return 0
        slices: list[dict[str, Any]] = []
        refused: list[tuple[Mapping[str, Any], bytes, Reason, list[dict[str, Any]]]] = []
        for r in rows:
            row: dict[str, Any] = {"id": r["id"], "topic": r["topic"], "key": r["key"], "payloads": []}
            for p in r["payloads"]:
                if len(p) + len(row["key"]) > max_bytes:
                    refused.append((row, bytes(p), "oversize", [{
                        "type": "oversize", "loc": [], "msg": f"event of {len(p)} bytes exceeds {max_bytes} bytes"}]))
                else:
                    row["payloads"].append(p)
            slices.append(row)

        async def send(part: Sequence[dict[str, Any]]) -> None:
            await publish_rows(producer, part)

        async def refuse(row: dict[str, Any], exc: BaseException) -> None:
            refused.extend((row, bytes(p), reason_of(exc), error_detail(exc)) for p in row["payloads"])

        await isolate([row for row in slices if row["payloads"]], send, refuse)
        if refused:
            await _report(producer, refused, rejected_topic, max_bytes, metrics)
            await repository.mark_rejected(conn, {r["id"]: reason for r, _, reason, _ in refused})
        published_at = await repository.mark_published(conn, [r["id"] for r in rows])
    if metrics is not None:
        for r in rows:
            lag = max(0.0, (published_at - r["created_at"]).total_seconds())
            for _ in r["payloads"]:  # per event
                metrics.outbox_lag.observe(lag)
    return len(rows)


async def _report(producer: AIOKafkaProducer, refused: list[tuple[Mapping[str, Any], bytes, Reason,
                                                                   list[dict[str, Any]]]],
                  rejected_topic: str | None, max_bytes: int, metrics: WorkflowMetrics | None) -> None:
    """Send the rejected-topic records of events the relay cannot publish (acknowledged before rows are marked)."""
    now = datetime.now(UTC)
    futures = []
    for row, payload, reason, errors in refused:
        log.error("outbox event set aside", extra={"outbox_id": row["id"], "reason": reason, "bytes": len(payload)})
        if metrics is not None:
            metrics.rejected.labels(CONSUMER, reason).inc()
        if rejected_topic is None:
            continue
        key, value = rejected_payload(
            max_bytes=max_bytes, reason=reason, raw=payload, origin="relay", consumer=CONSUMER, errors=errors,
            topic=row["topic"], key=bytes(row["key"]), now=now)
        futures.append(await producer.send(rejected_topic, value, key=key))
    await asyncio.gather(*futures)


def make_relay_producer(settings: WorkflowSettings) -> AIOKafkaProducer:
    """The durable producer with room for large record batches."""
    return make_producer(settings.kafka_bootstrap, max_batch_size=RELAY_MAX_BATCH_BYTES,
                         max_request_size=4 * RELAY_MAX_BATCH_BYTES, **settings.kafka_client_options())


async def run_relay(pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int, interval_s: float,
                    metrics: WorkflowMetrics | None = None, rejected_topic: str | None = None,
                    max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> None:
    """Loop until cancelled; a failure is logged and retried (rows stay unpublished, so nothing is lost)."""
    await poll(lambda: relay_once(pool, producer, batch, metrics, rejected_topic, max_bytes), batch=batch,
               interval_s=interval_s, what="outbox relay")


async def serve(settings: WorkflowSettings) -> None:
    """The relay alone, as its own process: scale it apart from the engine (`KP_RELAY_IN_PROCESS=false`)."""
    import signal

    from services.workflow.app import create_pool

    pool = await create_pool(settings)
    producer = make_relay_producer(settings)
    await producer.start()
    task = asyncio.create_task(run_relay(pool, producer, settings.relay_batch, settings.relay_interval_s,
                                         rejected_topic=settings.workflow_rejected_topic,
                                         max_bytes=settings.rejected_max_bytes))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await producer.stop()
        await pool.close()


if __name__ == "__main__":
    from shared.observability import setup_logging

    _settings = WorkflowSettings()
    setup_logging(_settings.log_level, _settings.log_json)
    asyncio.run(serve(_settings))
