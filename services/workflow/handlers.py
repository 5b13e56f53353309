"""Kafka adapter: application events in; state change + outbox rows in one transaction."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import orjson
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from services.workflow import repository, service
from services.workflow.settings import WorkflowSettings
from shared.events import application_event_adapter
from shared.kafka import APPLICATION_EVENTS, WORKFLOW_EVENTS

log = logging.getLogger(__name__)


def build_router(settings: WorkflowSettings, pool_holder: dict[str, asyncpg.Pool]) -> KafkaRouter:
    router = KafkaRouter()

    @router.subscriber(
        APPLICATION_EVENTS.name,
        group_id=settings.consumer_group,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.NACK_ON_ERROR,
        title="application-events-workflow",
        description="Opens and advances cases from application events (inbox dedup, outbox).",
    )
    async def on_application_event(_body: Any, message: KafkaMessage) -> None:
        try:
            event = application_event_adapter.validate_json(message.body)
        except ValidationError as exc:
            log.warning("invalid application event skipped", extra={"errors": exc.error_count()})
            return
        decision = service.on_application_event(event)
        async with pool_holder["pool"].acquire() as conn, conn.transaction():
            if not await repository.claim_inbox(conn, event.id):
                return
            if decision.open_case is not None and not await repository.open_case(conn, decision.open_case):
                return
            await repository.add_outbox(conn, [
                (WORKFLOW_EVENTS.name, e.kafka_key, orjson.dumps(e.model_dump(mode="json"))) for e in decision.emit
            ])

    return router
