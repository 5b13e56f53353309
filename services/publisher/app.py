"""Publisher service: public, read-only open-data API."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.gzip import GZipMiddleware

from services.publisher.catalog import service as catalog
from services.publisher.catalog.api import router as catalog_router
from services.publisher.dashboard.api import router as dashboard_router
from services.publisher.dashboard.api import static_files
from services.publisher.dashboard.pwa import router as pwa_router
from services.publisher.kpis.api import VersionedCache, invalid, router
from services.publisher.kpis.changes import ChangeTracker
from services.publisher.portal import install as install_portal
from services.publisher.settings import PublisherSettings
from shared.apidocs import install_api_docs
from shared.db import create_pool
from shared.http import ProblemError, install_problem_handlers
from shared.http_metrics import install_http_metrics
from shared.observability import install_ops
from shared.openapi import install_unique_operation_ids

log = logging.getLogger(__name__)


def install_problems(app: FastAPI) -> None:
    """Every error leaves as application/problem+json naming the request path; unexpected ones without
    internals."""

    def on_validation(request: Request, exc: RequestValidationError) -> ProblemError:
        params = [{"name": str(e["loc"][-1]) if e.get("loc") else "", "in": str(e["loc"][0]) if e.get("loc") else "",
                   "reason": str(e.get("msg", "invalid"))} for e in exc.errors()]
        names = ", ".join(sorted({p["name"] for p in params}))
        return invalid(request, f"invalid: {names}", params)

    def on_http(request: Request, exc: StarletteHTTPException) -> ProblemError:
        return ProblemError(exc.status_code, str(exc.detail), instance=request.url.path, headers=exc.headers)

    def on_unavailable(request: Request, exc: Exception) -> ProblemError:
        log.warning("database unavailable on %s: %s", request.url.path, exc)
        return ProblemError(503, "Service Unavailable", "the database is not reachable", instance=request.url.path,
                            headers={"Retry-After": "5"})

    def on_error(request: Request, exc: Exception) -> ProblemError:
        log.exception("unhandled error on %s", request.url.path)
        return ProblemError(500, "Internal Server Error", instance=request.url.path)

    unavailable = dict.fromkeys((ConnectionError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError),
                                on_unavailable)
    install_problem_handlers(app, http=on_http, validation=on_validation, errors={**unavailable, Exception: on_error})


def create_app(settings: PublisherSettings | None = None) -> FastAPI:
    settings = settings or PublisherSettings()
    registry = CollectorRegistry()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # every statement planned for its parameters: the KPI query's filters are optional and its range any
        # length, and a generic plan (PostgreSQL's choice after five executions of a prepared statement) scans
        # the period index over all municipalities and services (repository.kpi_rows); a session default
        # instead of SET LOCAL per query saves a transaction's three round trips on every computed request
        app.state.pool = await create_pool(settings.database_url, settings.db_pool_min, settings.db_pool_max,
                                           server_settings={"plan_cache_mode": "force_custom_plan"})
        await app.state.changes.start()
        # what startup built (modules, routes, reference data) lives as long as the process: keep it out of
        # the collector's full scans, which otherwise pause a request for tens of milliseconds
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await app.state.changes.stop()
            await app.state.pool.close()

    app = FastAPI(title="Kommunal-Pulse Open Data", version="1.0.0", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    install_api_docs(app)
    app.state.settings = settings
    app.state.changes = ChangeTracker(settings.database_url, settings.change_poll_s)
    app.state.etags = VersionedCache(settings.etag_cache_size)
    app.state.tables = VersionedCache(settings.table_cache_size)
    install_problems(app)
    app.add_middleware(GZipMiddleware, minimum_size=settings.gzip_min_bytes)
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "HEAD", "OPTIONS"],
                       expose_headers=["ETag", "Last-Modified", "Link"])

    async def db_ready() -> None:
        await app.state.pool.fetchval("SELECT 1")

    install_ops(app, registry, {"postgres": db_ready})
    install_http_metrics(app, registry)
    app.include_router(router)
    app.state.catalog_registry = catalog.create_registry(
        catalog.CatalogAgent(id="kommunal-pulse", name=settings.catalog_publisher_name), settings.catalog_contact_email,
        settings.catalog_coverage_ttl_s,
    )
    app.include_router(catalog_router)
    app.include_router(dashboard_router)
    app.include_router(pwa_router)
    app.mount("/static", static_files, name="static")
    install_portal(app)
    install_unique_operation_ids(app)
    return app
