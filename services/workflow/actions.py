"""The built-in actions of automatic steps, one function each, found by name in `ACTIONS`.

An action does its work on the case of a `Run` and returns its outcome (one of `ACTION_OUTCOMES[name]`),
which the step's `when`/`next` turns into the next step. An exception fails the step: it is retried with
backoff, then the case is parked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from services.workflow.adapters import FilingRecord
from services.workflow.definitions import AutomaticStep, WaitStep
from services.workflow.model import FICTION_TIMERS, TimerKind, add_months
from services.workflow.run import Run, notification
from shared.events import workflow as wf

ActionFn = Callable[[Run, AutomaticStep], Awaitable[str]]
ACTIONS: dict[str, ActionFn] = {}

ACK_TEXT = (
    "Ihr Antrag ist am {received} eingegangen. Die Bearbeitungsfrist beträgt {days} Tage und endet "
    "voraussichtlich am {deadline}. {consequence} Rechtsgrundlage: {basis}. Bitte reichen Sie fehlende "
    "Unterlagen nach Aufforderung fristgerecht nach; die Frist beginnt erst mit Eingang der vollständigen "
    "Unterlagen."
)
CONSEQUENCE_TEXT = {
    "genehmigungsfiktion": "Entscheidet die Behörde nicht innerhalb der Frist, gilt die Genehmigung als erteilt "
                           "(Genehmigungsfiktion); die Frist kann einmal angemessen verlängert werden.",
    "none": "Der Ablauf der Frist hat keine unmittelbare Rechtsfolge; Sie können sich bei Verzögerungen an die "
            "Behörde wenden.",
}
PAYMENT_DAYS = timedelta(days=14)
DOCUMENTS_DAYS = timedelta(days=14)
"""How long the applicant has to send missing documents when the following step sets no deadline."""


def action(name: str) -> Callable[[ActionFn], ActionFn]:
    def register(fn: ActionFn) -> ActionFn:
        ACTIONS[name] = fn
        return fn

    return register


@action("acknowledge")
async def acknowledge(run: Run, step: AutomaticStep) -> str:
    """Eingangsbestätigung (§ 71b Abs. 6 VwVfG): the deadline and its consequence to the applicant."""
    statutory = run.definition.statutory
    deadline = run.now + timedelta(days=statutory.processing_days)
    text = ACK_TEXT.format(
        received=run.now.date().isoformat(), days=statutory.processing_days, deadline=deadline.date().isoformat(),
        consequence=CONSEQUENCE_TEXT[statutory.consequence], basis=statutory.legal_basis)
    run.emit("workflow.notification.requested",
             notification("eingangsbestaetigung", deadline=deadline, consequence=statutory.consequence))
    run.audit("system", "eingangsbestaetigung", {"text": text, "deadline": deadline.isoformat()})
    return "done"


@action("check_completeness")
async def check_completeness(run: Run, step: AutomaticStep) -> str:
    missing = run.case.context.missing_documents(run.definition.required_documents)
    run.case.context.missing = missing
    return "incomplete" if missing else "complete"


@action("request_documents")
async def request_documents(run: Run, step: AutomaticStep) -> str:
    """Nachforderung: the missing documents and the deadline of the wait step that follows."""
    nxt = run.definition.step(step.target("done") or "")
    within = nxt.deadline.after if isinstance(nxt, WaitStep) and nxt.deadline else DOCUMENTS_DAYS
    run.emit("workflow.notification.requested", wf.NotificationRequestedData(
        kind="nachforderung", deadline=run.now + within,
        documents=run.case.context.missing_documents(run.definition.required_documents)))
    return "done"


@action("calculate_fee")
async def calculate_fee(run: Run, step: AutomaticStep) -> str:
    assert run.definition.fees is not None  # the definition's validation requires a fee table
    fee = run.definition.fees.fee_for(run.case.municipality)
    run.case.context.fee_cents = fee
    if fee == 0:
        return "free"
    run.emit("workflow.notification.requested", wf.NotificationRequestedData(
        kind="zahlungsaufforderung", amount_cents=fee, deadline=run.now + PAYMENT_DAYS))
    run.audit("system", "fee_calculated", {"fee_cents": fee})
    return "due"


@action("file")
async def file(run: Run, step: AutomaticStep) -> str:
    """Files the case in the E-Akte; the idempotency key makes a repeated step file once."""
    case, d = run.case, run.definition
    key = f"{case.case_id}:{step.id}"
    record = FilingRecord(
        case_id=str(case.case_id), application_id=case.application_id, municipality=case.municipality,
        service=case.service, definition=d.name, definition_version=d.version, step=step.id,
        decision=case.context.decision, documents=list(case.context.documents), filed_at=run.now)
    reference = await run.eakte.file(key, record)
    case.context.filed[step.id] = reference
    run.audit("system", "filed", {"idempotency_key": key, "reference": reference})
    return "done"


@action("notify")
async def notify(run: Run, step: AutomaticStep) -> str:
    assert step.notification is not None  # the step's validation requires it
    run.emit("workflow.notification.requested", notification(step.notification))
    return "done"


@action("start_fiction_watch")
async def start_fiction_watch(run: Run, step: AutomaticStep) -> str:
    """Genehmigungsfiktion: the permit is deemed granted `months` from now unless decided."""
    fiction = run.definition.fiction
    assert fiction is not None  # the definition's validation requires it
    due = add_months(run.now, fiction.months)
    run.case.context.fiction_due = due
    await run.set_timer(TimerKind.FICTION, None, due)
    await run.set_timer(TimerKind.FICTION_ALERT, None, due - fiction.alert_before)
    run.audit("system", "fiction_watch_started", {"fiction_due": due.isoformat()})
    return "done"


@action("stop_fiction_watch")
async def stop_fiction_watch(run: Run, step: AutomaticStep) -> str:
    await run.clear_timers(FICTION_TIMERS)
    run.audit("system", "fiction_watch_stopped", {})
    return "done"
