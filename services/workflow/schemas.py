"""HTTP models of the workflow service."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from shared.events.application import DocumentType
from shared.events.base import AGS, LeiKaKey
from shared.events.text import Text

Reason = Annotated[str, Text(500, min_chars=3, max_bytes=1000, multiline=True, strict=False)]

FIT_EVENT_PREFIX = "https://schema.fitko.de/fit-connect/events/"
FIT_EVENTS = ("create-submission", "submit-submission", "notify-submission", "forward-submission",
              "reject-submission", "accept-submission", "delete-submission")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimerOut(BaseModel):
    name: str
    step: str | None
    due_at: datetime


class TaskOut(BaseModel):
    task_id: UUID
    case_id: UUID
    application_id: str | None = None
    step: str
    queue: str
    municipality: str
    service: str
    status: str
    assignee: str | None
    due_at: datetime | None
    decision: str | None
    created_at: datetime
    completed_at: datetime | None


class CaseOut(BaseModel):
    """Why is this case where it is: current step, next timer, attempts and last error."""

    case_id: UUID
    application_id: str
    municipality: str
    service: str
    definition: str
    definition_version: int
    state: str
    current_step: str | None
    current_step_title: str | None = None
    step_entered_at: datetime | None
    attempts: int
    last_error: str | None
    next_timer: TimerOut | None
    timers: list[TimerOut]
    open_task: TaskOut | None
    outcome: str | None
    opened_at: datetime
    closed_at: datetime | None
    context: dict[str, Any]


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    before: Any
    after: Any
    detail: dict[str, Any]


class CompleteTask(Strict):
    decision: Literal["approved", "rejected", "partially_approved", "extend"]
    reason: Reason | None = None


class ReassignTask(Strict):
    queue: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")] | None = None
    assignee: Annotated[str, Text(200, min_chars=1, strict=False)] | None = None
    reason: Reason

    @model_validator(mode="after")
    def _something(self) -> ReassignTask:
        if self.queue is None and self.assignee is None:
            raise ValueError("give a queue, an assignee or both")
        return self


class OperatorAction(Strict):
    reason: Reason


class FitConnectCallback(Strict):
    """A FIT-Connect event log entry (Security Event Token claims) plus the routing fields of this platform."""

    jti: UUID = Field(description="Event id; a repeated callback with the same jti is applied once.")
    iss: Annotated[str, Text(200, min_chars=1, strict=False)]
    iat: Annotated[int, Field(ge=0)]
    sub: Annotated[str, StringConstraints(pattern=r"^submission:[0-9a-fA-F-]{36}$")]
    txn: Annotated[str, StringConstraints(pattern=r"^case:[0-9a-fA-F-]{36}$")] | None = None
    events: Annotated[dict[Annotated[str, Text(300, min_chars=1)], dict[str, Any]], Field(max_length=1)]
    municipality: AGS
    service: LeiKaKey
    documents: Annotated[list[DocumentType], Field(max_length=50)] = []

    @model_validator(mode="after")
    def _one_known_event(self) -> FitConnectCallback:
        if len(self.events) != 1:
            raise ValueError("events must contain exactly one event")
        uri = next(iter(self.events))
        if not uri.startswith(FIT_EVENT_PREFIX) or uri.removeprefix(FIT_EVENT_PREFIX) not in FIT_EVENTS:
            raise ValueError(f"unknown event {uri!r}; expected {FIT_EVENT_PREFIX}<{'|'.join(FIT_EVENTS)}>")
        return self

    @property
    def event(self) -> str:
        return next(iter(self.events)).removeprefix(FIT_EVENT_PREFIX)

    @property
    def submission_id(self) -> str:
        return self.sub.removeprefix("submission:")


class CallbackAccepted(BaseModel):
    event: str
    application_id: str
    application_event_id: UUID | None
    application_event_type: str | None
