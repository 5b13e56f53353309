"""Kafka adapter: a batch subscriber that applies each batch exactly once in one DB transaction."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy

from services.aggregator import repository, service
from services.aggregator.settings import AggregatorSettings
from shared.kafka import USAGE_EVENTS

log = logging.getLogger(__name__)


def build_router(settings: AggregatorSettings, pool_holder: dict[str, asyncpg.Pool]) -> KafkaRouter:
    router = KafkaRouter()

    @router.subscriber(
        USAGE_EVENTS.name,
        batch=True,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        max_records=settings.max_batch_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="usage-events-aggregate",
        description="Folds usage events into eGovSAD KPIs, exactly once per event id.",
    )
    async def on_usage_batch(_bodies: list[Any], message: KafkaMessage) -> None:
        records = [
            service.Record(r.topic, r.partition, r.offset, r.value or b"") for r in message.raw_message
        ]
        events, invalid = service.parse(records)
        if invalid:
            log.warning("invalid events on topic", extra={"count": len(invalid)})
        pool = pool_holder["pool"]
        async with pool.acquire() as conn, conn.transaction():
            new_ids = await repository.insert_new_ids(conn, [e.id for e in events], [e.time for e in events])
            await repository.add_counts(conn, service.fold_counts(events, new_ids))
            await repository.store_offsets(conn, settings.consumer_group, service.next_offsets(records))
        # The offset is committed only after this returns (after COMMIT); an exception seeks back (redelivery).

    return router
