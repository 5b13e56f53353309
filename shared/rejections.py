"""Records of the rejected-events topic (`usage.events.rejected.v1`), shared by ingest and the aggregator.

Every event a platform sent that is not accepted lands there, so nothing disappears silently. The raw payload
is kept, bounded, for diagnosis; it is never published.
"""

from __future__ import annotations

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

Reason = Literal[
    "invalid_event",  # fails the event contract (see `errors` for pydantic paths)
    "invalid_json",  # not parseable as JSON at all (a foreign producer on the topic)
    "forbidden_municipality",  # the API key is not scoped to the event's municipality
    "from_future",  # `time` lies further in the future than the allowed clock skew
    "too_late",  # `time` is older than the late horizon
    "mapping_failed",  # a platform payload could not be mapped onto the envelope
]
REASONS: tuple[str, ...] = (
    "invalid_event", "invalid_json", "forbidden_municipality", "from_future", "too_late", "mapping_failed",
)
Origin = Literal["ingest", "aggregator"]


class RejectedEvent(BaseModel):
    """One record of the rejected-events topic (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Reason
    errors: list[dict[str, Any]] = Field(default_factory=list, description="Machine-readable details: type, loc, msg.")
    origin: Origin = Field(description="Which component rejected it.")
    platform: str | None = Field(default=None, description="Authenticated platform (ingest) or declared source.")
    event_id: str | None = None
    index: int | None = Field(default=None, description="Position in the submitted batch, if it came in one.")
    rejected_at: datetime
    raw: str = Field(description="The payload as sent (UTF-8, invalid bytes replaced), bounded.")
    raw_bytes: int = Field(description="Length of the original payload in bytes.")
    raw_truncated: bool
    topic: str | None = Field(default=None, description="Source topic and position (aggregator only).")
    partition: int | None = None
    offset: int | None = None


def bounded_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first MAX_ERRORS details with every text cut to MAX_ERROR_TEXT, plus a note of how many were left out."""
    def cut(value: Any) -> Any:
        return value[:MAX_ERROR_TEXT] if isinstance(value, str) else value

    out = [{k: [cut(str(p)) for p in v] if k == "loc" and isinstance(v, list | tuple) else cut(v)
            for k, v in e.items()} for e in errors[:MAX_ERRORS]]
    if len(errors) > MAX_ERRORS:
        out.append({"type": "too_many_errors", "loc": [], "msg": f"{len(errors) - MAX_ERRORS} more errors left out"})
    return out


def raw_bytes_of(raw: bytes | str | Any) -> bytes:
    """The payload as bytes: bytes as they are, strings UTF-8, anything parsed re-serialised as JSON."""
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode()
    try:
        return orjson.dumps(raw)
    except TypeError:
        return repr(raw).encode()


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
) -> RejectedEvent:
    """Build the rejected-topic record for one payload; `raw` is bounded to `max_raw_bytes`."""
    data = raw_bytes_of(raw)
    cut = data[:max_raw_bytes]
    return RejectedEvent(
        reason=reason, errors=bounded_errors(errors or []), origin=origin, platform=platform, event_id=event_id,
        index=index,
        rejected_at=now or datetime.now(UTC), raw=cut.decode("utf-8", errors="replace"), raw_bytes=len(data),
        raw_truncated=len(data) > max_raw_bytes, topic=topic, partition=partition, offset=offset,
    )


def encode_rejected(record: RejectedEvent) -> tuple[bytes, bytes]:
    """Kafka (key, value) for a rejected record: keyed by platform so one platform's rejects stay ordered."""
    return (record.platform or "unknown").encode(), orjson.dumps(record.model_dump(mode="json"))


def rejected_payload(**kwargs: Any) -> tuple[bytes, bytes]:
    """Shortcut: `encode_rejected(build_rejected(**kwargs))`."""
    return encode_rejected(build_rejected(**kwargs))
