"""Kafka adapters: batch subscribers that apply each batch exactly once in one PostgreSQL transaction.

Per batch: validate and fold in memory, send rejections to the rejected topic (durable before anything is
acknowledged), then one transaction inserts the event ids (only new ones count), upserts the KPI deltas and
stores the next offsets. Kafka offsets are committed by FastStream after the handler returns, i.e. after the
DB commit; on partition assignment the consumer seeks to the offsets stored in PostgreSQL.

Failures follow the rule of `shared.poison`: an infrastructure error redelivers the batch after a pause; any
other failure splits the batch until the record that fails alone is found and rejected (`isolate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import TypeAdapter

from services.aggregator import repository, service
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.settings import AggregatorSettings
from shared.events import usage_event_adapter
from shared.events.workflow import workflow_event_adapter
from shared.poison import (
    Kind,
    classify,
    declared,
    error_detail,
    headers_of,
    isolate,
    no_decode,
    reason_of,
    tolerant_batch_parser,
)
from shared.rejections import REASONS, Reason, rejected_payload

log = logging.getLogger(__name__)

Publish = Callable[[bytes, bytes], Awaitable[Any]]


@dataclass
class Stream:
    """One consumed topic: how to validate and fold it, and where its position is stored."""

    topic: str
    group: str
    adapter: TypeAdapter[Any]
    contributions: Callable[[Any], list[service.Contribution]]
    daily_counts: bool
    settings: AggregatorSettings
    pool_holder: dict[str, asyncpg.Pool]
    metrics: AggregatorMetrics
    consumer: str = "aggregator"
    """Name of this consumer in rejected records and metrics (`aggregator/usage`, `aggregator/workflow`)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscriber: Any = None
    failures: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """Next offset per partition as committed to PostgreSQL by this instance (for the lag gauge)."""


async def apply_batch(stream: Stream, records: Sequence[service.RecordLike], publish: Publish,
                      now: datetime | None = None) -> None:
    """Apply one consumed batch exactly once; raises (and so redelivers the batch) on Kafka or DB errors.

    A big batch is cut into chunks: while one chunk's dedup insert runs in PostgreSQL, the next chunk is validated
    and folded in a worker thread; then the deltas of all new events are upserted once, all inside the one
    transaction of the batch.
    """
    if not records:
        return
    m, topic, s = stream.metrics, stream.topic, stream.settings
    now = now or datetime.now(UTC)
    prepare = functools.partial(
        service.prepare, adapter=stream.adapter, contributions=stream.contributions,
        daily_counts=stream.daily_counts, now=now, horizon=timedelta(days=s.late_horizon_days),
        future_skew=timedelta(seconds=s.future_skew_s), secret=s.ckm_key())
    size = max(s.fold_chunk_records, 1)
    chunks = [records[i:i + size] for i in range(0, len(records), size)]
    done: list[tuple[service.Prepared, list[service.Counted]]] = []
    hourly: list[service.HourlyDeltas] = []
    hourly_counts: service.HourlyCounts = Counter()

    started = time.perf_counter()
    async with stream.lock, stream.pool_holder["pool"].acquire() as conn, conn.transaction():
        pending = asyncio.ensure_future(asyncio.to_thread(prepare, chunks[0]))
        try:
            for i in range(len(chunks)):
                chunk = await pending
                if i + 1 < len(chunks):
                    pending = asyncio.ensure_future(asyncio.to_thread(prepare, chunks[i + 1]))
                seen = await repository.insert_ids(conn, [e.id for e in chunk.relevant],
                                                   [e.epoch for e in chunk.relevant])
                if not seen:
                    fresh, chunk_hourly, chunk_counts = chunk.relevant, chunk.hourly, chunk.hourly_counts
                else:  # some were counted before (a replay): fold again without them
                    fresh = [e for e in chunk.relevant if e.id not in seen]
                    chunk_hourly = service.fold_hourly(fresh)
                    chunk_counts = service.count_hourly(fresh) if stream.daily_counts else Counter()
                done.append((chunk, fresh))
                hourly.append(chunk_hourly)
                hourly_counts.update(chunk_counts)
        finally:
            pending.cancel()  # only matters when a write failed; the thread's result is dropped
        # The deltas of all chunks are written once per batch: a KPI row touched by several chunks is updated
        # once, not once per chunk.
        await repository.upsert_kpis(conn, service.roll_up(service.merge_hourly(hourly)))
        if stream.daily_counts:
            await repository.add_counts(conn, service.daily_counts(hourly_counts))
        rejections = [r for chunk, _ in done for r in chunk.rejections]
        if rejections:
            # At least once to the rejected topic, before the offsets move: a redelivered batch may repeat a
            # rejection (its topic/partition/offset identify it), but none is ever lost.
            await asyncio.gather(*(publish(*_rejected(stream, r, now)) for r in rejections))
        offsets = service.next_offsets(records)
        await repository.store_offsets(conn, stream.group, offsets)
    m.commit_seconds.labels(topic).observe(time.perf_counter() - started)

    fresh = [e for _, f in done for e in f]
    relevant = sum(len(chunk.relevant) for chunk, _ in done)
    events = sum(chunk.events for chunk, _ in done)
    duplicates = relevant - len(fresh) + sum(chunk.in_batch_duplicates for chunk, _ in done)
    m.fold_seconds.labels(topic).observe(sum(chunk.seconds for chunk, _ in done))
    m.batch_size.labels(topic).observe(len(records))
    m.events.labels(topic, "counted").inc(len(fresh))
    m.events.labels(topic, "duplicate").inc(duplicates)
    m.events.labels(topic, "ignored").inc(events - relevant)
    m.events.labels(topic, "rejected").inc(len(rejections))
    m.duplicates.labels(topic).inc(duplicates)
    m.late_corrections.labels(topic).inc(service.late_count(fresh, now))
    for r in rejections:
        m.rejected.labels(topic, r.reason).inc()
    stream.positions.update(offsets)
    try:
        update_lag(stream)
    except Exception:  # the batch is committed; a metrics problem must not redeliver it
        log.warning("updating the lag metric failed", exc_info=True)


