"""Outbox relay: publishes committed outbox rows to Kafka, marks them after the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from services.workflow import repository
from services.workflow.metrics import WorkflowMetrics

log = logging.getLogger(__name__)


async def relay_once(pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int,
                     metrics: WorkflowMetrics | None = None) -> int:
    """Publish one slice of the outbox; return how many rows were published."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await repository.take_unpublished(conn, batch)
        if not rows:
            return 0
        futures = [await producer.send(r["topic"], value=bytes(r["payload"]), key=bytes(r["key"])) for r in rows]
        await asyncio.gather(*futures)
        published_at = await repository.mark_published(conn, [r["id"] for r in rows])
    if metrics is not None:
        for r in rows:
            metrics.outbox_lag.observe(max(0.0, (published_at - r["created_at"]).total_seconds()))
    return len(rows)


async def run_relay(pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int, interval_s: float,
                    metrics: WorkflowMetrics | None = None) -> None:
    """Loop until cancelled; a failure is logged and retried (rows stay unpublished, so nothing is lost)."""
    while True:
        try:
            published = await relay_once(pool, producer, batch, metrics)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox relay failed; will retry")
            published = 0
        if published < batch:
            await asyncio.sleep(interval_s)
