"""Publisher logic: turn stored KPI rows into published rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.publisher.schemas import EventCountRow, EventCounts


def to_event_counts(rows: Sequence[Any]) -> EventCounts:
    return EventCounts(items=[EventCountRow(**dict(r)) for r in rows])
