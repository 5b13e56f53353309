"""API models of the ingest service."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Rejection(BaseModel):
    index: int = Field(description="Position of the event in the submitted batch (0-based).")
    id: str | None = Field(description="The event's id if it could be read.")
    reasons: list[dict[str, Any]] = Field(description="Machine-readable reasons: type, loc (path), msg.")


class BatchResult(BaseModel):
    accepted: list[str] = Field(description="Ids of events durably written to Kafka.")
    rejected: list[Rejection] = Field(default_factory=list)


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
