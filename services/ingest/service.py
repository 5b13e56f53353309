"""Ingest logic: decode a batch, authenticate and limit the caller, check each event, produce durably.

Nothing here knows HTTP or Kafka client types: the API adapter passes bytes and headers in, the sink is a
protocol, and failures that end a request are `ProblemError`s (`refusal`), answered as RFC 9457 documents.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Protocol

import orjson
from pydantic import TypeAdapter, ValidationError

from services.ingest.mapping import MappingError, PlatformMapping
from services.ingest.schemas import BatchResult, Rejection
from shared.events import UsageEvent, upcast, usage_event_adapter
from shared.events.base import Envelope
from shared.events.text import refused_character
from shared.events.usage import FeedbackGiven, UsageEventBase
from shared.http import ProblemError
from shared.rejections import Reason, bounded_errors, rejected_payload

# ------------------------------------------------------------------------------------------------ problems


def refusal(status: int, code: str, detail: str, headers: Mapping[str, str] | None = None) -> ProblemError:
    """A failure that ends a request; `code` repeats the problem type's last segment for clients that switch on
    it."""
    return ProblemError(status, HTTPStatus(status).phrase, detail, type=f"/problems/{code.replace('_', '-')}",
                        headers=headers, code=code)


# ------------------------------------------------------------------------------------------------ body


JSON_TYPES = ("application/json",)
NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


@dataclass(slots=True)
class Item:
    """One submitted event: what the platform sent, what gets validated, or why it failed before that."""

    index: int
    raw: Any
    envelope: Any
    failure: tuple[Reason, list[dict[str, Any]]] | None = None
    batch: ParsedLater | None = None

    @property
    def payload(self) -> Any:
        """What the platform sent for this event (parsed from the body only when it is needed)."""
        return self.batch.item(self.index) if self.batch is not None else self.raw


class ParsedLater:
    """The body of a batch that passed the fast path; parsed item by item only if one is rejected later."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._items: list[Any] | None = None

    def item(self, index: int) -> Any:
        if self._items is None:
            self._items = orjson.loads(self._body)
        return self._items[index]


_BATCH_ADAPTER: TypeAdapter[list[UsageEvent]] = TypeAdapter(list[UsageEvent])


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def decompress(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo `Content-Encoding` (identity or gzip), refusing bodies that inflate beyond `max_bytes`."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise refusal(415, "unsupported_content_encoding",
                           f"Content-Encoding {encoding!r} is not supported; use gzip or none")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise refusal(400, "invalid_gzip", f"body is not valid gzip: {exc}") from exc
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise refusal(413, "payload_too_large", f"decompressed body exceeds {max_bytes} bytes")
    if not inflater.eof:
        raise refusal(400, "invalid_gzip", "gzip stream is truncated")
    return out


def parse_items(body: bytes, content_type: str | None, max_events: int) -> list[Item]:
    """Parse a JSON array or NDJSON (one event per line) into items; a bad NDJSON line fails only itself."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind.endswith("+json"):
        fast = validate_whole_batch(body, max_events)
        if fast is not None:
            return fast
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise refusal(400, "invalid_json", f"body is not valid JSON: {exc}") from exc
        if not isinstance(parsed, list):
            raise refusal(400, "not_a_batch", "body must be a JSON array of events")
        check_count(len(parsed), max_events)
        return [Item(i, item, item) for i, item in enumerate(parsed)]
    if kind in NDJSON_TYPES:
        lines = [line for line in body.split(b"\n") if line.strip()]
        check_count(len(lines), max_events)
        items: list[Item] = []
        for i, line in enumerate(lines):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                items.append(Item(i, line, None, ("invalid_json", [
                    {"type": "json_invalid", "loc": [], "msg": f"line is not valid JSON: {exc}"}])))
                continue
            items.append(Item(i, value, value))
        return items
    raise refusal(415, "unsupported_media_type",
                       f"Content-Type {kind or '(none)'!r} is not supported; use application/json or "
                       "application/x-ndjson")


def map_items(document: Any, mapping: PlatformMapping, max_events: int) -> list[Item]:
    """Map a platform's callback (one object or an array of them) onto envelopes; failures stay per item."""
    payloads = document if isinstance(document, list) else [document]
    check_count(len(payloads), max_events)
    items: list[Item] = []
    for i, payload in enumerate(payloads):
        try:
            items.append(Item(i, payload, mapping.apply(payload)))
        except MappingError as exc:
            items.append(Item(i, payload, None, ("mapping_failed", [
                {"type": "mapping_failed", "loc": exc.loc, "msg": exc.msg}])))
    return items


