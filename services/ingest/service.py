"""Ingest logic: validate a batch, produce the valid events durably, report per event."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from services.ingest.schemas import BatchResult, Rejection
from shared.events import UsageEvent, usage_event_adapter


class EventSink(Protocol):
    async def write(self, events: Sequence[tuple[bytes, bytes]]) -> None:
        """Write (key, value) pairs; return only once all are durable, raise otherwise."""


def validate_batch(items: Sequence[Any]) -> tuple[list[UsageEvent], list[Rejection]]:
    """Split a parsed batch into valid events and rejections with pydantic error paths."""
    valid: list[UsageEvent] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(items):
        try:
            valid.append(usage_event_adapter.validate_python(item))
        except ValidationError as exc:
            event_id = item.get("id") if isinstance(item, dict) else None
            reasons = [
                {"type": e["type"], "loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            rejected.append(Rejection(index=index, id=event_id if isinstance(event_id, str) else None, reasons=reasons))
    return valid, rejected


def encode(event: UsageEvent) -> tuple[bytes, bytes]:
    return event.kafka_key, orjson.dumps(event.model_dump(mode="json"))


async def ingest(items: Sequence[Any], sink: EventSink) -> BatchResult:
    """Validate, then hand the valid events to the sink; ids are reported accepted only after it returns."""
    valid, rejected = validate_batch(items)
    if valid:
        await sink.write([encode(e) for e in valid])
    return BatchResult(accepted=[str(e.id) for e in valid], rejected=rejected)
