"""Workflow events v1: what the workflow service reports about cases (Vorgänge)."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AwareDatetime, Field, StringConstraints, TypeAdapter

from shared.events.application import ApplicationId, Cents, DocumentType
from shared.events.base import Contract, Envelope
from shared.events.text import Text

ErrorText = Annotated[str, Text(500, max_bytes=1000, multiline=True)]
"""An error message of a step: TAB, LF and CR allowed, other control characters not."""
StepName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$", strict=True)]


class WorkflowEventBase(Envelope):
    """Envelope of workflow events: case, application and the pinned definition."""

    case_id: UUID
    application_id: ApplicationId
    definition: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$", strict=True)]
    definition_version: Annotated[int, Field(ge=1, strict=True)]


class CaseOpenedData(Contract):
    pass


class CaseOpened(WorkflowEventBase):
    """A case was opened for a submitted application."""

    type: Literal["workflow.case.opened"]
    data: CaseOpenedData = CaseOpenedData()


class StepCompletedData(Contract):
    step: StepName
    duration_ms: Annotated[int, Field(ge=0, strict=True)] = 0


class StepCompleted(WorkflowEventBase):
    """An automated or human step finished."""

    type: Literal["workflow.step.completed"]
    data: StepCompletedData


class StepFailedData(Contract):
    step: StepName
    attempt: Annotated[int, Field(ge=1, strict=True)]
    error: ErrorText


class StepFailed(WorkflowEventBase):
    """An automated step failed (it may be retried)."""

    type: Literal["workflow.step.failed"]
    data: StepFailedData


class TaskAssignedData(Contract):
    step: StepName
    queue: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")]


class TaskAssigned(WorkflowEventBase):
    """A human task was put into a clerk queue."""

    type: Literal["workflow.task.assigned"]
    data: TaskAssignedData


class DeadlineBreachedData(Contract):
    deadline: StepName


class DeadlineBreached(WorkflowEventBase):
    """A statutory or internal deadline passed."""

    type: Literal["workflow.deadline.breached"]
    data: DeadlineBreachedData


class CaseParkedData(Contract):
    step: StepName
    error: ErrorText


class CaseParked(WorkflowEventBase):
    """A case stopped after retries were exhausted and waits for an operator."""

    type: Literal["workflow.case.parked"]
    data: CaseParkedData


class CaseClosedData(Contract):
    outcome: Literal["approved", "rejected", "partially_approved", "withdrawn", "acknowledged", "filed"]
    processing_time_s: Annotated[int, Field(ge=0, strict=True)]


class CaseClosed(WorkflowEventBase):
    """A case ended; carries the processing time (Bearbeitungsdauer)."""

    type: Literal["workflow.case.closed"]
    data: CaseClosedData


class StepStartedData(Contract):
    step: StepName
    kind: Literal["automatic", "human", "wait", "timer", "end"]


class StepStarted(WorkflowEventBase):
    """A case entered a step of its definition."""

    type: Literal["workflow.step.started"]
    data: StepStartedData


class NotificationRequestedData(Contract):
    kind: Literal["eingangsbestaetigung", "nachforderung", "erinnerung", "zahlungsaufforderung", "bescheid",
                  "fiktion_eingetreten", "information"]
    deadline: AwareDatetime | None = None
    consequence: Literal["genehmigungsfiktion", "none"] | None = None
    amount_cents: Cents | None = None
    documents: list[DocumentType] = Field(default_factory=list, max_length=50)


class NotificationRequested(WorkflowEventBase):
    """A message to the applicant's inbox (Postfach) was requested; codes only, no text or personal data."""

    type: Literal["workflow.notification.requested"]
    data: NotificationRequestedData


class DeadlineApproachingData(Contract):
    deadline: StepName
    due_at: AwareDatetime


class DeadlineApproaching(WorkflowEventBase):
    """A deadline (e.g. the Genehmigungsfiktion) will pass soon; the clerk is alerted."""

    type: Literal["workflow.deadline.approaching"]
    data: DeadlineApproachingData


WorkflowEvent = Annotated[
    CaseOpened | StepCompleted | StepFailed | TaskAssigned | DeadlineBreached | CaseParked | CaseClosed
    | StepStarted | NotificationRequested | DeadlineApproaching,
    Field(discriminator="type"),
]
workflow_event_adapter: TypeAdapter[WorkflowEvent] = TypeAdapter(WorkflowEvent)