def validate_whole_batch(body: bytes, max_events: int) -> list[Item] | None:
    """Fast path for the usual all-valid batch: pydantic-core parses and validates the JSON in one pass.
    Returns None when anything is wrong; the item-by-item path then finds out what, with exact reasons."""
    if body.count(b'"id"') > max_events + 1:  # cheap guard: do not validate a huge batch only to refuse it
        return None
    try:
        events = _BATCH_ADAPTER.validate_json(body)
    except ValidationError:
        return None
    check_count(len(events), max_events)
    later = ParsedLater(body)
    return [Item(i, None, event, batch=later) for i, event in enumerate(events)]


def check_count(count: int, max_events: int) -> None:
    if count > max_events:
        raise refusal(413, "payload_too_large", f"batch has {count} events; the limit is {max_events}")


def parse_json_document(body: bytes, content_type: str | None) -> Any:
    """A platform callback: one JSON document (object or array)."""
    kind = media_type(content_type)
    if not (kind in JSON_TYPES or kind.endswith("+json")):
        raise refusal(415, "unsupported_media_type",
                           f"Content-Type {kind or '(none)'!r} is not supported; use application/json")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise refusal(400, "invalid_json", f"body is not valid JSON: {exc}") from exc


# ------------------------------------------------------------------------------------------------ API keys


KEY_PREFIX = "kpk_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A platform's credential, scoped to municipalities (AGS); `municipalities=None` means unrestricted."""

    id: uuid.UUID | None
    platform: str
    municipalities: frozenset[str] | None
    rate_per_s: float
    burst: int
    key_prefix: str = ""
    description: str = ""
    created_at: datetime | None = None
    revoked_at: datetime | None = None

    def allows(self, municipality: str) -> bool:
        return self.municipalities is None or municipality in self.municipalities


ANONYMOUS = ApiKey(id=None, platform="anonymous", municipalities=None, rate_per_s=math.inf, burst=1)
"""The caller when keys are not required (dev/test only) and none was sent."""

_PLATFORM = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_AGS = re.compile(r"^\d{8}$")


def hash_key(plain: str) -> str:
    """SHA-256 of the key: the keys are 256-bit random tokens, so a fast hash is enough (see docs/ingest.md)."""
    return hashlib.sha256(plain.encode()).hexdigest()


def new_api_key(platform: str, municipalities: Sequence[str], rate_per_s: float, burst: int,
                description: str = "") -> tuple[str, ApiKey, str]:
    """Generate a key; return (plain key shown once, the key record, its hash to store)."""
    if not _PLATFORM.match(platform):
        raise ValueError(f"platform {platform!r} must match {_PLATFORM.pattern}")
    bad = [m for m in municipalities if not _AGS.match(m)]
    if bad or not municipalities:
        raise ValueError(f"municipalities must be 8-digit AGS, at least one; invalid: {bad}")
    if rate_per_s <= 0 or burst < 1:
        raise ValueError("rate must be > 0 and burst >= 1")
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=uuid.uuid4(), platform=platform, municipalities=frozenset(municipalities),
                 rate_per_s=rate_per_s, burst=burst, key_prefix=plain[:12], description=description)
    return plain, key, hash_key(plain)


