"""The engine serialises workflow events itself (no second validation per event); every type must still be exactly
what the v1 contract says, key included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast, get_args

import orjson
import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID

from services.workflow import run as hot_path
from services.workflow.model import Case, CaseContext, CaseState
from services.workflow.run import Run, event_id
from shared.events import workflow as wf
from shared.events.base import Contract

NOW = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
DEADLINE = datetime(2026, 4, 12, 0, 0, tzinfo=UTC)

DATA: dict[str, Contract] = {
    "workflow.case.opened": wf.CaseOpenedData(),
    "workflow.step.completed": wf.StepCompletedData(step="pruefung", duration_ms=1250),
    "workflow.step.failed": wf.StepFailedData(step="ablage", attempt=3, error="EAkteError: nicht erreichbar"),
    "workflow.task.assigned": wf.TaskAssignedData(step="entscheidung", queue="buergerbuero.leitung"),
    "workflow.deadline.breached": wf.DeadlineBreachedData(deadline="genehmigungsfiktion"),
    "workflow.case.parked": wf.CaseParkedData(step="ablage", error="EAkteError: 503"),
    "workflow.case.closed": wf.CaseClosedData(outcome="filed", processing_time_s=86_400),
    "workflow.step.started": wf.StepStartedData(step="warten", kind="wait"),
    "workflow.notification.requested": wf.NotificationRequestedData(
        kind="nachforderung", deadline=DEADLINE, consequence="none", amount_cents=2_850,
        documents=["wohnungsgeberbestaetigung"]),
    "workflow.deadline.approaching": wf.DeadlineApproachingData(
        deadline="genehmigungsfiktion", due_at=datetime(2026, 6, 1, 12, tzinfo=timezone(timedelta(hours=2)))),
}


def a_run() -> Run:
    # The case id as asyncpg returns it (its own UUID type, which JSON encoders do not all know).
    case = Case(case_id=PgUUID("6f1c2b7e-3d5a-4c1e-9b8f-0a1b2c3d4e5f"), application_id="FIT-2026-000123",
                municipality="06413000", service="99115005104000", definition="wohnsitz_anmeldung",
                definition_version=2, state=CaseState.RUNNING, current_step="eingang", step_entered_at=NOW,
                opened_at=NOW, context=CaseContext(), event_seq=4)
    return Run(cast(Any, None), case, cast(Any, None), NOW, "workflow.events.v1", cast(Any, None))


def test_every_contract_type_is_covered() -> None:
    union = get_args(get_args(wf.WorkflowEvent)[0])
    assert {get_args(m.model_fields["type"].annotation)[0] for m in union} == set(DATA)


@pytest.mark.parametrize("type_", sorted(DATA))
def test_emitted_event_is_the_contract_event(type_: str) -> None:
    run = a_run()
    run.emit(type_, DATA[type_])
    [(topic, key, payload)] = run.outbox
    event = wf.workflow_event_adapter.validate_json(payload)  # raises if the bytes break the contract
    assert topic == "workflow.events.v1"
    assert key == event.kafka_key
    assert event.type == type_
    assert event.data == DATA[type_]
    assert event.id == uuid.uuid5(run.case.case_id, "event:5")  # deterministic: a re-run emits the same id
    assert run.case.event_seq == 5
    assert event.time == NOW
    # Field for field what the contract's own JSON serialisation gives.
    assert orjson.loads(payload) == orjson.loads(event.model_dump_json())


def test_ids_follow_the_case_sequence() -> None:
    run = a_run()
    for _ in range(3):
        run.emit("workflow.case.opened", wf.CaseOpenedData())
    ids = [wf.workflow_event_adapter.validate_json(p).id for _, _, p in run.outbox]
    assert ids == [uuid.uuid5(run.case.case_id, f"event:{n}") for n in (5, 6, 7)]


@pytest.mark.parametrize("seq", [1, 17, 10_000])
def test_event_id_is_the_rfc_4122_name_based_uuid(seq: int) -> None:
    case_id = uuid.uuid4()
    assert event_id(case_id, seq) == str(uuid.uuid5(case_id, f"event:{seq}"))
    assert event_id(PgUUID(str(case_id)), seq) == str(uuid.uuid5(case_id, f"event:{seq}"))


# The hot-path builders against their contract models: same fields, same values, defaults included.
BUILT: list[tuple[str, dict[str, Any], Contract]] = [
    ("workflow.case.opened", hot_path.CASE_OPENED, wf.CaseOpenedData()),
    ("workflow.step.started", hot_path.step_started("pruefung", "automatic"),
     wf.StepStartedData(step="pruefung", kind="automatic")),
    ("workflow.step.completed", hot_path.step_completed("pruefung", 0), wf.StepCompletedData(step="pruefung")),
    ("workflow.step.completed", hot_path.step_completed("ablage", 987),
     wf.StepCompletedData(step="ablage", duration_ms=987)),
    ("workflow.case.closed", hot_path.case_closed("approved", 3_600),
     wf.CaseClosedData(outcome="approved", processing_time_s=3_600)),
    ("workflow.notification.requested", hot_path.notification("bescheid"),
     wf.NotificationRequestedData(kind="bescheid")),
    ("workflow.notification.requested",
     hot_path.notification("eingangsbestaetigung", deadline=DEADLINE, consequence="genehmigungsfiktion"),
     wf.NotificationRequestedData(kind="eingangsbestaetigung", deadline=DEADLINE, consequence="genehmigungsfiktion")),
    ("workflow.notification.requested",
     hot_path.notification("zahlungsaufforderung", amount_cents=1_200, documents=["ausweisdokument"]),
     wf.NotificationRequestedData(kind="zahlungsaufforderung", amount_cents=1_200, documents=["ausweisdokument"])),
]


@pytest.mark.parametrize(("type_", "built", "model"), BUILT, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(BUILT)])
def test_hot_path_data_is_what_the_model_dumps(type_: str, built: dict[str, Any], model: Contract) -> None:
    assert built == model.model_dump()
    run = a_run()
    run.emit(type_, built)
    [(_, _, payload)] = run.outbox
    event = wf.workflow_event_adapter.validate_json(payload)
    assert event.data == model
    other = a_run()
    other.emit(type_, model)
    assert payload == other.outbox[0][2]  # byte for byte the same event as from the model
