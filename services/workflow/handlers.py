"""Kafka adapter: application events in; the engine changes the case and writes outbox rows in one transaction."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from services.workflow.service import Engine
from services.workflow.settings import WorkflowSettings
from shared.events import application_event_adapter

log = logging.getLogger(__name__)


def build_router(settings: WorkflowSettings, holder: dict[str, Any]) -> KafkaRouter:
    router = KafkaRouter()

    @router.subscriber(
        settings.application_topic,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="application-events-workflow",
        description="Opens and advances cases from application events (inbox dedup, outbox).",
    )
    async def on_application_event(_body: Any, message: KafkaMessage) -> None:
        engine: Engine = holder["engine"]
        pool: asyncpg.Pool = holder["pool"]
        try:
            event = application_event_adapter.validate_json(message.body)
        except ValidationError as exc:
            engine.metrics.events.labels("invalid", "skipped").inc()
            log.warning("invalid application event skipped", extra={"errors": exc.error_count()})
            return
        async with pool.acquire() as conn, conn.transaction():
            result = await engine.on_application_event(conn, event)
        engine.metrics.events.labels(event.type, result).inc()

    return router
