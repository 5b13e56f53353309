"""Kafka adapter: batches of application events in; the engine changes cases and writes outbox rows.

A batch is split into lanes by application id (events of one application stay in order in one lane); each
lane commits in one transaction on its own connection, so many cases share one commit. Failures follow the
rule of `shared.poison`: a record that cannot be decoded or fails the contract goes to the rejected topic
(`application.events.rejected.v1`) before anything is acknowledged; a lane whose transaction fails for a reason
that is not infrastructure is split until the event that fails alone is found and rejected, while the others
are applied; an infrastructure error redelivers the batch (the inbox makes the committed events no-ops).
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from services.workflow.service import Engine
from services.workflow.settings import WorkflowSettings
from services.workflow.unit_of_work import Lanes, UnitOfWork
from shared.events import ApplicationEvent, application_event_adapter
from shared.poison import (
    ConsumedRecord,
    Publish,
    Rejection,
    declared,
    error_detail,
    isolate,
    no_decode,
    raw_batch_parser,
    reason_of,
    rejected_publisher,
    validation_errors,
)
from shared.rejections import REASONS

log = logging.getLogger(__name__)

CONSUMER = "workflow/application"


@dataclass(slots=True)
class Parsed:
    """A batch decoded: the valid events (with the record each came from) and the rejected records."""

    events: list[ApplicationEvent] = field(default_factory=list)
    records: dict[int, ConsumedRecord] = field(default_factory=dict)
    """`id()` of each event -> its record (to reject it with its position if applying it fails)."""
    rejected: list[Rejection] = field(default_factory=list)


def parse(records: Sequence[ConsumedRecord]) -> Parsed:
    """Validate every record from its raw bytes; never raises."""
    out = Parsed()
    for r in records:
        if r.value is None:
            out.rejected.append(Rejection(r, "tombstone", [{"type": "tombstone", "loc": [],
                                                           "msg": "the record has no value"}]))
            continue
        try:
            event = application_event_adapter.validate_json(r.value)
        except ValidationError as exc:
            reason, errors = validation_errors(exc)
            source, event_id = declared(r.value)
            out.rejected.append(Rejection(r, reason, errors, source, event_id))
            continue
        out.events.append(event)
        out.records[id(event)] = r
    return out


def encode(rejected: Rejection, max_bytes: int) -> tuple[bytes, bytes]:
    return rejected.payload(origin="workflow", consumer=CONSUMER, max_bytes=max_bytes, now=datetime.now(UTC))


def lanes(events: list[ApplicationEvent], count: int) -> list[list[ApplicationEvent]]:
    """Split by application id, keeping each application's events in order within one lane."""
    out: list[list[ApplicationEvent]] = [[] for _ in range(count)]
    for e in events:
        out[zlib.crc32(e.application_id.encode()) % count].append(e)
    return [lane for lane in out if lane]


async def apply_events(uow: UnitOfWork, engine: Engine, lane: list[ApplicationEvent], concurrency: int) -> list[str]:
    """Apply a lane: each application's events in order, up to `concurrency` applications at a time (so their
    external calls, e.g. E-Akte filings, overlap) in the lane's one unit of work."""
    slots = asyncio.Semaphore(max(1, concurrency))
    by_application: dict[str, list[int]] = {}
    for i, e in enumerate(lane):
        by_application.setdefault(e.application_id, []).append(i)
    results = [""] * len(lane)

    async def one_application(indices: list[int]) -> None:
        async with slots:
            for i in indices:
                results[i] = await engine.on_application_event(uow, lane[i])

    try:
        async with asyncio.TaskGroup() as group:  # one failure cancels the rest; the lane is retried
            for indices in by_application.values():
                group.create_task(one_application(indices))
    except ExceptionGroup as failed:  # report the first cause as a one-event lane did before
        raise failed.exceptions[0] from failed
    return results


async def apply_lane_once(units: Lanes, engine: Engine, lane: Sequence[ApplicationEvent],
                          concurrency: int = 1) -> None:
    """A lane in one unit of work (all or nothing)."""
    events = list(lane)
    async with units() as uow:
        await uow.prefetch(events, engine.new_case)
        results = await apply_events(uow, engine, events, concurrency)
    for e, result in zip(events, results, strict=True):
        engine.metrics.event(e.type, result).inc()


RejectEvent = Callable[[ApplicationEvent, BaseException], Awaitable[None]]


async def apply_lane(units: Lanes, engine: Engine, lane: list[ApplicationEvent], concurrency: int = 1,
                     reject: RejectEvent | None = None) -> None:
    """Apply a lane; if its transaction fails for a reason that is not infrastructure, split it until the event
    that fails alone is found and handed to `reject` (without `reject` that failure propagates)."""
    async def apply(part: Sequence[ApplicationEvent]) -> None:
        await apply_lane_once(units, engine, part, concurrency)

    async def refuse(event: ApplicationEvent, exc: BaseException) -> None:
        if reject is None:
            raise exc
        await reject(event, exc)

    def split(size: int) -> None:
        log.warning("lane of %d events failed; splitting it to find the event that fails", size)

    await isolate(lane, apply, refuse, split)


async def apply_batch(units: Lanes, engine: Engine, records: Sequence[ConsumedRecord], lane_count: int,
                      lane_concurrency: int = 1, publish: Publish | None = None,
                      max_rejected_bytes: int = 1_000_000) -> None:
    """Apply one consumed batch; rejected records are published (and acknowledged by the broker) before this
    returns, i.e. before the batch's offsets are committed."""
    engine.metrics.batch_size.observe(len(records))
    parsed = parse(records)

    async def send(rejected: Rejection) -> None:
        if publish is None:
            log.warning("application event rejected", extra={"reason": rejected.reason})
        else:
            await publish(*encode(rejected, max_rejected_bytes))
        engine.metrics.rejected.labels(CONSUMER, rejected.reason).inc()

    async def reject(event: ApplicationEvent, exc: BaseException) -> None:
        record = parsed.records[id(event)]
        log.error("application event rejected after it failed alone", extra={
            "topic": record.topic, "partition": record.partition, "offset": record.offset,
            "error": type(exc).__name__})
        await send(Rejection(record, reason_of(exc), error_detail(exc), event.source, str(event.id)))

    await asyncio.gather(*(send(r) for r in parsed.rejected))
    await asyncio.gather(*(apply_lane(units, engine, lane, lane_concurrency, reject)
                           for lane in lanes(parsed.events, lane_count)))


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
        decoder=no_decode,
        parser=raw_batch_parser,
        title="application-events-workflow",
        description="Opens and advances cases from application events (inbox dedup, outbox).",
    )
    publish = rejected_publisher(
        router, settings.application_rejected_topic, "application-events-rejected",
        "Application events the workflow cannot apply: undecodable, invalid, refused by the database, …, with "
        "reason, source position, key, headers and the bounded raw payload.")

    for reason in REASONS:  # every series exists from the start (at 0)
        holder["engine"].metrics.rejected.labels(CONSUMER, reason)

    async def on_application_events(_body: Any, message: KafkaMessage) -> None:
        engine: Engine = holder["engine"]
        try:
            await apply_batch(holder["units"], engine, message.raw_message, settings.lanes,
                              settings.lane_concurrency, publish, settings.rejected_max_bytes)
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
