"""API models of the ingest service."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.rejections import Reason


class Rejection(BaseModel):
    """Why one event of a batch was not accepted."""

    index: int = Field(description="Position of the event in the submitted batch (0-based).")
    id: str | None = Field(description="The event's id if it could be read.")
    reason: Reason = Field(description="Machine-readable category of the rejection.")
    reasons: list[dict[str, Any]] = Field(
        description="Details: `type`, `loc` (path into the event, as pydantic reports it) and `msg`."
    )


class BatchResult(BaseModel):
    """Per-event outcome of a batch. Accepted ids are durable in Kafka; rejected ones are in the rejected topic."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "accepted": ["0b7f6c1e-3f57-4d7e-9d1c-6b0f2f3f8a10"],
        "rejected": [{
            "index": 1, "id": "5d2b3a52-7c1a-4c4e-a0a8-3cfa1f0b6f11", "reason": "invalid_event",
            "reasons": [{"type": "string_pattern_mismatch", "loc": ["usage.session.started", "municipality"],
                         "msg": "String should match pattern '^\\d{8}$'"}],
        }],
        "accepted_count": 1, "rejected_count": 1,
    }]})

    accepted: list[str] = Field(description="Ids of events durably written to Kafka, in submission order.")
    rejected: list[Rejection] = Field(default_factory=list)
    accepted_count: int = 0
    rejected_count: int = 0


class Problem(BaseModel):
    """RFC 9457 problem details (`application/problem+json`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "/problems/payload-too-large", "title": "Payload Too Large", "status": 413,
        "detail": "batch has 1200 events; the limit is 1000", "code": "payload_too_large",
    }]})

    type: str = Field(default="about:blank", description="URI reference identifying the problem type.")
    title: str
    status: int
    detail: str | None = None
    code: str = Field(description="Machine-readable problem code (the last segment of `type`, snake_case).")
