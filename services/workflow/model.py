"""The workflow's business state as types: a case, its context, its clerk task and its timers.

The database rows and the `wf_cases.context` JSON are turned into these at the repository boundary; nothing
in the engine reads a row or the context by string keys.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID


class CaseState(StrEnum):
    """Where a case is: the values stored in `wf_cases.state`."""

    RUNNING = "running"  # automatic steps run
    WAITING = "waiting"  # for an event (documents, payment) or for time
    TASK = "task"  # a clerk decides
    RETRYING = "retrying"  # a failed automatic step runs again when its retry timer fires
    PARKED = "parked"  # retries exhausted; an operator retries or skips
    CLOSED = "closed"


class TaskStatus(StrEnum):
    OPEN = "open"
    CLAIMED = "claimed"
    DONE = "done"
    CANCELLED = "cancelled"


ACTIVE_TASK = (TaskStatus.OPEN, TaskStatus.CLAIMED)


class TimerKind(StrEnum):
    """The timers a case can have (at most one of each, `wf_due` is unique on case and name)."""

    RETRY = "retry"  # a failed automatic step is due again
    TIMER = "timer"  # a timer step has elapsed
    REMINDER = "reminder"  # a wait or human step's deadline is near
    DEADLINE = "deadline"  # a wait or human step's deadline has passed
    FICTION_ALERT = "fiction_alert"  # the Genehmigungsfiktion is near
    FICTION = "fiction"  # the Genehmigungsfiktion takes effect


FICTION_TIMERS = (TimerKind.FICTION, TimerKind.FICTION_ALERT)


@dataclass(slots=True)
class CaseContext:
    """What the case has learnt so far (stored as JSON in `wf_cases.context`, keys as named here)."""

    documents: list[str] = field(default_factory=list)
    paid_cents: int = 0
    submitted_at: str | None = None
    channel: str | None = None
    missing: list[str] | None = None
    fee_cents: int | None = None
    decision: str | None = None
    filed: dict[str, str] = field(default_factory=dict)
    fiction_due: datetime | None = None
    fiction_extended: bool = False
    fiction_occurred: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this release does not know (written by a newer one); kept as they are."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseContext:
        """The stored JSON; `_timers` and `_task` of earlier releases are dropped (timers and tasks have their own
        tables)."""
        known = dict(data)
        known.pop("_timers", None)
        known.pop("_task", None)
        fiction_due = known.pop("fiction_due", None)
        return cls(
            documents=list(known.pop("documents", [])), paid_cents=int(known.pop("paid_cents", 0)),
            submitted_at=known.pop("submitted_at", None), channel=known.pop("channel", None),
            missing=known.pop("missing", None), fee_cents=known.pop("fee_cents", None),
            decision=known.pop("decision", None), filed=dict(known.pop("filed", {})),
            fiction_due=datetime.fromisoformat(fiction_due) if fiction_due else None,
            fiction_extended=bool(known.pop("fiction_extended", False)),
            fiction_occurred=bool(known.pop("fiction_occurred", False)), extra=known,
        )

    def to_json(self) -> dict[str, Any]:
        """The stored JSON: unset optional keys are left out, as earlier releases wrote it."""
        out: dict[str, Any] = {**self.extra, "documents": self.documents, "paid_cents": self.paid_cents}
        optional: dict[str, Any] = {
            "submitted_at": self.submitted_at, "channel": self.channel, "missing": self.missing,
            "fee_cents": self.fee_cents, "decision": self.decision, "filed": self.filed or None,
            "fiction_due": self.fiction_due.isoformat() if self.fiction_due else None,
            "fiction_extended": self.fiction_extended or None, "fiction_occurred": self.fiction_occurred or None,
        }
        out.update((k, v) for k, v in optional.items() if v is not None)
        return out

    def missing_documents(self, required: list[str]) -> list[str]:
        have = set(self.documents)
        return [d for d in required if d not in have]


@dataclass(slots=True)
class Case:
    """One application's case (a `wf_cases` row), pinned to its definition version."""

    case_id: UUID
    application_id: str
    municipality: str
    service: str
    definition: str
    definition_version: int
    state: CaseState
    current_step: str | None
    step_entered_at: datetime | None
    opened_at: datetime
    context: CaseContext
    attempts: int = 0
    last_error: str | None = None
    event_seq: int = 0
    outcome: str | None = None
    closed_at: datetime | None = None

    @property
    def closed(self) -> bool:
        return self.state is CaseState.CLOSED


@dataclass(slots=True)
class Task:
    """A clerk task (a `wf_tasks` row); a case has at most one open or claimed task."""

    task_id: UUID
    case_id: UUID
    step: str
    queue: str
    municipality: str
    service: str
    status: TaskStatus
    due_at: datetime | None
    created_at: datetime
    assignee: str | None = None
    decision: str | None = None
    completed_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_TASK


@dataclass(frozen=True, slots=True)
class Timer:
    """A due timer (a `wf_due` row) as the poller takes it."""

    id: int
    case_id: UUID
    kind: TimerKind
    step: str | None
    due_at: datetime
    attempts: int = 0


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamping the day (31 Jan + 1 month = end of February)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)
