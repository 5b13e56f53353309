"""HTTP adapter: read the body, hand it to the service, render results and problems (RFC 9457)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from fastapi import APIRouter, Request, Security
from fastapi.responses import Response
from fastapi.security import HTTPBearer

from services.ingest import service
from services.ingest.schemas import BatchResult, Problem
from services.ingest.service import Item, Runtime, refusal
from shared.http import PROBLEM, ProblemError, read_body

router = APIRouter(tags=["ingest"])
bearer = HTTPBearer(auto_error=False, description="The platform's API key: `Authorization: Bearer kpk_...`.")

PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "description": text, "content": {PROBLEM: {}}}
    for status, text in {
        400: "Body not parseable (invalid JSON, not an array, invalid gzip).",
        401: "API key missing, unknown or revoked.",
        404: "Unknown platform mapping.",
        413: "Body or batch larger than the configured limits (`payload_too_large`), or an event larger than the "
             "event store accepts (`record_too_large`, permanent).",
        415: "Unsupported Content-Type or Content-Encoding.",
        429: "Rate limit of the API key exceeded; see `Retry-After`.",
        503: "Kafka did not acknowledge in time; nothing of the batch is accepted. Retry after `Retry-After`.",
    }.items()
}
ENCODING_HEADER = {
    "name": "Content-Encoding", "in": "header", "required": False,
    "schema": {"type": "string", "enum": ["gzip", "identity"]},
    "description": "Send `gzip` for a gzip-compressed body.",
}


async def read_capped(request: Request, limit: int) -> bytes:
    """The body, refused with 413 `payload_too_large` beyond `limit` bytes."""
    return await read_body(request, limit, refusal(413, "payload_too_large", f"body exceeds {limit} bytes"))


def not_written(exc: KafkaError | TimeoutError, retry_after_s: int, too_large: str,
                unacknowledged: str) -> ProblemError:
    """Kafka did not take the events: a record too large is permanent (413), anything else is worth a retry (503;
    `unacknowledged` gets the error's class name)."""
    if isinstance(exc, MessageSizeTooLargeError):
        # Contracts and rejected records are bounded well below the broker's limit; should one still be refused,
        # the answer is permanent, not "retry".
        return refusal(413, "record_too_large", too_large)
    return refusal(503, "event_store_unavailable", unacknowledged.format(type(exc).__name__),
                   {"Retry-After": str(retry_after_s)})


async def handle(request: Request, to_items: Callable[[Runtime, bytes], list[Item]]) -> Any:
    """Authenticate, limit, decode, ingest; every failure becomes a problem document."""
    rt: Runtime = request.app.state.runtime
    caller = None
    try:
        caller = await rt.auth.authenticate(request.headers.get("authorization"))
        rt.limiter.check(caller)
        body = await read_capped(request, rt.max_body_bytes)
        body = service.decompress(body, request.headers.get("content-encoding"), rt.max_body_bytes)
        request.app.state.metrics.body_bytes.observe(len(body))
        items = to_items(rt, body)
        result = await service.ingest(items, caller, rt.sink, rt.policy, rt.counters)
        # Serialised directly: the model is already valid, FastAPI would validate and convert it once more.
        return Response(result.model_dump_json(), media_type="application/json")
    except ProblemError as exc:
        if exc.status == 401:
            request.app.state.metrics.auth_failures.inc()
        elif exc.status == 429 and caller is not None:
            request.app.state.metrics.rate_limited.labels(caller.platform).inc()
        raise
    except (KafkaError, TimeoutError) as exc:
        raise not_written(exc, rt.retry_after_s, "an event of the batch is larger than the event store accepts; "
                          "nothing was accepted, do not retry it unchanged", "Kafka did not acknowledge the batch "
                          "({}); nothing was accepted, retry with the same event ids") from exc


@router.post(
    "/v1/events",
    response_model=BatchResult,
    summary="Submit a batch of usage events",
    description=(
        "A JSON array (`application/json`) or one event per line (`application/x-ndjson`), optionally gzip-"
        "compressed. The answer is **200 with a per-event result list** whenever the body could be read: accepted "
        "ids (durable in Kafka, `acks=all`) and rejected events with index, id and reasons. Rejected events are "
        "also written to `usage.events.rejected.v1`. Retrying the same event ids is safe."
    ),
    responses=PROBLEM_RESPONSES,
    dependencies=[Security(bearer)],
    openapi_extra={
        "parameters": [ENCODING_HEADER],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/UsageEvent"},
                                            "maxItems": 1000},
                                 "examples": {"batch": {"summary": "Two events of one session", "value": [
                                     {"id": "0b7f6c1e-3f57-4d7e-9d1c-6b0f2f3f8a10", "type": "usage.session.started",
                                      "source": "civento-offenbach", "time": "2026-11-24T09:30:00+01:00",
                                      "municipality": "06413000", "service": "99115005104000",
                                      "session": "s8f2a9c0d1e", "data": {"channel": "web", "device": "mobile"}},
                                     {"id": "5d2b3a52-7c1a-4c4e-a0a8-3cfa1f0b6f11", "type": "usage.step.completed",
                                      "source": "civento-offenbach", "time": "2026-11-24T09:31:10+01:00",
                                      "municipality": "06413000", "service": "99115005104000",
                                      "session": "s8f2a9c0d1e", "data": {"step": 1, "step_name": "Start"}},
                                 ]}}},
            "application/x-ndjson": {"schema": {"type": "string"},
                                     "example": '{"id": "0b7f6c1e-...", "type": "usage.session.started", ...}\n'},
        }},
    },
)
async def post_events(request: Request) -> Any:
    return await handle(request, lambda rt, body: service.parse_items(
        body, request.headers.get("content-type"), rt.max_batch_events))


@router.post(
    "/v1/platforms/{platform}/events",
    response_model=BatchResult,
    summary="Submit a platform's own callback payload, mapped declaratively onto usage events",
    description=(
        "The body is the platform's JSON (one object or an array of objects). The mapping "
        "`services/ingest/mappings/<platform>.yaml` turns each into an event, which is then checked and "
        "answered exactly like `/v1/events`; an object that cannot be mapped is rejected with `mapping_failed`."
    ),
    responses=PROBLEM_RESPONSES,
    dependencies=[Security(bearer)],
    openapi_extra={
        "parameters": [ENCODING_HEADER],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "oneOf": [{"type": "object"}, {"type": "array", "items": {"type": "object"}, "maxItems": 1000}]},
            "example": {"callbackId": "c-4711", "ereignis": "PROZESS_GESTARTET", "zeitpunkt": 1795000000000,
                        "mandant": {"ags": "06413000"}, "prozess": {"leikaSchluessel": "99115005104000"},
                        "prozessInstanzId": "PI-20261124-0001", "client": {"geraet": "SMARTPHONE"}}}}},
    },
)
async def post_platform_events(platform: str, request: Request) -> Any:
    mapping = request.app.state.runtime.mappings.get(platform)

    def to_items(rt: Runtime, body: bytes) -> list[Item]:
        if mapping is None:
            raise refusal(404, "unknown_platform", f"no mapping for platform {platform!r}")
        document = service.parse_json_document(body, request.headers.get("content-type"))
        return service.map_items(document, mapping, rt.max_batch_events)

    return await handle(request, to_items)


@router.get("/v1/platforms", summary="Platforms with a declarative mapping")
async def list_platforms(request: Request) -> dict[str, list[dict[str, Any]]]:
    mappings = request.app.state.runtime.mappings
    return {"items": [{"platform": m.platform, "description": m.description, "event_types": m.produced_types()}
                      for m in mappings.values()]}
