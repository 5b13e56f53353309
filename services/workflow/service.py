"""Workflow logic (no I/O): decide what a case does when an application event arrives."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from shared.events import ApplicationEvent
from shared.events import workflow as wf

DEFINITION = "default"
DEFINITION_VERSION = 1


@dataclass
class Decision:
    """What to persist for one incoming event: a case to open and workflow events to emit."""

    open_case: dict[str, object] | None = None
    emit: list[wf.WorkflowEventBase] = field(default_factory=list)


def on_application_event(event: ApplicationEvent, now: datetime | None = None) -> Decision:
    """A submitted application opens a case and is acknowledged automatically (Eingangsbestätigung)."""
    now = now or datetime.now(UTC)
    if event.type != "application.submitted":
        return Decision()
    case_id = uuid.uuid5(uuid.NAMESPACE_URL, f"kp:case:{event.application_id}")
    common = {
        "source": "kp-workflow", "time": now, "municipality": event.municipality, "service": event.service,
        "case_id": case_id, "application_id": event.application_id, "definition": DEFINITION,
        "definition_version": DEFINITION_VERSION,
    }
    opened = wf.CaseOpened(id=uuid.uuid5(case_id, "opened"), type="workflow.case.opened", **common)
    acked = wf.StepCompleted(
        id=uuid.uuid5(case_id, "step:eingangsbestaetigung"), type="workflow.step.completed",
        data=wf.StepCompletedData(step="eingangsbestaetigung"), **common,
    )
    return Decision(
        open_case={
            "case_id": case_id, "application_id": event.application_id, "municipality": event.municipality,
            "service": event.service, "definition": DEFINITION, "definition_version": DEFINITION_VERSION,
            "state": "acknowledged", "opened_at": event.time,
        },
        emit=[opened, acked],
    )
