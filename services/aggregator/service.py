"""Aggregation logic: parse records, fold a batch into KPI deltas (pure, no I/O)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import date
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import ValidationError

from shared.events import UsageEvent, usage_event_adapter

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Invalid:
    record: Record
    reasons: list[dict[str, object]]


def parse(records: list[Record]) -> tuple[list[UsageEvent], list[Invalid]]:
    """Validate each record again: events may come straight from trusted producers, not only ingest."""
    events: list[UsageEvent] = []
    invalid: list[Invalid] = []
    for r in records:
        try:
            events.append(usage_event_adapter.validate_json(r.value))
        except ValidationError as exc:
            reasons: list[dict[str, object]] = [
                {"type": e["type"], "loc": [str(p) for p in e["loc"]], "msg": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            invalid.append(Invalid(r, reasons))
    return events, invalid


def berlin_day(event: UsageEvent) -> date:
    """The Europe/Berlin calendar day a KPI counts the event on."""
    return event.time.astimezone(BERLIN).date()


CountKey = tuple[date, str, str, str]


def fold_counts(events: list[UsageEvent], new_ids: set[UUID]) -> Counter[CountKey]:
    """Count only events whose id is new (dedup happened in the same transaction)."""
    counts: Counter[CountKey] = Counter()
    for e in events:
        if e.id in new_ids:
            counts[(berlin_day(e), e.municipality, e.service, e.type)] += 1
    return counts


def next_offsets(records: list[Record]) -> dict[tuple[str, int], int]:
    """Position to resume from per partition: one past the highest consumed offset."""
    result: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        result[key] = max(result.get(key, 0), r.offset + 1)
    return result
