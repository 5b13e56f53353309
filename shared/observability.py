"""Logging and health endpoints shared by all services."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import ClassVar

import orjson
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter

from shared.asyncapi import Contract, with_contracts
from shared.db import open_pools

OWN_HANDLER_LOGGERS = ("faststream", "faststream.access.kafka")
"""Loggers that FastStream gives a coloured plain-text handler of its own (created lazily, so they are claimed
here first: FastStream adds no handler to a logger that already writes to stdout)."""
STARTUP_GRACE_S = 120.0
TRANSIENT_AT_START = ("GroupCoordinatorNotAvailableError", "CoordinatorLoadInProgressError",
                      "NotCoordinatorForGroupError")
"""Kafka errors every consumer sees while a fresh broker elects its group coordinator; aiokafka retries them."""


class StartupNoiseFilter(logging.Filter):
    """Logs aiokafka's expected coordinator errors of the first minutes as INFO; later they stay ERROR."""

    def __init__(self, grace_s: float = STARTUP_GRACE_S) -> None:
        super().__init__()
        self.until = time.monotonic() + grace_s

    def filter(self, record: logging.LogRecord) -> bool:
        if (record.levelno == logging.ERROR and record.name.startswith("aiokafka")
                and time.monotonic() < self.until
                and any(name in record.getMessage() for name in TRANSIENT_AT_START)):
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class NoColourFilter(logging.Filter):
    """Drops uvicorn's `color_message` (the message again, with ANSI colour codes) from the JSON lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def setup_logging(level: str = "INFO", json_logs: bool = True) -> None:
    """Log to stdout, one JSON object per line (or plain text for local debugging), third-party loggers too."""
    handler = logging.StreamHandler(sys.stdout)
    if json_logs:
        handler.setFormatter(
            JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s", rename_fields={"levelname": "level"})
        )
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(StartupNoiseFilter())
    handler.addFilter(NoColourFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that attached handlers of their own (plain text, colour codes) write through ours instead.
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if isinstance(existing, logging.Logger) and existing.handlers and name not in OWN_HANDLER_LOGGERS:
            existing.handlers.clear()
            existing.propagate = True
    for name in OWN_HANDLER_LOGGERS:
        lg = logging.getLogger(name)
        lg.handlers[:] = [handler]
        lg.propagate = False
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


ReadinessCheck = Callable[[], Awaitable[None]]


class PoolCollector(Collector):
    """`kp_db_pool_connections_*`: the process's PostgreSQL pool usage (alert KPDatabasePoolExhausted)."""

    HELP: ClassVar[dict[str, str]] = {
        "kp_db_pool_connections_max": "Largest number of connections the pools may open.",
        "kp_db_pool_connections_open": "Connections the pools hold open.",
        "kp_db_pool_connections_in_use": "Connections borrowed from the pools right now.",
    }

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc) for name, doc in self.HELP.items()]

    def collect(self) -> Iterable[Metric]:
        pools = open_pools()
        values = {
            "kp_db_pool_connections_max": sum(p.get_max_size() for p in pools),
            "kp_db_pool_connections_open": sum(p.get_size() for p in pools),
            "kp_db_pool_connections_in_use": sum(p.get_size() - p.get_idle_size() for p in pools),
        }
        for name, doc in self.HELP.items():
            yield GaugeMetricFamily(name, doc, value=values[name])


def ops_router(registry: CollectorRegistry, checks: dict[str, ReadinessCheck]) -> APIRouter:
    """`/healthz` (process alive), `/readyz` (dependencies reachable) and `/metrics`."""
    router = APIRouter(tags=["operations"])
    with contextlib.suppress(ValueError):  # already registered on this registry
        registry.register(PoolCollector())

    @router.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", summary="Readiness: Kafka and PostgreSQL reachable")
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        ok = True
        for name, check in checks.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:
                ok = False
                results[name] = f"error: {type(exc).__name__}"
        body = {"status": "ok" if ok else "unavailable", "checks": results}
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


def install_ops(app: FastAPI, registry: CollectorRegistry, checks: dict[str, ReadinessCheck]) -> None:
    app.include_router(ops_router(registry, checks))


def install_asyncapi(app: FastAPI, broker: object, title: str, version: str = "1.0.0", *,
                     produces: Sequence[str] = (), contracts: Mapping[str, Contract] | None = None) -> None:
    """Serve the AsyncAPI 3.0 document of the FastStream broker at `/asyncapi.json`, every payload the JSON
    Schema of its contract, plus the topics written by plain producers (`produces`)."""
    from faststream.specification import AsyncAPI

    @app.get("/asyncapi.json", tags=["operations"], summary="AsyncAPI document of this service's Kafka I/O")
    async def asyncapi() -> Response:
        spec = AsyncAPI(broker, title=title, version=version).to_specification()  # type: ignore[arg-type]
        document = with_contracts(orjson.loads(spec.to_json()), produces, contracts)
        return Response(orjson.dumps(document), media_type="application/json")
