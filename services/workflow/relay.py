"""Outbox relay: publishes committed outbox rows to Kafka, marks them after the broker acknowledged.

Runs inside the service by default; `python -m services.workflow.relay` runs it as a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
from aiokafka import AIOKafkaProducer

from services.workflow import repository
from services.workflow.metrics import WorkflowMetrics
from services.workflow.settings import WorkflowSettings
from shared.kafka import make_producer

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


async def serve(settings: WorkflowSettings) -> None:
    """The relay alone, as its own process: scale it apart from the engine (`KP_RELAY_IN_PROCESS=false`)."""
    import signal

    from services.workflow.app import create_pool

    pool = await create_pool(settings)
    producer = make_producer(settings.kafka_bootstrap, **settings.kafka_client_options())
    await producer.start()
    task = asyncio.create_task(run_relay(pool, producer, settings.relay_batch, settings.relay_interval_s))
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
