"""Records of the rejected topics (`usage.events.rejected.v1`, `application.events.rejected.v1`, …).

Every record a component could not accept lands in the rejected topic of its source topic, so nothing
disappears silently. The raw payload, key and headers are kept, bounded, for diagnosis and replay; they are
never published. The serialised record always fits the broker's message limit (`encode_rejected`).

Readers written for the first version (reason, errors, origin, raw, position) keep working: every field added
later is optional.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

MAX_RAW_BYTES = 8192
"""Raw payloads longer than this are cut (the record says so and keeps the original length)."""

MAX_ERRORS = 20
"""At most this many error details are kept per record (an object with thousands of unknown fields would
otherwise produce a record larger than Kafka accepts)."""
MAX_ERROR_TEXT = 200
MAX_KEY_BYTES = 1024
"""Record keys longer than this are cut."""
MAX_HEADERS = 32
MAX_HEADER_KEY_CHARS = 256
MAX_HEADER_VALUE_BYTES = 1024
MAX_ID_CHARS = 200
"""`event_id` and `platform` are cut to this many characters (a foreign producer may send a huge `id`)."""
DEFAULT_MAX_RECORD_BYTES = 1_000_000
"""Kafka's default `message.max.bytes` is 1,048,588 bytes; a rejected record stays below this, with room for
the record overhead."""

Reason = Literal[
    "invalid_event",  # fails the event contract (see `errors` for pydantic paths)
    "invalid_json",  # not parseable as JSON at all (a foreign producer on the topic)
    "forbidden_municipality",  # the API key is not scoped to the event's municipality
    "from_future",  # `time` lies further in the future than the allowed clock skew
    "too_late",  # `time` is older than the late horizon
    "mapping_failed",  # a platform payload could not be mapped onto the envelope
    "tombstone",  # a record without a value (Kafka tombstone): nothing to count or apply
    "undecodable",  # the record could not be decoded (value, key or headers)
    "database_refused",  # PostgreSQL refused a value of this record (data error, e.g. a NUL character in text)
    "unprocessable",  # the record failed for a reason nobody classified; isolated from its batch and set aside
    "oversize",  # the record (or an event derived from it) is larger than the broker accepts
]
REASONS: tuple[str, ...] = (
    "invalid_event", "invalid_json", "forbidden_municipality", "from_future", "too_late", "mapping_failed",
    "tombstone", "undecodable", "database_refused", "unprocessable", "oversize",
)
Origin = Literal["ingest", "aggregator", "workflow", "relay"]


class RejectedHeader(BaseModel):
    """One Kafka header of the rejected record, its value kept as bytes (base64)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    key_base64: str | None = Field(
        default=None, description="The header name as base64 when it is not valid UTF-8 (`key` then has its "
                                  "invalid bytes replaced), so it can be restored.")
    value: str | None = Field(description="The header value as base64 (bounded); null for a null value.")
    value_bytes: int = 0
    truncated: bool = False


