"""The aggregator's batch orchestration: each consumed batch applied exactly once through a unit of work, under
the poison rule of `shared.poison`.

Per batch: validate and fold in memory (`fold`), send rejections to the rejected topic (durable before anything
is acknowledged), and in one unit of work record the event ids (only new ones count), add the KPI deltas and
store the next offsets. The caller acknowledges the batch to Kafka only after this returns, i.e. after the
commit. An infrastructure error fails the batch (it is redelivered after a pause); any other failure splits the
batch until the record that fails alone is found and rejected (`isolate`).

Nothing here knows Kafka or HTTP types: records come in as `RecordLike`, rejected records go out through a
`Publish` callable, the transaction is a `UnitOfWork`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter

from services.aggregator.fold import (
    Contribution,
    Counted,
    HourlyCounts,
    HourlyDeltas,
    Prepared,
    RecordLike,
    count_hourly,
    daily_counts,
    fold_hourly,
    late_count,
    merge_hourly,
    next_offsets,
    prepare,
    roll_up,
)
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.unit_of_work import Begin, UnitOfWork
from shared.poison import Publish, Rejection, declared, error_detail, isolate, reason_of

log = logging.getLogger(__name__)

@dataclass
class Stream:
    """One consumed topic: how its records are validated and folded, where its position is stored, and what the
    service keeps for it between batches."""

    topic: str
    group: str
    """Consumer group, also the key of the stored offsets."""
    consumer: str
    """Name of this consumer in rejected records (`aggregator/usage`, `aggregator/workflow`)."""
    adapter: TypeAdapter[Any]
    contributions: Callable[[Any], Sequence[Contribution]]
    daily_counts: bool
    """Also count events per Berlin day and type (`kpi_event_counts_daily`, usage events only)."""
    horizon: timedelta
    future_skew: timedelta
    secret: bytes
    """Key of the Cell Key Method's record keys."""
    chunk_records: int
    rejected_max_bytes: int
    retry_backoff_max_s: float
    metrics: AggregatorMetrics
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while a batch is applied; a revoked partition waits for it, so the next owner starts after it."""
    positions: dict[tuple[str, int], int] = field(default_factory=dict)
    """Next offset per partition as committed to PostgreSQL by this instance (for the lag gauge)."""
    failures: int = 0
    """Batches failed in a row; the pause before the redelivery grows with it."""


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one applied batch did; `AggregatorMetrics.record_batch` counts it."""

    records: int
    counted: int
    duplicates: int
    """Events not counted because their id was counted before, or came twice in the batch."""
    ignored: int
    """Valid events that change no KPI (workflow steps, task assignments)."""
    late: int
    """Counted events whose hour had already ended."""
    rejected: tuple[str, ...]
    """The reason of every record sent to the rejected topic."""
    fold_seconds: float
    commit_seconds: float


@dataclass(slots=True)
class _Chunk:
    """A chunk of a batch after its event ids were recorded: the events that were new, and their deltas."""

    prepared: Prepared
    fresh: list[Counted]
    hourly: HourlyDeltas
    hourly_counts: HourlyCounts


async def consume_batch(stream: Stream, records: Sequence[RecordLike], begin: Begin, publish: Publish) -> None:
    """Apply a consumed batch under the poison rule; raise after a growing pause if it must be redelivered.

    The whole batch first, in one unit of work (the fast path). On a failure that is not infrastructure the batch
    is split until the record that fails alone is found and rejected; the rest is applied. On an infrastructure
    error nothing of the failing part is committed (applied parts are deduplicated on redelivery), and the
    error propagates after a pause, so an outage of Kafka or PostgreSQL does not become a busy loop.
    """
    if not records:
        return
    try:
        await isolate(records, functools.partial(_apply, stream, begin=begin, publish=publish),
                      functools.partial(reject_record, stream, begin=begin, publish=publish),
                      on_split=functools.partial(_split, stream))
    except Exception:
        stream.failures += 1
        stream.metrics.batch_failures.labels(stream.topic).inc()
        log.exception("batch failed; it will be redelivered", extra={"topic": stream.topic})
        await asyncio.sleep(min(0.1 * 2 ** stream.failures, stream.retry_backoff_max_s))
        raise
    stream.failures = 0


async def _apply(stream: Stream, records: Sequence[RecordLike], *, begin: Begin, publish: Publish) -> None:
    stream.metrics.record_batch(stream.topic, await apply_batch(stream, records, begin, publish))


def _split(stream: Stream, size: int) -> None:
    log.warning("a batch failed for a reason that is not infrastructure; splitting it to isolate the record",
                extra={"topic": stream.topic, "records": size})
    stream.metrics.batch_splits.labels(stream.topic).inc()


