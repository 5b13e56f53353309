"""API models of the open-data API."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field


class EventCountRow(BaseModel):
    day: date
    municipality: str = Field(description="AGS, 8 digits")
    service: str = Field(description="LeiKa key, 14 digits")
    event_type: str
    count: int


class EventCounts(BaseModel):
    items: list[EventCountRow]