class RejectedEvent(BaseModel):
    """One record of a rejected topic (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Reason
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Machine-readable details: type, loc, msg.")
    origin: Origin = Field(description="Which component rejected it.")
    consumer: str | None = Field(default=None, description="The consumer that rejected it (e.g. aggregator/usage).")
    platform: str | None = Field(default=None, description="Authenticated platform (ingest) or declared source.")
    event_id: str | None = None
    index: int | None = Field(default=None, description="Position in the submitted batch, if it came in one.")
    rejected_at: datetime
    raw: str = Field(description="The payload as sent (UTF-8, invalid bytes replaced), bounded.")
    raw_bytes: int = Field(description="Length of the original payload in bytes.")
    raw_truncated: bool
    raw_base64: str | None = Field(
        default=None, description="The (bounded) payload as base64 when it is not valid UTF-8, so it can be restored.")
    tombstone: bool = Field(default=False, description="The record had no value at all (not even an empty one).")
    key: str | None = Field(default=None, description="The Kafka record key as base64 (bounded); null if none.")
    key_bytes: int | None = None
    headers: list[RejectedHeader] = Field(default_factory=list)
    headers_truncated: bool = False
    replayable: bool = Field(default=False, description="It came from a topic and value, key and headers are kept "
                                                        "whole: `kp rejected replay` can resend it.")
    topic: str | None = Field(default=None, description="Source topic and position (consumers only).")
    partition: int | None = None
    offset: int | None = None

    def raw_value(self) -> bytes | None:
        """The payload as it was consumed (bounded); None for a tombstone."""
        if self.tombstone:
            return None
        if self.raw_base64 is not None:
            return base64.b64decode(self.raw_base64)
        return self.raw.encode()

    def raw_key(self) -> bytes | None:
        return None if self.key is None else base64.b64decode(self.key)

    def raw_headers(self) -> list[tuple[str, bytes | None]]:
        """Headers as consumed; a name that is not valid UTF-8 comes back decoded with `surrogateescape`
        (`name.encode("utf-8", "surrogateescape")` gives its exact bytes)."""
        return [(h.key if h.key_base64 is None else base64.b64decode(h.key_base64).decode("utf-8", "surrogateescape"),
                 None if h.value is None else base64.b64decode(h.value)) for h in self.headers]


def text(value: Any, limit: int = MAX_ERROR_TEXT) -> str:
    """A bounded string that always serialises: cut to `limit` characters, lone surrogates replaced."""
    s = value if isinstance(value, str) else str(value)
    return s[:limit].encode("utf-8", "replace").decode("utf-8")


def bounded_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first MAX_ERRORS details with every text cut to MAX_ERROR_TEXT, plus a note of how many were left out."""
    def cut(value: Any) -> Any:
        return text(value) if isinstance(value, str) else value

    out = [{text(k, 64): [cut(str(p)) for p in v] if k == "loc" and isinstance(v, list | tuple) else cut(v)
            for k, v in e.items()} for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append({"type": "too_many_errors", "loc": [], "msg": f"{len(errors) - MAX_ERRORS} more errors left out"})
    return out


def raw_bytes_of(raw: bytes | str | Any) -> bytes:
    """The payload as bytes: bytes as they are, strings UTF-8, anything parsed re-serialised as JSON."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(raw)
    except TypeError:
        return repr(raw).encode("utf-8", "replace")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _header_name_bytes(name: Any) -> bytes:
    """The bytes of a header name; a name that is not valid UTF-8 arrives decoded with `surrogateescape`
    (`shared.kafka_records`), which gives its exact bytes back."""
    if isinstance(name, bytes | bytearray):
        return bytes(name)
    s = str(name)
    try:
        return s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # other lone surrogates: no bytes to restore
        return s.encode("utf-8", "replace")


def bounded_headers(headers: Iterable[tuple[Any, Any]] | None) -> tuple[list[RejectedHeader], bool, bool]:
    """Headers as bytes (base64), bounded; also whether any was cut and whether all can be sent again as they
    were (kept whole, names valid UTF-8)."""
    out: list[RejectedHeader] = []
    cut = unsendable = False
    for i, (k, v) in enumerate(headers or ()):
        if i >= MAX_HEADERS:
            cut = True
            break
        name_bytes = _header_name_bytes(k)
        name = name_bytes.decode("utf-8", "replace")
        try:
            name_bytes.decode("utf-8")
            name_b64 = None
        except UnicodeDecodeError:
            name_b64 = _b64(name_bytes[:MAX_HEADER_KEY_CHARS * 4])
        value = None if v is None else (bytes(v) if isinstance(v, bytes | bytearray | memoryview)
                                        else str(v).encode("utf-8", "replace"))
        # A name that is not UTF-8 is kept (base64) but cannot be replayed: aiokafka only sends UTF-8 names
        unsendable = unsendable or name_b64 is not None
        name_cut = len(name) > MAX_HEADER_KEY_CHARS or (name_b64 is None and name != text(name, MAX_HEADER_KEY_CHARS))
        value_cut = value is not None and len(value) > MAX_HEADER_VALUE_BYTES
        cut = cut or name_cut or value_cut
        out.append(RejectedHeader(key=text(name, MAX_HEADER_KEY_CHARS), key_base64=name_b64,
                                  value=None if value is None else _b64(value[:MAX_HEADER_VALUE_BYTES]),
                                  value_bytes=0 if value is None else len(value), truncated=name_cut or value_cut))
    return out, cut, not cut and not unsendable


def build_rejected(
    *,
    reason: Reason,
    raw: bytes | str | Any,
    origin: Origin,
    errors: list[dict[str, Any]] | None = None,
    platform: str | None = None,
    event_id: str | None = None,
    index: int | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    now: datetime | None = None,
    max_raw_bytes: int = MAX_RAW_BYTES,
    consumer: str | None = None,
    key: bytes | None = None,
    headers: Iterable[tuple[Any, Any]] | None = None,
    tombstone: bool = False,
) -> RejectedEvent:
    """Build the rejected-topic record for one payload; `raw`, key, headers and texts are bounded."""
    data = b"" if tombstone else raw_bytes_of(raw)
    cut = data[:max_raw_bytes]
    try:
        as_text = cut.decode("utf-8")
        raw_b64 = None
    except UnicodeDecodeError:
        as_text = cut.decode("utf-8", errors="replace")
        raw_b64 = _b64(cut)
    kept_headers, headers_cut, headers_whole = bounded_headers(headers)
    key_cut = key is not None and len(key) > MAX_KEY_BYTES
    return RejectedEvent(
        reason=reason, errors=bounded_errors(errors or []), origin=origin, consumer=consumer,
        platform=None if platform is None else text(platform, MAX_ID_CHARS),
        event_id=None if event_id is None else text(event_id, MAX_ID_CHARS), index=index,
        rejected_at=now or datetime.now(UTC), raw=as_text, raw_bytes=len(data),
        raw_truncated=len(data) > max_raw_bytes, raw_base64=raw_b64, tombstone=tombstone,
        key=None if key is None else _b64(key[:MAX_KEY_BYTES]), key_bytes=None if key is None else len(key),
        headers=kept_headers, headers_truncated=headers_cut,
        replayable=topic is not None and len(data) <= max_raw_bytes and not key_cut and headers_whole,
        topic=topic, partition=partition, offset=offset,
    )


def _shrunk(record: RejectedEvent, step: int) -> RejectedEvent:
    """The record with less kept, one step further each time (used only when it does not fit the limit)."""
    if step == 0:
        return record.model_copy(update={"headers": [], "headers_truncated": bool(record.headers)
                                          or record.headers_truncated, "replayable": False})
    if step == 1:
        return record.model_copy(update={"errors": record.errors[:1], "key": None})
    raw = record.raw[: len(record.raw) // 4]
    b64 = None if record.raw_base64 is None else record.raw_base64[: (len(record.raw_base64) // 16) * 4]
    return record.model_copy(update={"raw": raw, "raw_base64": b64, "raw_truncated": True, "replayable": False,
                                     "errors": [{k: text(v, 64) if isinstance(v, str) else v
                                                 for k, v in e.items()} for e in record.errors[:1]]})


def encode_rejected(record: RejectedEvent, max_bytes: int = DEFAULT_MAX_RECORD_BYTES) -> tuple[bytes, bytes]:
    """Kafka (key, value) for a rejected record: keyed by platform so one platform's rejects stay ordered.

    The value is at most `max_bytes - len(key)` long: if the bounded record is still too big for a small broker
    limit, headers, then error details and the key, then the raw payload are cut further until it fits.
    """
    key = text(record.platform or "unknown", MAX_ID_CHARS).encode()
    value = orjson.dumps(record.model_dump(mode="json"))
    step = 0
    while len(value) + len(key) > max_bytes and step < 64:
        record = _shrunk(record, step)
        value = orjson.dumps(record.model_dump(mode="json"))
        step += 1
    if len(value) + len(key) > max_bytes:
        raise ValueError(f"a rejected record cannot be made smaller than {len(value)} bytes")
    return key, value


def rejected_payload(max_bytes: int = DEFAULT_MAX_RECORD_BYTES, **kwargs: Any) -> tuple[bytes, bytes]:
    """Shortcut: `encode_rejected(build_rejected(**kwargs), max_bytes)`."""
    return encode_rejected(build_rejected(**kwargs), max_bytes)
