"""Outbox relay: publishes committed outbox rows to Kafka, marks them after the broker acknowledged."""

from __future__ import annotations

import asyncio
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from services.workflow import repository

log = logging.getLogger(__name__)


async def relay_once(pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int) -> int:
    """Publish one slice of the outbox; return how many rows were published."""
    async with pool.acquire() as conn, conn.transaction():
        rows = await repository.take_unpublished(conn, batch)
        if not rows:
            return 0
        futures = [await producer.send(r["topic"], value=bytes(r["payload"]), key=bytes(r["key"])) for r in rows]
        await asyncio.gather(*futures)
        await repository.mark_published(conn, [r["id"] for r in rows])
    return len(rows)


async def run_relay(pool: asyncpg.Pool, producer: AIOKafkaProducer, batch: int, interval_s: float) -> None:
    """Loop until cancelled; a failure is logged and retried (rows stay unpublished, so nothing is lost)."""
    while True:
        try:
            published = await relay_once(pool, producer, batch)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("outbox relay failed; will retry")
            published = 0
        if published < batch:
            await asyncio.sleep(interval_s)