async def apply_batch(stream: Stream, records: Sequence[RecordLike], begin: Begin, publish: Publish,
                      now: datetime | None = None) -> BatchOutcome:
    """Apply one batch exactly once in one unit of work; raises (nothing committed) if any step fails.

    A big batch is cut into chunks: while one chunk's ids are recorded, the next chunk is validated and folded
    in a worker thread; then the deltas of all new events are added once, all inside the one transaction.
    """
    now = now or datetime.now(UTC)
    started = time.perf_counter()
    async with stream.lock, begin() as uow:
        chunks = await _fold_and_record_ids(stream, uow, records, now)
        # The deltas of all chunks are written once per batch: a KPI row touched by several chunks is updated
        # once, not once per chunk.
        await uow.add_kpis(roll_up(merge_hourly(c.hourly for c in chunks)))
        if stream.daily_counts:
            await uow.add_daily_counts(daily_counts(sum((c.hourly_counts for c in chunks), Counter())))
        rejections = [r for c in chunks for r in c.prepared.rejections]
        if rejections:
            # At least once to the rejected topic, before the offsets move: a redelivered batch may repeat a
            # rejection (its topic/partition/offset identify it), but none is ever lost.
            await asyncio.gather(*(publish(*_rejected_record(stream, r, now)) for r in rejections))
        offsets = next_offsets(records)
        await uow.store_offsets(stream.group, offsets)
    commit_seconds = time.perf_counter() - started
    stream.positions.update(offsets)
    fresh = [e for c in chunks for e in c.fresh]
    relevant = sum(len(c.prepared.relevant) for c in chunks)
    return BatchOutcome(
        records=len(records), counted=len(fresh),
        duplicates=relevant - len(fresh) + sum(c.prepared.in_batch_duplicates for c in chunks),
        ignored=sum(c.prepared.events for c in chunks) - relevant, late=late_count(fresh, now),
        rejected=tuple(r.reason for r in rejections), fold_seconds=sum(c.prepared.seconds for c in chunks),
        commit_seconds=commit_seconds,
    )


async def _fold_and_record_ids(stream: Stream, uow: UnitOfWork, records: Sequence[RecordLike],
                               now: datetime) -> list[_Chunk]:
    """Validate and fold the batch chunk by chunk in a worker thread, the next chunk while the last one's ids are
    recorded."""
    fold = functools.partial(
        prepare, adapter=stream.adapter, contributions=stream.contributions, daily_counts=stream.daily_counts,
        now=now, horizon=stream.horizon, future_skew=stream.future_skew, secret=stream.secret)
    size = max(stream.chunk_records, 1)
    parts = [records[i:i + size] for i in range(0, len(records), size)]
    chunks: list[_Chunk] = []
    if not parts:
        return chunks
    pending = asyncio.ensure_future(asyncio.to_thread(fold, parts[0]))
    try:
        for i in range(len(parts)):
            prepared = await pending
            if i + 1 < len(parts):
                pending = asyncio.ensure_future(asyncio.to_thread(fold, parts[i + 1]))
            chunks.append(await _record_ids(stream, uow, prepared))
    finally:
        pending.cancel()  # only matters when a write failed; the thread's result is dropped
    return chunks


async def _record_ids(stream: Stream, uow: UnitOfWork, prepared: Prepared) -> _Chunk:
    """Record the chunk's event ids; only events whose id is new count."""
    known = await uow.record_ids([e.id for e in prepared.relevant], [e.epoch for e in prepared.relevant])
    if not known:
        return _Chunk(prepared, prepared.relevant, prepared.hourly, prepared.hourly_counts)
    # Some were counted before (a replay, a redelivery): fold again without them.
    fresh = [e for e in prepared.relevant if e.id not in known]
    return _Chunk(prepared, fresh, fold_hourly(fresh), count_hourly(fresh) if stream.daily_counts else Counter())


def _rejected_record(stream: Stream, r: Rejection, now: datetime) -> tuple[bytes, bytes]:
    return r.payload(origin="aggregator", consumer=stream.consumer, max_bytes=stream.rejected_max_bytes, now=now)


async def reject_record(stream: Stream, record: RecordLike, exc: BaseException, *, begin: Begin,
                        publish: Publish) -> None:
    """Set aside a record that failed alone: publish its rejection, then move its partition past it."""
    rejection = Rejection(record, reason_of(exc), error_detail(exc), *declared(record.value))
    log.error("record rejected after it failed alone", extra={
        "topic": record.topic, "partition": record.partition, "offset": record.offset, "reason": rejection.reason,
        "error": type(exc).__name__})
    await publish(*_rejected_record(stream, rejection, datetime.now(UTC)))
    offsets = next_offsets([record])
    async with stream.lock, begin() as uow:
        await uow.store_offsets(stream.group, offsets)
    stream.metrics.record_rejected(stream.topic, rejection.reason)
    stream.positions.update(offsets)


async def resume_positions(stream: Stream, begin: Begin, partitions: Collection[int]) -> dict[int, int]:
    """The stored positions of the assigned `partitions` (those that have one), to seek to on assignment."""
    async with begin() as uow:
        stored = await uow.load_offsets(stream.group, stream.topic)
    resume = {p: offset for p, offset in stored.items() if p in partitions}
    stream.positions.update(((stream.topic, p), offset) for p, offset in resume.items())
    return resume


async def release_partitions(stream: Stream, partitions: Iterable[int]) -> None:
    """Let the batch in flight commit (so the next owner starts after it), then forget the positions."""
    async with stream.lock:
        pass
    for p in partitions:
        stream.positions.pop((stream.topic, p), None)


async def run_dedup_cleanup(begin: Begin, keep: timedelta, interval_s: float, chunk: int,
                            metrics: AggregatorMetrics) -> None:
    """Every `interval_s`, forget event ids whose event time is more than `keep` ago, `chunk` ids per transaction.

    `keep` is the late horizon plus a margin: older events are rejected as `too_late` before the dedup step, so
    their ids are never needed again.
    """
    while True:
        try:
            cutoff = datetime.now(UTC) - keep
            while True:
                async with begin() as uow:
                    n = await uow.delete_expired_ids(cutoff, chunk)
                metrics.dedup_deleted.inc(n)
                if n < chunk:
                    break
        except Exception:  # the job must outlive a database outage; what is left is deleted next time
            log.warning("dedup cleanup failed; retrying at the next interval", exc_info=True)
        await asyncio.sleep(interval_s)
