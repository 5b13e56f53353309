"""The workflow engine with an in-memory unit of work: every path of every shipped definition, the timers, the
clerk and operator actions, duplicates and out-of-order events. Each test is one case's life on a manual clock."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.workflow.actions import ACTIONS
from services.workflow.definitions import ACTION_OUTCOMES, AutomaticStep, Registry, parse_definition
from services.workflow.model import CaseContext, CaseState, TaskStatus, TimerKind, add_months
from services.workflow.service import TIMERS, NotFound, WorkflowError, case_id_for
from tests.unit.workflow_fakes import Harness, registry

WOHNSITZ, GEWERBE, PARKEN, HUND, BAU = (
    "99115005104000", "99050012104000", "99108001001000", "99102013104000", "99012070006001")
OTHER = "99115003012000"  # no definition of its own: the fallback `allgemein`
GIESSEN, OFFENBACH, MARBURG = "06531005", "06413000", "06534014"
WOHNSITZ_DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]
PARKEN_DOCS = ["fahrzeugschein", "meldebestaetigung"]
BAU_DOCS = ["lageplan", "bauzeichnungen", "baubeschreibung", "standsicherheitsnachweis"]
DAY = timedelta(days=1)


@pytest.fixture
def h() -> Harness:
    return Harness()


class TestRegistries:
    def test_every_action_of_the_definitions_has_one_function(self) -> None:
        assert set(ACTIONS) == set(ACTION_OUTCOMES)
        used = {s.action for d in registry().all() for s in d.steps if isinstance(s, AutomaticStep)}
        assert used <= set(ACTIONS)

    def test_every_timer_kind_has_one_handler(self) -> None:
        assert set(TIMERS) == set(TimerKind)


class TestWohnsitzAnmeldung:
    async def test_complete_application_is_filed_and_confirmed_without_a_clerk(self, h: Harness) -> None:
        case = await h.submit(WOHNSITZ, WOHNSITZ_DOCS)
        case = h.reload(case)
        assert h.steps(case) == ["eingang", "vollstaendigkeit", "akte", "bescheid", "ende"]
        assert case.state is CaseState.CLOSED
        assert case.outcome == "filed"
        assert h.notifications(case) == ["eingangsbestaetigung", "bescheid"]
        assert h.types(case)[0] == "workflow.case.opened"
        assert h.types(case)[-1] == "workflow.case.closed"
        assert list(h.eakte.filed) == [f"{case.case_id}:akte"]
        assert case.context.filed == {"akte": f"akte:{case.case_id}:akte"}
        assert h.timers(case) == {}
        assert h.uow.active_of(case.case_id) is None
        assert case.case_id == case_id_for(case.application_id)

    async def test_missing_documents_are_requested_and_the_case_continues_when_they_arrive(self, h: Harness) -> None:
        case = await h.submit(WOHNSITZ, ["ausweisdokument"])
        assert h.reload(case).state is CaseState.WAITING
        assert h.reload(case).context.missing == ["wohnungsgeberbestaetigung"]
        assert h.notifications(case) == ["eingangsbestaetigung", "nachforderung"]
        assert h.timers(case) == {TimerKind.DEADLINE: "warten_unterlagen", TimerKind.REMINDER: "warten_unterlagen"}
        assert await h.follow_up(case, "application.documents.added",
                                 {"documents": ["wohnungsgeberbestaetigung"]}) == "applied"
        case = h.reload(case)
        assert case.state is CaseState.CLOSED
        assert case.outcome == "filed"
        assert h.steps(case)[-4:] == ["vollstaendigkeit", "akte", "bescheid", "ende"]
        assert h.timers(case) == {}

    async def test_reminder_then_breach_hands_the_case_to_a_clerk(self, h: Harness) -> None:
        case = await h.submit(WOHNSITZ, ["ausweisdokument"])
        assert await h.advance(10 * DAY) == [TimerKind.REMINDER]
        erinnerung = [e for e in h.events(case) if getattr(e.data, "kind", None) == "erinnerung"]
        assert [e.data.documents for e in erinnerung] == [["wohnungsgeberbestaetigung"]]  # type: ignore[union-attr]
        assert await h.advance(4 * DAY) == [TimerKind.DEADLINE]
        case = h.reload(case)
        assert "workflow.deadline.breached" in h.types(case)
        assert case.state is CaseState.TASK
        assert case.current_step == "klaerung"
        assert h.task(case).queue == "meldewesen"
        case = await h.decide(case, "approved")
        assert case.state is CaseState.CLOSED
        assert case.outcome == "approved"
        assert [t.status for t in h.uow.tasks.values()] == [TaskStatus.DONE]

    async def test_a_clerk_task_past_its_deadline_is_escalated(self, h: Harness) -> None:
        case = await h.submit(WOHNSITZ, [])
        await h.advance(14 * DAY)
        task = h.task(case)
        await h.engine.claim_task(h.uow, task.task_id, "sb-1", {GIESSEN})
        assert await h.advance(5 * DAY) == [TimerKind.REMINDER]
        assert h.types(case)[-1] == "workflow.deadline.approaching"
        assert await h.advance(2 * DAY) == [TimerKind.DEADLINE]
        escalated = h.task(case)
        assert (escalated.queue, escalated.status, escalated.assignee) == ("meldewesen-leitung", TaskStatus.OPEN,
                                                                          None)
        assert h.reload(case).state is CaseState.TASK
        assert "task_escalated" in h.actions(case)


class TestGewerbeAnmeldung:
    async def test_fee_is_requested_and_the_clerk_decides_after_payment(self, h: Harness) -> None:
        case = await h.submit(GEWERBE, ["ausweisdokument"], municipality=GIESSEN)
        case = h.reload(case)
        assert (case.state, case.current_step, case.context.fee_cents) == (CaseState.WAITING, "warten_zahlung", 2600)
        assert h.notifications(case)[-1] == "zahlungsaufforderung"
        await h.follow_up(case, "application.payment.received", {"amount_cents": 1000, "method": "paypal"})
        assert h.reload(case).current_step == "warten_zahlung"  # not yet paid in full
        await h.follow_up(case, "application.payment.received", {"amount_cents": 1600, "method": "paypal"})
        case = h.reload(case)
        assert case.state is CaseState.TASK
        assert case.context.paid_cents == 2600
        assert h.task(case).queue == "gewerbe"
        case = await h.decide(case, "approved")
        assert case.state is CaseState.CLOSED
        assert case.outcome == "approved"
        assert h.steps(case)[-4:] == ["pruefung", "akte", "bescheid", "ende"]

    async def test_offenbach_fee_and_its_two_queues_share_the_load(self, h: Harness) -> None:
        first = await h.submit(GEWERBE, ["ausweisdokument"], municipality=OFFENBACH)
        second = await h.submit(GEWERBE, ["ausweisdokument"], municipality=OFFENBACH)
        assert h.reload(first).context.fee_cents == 3000
        for case in (first, second):
            await h.follow_up(case, "application.payment.received", {"amount_cents": 3000, "method": "epaybl"})
        assert [h.task(first).queue, h.task(second).queue] == ["gewerbe-a", "gewerbe-b"]

    async def test_unpaid_fee_goes_to_the_clerk_after_the_deadline(self, h: Harness) -> None:
        case = await h.submit(GEWERBE, ["ausweisdokument"])
        assert await h.advance(14 * DAY) == [TimerKind.REMINDER, TimerKind.DEADLINE]
        assert h.reload(case).current_step == "pruefung"

    async def test_missing_id_is_requested_first(self, h: Harness) -> None:
        case = await h.submit(GEWERBE, [])
        assert h.reload(case).current_step == "warten_unterlagen"
        await h.follow_up(case, "application.documents.added", {"documents": ["ausweisdokument"]})
        assert h.reload(case).current_step == "warten_zahlung"


class TestBewohnerparkausweis:
    async def test_paid_permit_is_decided_filed_and_sent(self, h: Harness) -> None:
        case = await h.submit(PARKEN, PARKEN_DOCS, municipality=MARBURG)
        assert h.reload(case).context.fee_cents == 12000  # Marburg's own fee
        await h.follow_up(case, "application.payment.received", {"amount_cents": 12000, "method": "sepa_lastschrift"})
        case = await h.decide(h.reload(case), "rejected", reason="kein Anspruch")
        assert case.state is CaseState.CLOSED
        assert case.outcome == "rejected"
        filed = h.eakte.filed[f"{case.case_id}:akte"]
        assert filed.decision == "rejected"
        assert filed.documents == sorted(PARKEN_DOCS)

    async def test_missing_documents_past_the_deadline_go_to_the_clerk(self, h: Harness) -> None:
        case = await h.submit(PARKEN, ["fahrzeugschein"])
        await h.advance(14 * DAY)
        case = h.reload(case)
        assert (case.state, case.current_step) == (CaseState.TASK, "pruefung")
        assert h.task(case).due_at == h.clock.now() + 14 * DAY

    async def test_an_overdue_check_is_escalated_to_the_lead_queue(self, h: Harness) -> None:
        case = await h.submit(PARKEN, PARKEN_DOCS)
        await h.follow_up(case, "application.payment.received", {"amount_cents": 3070, "method": "kreditkarte"})
        assert await h.advance(14 * DAY) == [TimerKind.REMINDER, TimerKind.DEADLINE]
        assert h.task(case).queue == "parkausweise-leitung"


class TestHundesteuerAnmeldung:
    async def test_no_documents_required_the_clerk_sets_the_tax(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        assert h.steps(case) == ["eingang", "vollstaendigkeit", "festsetzung"]
        assert h.task(case).queue == "steueramt"
        case = await h.decide(h.reload(case), "approved")
        assert case.outcome == "approved"
        assert h.notifications(case)[-1] == "bescheid"

    async def test_reminder_and_escalation_of_the_tax_assessment(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        assert await h.advance(16 * DAY) == [TimerKind.REMINDER]
        assert await h.advance(5 * DAY) == [TimerKind.DEADLINE]
        assert h.task(case).queue == "steueramt-leitung"


class TestBaugenehmigung:
    async def test_decided_in_time_stops_the_fiction_watch(self, h: Harness) -> None:
        case = await h.submit(BAU, BAU_DOCS)
        case = h.reload(case)
        due = add_months(h.clock.now(), 3)
        assert case.context.fiction_due == due
        assert h.timers(case) == {TimerKind.FICTION: None, TimerKind.FICTION_ALERT: None}
        assert h.task(case).due_at == min(case.opened_at + 90 * DAY, due)
        assert case.context.fee_cents == 50000
        case = await h.decide(case, "partially_approved")
        assert case.outcome == "partially_approved"
        assert h.steps(case)[-5:] == ["pruefung", "fiktion_stop", "akte", "bescheid", "ende"]
        assert h.timers(case) == {}

    async def test_undecided_the_permit_is_deemed_granted(self, h: Harness) -> None:
        case = await h.submit(BAU, BAU_DOCS)
        fired = await h.advance(add_months(h.clock.now(), 3) - h.clock.now())
        assert fired == [TimerKind.FICTION_ALERT, TimerKind.FICTION]
        case = h.reload(case)
        assert case.state is CaseState.CLOSED
        assert case.outcome == "approved"
        assert case.context.fiction_occurred
        assert case.context.decision == "approved"
        assert h.steps(case)[-3:] == ["fiktion_akte", "fiktion_bescheid", "fiktion_ende"]
        assert h.notifications(case)[-1] == "fiktion_eingetreten"
        assert all(t.status is not TaskStatus.OPEN for t in h.uow.tasks.values())

    async def test_the_fiction_deadline_is_extended_once(self, h: Harness) -> None:
        case = await h.submit(BAU, BAU_DOCS)
        first_due = h.reload(case).context.fiction_due
        assert first_due is not None
        case = await h.decide(h.reload(case), "extend", reason="Gutachten ausstehend")
        assert case.context.fiction_due == add_months(first_due, 2)
        assert case.context.fiction_extended
        assert case.context.decision is None
        assert (case.state, case.current_step) == (CaseState.TASK, "pruefung")
        with pytest.raises(WorkflowError, match="only once"):
            await h.decide(case, "extend")
        assert await h.advance(first_due - h.clock.now()) == []  # the old deadline no longer fires
        case = await h.decide(h.reload(case), "approved")
        assert case.outcome == "approved"

    async def test_incomplete_plans_are_requested_then_decided_after_the_deadline(self, h: Harness) -> None:
        case = await h.submit(BAU, ["lageplan"])
        assert h.reload(case).current_step == "warten_unterlagen"
        assert await h.advance(30 * DAY) == [TimerKind.REMINDER, TimerKind.DEADLINE]
        case = h.reload(case)
        assert h.task(case).queue == "bauaufsicht"
        assert case.current_step == "klaerung"
        case = await h.decide(case, "rejected")
        assert case.outcome == "rejected"
        assert TimerKind.FICTION not in h.timers(case)

    async def test_incomplete_plans_accepted_by_the_clerk_start_the_fiction_watch(self, h: Harness) -> None:
        case = await h.submit(BAU, ["lageplan"])
        await h.advance(30 * DAY)
        case = await h.decide(h.reload(case), "approved")
        assert case.current_step == "pruefung"
        assert case.context.fiction_due is not None


class TestAllgemein:
    async def test_services_without_a_definition_use_the_fallback(self, h: Harness) -> None:
        case = await h.submit(OTHER, [])
        case = h.reload(case)
        assert case.definition == "allgemein"
        assert h.task(case).queue == "allgemein"
        case = await h.decide(case, "partially_approved")
        assert case.outcome == "partially_approved"
        assert h.steps(case) == ["eingang", "sachbearbeitung", "akte", "ende"]


WAITING_DEFINITION = {
    "name": "mit-wartezeit", "version": 1, "title": "Antrag mit Wartezeit", "start": "eingang",
    "statutory": {"processing_days": 10, "legal_basis": "§ 71b VwVfG"}, "fees": {"default_cents": 0},
    "steps": [
        {"id": "eingang", "kind": "automatic", "title": "Eingang", "action": "acknowledge", "next": "gebuehr"},
        {"id": "gebuehr", "kind": "automatic", "title": "Gebühr", "action": "calculate_fee",
         "when": {"due": "zahlung", "free": "wartezeit"}},
        {"id": "zahlung", "kind": "wait", "title": "Zahlung", "wait_for": "payment", "next": "wartezeit"},
        {"id": "wartezeit", "kind": "timer", "title": "Einspruchsfrist", "after": "P7D", "next": "ende"},
        {"id": "ende", "kind": "end", "title": "Ende", "outcome": "filed"},
    ],
}


class TestStepsNoShippedDefinitionUses:
    async def test_a_free_fee_skips_the_payment_and_a_timer_step_waits_its_time(self, h: Harness) -> None:
        h.engine.registry = Registry([parse_definition(WAITING_DEFINITION, "test")])
        case = await h.submit(OTHER, [])
        case = h.reload(case)
        assert case.context.fee_cents == 0
        assert (case.state, case.current_step) == (CaseState.WAITING, "wartezeit")
        assert "zahlungsaufforderung" not in h.notifications(case)
        assert h.timers(case) == {TimerKind.TIMER: "wartezeit"}
        assert await h.advance(6 * DAY) == []
        assert await h.advance(DAY) == [TimerKind.TIMER]
        assert h.reload(case).outcome == "filed"


class TestApplicationEvents:
    async def test_a_repeated_event_is_a_duplicate(self, h: Harness) -> None:
        event = h.event("application.submitted", "APP-1", {"channel": "online", "documents": []}, service=HUND)
        assert await h.send(event) == "opened"
        assert await h.send(event) == "duplicate"

    async def test_a_second_submission_is_ignored(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        again = h.event("application.submitted", case.application_id, {"channel": "paper", "documents": []},
                        service=HUND)
        assert await h.send(again) == "ignored"
        assert h.actions(case)[-1] == "duplicate_submission_ignored"

    async def test_events_before_the_submission_wait_and_apply_when_it_opens(self, h: Harness) -> None:
        early = h.event("application.documents.added", "APP-2", {"documents": ["wohnungsgeberbestaetigung"]})
        assert await h.send(early) == "pending"
        case = await h.submit(WOHNSITZ, ["ausweisdokument"], application_id="APP-2")
        assert h.reload(case).outcome == "filed"  # complete with the early documents, no Nachforderung
        assert "nachforderung" not in h.notifications(case)
        assert h.uow.pending == []

    async def test_withdrawal_closes_the_case_and_cancels_task_and_timers(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        await h.follow_up(case, "application.withdrawn", {})
        case = h.reload(case)
        assert case.state is CaseState.CLOSED
        assert case.outcome == "withdrawn"
        assert h.timers(case) == {}
        assert h.uow.active_of(case.case_id) is None
        await h.follow_up(case, "application.documents.added", {"documents": ["ausweisdokument"]})
        assert h.actions(case)[-1] == "event_after_close_ignored"

    async def test_a_decision_from_the_fachverfahren_completes_the_task(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        await h.follow_up(case, "application.decided", {"outcome": "rejected"})
        case = h.reload(case)
        assert case.outcome == "rejected"
        assert h.uow.active_of(case.case_id) is None

    async def test_a_submission_without_any_definition_is_kept(self, h: Harness) -> None:
        h.engine.registry = Registry([d for d in registry().all() if d.service == HUND])
        event = h.event("application.submitted", "APP-3", {"channel": "online", "documents": []}, service=WOHNSITZ)
        assert await h.send(event) == "no_definition"
        assert h.uow.pending == [event]
        assert h.uow.cases == {}


class TestFailures:
    async def test_a_failing_filing_is_retried_with_backoff(self, h: Harness) -> None:
        h.eakte.failures = 2
        case = await h.submit(WOHNSITZ, WOHNSITZ_DOCS)
        case = h.reload(case)
        assert (case.state, case.attempts, h.timers(case)) == (CaseState.RETRYING, 1, {TimerKind.RETRY: "akte"})
        assert await h.advance(timedelta(seconds=2)) == [TimerKind.RETRY]
        assert h.reload(case).attempts == 2
        assert await h.advance(timedelta(seconds=4)) == [TimerKind.RETRY]
        case = h.reload(case)
        assert case.outcome == "filed"
        assert case.last_error is None
        assert h.types(case).count("workflow.step.failed") == 2

    async def test_exhausted_retries_park_the_case_and_an_operator_resumes_it(self, h: Harness) -> None:
        h.eakte.failures = 5
        case = await h.submit(WOHNSITZ, WOHNSITZ_DOCS)
        while h.reload(case).state is CaseState.RETRYING:
            await h.advance(timedelta(minutes=10))
        case = h.reload(case)
        assert case.state is CaseState.PARKED
        assert case.attempts == 5
        assert case.last_error == "EAkteError: E-Akte nicht erreichbar"
        assert "workflow.case.parked" in h.types(case)
        with pytest.raises(NotFound):
            await h.engine.operator_retry(h.uow, case.case_id, "operator:o", "fixed", {MARBURG})
        case = await h.engine.operator_retry(h.uow, case.case_id, "operator:o", "E-Akte wieder da", {GIESSEN})
        assert case.outcome == "filed"
        with pytest.raises(WorkflowError):
            await h.engine.operator_retry(h.uow, case.case_id, "operator:o", "again", {GIESSEN})

    async def test_an_operator_skips_a_parked_step(self, h: Harness) -> None:
        h.eakte.failures = 100
        case = await h.submit(WOHNSITZ, WOHNSITZ_DOCS)
        while h.reload(case).state is CaseState.RETRYING:
            await h.advance(timedelta(minutes=10))
        case = await h.engine.operator_skip(h.uow, case.case_id, "operator:o", "von Hand abgelegt", {GIESSEN})
        assert case.outcome == "filed"
        assert "operator_skip" in h.actions(case)
        assert h.eakte.filed == {}

    async def test_a_timer_of_a_step_the_case_left_is_ignored(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        await h.uow.set_timer(case.case_id, TimerKind.TIMER, "eingang", h.clock.now())
        assert await h.advance(timedelta(seconds=1)) == [TimerKind.TIMER]
        assert h.actions(case)[-1] == "stale_timer_ignored"
        await h.uow.set_timer(case.case_id, TimerKind.RETRY, None, h.clock.now())
        await h.advance(timedelta(seconds=1))
        assert h.actions(case)[-1] == "timer_ignored"
        assert h.reload(case).state is CaseState.TASK


class TestClerkTasks:
    async def test_a_task_must_be_claimed_by_the_clerk_who_completes_it(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        task = h.task(case)
        with pytest.raises(WorkflowError, match="claimed by you"):
            await h.engine.complete_task(h.uow, task.task_id, "approved", "sb-1", {GIESSEN})
        await h.engine.claim_task(h.uow, task.task_id, "sb-1", {GIESSEN})
        with pytest.raises(WorkflowError, match="claimed by sb-1"):
            await h.engine.claim_task(h.uow, task.task_id, "sb-2", {GIESSEN})
        with pytest.raises(WorkflowError, match="not offered"):
            await h.engine.complete_task(h.uow, task.task_id, "extend", "sb-1", {GIESSEN})
        with pytest.raises(NotFound):
            await h.engine.complete_task(h.uow, task.task_id, "approved", "sb-1", {MARBURG})

    async def test_reassigning_to_another_queue_announces_it(self, h: Harness) -> None:
        case = await h.submit(HUND, [])
        task = h.task(case)
        moved = await h.engine.reassign_task(h.uow, task.task_id, "lead", {GIESSEN}, "steueramt-leitung", None,
                                             "Urlaub")
        assert (moved.queue, moved.status) == ("steueramt-leitung", TaskStatus.OPEN)
        assert h.types(case)[-1] == "workflow.task.assigned"
        kept = await h.engine.reassign_task(h.uow, task.task_id, "lead", {GIESSEN}, None, "sb-9", "Vertretung")
        assert (kept.queue, kept.status, kept.assignee) == ("steueramt-leitung", TaskStatus.CLAIMED, "sb-9")
        assert h.types(case).count("workflow.task.assigned") == 2  # assigned, moved; not again for a person


class TestStoredContext:
    def test_context_of_earlier_releases_loads_without_the_timer_copy(self) -> None:
        stored = {"documents": ["lageplan"], "paid_cents": 0, "submitted_at": "2026-03-02T08:00:00+00:00",
                  "channel": "online", "_timers": {"fiction": None}, "_task": True,
                  "fiction_due": "2026-06-02T08:00:00+00:00", "decision": "approved", "filed": {"akte": "r"}}
        context = CaseContext.from_json(stored)
        assert context.fiction_due is not None
        assert context.fiction_due.isoformat() == stored["fiction_due"]
        assert context.to_json() == {k: v for k, v in stored.items() if not k.startswith("_")}

    def test_keys_of_a_newer_release_are_kept(self) -> None:
        assert CaseContext.from_json({"documents": [], "paid_cents": 0, "later": 1}).to_json()["later"] == 1