def _rejected(stream: Stream, r: service.Rejection, now: datetime) -> tuple[bytes, bytes]:
    reason: Reason = r.reason  # type: ignore[assignment]  # triage only produces members of Reason
    rec = r.record
    return rejected_payload(
        max_bytes=stream.settings.rejected_max_bytes,
        reason=reason, raw=rec.value or b"", origin="aggregator", consumer=stream.consumer, errors=r.errors,
        platform=r.source, event_id=r.event_id, topic=rec.topic, partition=rec.partition, offset=rec.offset,
        now=now, key=rec.key, headers=headers_of(rec), tombstone=rec.value is None,
    )


async def reject_record(stream: Stream, record: service.RecordLike, exc: BaseException, publish: Publish) -> None:
    """Set aside a record that failed alone: publish its rejection, then move its partition past it."""
    now = datetime.now(UTC)
    rejection = service.Rejection(record, reason_of(exc), error_detail(exc), *declared(record.value))
    log.error("record rejected after it failed alone", extra={
        "topic": record.topic, "partition": record.partition, "offset": record.offset, "reason": rejection.reason,
        "error": type(exc).__name__})
    await publish(*_rejected(stream, rejection, now))
    offsets = service.next_offsets([record])
    async with stream.lock, stream.pool_holder["pool"].acquire() as conn, conn.transaction():
        await repository.store_offsets(conn, stream.group, offsets)
    stream.metrics.events.labels(stream.topic, "rejected").inc()
    stream.metrics.rejected.labels(stream.topic, rejection.reason).inc()
    stream.positions.update(offsets)


async def consume_batch(stream: Stream, records: Sequence[service.RecordLike], publish: Publish) -> None:
    """The rule around `apply_batch`: the whole batch first (the fast path); on a failure that is not
    infrastructure, bisect until the record that fails alone is found and rejected. Raises on infrastructure
    errors (nothing of the failing part is committed; applied parts are deduplicated on redelivery)."""
    try:
        await apply_batch(stream, records, publish)
        return
    except Exception as exc:
        if classify(exc) is Kind.INFRASTRUCTURE:
            raise
        log.warning("batch failed for a reason that is not infrastructure; isolating the record",
                    extra={"topic": stream.topic, "records": len(records), "error": type(exc).__name__})

    def split(_size: int) -> None:
        stream.metrics.batch_splits.labels(stream.topic).inc()

    async def apply(part: Sequence[service.RecordLike]) -> None:
        await apply_batch(stream, part, publish)

    async def reject(record: service.RecordLike, exc: BaseException) -> None:
        await reject_record(stream, record, exc, publish)

    split(len(records))
    mid = len(records) // 2
    await isolate(records[:mid], apply, reject, split)
    await isolate(records[mid:], apply, reject, split)


def update_lag(stream: Stream) -> None:
    """Lag per assigned partition = partition end (as last fetched) minus the position committed to PostgreSQL."""
    consumer = getattr(stream.subscriber, "consumer", None)
    if consumer is None:
        return
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        position = stream.positions.get((tp.topic, tp.partition))
        if end is not None and position is not None:
            stream.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(end - position, 0))


async def run_lag_refresh(streams: list[Stream], interval_s: float) -> None:
    """Keep the lag gauge current while no batch commits (idle, or stuck on a failing dependency)."""
    while True:
        await asyncio.sleep(interval_s)
        for stream in streams:
            try:
                update_lag(stream)
            except Exception:
                log.warning("updating the lag metric failed", exc_info=True)


class SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume from the offsets stored in PostgreSQL (they are never behind Kafka's)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.stream.lock:  # let a batch in flight commit, so the next owner starts after it
            pass
        for tp in revoked:
            self.stream.positions.pop((tp.topic, tp.partition), None)
            with contextlib.suppress(KeyError):
                self.stream.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self.stream.subscriber.consumer
        for attempt in range(5):
            try:
                async with self.stream.pool_holder["pool"].acquire() as conn:
                    stored = await repository.load_offsets(conn, self.stream.group, self.stream.topic)
                break
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                # Falling back to Kafka's committed offsets is safe (they are at or before ours; the dedup
                # table absorbs the repeat), so only retry briefly.
                log.warning("loading stored offsets failed", extra={"attempt": attempt + 1})
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            return
        for tp in assigned:
            if tp.partition in stored:
                consumer.seek(tp, stored[tp.partition])
                self.stream.positions[(tp.topic, tp.partition)] = stored[tp.partition]
        log.info("partitions assigned", extra={"topic": self.stream.topic,
                                               "partitions": sorted(tp.partition for tp in assigned)})


def build_router(settings: AggregatorSettings, pool_holder: dict[str, asyncpg.Pool],
                 metrics: AggregatorMetrics) -> tuple[KafkaRouter, list[Stream]]:
    """The subscribers (usage, optionally workflow) and the rejected-topic publisher; plus the streams."""
    router = KafkaRouter()
    streams: list[Stream] = []

    def publisher(topic: str, title: str, description: str) -> Publish:
        rejected = router.publisher(topic, title=title, description=description)

        async def publish(key: bytes, value: bytes) -> None:
            await rejected.publish(value, key=key, headers={"content-type": "application/json"})
        return publish

    def subscribe(stream: Stream, publish: Publish, title: str, description: str) -> None:
        async def on_batch(_body: Any, message: KafkaMessage) -> None:
            try:
                await consume_batch(stream, message.raw_message, publish)
                stream.failures = 0
            except Exception:
                # Infrastructure: roll back and redeliver (NACK seeks back), after a growing pause so an outage
                # of Kafka or PostgreSQL does not turn into a busy loop.
                stream.failures += 1
                stream.metrics.batch_failures.labels(stream.topic).inc()
                log.exception("batch failed; it will be redelivered", extra={"topic": stream.topic})
                await asyncio.sleep(min(0.1 * 2 ** stream.failures, settings.retry_backoff_max_s))
                raise

        subscriber = router.subscriber(
            stream.topic, batch=True, group_id=stream.group, auto_offset_reset="earliest",
            max_records=settings.max_batch_records, batch_timeout_ms=settings.batch_timeout_ms,
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            ack_policy=AckPolicy.NACK_ON_ERROR, listener=SeekToStoredOffsets(stream),
            decoder=no_decode, parser=tolerant_batch_parser, title=title, description=description,
        )
        subscriber(on_batch)
        stream.subscriber = subscriber  # its `.consumer` exists once the broker has started
        for reason in REASONS:  # every series exists from the start (at 0), so rate() and alerts see the first
            metrics.rejected.labels(stream.topic, reason)
        metrics.batch_splits.labels(stream.topic)
        streams.append(stream)

    subscribe(
        Stream(settings.usage_topic, settings.consumer_group, usage_event_adapter, service.usage_contributions,
               True, settings, pool_holder, metrics, consumer="aggregator/usage"),
        publisher(settings.rejected_topic, "usage-events-rejected",
                  "Records the aggregator cannot count: invalid, too_late, from_future, tombstone, refused by the "
                  "database, …, with reasons, source position, key and headers."),
        "usage-events-aggregate", "Folds usage events into eGovSAD KPIs, exactly once per event id.",
    )
    if settings.consume_workflow:
        subscribe(
            Stream(settings.workflow_topic, settings.workflow_consumer_group, workflow_event_adapter,
                   service.workflow_contributions, False, settings, pool_holder, metrics,
                   consumer="aggregator/workflow"),
            publisher(settings.workflow_rejected_topic, "workflow-events-rejected",
                      "Workflow events the aggregator cannot count, with reasons and source position."),
            "workflow-events-aggregate", "Folds workflow events into processing-time KPIs, exactly once.",
        )
    return router, streams


async def run_dedup_cleanup(settings: AggregatorSettings, pool_holder: dict[str, asyncpg.Pool],
                            metrics: AggregatorMetrics) -> None:
    """Periodically forget event ids older than the late horizon plus a margin (they are too_late anyway)."""
    keep = timedelta(days=settings.late_horizon_days + settings.dedup_margin_days)
    while True:
        try:
            cutoff = datetime.now(UTC) - keep
            while True:
                async with pool_holder["pool"].acquire() as conn:
                    n = await repository.delete_expired_ids(conn, cutoff, settings.dedup_cleanup_chunk)
                metrics.dedup_deleted.inc(n)
                if n < settings.dedup_cleanup_chunk:
                    break
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.warning("dedup cleanup failed; retrying at the next interval", exc_info=True)
        await asyncio.sleep(settings.dedup_cleanup_interval_s)
