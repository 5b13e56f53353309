"""Ingest service: FastAPI app with a durable Kafka producer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from services.ingest.api import router
from services.ingest.repository import KafkaSink
from services.ingest.settings import IngestSettings
from shared.kafka import USAGE_EVENTS, make_producer
from shared.observability import install_ops


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        producer = make_producer(settings.kafka_bootstrap)
        await producer.start()
        app.state.sink = KafkaSink(producer, USAGE_EVENTS.name, settings.produce_timeout_s)
        app.state.producer = producer
        try:
            yield
        finally:
            await producer.stop()  # flushes pending sends before closing

    app = FastAPI(title="Kommunal-Pulse Ingest", version="1.0.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = registry

    async def kafka_ready() -> None:
        await app.state.producer.client.fetch_all_metadata()

    install_ops(app, registry, {"kafka": kafka_ready})
    app.include_router(router)
    return app
