"""Ingest service: FastAPI app with a durable Kafka producer and the API-key store in PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from http import HTTPStatus
from typing import Any, TypeVar

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from faststream.kafka import KafkaBroker
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.ingest import repository
from services.ingest.adapters import KafkaSink
from services.ingest.api import router
from services.ingest.mapping import load_mappings
from services.ingest.metrics import IngestMetrics
from services.ingest.service import ApiKey, Authenticator, Policy, RateLimiter, Runtime, refusal
from services.ingest.settings import IngestSettings
from services.ingest.tracker import repository as tracker_repository
from services.ingest.tracker.api import router as tracker_router
from services.ingest.tracker.service import ClientLimiter, SiteToken, SiteTokens, TrackerRuntime
from shared.apidocs import install_api_docs
from shared.db import Conn, create_pool
from shared.events import usage_event_adapter
from shared.http import ProblemError, install_problem_handlers
from shared.http_metrics import install_http_metrics
from shared.kafka import make_producer
from shared.observability import install_asyncapi, install_ops
from shared.openapi import install_unique_operation_ids

T = TypeVar("T")


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()
    settings.configure_reference()  # the contracts accept the configured extra municipalities and services
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    mappings = load_mappings(settings.mappings_dir)  # invalid mapping files stop the start here

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max)
        # The cluster's authentication (SASL/SSL) from the shared settings; acks wait at most the produce timeout.
        kafka_options = {**settings.kafka_client_options(),
                         "request_timeout_ms": int(settings.produce_timeout_s * 1000)}
        sink = KafkaSink(
            lambda: make_producer(settings.kafka_bootstrap, **kafka_options),
            settings.usage_topic, settings.rejected_topic, settings.produce_timeout_s, metrics.observe_produce,
        )
        try:
            await sink.start()
        except Exception:
            await pool.close()
            raise

        async def from_key_store(what: str, read: Callable[[Conn], Awaitable[T]]) -> T:
            """A read of the credentials; 503 with Retry-After while the database cannot answer."""
            try:
                async with pool.acquire(timeout=5) as conn:
                    return await read(conn)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise refusal(503, "key_store_unavailable", f"{what} cannot be checked: {type(exc).__name__}",
                              {"Retry-After": str(settings.retry_after_s)}) from exc

        async def lookup(key_hash: str) -> ApiKey | None:
            return await from_key_store("API keys", lambda conn: repository.find_active_key(conn, key_hash))

        async def find_site_token(token: str) -> SiteToken | None:
            return await from_key_store(
                "site tokens", lambda conn: tracker_repository.find_active_site_token(conn, token))

        async def member_origins() -> list[str]:
            async with pool.acquire(timeout=5) as conn:
                return await tracker_repository.active_origins(conn)

        app.state.tracker = TrackerRuntime(
            tokens=SiteTokens(find_site_token, settings.site_token_cache_s),
            clients=ClientLimiter(settings.tracker_client_rate_per_s, settings.tracker_client_burst),
            max_body_bytes=settings.tracker_max_body_bytes,
            load_origins=member_origins, hosts_ttl_s=settings.site_token_cache_s,
        )
        app.state.pool = pool
        app.state.sink = sink
        app.state.runtime = Runtime(
            sink=sink,
            auth=Authenticator(lookup, settings.api_key_cache_s, settings.ingest_auth_required),
            limiter=RateLimiter(),
            policy=Policy(clock_skew=timedelta(seconds=settings.clock_skew_s),
                          late_horizon=timedelta(days=settings.late_horizon_days)),
            counters=metrics,
            mappings=mappings,
            max_body_bytes=settings.max_body_bytes,
            max_batch_events=settings.max_batch_events,
            retry_after_s=settings.retry_after_s,
        )
        try:
            yield
        finally:
            await sink.stop()  # flushes pending sends before closing
            await pool.close()

    app = FastAPI(
        title="Kommunal-Pulse Ingest", version="1.0.0", lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Front door for usage events of online-service platforms. Errors are RFC 9457 problem details.",
    )
    install_api_docs(app)
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics

    async def kafka_ready() -> None:
        await app.state.sink.ready()

    async def db_ready() -> None:
        async with app.state.pool.acquire() as conn:
            await conn.fetchval("SELECT 1")

    install_ops(app, registry, {"kafka": kafka_ready, "postgres": db_ready})
    install_http_metrics(app, registry, observer=metrics)
    # ingest writes with a plain producer; an unconnected broker carries the document of what it writes
    install_asyncapi(app, KafkaBroker(settings.kafka_servers), "Kommunal-Pulse Ingest",
                     produces=[settings.usage_topic, settings.rejected_topic])
    app.include_router(router)
    app.include_router(tracker_router)
    install_problems(app)
    app.openapi = lambda: openapi_with_events(app)  # type: ignore[method-assign]
    install_unique_operation_ids(app)
    return app


def install_problems(app: FastAPI) -> None:
    """Framework errors (unknown route, wrong method, bad path parameter) as problem details too."""

    def on_http(_request: Request, exc: StarletteHTTPException) -> ProblemError:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
        return refusal(exc.status_code, code, str(exc.detail), exc.headers)

    def on_validation(_request: Request, exc: RequestValidationError) -> ProblemError:
        return refusal(400, "invalid_request", str(exc.errors())[:500])

    install_problem_handlers(app, http=on_http, validation=on_validation)


def openapi_with_events(app: FastAPI) -> dict[str, Any]:
    """The generated document plus the usage-event contract the request bodies refer to."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    event_schema = usage_event_adapter.json_schema(ref_template="#/components/schemas/{model}")
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.update(event_schema.pop("$defs", {}))
    components["UsageEvent"] = event_schema
    app.openapi_schema = schema
    return schema
