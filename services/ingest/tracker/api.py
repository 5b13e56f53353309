"""HTTP adapter of the tracker: `POST /v1/collect` (public, site token + Origin) and the two scripts."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Request
from fastapi.responses import Response

from services.ingest import service
from services.ingest.api import not_written, read_capped
from services.ingest.service import Runtime, refusal
from services.ingest.tracker.schemas import CollectResult
from services.ingest.tracker.service import (
    Site,
    TrackerRuntime,
    check_origin,
    hits_to_items,
    is_bot,
    parse_body,
    refuses_tracking,
)
from shared.http import PROBLEM, ProblemError

router = APIRouter(tags=["tracker"])
STATIC = Path(__file__).resolve().parent / "static"
COLLECT_TYPES = ("text/plain", "application/json")


class Script:
    """A static script held in memory, plain and gzip-compressed."""

    def __init__(self, path: Path) -> None:
        self.plain = path.read_bytes()
        self.gzipped = gzip.compress(self.plain, compresslevel=9, mtime=0)

    def response(self, accept_encoding: str | None) -> Response:
        headers = {"Cache-Control": "public, max-age=3600", "Access-Control-Allow-Origin": "*",
                   "Cross-Origin-Resource-Policy": "cross-origin", "X-Content-Type-Options": "nosniff",
                   "Vary": "Accept-Encoding"}
        if "gzip" in (accept_encoding or ""):
            return Response(self.gzipped, media_type="text/javascript; charset=utf-8",
                            headers={**headers, "Content-Encoding": "gzip"})
        return Response(self.plain, media_type="text/javascript; charset=utf-8", headers=headers)


SCRIPTS = {name: Script(STATIC / name) for name in ("tracker.js", "feedback.js")}


def _result(result: CollectResult, headers: dict[str, str]) -> Response:
    return Response(result.model_dump_json(exclude_none=True), media_type="application/json", headers=headers)


@router.post(
    "/v1/collect",
    response_model=CollectResult,
    summary="Public endpoint of the web tracker and the feedback widget",
    description=(
        "Body (`text/plain` so that `navigator.sendBeacon` needs no CORS preflight, or `application/json`): "
        '`{"token": "kps_...", "hits": [...]}` with at most 20 hits. The site token is public; the request\'s '
        "`Origin` must be one the token is bound to. Requests with `DNT: 1` or `Sec-GPC: 1` and requests of bots "
        "and headless browsers are answered 200 with `filtered` and store nothing. Each hit becomes a usage "
        "event (id and time made here) and is checked like every event of `/v1/events`; a hit that cannot be "
        "mapped is rejected alone (`mapping_failed`, in the rejected topic). 200 only after Kafka acknowledged."
    ),
    responses={status: {"description": text, "content": {PROBLEM: {}}} for status, text in {
        400: "Body is not JSON or not a collect request.", 403: "Unknown site token, or Origin not bound to it.",
        413: "Body or hit count over the limit.", 415: "Other content type.",
        429: "Rate limit of the client or of the site token exceeded; see `Retry-After`.",
        503: "Kafka did not acknowledge in time; nothing was accepted."}.items()},
    openapi_extra={"requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"},
        "example": '{"token": "kps_...", "hits": [{"kind": "pageview", "path": "/buergerservice", '
                   '"ref": "www.google.de", "width": 1280, "session": "3f9a0c1d2e4b5a6c7d"}]}'}}}},
)
async def collect(request: Request) -> Any:
    rt: Runtime = request.app.state.runtime
    tracker: TrackerRuntime = request.app.state.tracker
    metrics = request.app.state.metrics
    cors: dict[str, str] = {}
    try:
        if refuses_tracking(request.headers.get("dnt"), request.headers.get("sec-gpc")):
            metrics.tracker_filtered.labels("do_not_track").inc()
            return _result(CollectResult(filtered="do_not_track"), cors)
        if is_bot(request.headers.get("user-agent")):
            metrics.tracker_filtered.labels("bot").inc()
            return _result(CollectResult(filtered="bot"), cors)
        tracker.clients.check(request.client.host if request.client else "")
        kind = service.media_type(request.headers.get("content-type"))
        if kind not in COLLECT_TYPES:
            raise refusal(415, "unsupported_media_type", f"Content-Type {kind or '(none)'!r}; use text/plain")
        body = await read_capped(request, tracker.max_body_bytes)
        token_value, hits = parse_body(body)
        token = await tracker.tokens.resolve(token_value)
        origin = check_origin(token, request.headers.get("origin"))
        cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        rt.limiter.check(token.caller)
        now = datetime.now(UTC)
        site = Site(token, origin, await tracker.municipal_hosts())
        items = hits_to_items(hits, site, now, metrics.tracker_referrer_seen)
        result = await service.ingest(items, token.caller, rt.sink, rt.policy, rt.counters, now)
        return _result(CollectResult(accepted_count=result.accepted_count,
                                     rejected_count=result.rejected_count), cors)
    except ProblemError as exc:
        if exc.status == 429:
            metrics.tracker_filtered.labels("rate_limited").inc()
        elif exc.status == 403:
            metrics.tracker_filtered.labels(exc.extra["code"]).inc()
        exc.headers.update(cors)
        raise
    except (KafkaError, TimeoutError) as exc:
        problem = not_written(exc, rt.retry_after_s, "a hit is larger than the event store accepts; nothing was "
                              "accepted", "Kafka did not acknowledge ({}); nothing was accepted")
        problem.headers.update(cors)
        raise problem from exc


@router.get("/tracker.js", summary="The web tracker script (embed with a site token)")
async def tracker_js(request: Request) -> Response:
    return SCRIPTS["tracker.js"].response(request.headers.get("accept-encoding"))


@router.get("/feedback.js", summary="The feedback widget script (1-5 stars, optional comment)")
async def feedback_js(request: Request) -> Response:
    return SCRIPTS["feedback.js"].response(request.headers.get("accept-encoding"))
