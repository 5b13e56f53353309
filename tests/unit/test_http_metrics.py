"""The shared HTTP middleware labels requests by route template, method and status, never by raw path."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, HTTPException
from prometheus_client import CollectorRegistry

from shared.http_metrics import UNMATCHED, install_http_metrics


def _app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        if item_id == "missing":
            raise HTTPException(404)
        return {"id": item_id}

    install_http_metrics(app, registry)
    return app


def _count(registry: CollectorRegistry, **labels: str) -> float:
    return registry.get_sample_value("kp_http_requests_total", labels) or 0.0


class TestHttpMetricsMiddleware:
    async def test_requests_are_counted_by_template_method_and_code(self) -> None:
        registry = CollectorRegistry()
        transport = httpx.ASGITransport(app=_app(registry))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for path in ("/items/a", "/items/b", "/items/missing", "/nowhere/x"):
                await client.get(path)
            await client.post("/items/a")
        template = "/items/{item_id}"
        assert _count(registry, route=template, method="GET", code="200") == 2
        assert _count(registry, route=template, method="GET", code="404") == 1
        assert _count(registry, route=template, method="POST", code="405") == 1
        assert _count(registry, route=UNMATCHED, method="GET", code="404") == 1
        assert _count(registry, route="/items/a", method="GET", code="200") == 0
        observed = registry.get_sample_value("kp_http_request_duration_seconds_count",
                                             {"route": template, "method": "GET"})
        assert observed == 3
