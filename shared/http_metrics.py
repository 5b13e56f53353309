"""HTTP request metrics of every service: `kp_http_requests_total` and `kp_http_request_duration_seconds`.

Labels are the route template (`/v1/portal/datasets/{name}`, never the raw path, so a scanner cannot blow up
the series count), the method and, on the counter, the status code. Requests that match no route are
labelled `unmatched`.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"
# Methods outside this set are counted as OTHER: the label set stays bounded whatever clients send.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """The two HTTP series on a service's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("kp_http_requests_total", "HTTP requests by route template, method and status code.",
                                ["route", "method", "code"], registry=registry)
        self.duration = Histogram("kp_http_request_duration_seconds",
                                  "HTTP request latency (until the response is sent) by route template and method.",
                                  ["route", "method"], buckets=LATENCY_BUCKETS, registry=registry)


class RequestObserver(Protocol):
    """Series of a service's own that follow every request (e.g. ingest's `kp_ingest_requests_*`), fed by the
    same middleware so a request is timed once."""

    def request_started(self) -> None: ...
    def request_finished(self, route: str, code: int, seconds: float) -> None: ...


class HttpMetricsMiddleware:
    """Counts and times each HTTP request by its route template."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, observer: RequestObserver | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = {"code": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        if self.observer is not None:
            self.observer.request_started()
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED
            method = scope.get("method", "GET")
            method = method if method in METHODS else "OTHER"
            self.metrics.duration.labels(template, method).observe(seconds)
            self.metrics.requests.labels(template, method, str(status["code"])).inc()
            if self.observer is not None:
                self.observer.request_finished(template, status["code"], seconds)


def install_http_metrics(app: FastAPI, registry: CollectorRegistry,
                         observer: RequestObserver | None = None) -> HttpMetrics:
    """Add the middleware to `app`, reporting on `registry` (the one its `/metrics` serves) and `observer`."""
    metrics = HttpMetrics(registry)
    app.add_middleware(HttpMetricsMiddleware, metrics=metrics, observer=observer)
    return metrics
