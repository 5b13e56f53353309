"""Workflow service: FastStream consumer, engine, timers, outbox relay and the HTTP API in one FastAPI app."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from fastapi import FastAPI
from faststream.kafka import KafkaBroker

from services.workflow import repository
from services.workflow.adapters import Clock, EAkte, FileSystemEAkte, HttpEAkte, SystemClock
from services.workflow.api import install_problem_handlers, router
from services.workflow.auth import TokenVerifier
from services.workflow.definitions import DefinitionError, Registry, load_definitions
from services.workflow.handlers import build_router
from services.workflow.metrics import WorkflowMetrics
from services.workflow.oidc import Discovery, RelyingParty
from services.workflow.relay import CONSUMER as RELAY_CONSUMER
from services.workflow.relay import RELAY_REASONS, make_relay_producer, run_relay
from services.workflow.service import Engine
from services.workflow.settings import WorkflowSettings
from services.workflow.unit_of_work import postgres_lanes
from services.workflow.views import views
from shared.apidocs import install_api_docs
from shared.asyncapi import CONTRACTS
from shared.db import track_pool
from shared.http_metrics import install_http_metrics
from shared.kafka import APPLICATION_EVENTS, WORKFLOW_EVENTS
from shared.observability import install_asyncapi, install_ops
from shared.openapi import install_unique_operation_ids


async def create_pool(settings: WorkflowSettings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max,
        server_settings={"timezone": "UTC"}, command_timeout=30, init=repository.init_connection,
    )
    assert pool is not None
    track_pool(pool)  # reported in kp_db_pool_* like the pools of the other services
    return pool


async def register_definitions(pool: asyncpg.Pool, registry: Registry) -> None:
    """Store each definition version; refuse to start if a published version was changed in place or a version
    that open cases are pinned to is missing."""
    async with pool.acquire() as conn, conn.transaction():
        for d in registry.all():
            body = d.model_dump(mode="json")
            checksum = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
            stored = await repository.register_definition(conn, d.name, d.version, d.service, checksum, body)
            if stored != checksum:
                raise DefinitionError(
                    f"definition {d.name} version {d.version} differs from the version already in use; "
                    "publish changes as a new version")
        loaded = {(d.name, d.version) for d in registry.all()}
        missing = [f"{n} v{v}" for n, v in await repository.versions_in_use(conn) if (n, v) not in loaded]
        if missing:
            raise DefinitionError(f"open cases are pinned to definition versions that are not deployed: "
                                  f"{', '.join(missing)}; keep those files until their cases are closed")


def make_eakte(settings: WorkflowSettings) -> EAkte:
    if settings.eakte == "http":
        assert settings.eakte_url
        return HttpEAkte(settings.eakte_url, settings.eakte_token)
    return FileSystemEAkte(settings.eakte_root)


def create_app(settings: WorkflowSettings | None = None, *, clock: Clock | None = None, eakte: EAkte | None = None,
               registry: Registry | None = None) -> FastAPI:
    settings = settings or WorkflowSettings()
    settings.configure_reference()  # the contracts accept the configured extra municipalities and services
    registry = registry or load_definitions(settings.definitions_dir)  # invalid definitions refuse the start
    metrics = WorkflowMetrics()
    for reason in RELAY_REASONS:  # the relay's rejection series exist from the start (at 0)
        metrics.rejected.labels(RELAY_CONSUMER, reason)
    engine = Engine(registry=registry, eakte=eakte or make_eakte(settings), clock=clock or SystemClock(),
                    metrics=metrics, topic=settings.workflow_topic, retry_jitter=settings.retry_jitter)
    holder: dict[str, Any] = {"engine": engine}
    # Rejected records must be durable before the batch's offsets are committed: acks from all in-sync replicas.
    broker = KafkaBroker(settings.kafka_servers, client_id="kp-workflow", acks="all", enable_idempotence=True,
                         security=settings.faststream_security())
    broker.include_router(build_router(settings, holder))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from services.workflow.worker import refresh_metrics, run_timers

        pool = await create_pool(settings)
        holder["pool"] = app.state.pool = pool
        holder["units"] = postgres_lanes(pool)
        await register_definitions(pool, registry)
        producer = make_relay_producer(settings)
        await producer.start()
        app.state.producer = producer
        await broker.start()
        tasks = [
            asyncio.create_task(run_timers(pool, engine, settings.timer_batch, settings.timer_interval_s)),
            asyncio.create_task(refresh_metrics(pool, metrics, settings.metrics_interval_s)),
        ]
        if settings.relay_in_process:
            tasks.append(asyncio.create_task(
                run_relay(pool, producer, settings.relay_batch, settings.relay_interval_s, metrics,
                          settings.workflow_rejected_topic, settings.rejected_max_bytes)))
        try:
            yield
        finally:
            await broker.stop()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            await producer.stop()
            if isinstance(engine.eakte, HttpEAkte):
                await engine.eakte.aclose()
            elif isinstance(engine.eakte, FileSystemEAkte):
                await asyncio.to_thread(engine.eakte.close)
            await pool.close()

    app = FastAPI(title="Kommunal-Pulse Workflow", version="1.0.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    install_api_docs(app)
    app.state.settings = settings
    app.state.engine = engine
    app.state.metrics = metrics
    discovery = Discovery(settings)
    app.state.discovery = discovery
    app.state.relying_party = RelyingParty(settings, discovery)
    app.state.verifier = TokenVerifier(settings, discovery)

    async def kafka_ready() -> None:
        if not await broker.ping(timeout=2.0):
            raise ConnectionError("kafka not reachable")

    async def db_ready() -> None:
        await holder["pool"].fetchval("SELECT 1")

    install_ops(app, metrics.registry, {"kafka": kafka_ready, "postgres": db_ready})
    install_http_metrics(app, metrics.registry)
    # the outbox relay writes the workflow events with a plain producer: documented here
    install_asyncapi(app, broker, "Kommunal-Pulse Workflow", produces=[settings.workflow_topic], contracts={
        settings.application_topic: CONTRACTS[APPLICATION_EVENTS.name],
        settings.workflow_topic: CONTRACTS[WORKFLOW_EVENTS.name]})
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(views)
    install_unique_operation_ids(app)
    return app
