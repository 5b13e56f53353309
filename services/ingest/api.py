"""HTTP adapter: parse the request, call the service, map outcomes to status codes."""

from __future__ import annotations

from typing import Any

import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from services.ingest import service
from services.ingest.repository import KafkaSink
from services.ingest.schemas import BatchResult

router = APIRouter()


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status, media_type="application/problem+json", headers=headers,
    )


@router.post(
    "/v1/events",
    response_model=BatchResult,
    summary="Submit a batch of usage events",
    responses={400: {"description": "Body is not a JSON array"}, 503: {"description": "Kafka unavailable"}},
)
async def post_events(request: Request) -> Any:
    settings = request.app.state.settings
    body = await request.body()
    if len(body) > settings.max_body_bytes:
        return problem(413, "Payload Too Large", f"body exceeds {settings.max_body_bytes} bytes")
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return problem(400, "Bad Request", f"body is not valid JSON: {exc}")
    if not isinstance(items, list):
        return problem(400, "Bad Request", "body must be a JSON array of events")
    if len(items) > settings.max_batch_events:
        return problem(413, "Payload Too Large", f"batch exceeds {settings.max_batch_events} events")
    sink: KafkaSink = request.app.state.sink
    try:
        result = await service.ingest(items, sink)
    except (KafkaError, TimeoutError) as exc:
        return problem(503, "Service Unavailable", f"event store unavailable: {type(exc).__name__}",
                       headers={"Retry-After": "5"})
    return result
