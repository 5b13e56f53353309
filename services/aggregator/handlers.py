"""Kafka adapters: batch subscribers that hand each batch's records to `service.consume_batch`.

FastStream commits the Kafka offsets after the handler returns, i.e. after the PostgreSQL commit
(`AckPolicy.NACK_ON_ERROR`: a batch whose handler raises is sought back and redelivered); on partition assignment
the consumer seeks to the offsets stored in PostgreSQL. Records reach the handler undecoded
(`shared.poison.raw_batch_parser`), so the poison rule decides about every byte of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import TypeAdapter

from services.aggregator import fold, service
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.settings import AggregatorSettings
from services.aggregator.unit_of_work import Begin
from shared.events import usage_event_adapter
from shared.events.workflow import workflow_event_adapter
from shared.poison import Publish, no_decode, raw_batch_parser, rejected_publisher
from shared.rejections import REASONS

log = logging.getLogger(__name__)


@dataclass
class Subscription:
    """A stream and the FastStream subscriber that consumes it."""

    stream: service.Stream
    subscriber: Any
    """Its `consumer` (aiokafka's) exists once the broker has started: seeks and partition ends come from it."""


def update_lag(sub: Subscription) -> None:
    """Lag per assigned partition = partition end (as last fetched) minus the position committed to PostgreSQL."""
    consumer = getattr(sub.subscriber, "consumer", None)
    if consumer is None:
        return
    stream = sub.stream
    for tp in consumer.assignment():
        end = consumer.highwater(tp)
        position = stream.positions.get((tp.topic, tp.partition))
        if end is not None and position is not None:
            stream.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(end - position, 0))


async def run_lag_refresh(subs: list[Subscription], interval_s: float) -> None:
    """Keep the lag gauge current while no batch commits (idle, or stuck on a failing dependency)."""
    while True:
        await asyncio.sleep(interval_s)
        for sub in subs:
            try:
                update_lag(sub)
            except Exception:
                log.warning("updating the lag metric failed", exc_info=True)


class SeekToStoredOffsets(ConsumerRebalanceListener):  # type: ignore[misc]
    """On assignment, resume from the offsets stored in PostgreSQL (they are never behind Kafka's)."""

    def __init__(self, sub: Subscription, begin: Begin) -> None:
        self.sub, self.begin = sub, begin

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        stream = self.sub.stream
        await service.release_partitions(stream, [tp.partition for tp in revoked])
        for tp in revoked:
            with contextlib.suppress(KeyError):
                stream.metrics.consumer_lag.remove(tp.topic, str(tp.partition))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        stream = self.sub.stream
        for attempt in range(5):
            try:
                resume = await service.resume_positions(stream, self.begin, {tp.partition for tp in assigned})
                break
            except Exception:
                # Falling back to Kafka's committed offsets is safe (they are at or before ours; the dedup
                # table absorbs the repeat), so only retry briefly.
                log.warning("loading stored offsets failed", extra={"attempt": attempt + 1}, exc_info=True)
                await asyncio.sleep(0.5 * (attempt + 1))
        else:
            return
        consumer = self.sub.subscriber.consumer
        for tp in assigned:
            if tp.partition in resume:
                consumer.seek(tp, resume[tp.partition])
        log.info("partitions assigned", extra={"topic": stream.topic,
                                               "partitions": sorted(tp.partition for tp in assigned)})


def _stream(settings: AggregatorSettings, metrics: AggregatorMetrics, *, topic: str, group: str, consumer: str,
            adapter: TypeAdapter[Any], contributions: Callable[[Any], Sequence[fold.Contribution]],
            daily_counts: bool) -> service.Stream:
    return service.Stream(
        topic=topic, group=group, consumer=consumer, adapter=adapter, contributions=contributions,
        daily_counts=daily_counts, horizon=timedelta(days=settings.late_horizon_days),
        future_skew=timedelta(seconds=settings.future_skew_s), secret=settings.ckm_key(),
        chunk_records=settings.fold_chunk_records, rejected_max_bytes=settings.rejected_max_bytes,
        retry_backoff_max_s=settings.retry_backoff_max_s, metrics=metrics,
    )


def build_router(settings: AggregatorSettings, begin: Begin,
                 metrics: AggregatorMetrics) -> tuple[KafkaRouter, list[Subscription]]:
    """The subscribers (usage, optionally workflow) and their rejected-topic publishers."""
    router = KafkaRouter()
    subs: list[Subscription] = []

    def subscribe(stream: service.Stream, publish: Publish, title: str, description: str) -> None:
        async def on_batch(_body: None, message: KafkaMessage) -> None:
            await service.consume_batch(stream, message.raw_message, begin, publish)
            try:
                update_lag(sub)
            except Exception:  # the batch is committed; a metrics problem must not redeliver it
                log.warning("updating the lag metric failed", exc_info=True)

        sub = Subscription(stream, None)
        sub.subscriber = router.subscriber(
            stream.topic, batch=True, group_id=stream.group, auto_offset_reset="earliest",
            max_records=settings.max_batch_records, batch_timeout_ms=settings.batch_timeout_ms,
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            ack_policy=AckPolicy.NACK_ON_ERROR, listener=SeekToStoredOffsets(sub, begin),
            decoder=no_decode, parser=raw_batch_parser, title=title, description=description,
        )
        sub.subscriber(on_batch)
        for reason in REASONS:  # every series exists from the start (at 0), so rate() and alerts see the first
            metrics.rejected.labels(stream.topic, reason)
        metrics.batch_splits.labels(stream.topic)
        subs.append(sub)

    subscribe(
        _stream(settings, metrics, topic=settings.usage_topic, group=settings.consumer_group,
                consumer="aggregator/usage", adapter=usage_event_adapter, contributions=fold.usage_contributions,
                daily_counts=True),
        rejected_publisher(router, settings.rejected_topic, "usage-events-rejected",
                  "Records the aggregator cannot count: invalid, too_late, from_future, tombstone, refused by the "
                  "database, …, with reasons, source position, key and headers."),
        "usage-events-aggregate", "Folds usage events into eGovSAD KPIs, exactly once per event id.",
    )
    if settings.consume_workflow:
        subscribe(
            _stream(settings, metrics, topic=settings.workflow_topic, group=settings.workflow_consumer_group,
                    consumer="aggregator/workflow", adapter=workflow_event_adapter,
                    contributions=fold.workflow_contributions, daily_counts=False),
            rejected_publisher(router, settings.workflow_rejected_topic, "workflow-events-rejected",
                      "Workflow events the aggregator cannot count, with reasons and source position."),
            "workflow-events-aggregate", "Folds workflow events into processing-time KPIs, exactly once.",
        )
    return router, subs