def unauthorized(detail: str) -> ProblemError:
    return refusal(401, "unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="kommunal-pulse-ingest"'})


KeyLookup = Callable[[str], Awaitable[ApiKey | None]]


class Authenticator:
    """Resolves `Authorization: Bearer <key>` to an active key; found keys are cached for `ttl_s`."""

    def __init__(self, lookup: KeyLookup, ttl_s: float, required: bool,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._lookup = lookup
        self._ttl_s = ttl_s
        self._required = required
        self._clock = clock
        self._cache: dict[str, tuple[float, ApiKey]] = {}

    async def authenticate(self, authorization: str | None) -> ApiKey:
        if not authorization:
            if not self._required:
                return ANONYMOUS
            raise unauthorized("an API key is required: send `Authorization: Bearer <key>`")
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthorized("use `Authorization: Bearer <key>`")
        digest = hash_key(token)
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._ttl_s:
            return cached[1]
        key = await self._lookup(digest)
        if key is None:
            self._cache.pop(digest, None)
            raise unauthorized("the API key is unknown or revoked")
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (now, key)
        return key


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass
class RateLimiter:
    """Token bucket per key, in this process only (N instances allow up to N times the rate)."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def acquire(self, key: ApiKey) -> float | None:
        """Take one token; return None if allowed, else the seconds until the next token."""
        if key.id is None or math.isinf(key.rate_per_s):
            return None
        now = self.clock()
        bucket = self._buckets.get(str(key.id))
        if bucket is None:
            bucket = self._buckets[str(key.id)] = _Bucket(float(key.burst), now)
        bucket.tokens = min(float(key.burst), bucket.tokens + (now - bucket.updated) * key.rate_per_s)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return (1.0 - bucket.tokens) / key.rate_per_s

    def check(self, key: ApiKey) -> None:
        wait = self.acquire(key)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            raise refusal(429, "rate_limited",
                               f"rate limit of {key.rate_per_s:g} requests/s (burst {key.burst}) exceeded",
                               {"Retry-After": str(retry)})


# ------------------------------------------------------------------------------------------------ privacy


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+(?:@|\s*\(at\)\s*|\s*\[at\]\s*)[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# A phone number: optional +/00 prefix, then 6+ digits with spaces, slashes, dashes or brackets between
# (not dots, so dates like 24.11.2026 stay).
_PHONE = re.compile(r"(?<![\w])(?:\+|00)?\(?\d(?:[\s/()-]{0,3}\d){5,}(?![\w])")
COMMENT_MAX = 500


def scrub(text: str) -> str:
    """Replace e-mail addresses and phone numbers; the result stays within the contract's length."""
    text = _EMAIL.sub("[email]", text)
    text = _PHONE.sub("[phone]", text)
    return text[:COMMENT_MAX]


def scrub_event(event: UsageEvent) -> UsageEvent:
    if isinstance(event, FeedbackGiven) and event.data.comment:
        clean = scrub(event.data.comment)
        if clean != event.data.comment:
            return event.model_copy(update={"data": event.data.model_copy(update={"comment": clean})})
    return event


# ------------------------------------------------------------------------------------------------ checks


@dataclass(frozen=True, slots=True)
class Policy:
    clock_skew: timedelta
    late_horizon: timedelta


@dataclass(frozen=True, slots=True)
class Rejected:
    item: Item
    reason: Reason
    errors: list[dict[str, Any]]

    @property
    def event_id(self) -> str | None:
        envelope = self.item.envelope
        if isinstance(envelope, Envelope):
            return str(envelope.id)
        value = envelope.get("id") if isinstance(envelope, dict) else None
        return echoed_id(value)


MAX_ECHOED_ID = 64
"""A declared id longer than this is not repeated in answers or rejected records (a UUID has 36 characters)."""


def echoed_id(value: object) -> str | None:
    """The declared id of a refused event if it is short and printable enough to repeat, else None.

    An unbounded id once made the rejected record larger than Kafka accepts: the batch failed with 503 on every
    retry and the producer was replaced each time. The contract's reasons still say what is wrong with it."""
    if not isinstance(value, str) or len(value) > MAX_ECHOED_ID or refused_character(value) is not None:
        return None
    return value


def pydantic_reasons(exc: ValidationError) -> list[dict[str, Any]]:
    """Pydantic's errors as `type`/`loc`/`msg`, bounded in number and length (see `bounded_errors`)."""
    return bounded_errors([{"type": e["type"], "loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
                           for e in exc.errors(include_url=False, include_input=False)])


def check_item(item: Item, caller: ApiKey, policy: Policy, now: datetime) -> UsageEvent | Rejected:
    """Contract, then tenant scope, then clock sanity; the first failure decides the reason."""
    if item.failure is not None:
        return Rejected(item, item.failure[0], item.failure[1])
    if isinstance(item.envelope, UsageEventBase):
        event: UsageEvent = item.envelope  # type: ignore[assignment]  # validated on the fast path
    else:
        try:
            event = upcast.validate_python(usage_event_adapter, item.envelope)
        except ValidationError as exc:
            return Rejected(item, "invalid_event", pydantic_reasons(exc))
    if not caller.allows(event.municipality):
        return Rejected(item, "forbidden_municipality", [{
            "type": "forbidden_municipality", "loc": ["municipality"],
            "msg": f"this API key may not send events for municipality {event.municipality}"}])
    if event.time > now + policy.clock_skew:
        return Rejected(item, "from_future", [{
            "type": "from_future", "loc": ["time"],
            "msg": f"time lies more than {int(policy.clock_skew.total_seconds())} s in the future"}])
    if event.time < now - policy.late_horizon:
        return Rejected(item, "too_late", [{
            "type": "too_late", "loc": ["time"],
            "msg": f"time is older than the late horizon of {policy.late_horizon.days} days"}])
    return scrub_event(event)


# ------------------------------------------------------------------------------------------------ ingest


class EventSink(Protocol):
    async def write(self, events: Sequence[tuple[bytes, bytes]], rejected: Sequence[tuple[bytes, bytes]]) -> None:
        """Write accepted events and rejected records; return only once all are durable, raise otherwise."""


class Counters(Protocol):
    def observe_batch(self, platform: str, size: int, accepted: int, rejected: Sequence[str]) -> None:
        """Record a processed batch: its size, accepted count and each rejection's reason."""


def encode(event: UsageEvent) -> tuple[bytes, bytes]:
    """Kafka key and JSON value; pydantic-core serialises straight to bytes (several times faster than dumping
    to a dict first)."""
    return event.kafka_key, usage_event_adapter.dump_json(event)


@dataclass
class Runtime:
    """What the request handlers need, built once in the app's lifespan."""

    sink: EventSink
    auth: Authenticator
    limiter: RateLimiter
    policy: Policy
    counters: Counters
    mappings: dict[str, PlatformMapping]
    max_body_bytes: int
    max_batch_events: int
    retry_after_s: int


async def ingest(items: Sequence[Item], caller: ApiKey, sink: EventSink, policy: Policy,
                 counters: Counters | None = None, now: datetime | None = None) -> BatchResult:
    """Check every item, then write accepted events and rejected records together; answer only after both."""
    now = now or datetime.now(UTC)
    accepted: list[UsageEvent] = []
    rejected: list[Rejected] = []
    for item in items:
        outcome = check_item(item, caller, policy, now)
        if isinstance(outcome, Rejected):
            rejected.append(outcome)
        else:
            accepted.append(outcome)
    dlq = [
        rejected_payload(reason=r.reason, raw=r.item.payload, origin="ingest", errors=r.errors,
                         platform=caller.platform, event_id=r.event_id, index=r.item.index, now=now)
        for r in rejected
    ]
    if accepted or dlq:
        await sink.write([encode(e) for e in accepted], dlq)
    if counters is not None:
        counters.observe_batch(caller.platform, len(items), len(accepted), [r.reason for r in rejected])
    return BatchResult(
        accepted=[str(e.id) for e in accepted],
        rejected=[Rejection(index=r.item.index, id=r.event_id, reason=r.reason, reasons=r.errors) for r in rejected],
        accepted_count=len(accepted), rejected_count=len(rejected),
    )
