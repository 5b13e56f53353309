"""Workflow service: FastStream consumer, outbox relay and case API in one FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry

from services.workflow.api import router
from services.workflow.handlers import build_router
from services.workflow.relay import run_relay
from services.workflow.settings import WorkflowSettings
from shared.db import create_pool
from shared.kafka import make_producer
from shared.observability import install_asyncapi, install_ops


def create_app(settings: WorkflowSettings | None = None) -> FastAPI:
    settings = settings or WorkflowSettings()
    registry = CollectorRegistry()
    pool_holder: dict[str, asyncpg.Pool] = {}
    broker = KafkaBroker(settings.kafka_bootstrap, client_id="kp-workflow")
    broker.include_router(build_router(settings, pool_holder))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        pool_holder["pool"] = app.state.pool = pool
        producer = make_producer(settings.kafka_bootstrap)
        await producer.start()
        await broker.start()
        relay = asyncio.create_task(run_relay(pool, producer, settings.relay_batch, settings.relay_interval_s))
        try:
            yield
        finally:
            await broker.stop()
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            await producer.stop()
            await pool.close()

    app = FastAPI(title="Kommunal-Pulse Workflow", version="1.0.0", lifespan=lifespan)
    app.state.settings = settings

    async def kafka_ready() -> None:
        if not await broker.ping(timeout=2.0):
            raise ConnectionError("kafka not reachable")

    async def db_ready() -> None:
        await pool_holder["pool"].fetchval("SELECT 1")

    install_ops(app, registry, {"kafka": kafka_ready, "postgres": db_ready})
    install_asyncapi(app, broker, "Kommunal-Pulse Workflow")
    app.include_router(router)
    return app
