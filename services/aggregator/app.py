"""Aggregator service: FastStream consumers inside a FastAPI app (health, metrics, AsyncAPI)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from services.aggregator import unit_of_work
from services.aggregator.handlers import build_router, run_lag_refresh
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.service import run_dedup_cleanup
from services.aggregator.settings import AggregatorSettings
from shared.apidocs import install_api_docs
from shared.asyncapi import CONTRACTS, REJECTED
from shared.db import create_pool
from shared.http_metrics import install_http_metrics
from shared.kafka import USAGE_EVENTS, WORKFLOW_EVENTS
from shared.observability import install_asyncapi, install_ops
from shared.openapi import install_unique_operation_ids


def create_app(settings: AggregatorSettings | None = None) -> FastAPI:
    settings = settings or AggregatorSettings()
    settings.configure_reference()  # the contracts accept the configured extra municipalities and services
    metrics = AggregatorMetrics.create()
    pool_holder: dict[str, asyncpg.Pool] = {}
    # Rejections must be durable before offsets move on: acks from all in-sync replicas, idempotent.
    broker = KafkaBroker(
        settings.kafka_servers, client_id="kp-aggregator", acks="all", enable_idempotence=True,
        security=settings.faststream_security(),
    )
    begin = unit_of_work.postgres(pool_holder)
    router, subscriptions = build_router(settings, begin, metrics)
    broker.include_router(router)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool_holder["pool"] = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        await broker.start()
        keep = timedelta(days=settings.late_horizon_days + settings.dedup_margin_days)
        tasks = [asyncio.create_task(run_dedup_cleanup(begin, keep, settings.dedup_cleanup_interval_s,
                                                       settings.dedup_cleanup_chunk, metrics)),
                 asyncio.create_task(run_lag_refresh(subscriptions, settings.lag_refresh_interval_s))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await broker.stop()  # finishes the batch in flight, then leaves the group
            await pool_holder["pool"].close()

    app = FastAPI(title="Kommunal-Pulse Aggregator", version="1.0.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    install_api_docs(app)
    app.state.settings = settings
    app.state.broker = broker
    app.state.metrics = metrics

    async def kafka_ready() -> None:
        if not await broker.ping(timeout=2.0):
            raise ConnectionError("kafka not reachable")

    async def db_ready() -> None:
        await pool_holder["pool"].fetchval("SELECT 1")

    install_ops(app, metrics.registry, {"kafka": kafka_ready, "postgres": db_ready})
    install_http_metrics(app, metrics.registry)
    install_asyncapi(app, broker, "Kommunal-Pulse Aggregator", contracts={
        settings.usage_topic: CONTRACTS[USAGE_EVENTS.name], settings.workflow_topic: CONTRACTS[WORKFLOW_EVENTS.name],
        settings.rejected_topic: REJECTED})
    install_unique_operation_ids(app)
    return app
