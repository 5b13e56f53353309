"""Workflow engine: moves cases through their pinned definition.

Every entry point (application event, timer, task decision, operator action) works through a `UnitOfWork`
inside the caller's transaction: the case is locked, and its state change, outbox rows, timers, tasks and audit
rows go through the unit of work, and the caller commits. External effects (E-Akte) carry an idempotency key,
so a step repeated after a crash before the commit files once.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from uuid import UUID

from services.workflow.actions import ACTIONS
from services.workflow.adapters import Clock, EAkte
from services.workflow.definitions import (
    ACTION_OUTCOMES,
    AutomaticStep,
    Definition,
    EndStep,
    HumanStep,
    Registry,
    TimerStep,
    WaitStep,
)
from services.workflow.metrics import WorkflowMetrics
from services.workflow.model import (
    ACTIVE_TASK,
    Case,
    CaseContext,
    CaseState,
    Task,
    TaskStatus,
    Timer,
    TimerKind,
    add_months,
)
from services.workflow.run import CASE_OPENED, Run, case_closed, notification, step_completed, step_started
from services.workflow.unit_of_work import UnitOfWork
from shared.events import ApplicationEvent
from shared.events import workflow as wf

MAX_STEPS_PER_RUN = 100

AnyStep = AutomaticStep | HumanStep | WaitStep | TimerStep | EndStep
STATE_OF_KIND = {"automatic": CaseState.RUNNING, "end": CaseState.RUNNING, "human": CaseState.TASK,
                 "wait": CaseState.WAITING, "timer": CaseState.WAITING}
"""The state a case is in right after it entered a step of this kind."""


class WorkflowError(Exception):
    """A request that does not fit the case's current state (mapped to 409 by the API)."""


class NotFound(Exception):
    """Case or task not found (or not visible to the caller)."""


def case_id_for(application_id: str) -> UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kp:case:{application_id}")


@dataclass
class Engine:
    registry: Registry
    eakte: EAkte
    clock: Clock
    metrics: WorkflowMetrics
    topic: str = "workflow.events.v1"
    retry_jitter: float = 0.5
    rng: random.Random = field(default_factory=random.Random)

    # --- entry points -------------------------------------------------------------------------------

    async def on_application_event(self, uow: UnitOfWork, event: ApplicationEvent) -> str:
        """Apply one application event; returns what happened (duplicate, pending, opened, applied, ignored,
        no_definition)."""
        if not await uow.claim(event.id):
            return "duplicate"
        case = await uow.case_for_application(event.application_id)
        if event.type == "application.submitted":
            if case is not None:
                run = self._run(uow, case)
                run.audit(f"event:{event.source}", "duplicate_submission_ignored", {"event_id": str(event.id)})
                await run.flush()
                return "ignored"
            return await self._open(uow, event)
        if case is None:
            await uow.keep_pending(event)
            return "pending"
        run = self._run(uow, case)
        await self._apply(run, event)
        await run.flush()
        return "applied"

    async def on_timer(self, uow: UnitOfWork, timer: Timer) -> bool:
        """Fire one locked timer; False if its case is busy (the timer stays for the next poll)."""
        case = await uow.lock_case(timer.case_id, skip_locked=True)
        if case is None:
            return False
        await uow.delete_timer(case.case_id, timer.id, timer.kind)
        now = self.clock.now()
        self.metrics.timer_lag.labels(timer.kind.value).observe(max(0.0, (now - timer.due_at).total_seconds()))
        self.metrics.timers_fired.labels(timer.kind.value).inc()
        run = self._run(uow, case)
        if case.closed or (timer.step is not None and timer.step != case.current_step):
            run.audit("timer", "stale_timer_ignored", {"timer": timer.kind.value, "step": timer.step})
        elif not await TIMERS[timer.kind](self, run, _current_step(run), timer):
            run.audit("timer", "timer_ignored", {"timer": timer.kind.value, "state": case.state.value})
        await run.flush()
        return True

    async def complete_task(self, uow: UnitOfWork, task_id: UUID, decision: str, actor: str,
                            municipalities: set[str], reason: str | None = None) -> Case:
        task = await uow.get_task(task_id)
        if task is None or task.municipality not in municipalities:
            raise NotFound("task")
        case = await uow.lock_case(task.case_id)
        assert case is not None
        task = await uow.get_task(task_id)
        assert task is not None
        if task.status is not TaskStatus.CLAIMED or task.assignee != actor:
            raise WorkflowError("the task must be claimed by you before it can be completed")
        run = self._run(uow, case)
        step = _current_step(run)
        if not isinstance(step, HumanStep) or step.id != task.step or case.state is not CaseState.TASK:
            raise WorkflowError("the case is no longer at this task")
        if decision not in step.decisions:
            raise WorkflowError(f"decision {decision!r} is not offered here; choose one of {sorted(step.decisions)}")
        if decision == "extend":
            await self._extend_fiction(run, actor, reason)
        await self._decide(run, step, task, decision, actor, reason)
        await run.flush()
        return case

    async def claim_task(self, uow: UnitOfWork, task_id: UUID, actor: str, municipalities: set[str]) -> Task:
        task = await self._visible_task(uow, task_id, municipalities)
        if task.status is TaskStatus.CLAIMED and task.assignee != actor:
            raise WorkflowError(f"the task is claimed by {task.assignee}")
        if task.status not in ACTIVE_TASK:
            raise WorkflowError(f"the task is {task.status.value}")
        claimed = replace(task, status=TaskStatus.CLAIMED, assignee=actor)
        await uow.update_task(claimed)
        run = await self._locked_run(uow, task.case_id)
        run.audit(actor, "task_claimed", {"task_id": str(task_id), "queue": task.queue})
        await run.flush()
        return claimed

    async def reassign_task(self, uow: UnitOfWork, task_id: UUID, actor: str, municipalities: set[str],
                            queue: str | None, assignee: str | None, reason: str | None) -> Task:
        task = await self._visible_task(uow, task_id, municipalities)
        if task.status not in ACTIVE_TASK:
            raise WorkflowError(f"the task is {task.status.value}")
        moved = replace(task, queue=queue or task.queue, assignee=assignee,
                        status=TaskStatus.CLAIMED if assignee else TaskStatus.OPEN)
        await uow.update_task(moved)
        run = await self._locked_run(uow, task.case_id)
        run.audit(actor, "task_reassigned", {"task_id": str(task_id), "reason": reason},
                  before={"queue": task.queue, "assignee": task.assignee},
                  after={"queue": moved.queue, "assignee": assignee})
        if moved.queue != task.queue:
            run.emit("workflow.task.assigned", wf.TaskAssignedData(step=task.step, queue=moved.queue))
        await run.flush()
        return moved

    async def operator_retry(self, uow: UnitOfWork, case_id: UUID, actor: str, reason: str,
                             municipalities: set[str]) -> Case:
        """Run the parked step again now (attempts start over)."""
        run = await self._locked_run(uow, case_id, municipalities)
        case = run.case
        if case.state not in (CaseState.PARKED, CaseState.RETRYING):
            raise WorkflowError(f"only parked or retrying cases can be retried; this one is {case.state.value}")
        before = run.snapshot()
        await run.clear_timers([TimerKind.RETRY])
        case.state, case.attempts = CaseState.RUNNING, 0
        run.audit(actor, "operator_retry", {"reason": reason}, before=before)
        await self._drive(run)
        await run.flush()
        return case

    async def operator_skip(self, uow: UnitOfWork, case_id: UUID, actor: str, reason: str,
                            municipalities: set[str]) -> Case:
        """Leave the parked step as if it succeeded and continue with its default transition."""
        run = await self._locked_run(uow, case_id, municipalities)
        case = run.case
        if case.state not in (CaseState.PARKED, CaseState.RETRYING):
            raise WorkflowError(f"only parked or retrying cases can be skipped; this one is {case.state.value}")
        step = _current_step(run)
        assert isinstance(step, AutomaticStep)
        target = step.target(ACTION_OUTCOMES[step.action][0])
        assert target is not None
        before = run.snapshot()
        case.attempts, case.last_error = 0, None
        run.audit(actor, "operator_skip", {"reason": reason, "step": step.id}, before=before)
        await self._enter(run, target)
        await self._drive(run)
        await run.flush()
        return case

    def new_case(self, event: ApplicationEvent) -> Case | None:
        """The case a submission opens, pinned to the newest definition for its service (None if none serves
        it)."""
        definition = self.registry.for_service(event.service)
        return None if definition is None else self._new_case(event, definition)

    # --- opening and events -------------------------------------------------------------------------

    def _new_case(self, event: ApplicationEvent, definition: Definition) -> Case:
        assert event.type == "application.submitted"
        now = self.clock.now()
        return Case(
            case_id=case_id_for(event.application_id), application_id=event.application_id,
            municipality=event.municipality, service=event.service, definition=definition.name,
            definition_version=definition.version, state=CaseState.RUNNING, current_step=definition.start,
            step_entered_at=now, opened_at=now,
            context=CaseContext(documents=sorted(set(event.data.documents)), submitted_at=event.time.isoformat(),
                                channel=event.data.channel),
        )

    async def _open(self, uow: UnitOfWork, event: ApplicationEvent) -> str:
        definition = self.registry.for_service(event.service)
        if definition is None:
            # Kept (not lost, not redelivered forever): it opens its case once a definition is deployed and the
            # event is replayed from wf_pending by an operator.
            await uow.keep_pending(event)
            return "no_definition"
        case = await uow.insert_case(event.application_id, lambda: self._new_case(event, definition))
        if case is None:
            return "ignored"
        pending = await uow.take_pending(event.application_id)
        run = self._run(uow, case, definition)
        run.emit("workflow.case.opened", CASE_OPENED)
        run.audit(f"event:{event.source}", "case_opened", {"event_id": str(event.id)}, after=run.snapshot())
        for earlier in pending:
            await self._apply(run, earlier, drive=False)
        if not case.closed:
            await self._enter(run, definition.start)
            await self._drive(run)
        await run.flush()
        return "opened"

    async def _apply(self, run: Run, event: ApplicationEvent, drive: bool = True) -> None:
        case, ctx = run.case, run.case.context
        actor = f"event:{event.source}"
        if case.closed:
            run.audit(actor, "event_after_close_ignored", {"type": event.type, "event_id": str(event.id)})
            return
        if event.type == "application.documents.added":
            ctx.documents = sorted(set(ctx.documents) | set(event.data.documents))
            run.audit(actor, "documents_added", {"documents": event.data.documents})
        elif event.type == "application.payment.received":
            ctx.paid_cents += event.data.amount_cents
            run.audit(actor, "payment_received", {"amount_cents": event.data.amount_cents,
                                                  "method": event.data.method})
        elif event.type == "application.withdrawn":
            run.audit(actor, "withdrawn", {"event_id": str(event.id)})
            await self._close(run, "withdrawn")
            return
        elif event.type == "application.decided":
            ctx.decision = event.data.outcome
            run.audit(actor, "decided_externally", {"outcome": event.data.outcome})
            if case.state is CaseState.TASK and drive:
                step = _current_step(run)
                task = await run.uow.active_task(case.case_id)
                if isinstance(step, HumanStep) and task is not None and event.data.outcome in step.decisions:
                    await self._decide(run, step, task, event.data.outcome, actor, None)
                    return
        if drive and case.state is CaseState.WAITING:
            await self._drive(run)

    # --- the state machine --------------------------------------------------------------------------

    async def _enter(self, run: Run, step_id: str) -> None:
        case = run.case
        step = run.definition.step(step_id)
        await run.uow.clear_step_timers(case.case_id)
        before = run.snapshot()
        case.current_step, case.step_entered_at = step_id, run.now
        case.attempts, case.last_error = 0, None
        case.state = STATE_OF_KIND[step.kind]
        run.emit("workflow.step.started", step_started(step_id, step.kind))
        run.audit("system", "step_entered", {"step": step_id, "kind": step.kind}, before=before,
                  after=run.snapshot())
        if isinstance(step, (WaitStep, HumanStep)) and step.deadline:
            d = step.deadline
            await run.set_timer(TimerKind.DEADLINE, step_id, run.now + d.after)
            if d.reminder_before:
                await run.set_timer(TimerKind.REMINDER, step_id, run.now + d.after - d.reminder_before)
        if isinstance(step, TimerStep):
            await run.set_timer(TimerKind.TIMER, step_id, run.now + step.after)
        if isinstance(step, HumanStep):
            async with run.uow.assigning():  # cases applied together see each other's new tasks
                await self._assign(run, step)

    async def _assign(self, run: Run, step: HumanStep) -> None:
        """A task in the least loaded candidate queue."""
        case = run.case
        candidates = step.assignment.by_municipality.get(case.municipality, step.assignment.queues)
        loads = await run.uow.queue_loads(case.municipality, candidates)
        queue = min(candidates, key=lambda q: (loads.get(q, 0), candidates.index(q)))
        due = run.now + step.deadline.after if step.deadline else statutory_due(run.definition, case)
        task = Task(task_id=uuid.uuid4(), case_id=case.case_id, step=step.id, queue=queue,
                    municipality=case.municipality, service=case.service, status=TaskStatus.OPEN, due_at=due,
                    created_at=run.now)
        await run.uow.create_task(task)
        run.emit("workflow.task.assigned", wf.TaskAssignedData(step=step.id, queue=queue))
        run.audit("system", "task_assigned", {"task_id": str(task.task_id), "queue": queue, "loads": loads})

    async def _drive(self, run: Run) -> None:
        """Run automatic steps and satisfied waits until the case needs a person, an event or time."""
        case = run.case
        for _ in range(MAX_STEPS_PER_RUN):
            if case.state not in (CaseState.RUNNING, CaseState.WAITING):
                return
            step = _current_step(run)
            if isinstance(step, EndStep):
                outcome = step.outcome if step.outcome != "decision" else case.context.decision or "filed"
                await self._close(run, outcome)
                return
            if isinstance(step, WaitStep):
                if not _satisfied(run.definition, step, case):
                    return
                run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
                await self._enter(run, step.next)
                continue
            if not isinstance(step, AutomaticStep) or case.state is not CaseState.RUNNING:
                return
            started = time.perf_counter()
            try:
                outcome = await ACTIONS[step.action](run, step)
            except Exception as exc:  # any failing step is retried, then parked; never lost
                self.metrics.step(step.action, "error").observe(time.perf_counter() - started)
                await self._failed(run, step, exc)
                return
            self.metrics.step(step.action, "ok").observe(time.perf_counter() - started)
            run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
            target = step.target(outcome)
            assert target is not None
            await self._enter(run, target)
        step = _current_step(run)
        assert step is not None
        await self._failed(run, step, RuntimeError(f"more than {MAX_STEPS_PER_RUN} steps without waiting"),
                           park=True)

    async def _failed(self, run: Run, step: AnyStep, exc: Exception, park: bool = False) -> None:
        case = run.case
        case.attempts += 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        case.last_error = error
        run.emit("workflow.step.failed", wf.StepFailedData(step=step.id, attempt=case.attempts, error=error))
        if park or not isinstance(step, AutomaticStep) or case.attempts >= step.retry.max_attempts:
            before = run.snapshot()
            case.state = CaseState.PARKED
            run.emit("workflow.case.parked", wf.CaseParkedData(step=step.id, error=error))
            run.audit("system", "case_parked", {"error": error, "attempts": case.attempts}, before=before,
                      after=run.snapshot())
            self.metrics.cases_parked.inc()
            return
        retry = step.retry
        delay = min(retry.max_s, retry.base_s * 2 ** (case.attempts - 1))
        delay *= 1 + self.rng.uniform(0, self.retry_jitter)
        case.state = CaseState.RETRYING
        await run.set_timer(TimerKind.RETRY, step.id, run.now + timedelta(seconds=delay))
        run.audit("system", "step_failed", {"error": error, "attempt": case.attempts, "retry_in_s": delay})
        self.metrics.step_retries.labels(step.action).inc()

    async def _decide(self, run: Run, step: HumanStep, task: Task, decision: str, actor: str,
                      reason: str | None) -> None:
        await run.uow.update_task(replace(task, status=TaskStatus.DONE, decision=decision, completed_at=run.now))
        if decision != "extend":
            run.case.context.decision = decision
        run.audit(actor, "task_completed", {"task_id": str(task.task_id), "decision": decision, "reason": reason})
        run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
        await self._enter(run, step.decisions[decision])  # type: ignore[index]
        await self._drive(run)

    async def _extend_fiction(self, run: Run, actor: str, reason: str | None) -> None:
        fiction, ctx = run.definition.fiction, run.case.context
        if fiction is None or ctx.fiction_due is None:
            raise WorkflowError("no Genehmigungsfiktion is being watched for this case")
        if ctx.fiction_extended:
            raise WorkflowError("the Genehmigungsfiktion deadline may be extended only once")
        old = ctx.fiction_due
        new = add_months(old, fiction.extension_months)
        ctx.fiction_due, ctx.fiction_extended = new, True
        await run.set_timer(TimerKind.FICTION, None, new)
        await run.set_timer(TimerKind.FICTION_ALERT, None, new - fiction.alert_before)
        run.audit(actor, "fiction_extended", {"reason": reason}, before={"fiction_due": old.isoformat()},
                  after={"fiction_due": new.isoformat()})
        run.emit("workflow.notification.requested", wf.NotificationRequestedData(
            kind="information", deadline=new, consequence="genehmigungsfiktion"))

    async def _close(self, run: Run, outcome: str) -> None:
        case = run.case
        before = run.snapshot()
        await run.clear_timers()
        await run.cancel_tasks()
        case.state, case.outcome, case.closed_at = CaseState.CLOSED, outcome, run.now
        case.attempts, case.last_error = 0, None
        seconds = max(0, int((run.now - case.opened_at).total_seconds()))
        run.emit("workflow.case.closed", case_closed(outcome, seconds))
        run.audit("system", "case_closed", {"outcome": outcome, "processing_time_s": seconds}, before=before,
                  after=run.snapshot())

    # --- timers: what each kind does when it fires (TIMERS) ----------------------------------------

    async def _retry_due(self, run: Run, step: AnyStep | None, timer: Timer) -> bool:
        case = run.case
        if case.state is not CaseState.RETRYING:
            return False
        case.state = CaseState.RUNNING
        run.audit("timer", "retry_due", {"attempt": case.attempts + 1})
        await self._drive(run)
        return True

    async def _timer_elapsed(self, run: Run, step: AnyStep | None, timer: Timer) -> bool:
        if not isinstance(step, TimerStep):
            return False
        run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
        await self._enter(run, step.next)
        await self._drive(run)
        return True

    async def _reminder(self, run: Run, step: AnyStep | None, timer: Timer) -> bool:
        """Wait steps remind the applicant, human steps alert the clerk."""
        if not isinstance(step, (WaitStep, HumanStep)) or step.deadline is None or run.case.step_entered_at is None:
            return False
        deadline = run.case.step_entered_at + step.deadline.after
        run.audit("timer", "reminder", {"step": step.id, "deadline": deadline.isoformat()})
        if isinstance(step, WaitStep):
            missing = (run.case.context.missing_documents(run.definition.required_documents)
                       if step.wait_for == "documents" else [])
            run.emit("workflow.notification.requested",
                     notification("erinnerung", deadline=deadline, documents=missing))
        else:
            run.emit("workflow.deadline.approaching", wf.DeadlineApproachingData(deadline=step.id, due_at=deadline))
        return True

    async def _deadline_breached(self, run: Run, step: AnyStep | None, timer: Timer) -> bool:
        """The case moves on to `on_breach`, or the task is escalated to another queue."""
        if not isinstance(step, (WaitStep, HumanStep)) or step.deadline is None:
            return False
        run.emit("workflow.deadline.breached", wf.DeadlineBreachedData(deadline=step.id))
        run.audit("timer", "deadline_breached", {"step": step.id})
        if step.deadline.on_breach:
            await run.cancel_tasks()
            await self._enter(run, step.deadline.on_breach)
            await self._drive(run)
        elif isinstance(step, HumanStep) and step.deadline.escalate_to_queue:
            task = await run.uow.active_task(run.case.case_id)
            if task is not None:
                queue = step.deadline.escalate_to_queue
                await run.uow.update_task(replace(task, queue=queue, status=TaskStatus.OPEN, assignee=None))
                run.emit("workflow.task.assigned", wf.TaskAssignedData(step=step.id, queue=queue))
                run.audit("timer", "task_escalated", {"task_id": str(task.task_id)}, before={"queue": task.queue},
                          after={"queue": queue})
        return True

    async def _fiction_near(self, run: Run, step: AnyStep | None, timer: Timer) -> bool:
        due = run.case.context.fiction_due
        if due is None:
            return False
        run.emit("workflow.deadline.approaching",
                 wf.DeadlineApproachingData(deadline="genehmigungsfiktion", due_at=due))
        run.audit("timer", "fiction_alert", {"fiction_due": due.isoformat()})
        return True

    async def _fiction_occurred(self, run: Run, step: AnyStep | None, timer: Timer) -> bool:
        """Genehmigungsfiktion: undecided in time, the permit is deemed granted."""
        fiction, case = run.definition.fiction, run.case
        if fiction is None:
            return False
        run.emit("workflow.deadline.breached", wf.DeadlineBreachedData(deadline="genehmigungsfiktion"))
        case.context.fiction_occurred, case.context.decision = True, "approved"
        due = case.context.fiction_due
        run.audit("timer", "genehmigungsfiktion_eingetreten", {"fiction_due": due.isoformat() if due else None})
        await run.cancel_tasks()
        if case.state in (CaseState.RUNNING, CaseState.RETRYING, CaseState.PARKED):
            case.attempts, case.last_error = 0, None
        await self._enter(run, fiction.on_fiction)
        await self._drive(run)
        return True

    # --- helpers ------------------------------------------------------------------------------------

    def _run(self, uow: UnitOfWork, case: Case, definition: Definition | None = None) -> Run:
        definition = definition or self.registry.get(case.definition, case.definition_version)
        return Run(uow, case, definition, self.clock.now(), self.topic, self.eakte)

    async def _locked_run(self, uow: UnitOfWork, case_id: UUID, municipalities: set[str] | None = None) -> Run:
        case = await uow.lock_case(case_id)
        if case is None or (municipalities is not None and case.municipality not in municipalities):
            raise NotFound("case")
        return self._run(uow, case)

    async def _visible_task(self, uow: UnitOfWork, task_id: UUID, municipalities: set[str]) -> Task:
        task = await uow.get_task(task_id)
        if task is None or task.municipality not in municipalities:
            raise NotFound("task")
        await uow.lock_case(task.case_id)
        fresh = await uow.get_task(task_id)
        assert fresh is not None
        return fresh


TimerHandler = Callable[[Engine, Run, AnyStep | None, Timer], Awaitable[bool]]
TIMERS: dict[TimerKind, TimerHandler] = {
    TimerKind.RETRY: Engine._retry_due,
    TimerKind.TIMER: Engine._timer_elapsed,
    TimerKind.REMINDER: Engine._reminder,
    TimerKind.DEADLINE: Engine._deadline_breached,
    TimerKind.FICTION_ALERT: Engine._fiction_near,
    TimerKind.FICTION: Engine._fiction_occurred,
}
"""What each timer kind does when it fires; a handler returns False if the timer does not apply to the case's
current step or state (the firing is then recorded as ignored)."""


# --- reading the case ------------------------------------------------------------------------------------

def _current_step(run: Run) -> AnyStep | None:
    return run.definition.step(run.case.current_step) if run.case.current_step else None


def statutory_due(definition: Definition, case: Case) -> datetime:
    """Due date of a task whose step sets no deadline of its own: the processing deadline the
    Eingangsbestätigung announced, or the day the Genehmigungsfiktion would take effect if that is earlier."""
    due = case.opened_at + timedelta(days=definition.statutory.processing_days)
    fiction = case.context.fiction_due
    return min(due, fiction) if fiction else due


def _satisfied(definition: Definition, step: WaitStep, case: Case) -> bool:
    ctx = case.context
    if step.wait_for == "documents":
        return not ctx.missing_documents(definition.required_documents)
    return ctx.paid_cents >= (ctx.fee_cents or 0)


def _ms(run: Run, step_id: str) -> int:
    entered = run.case.step_entered_at
    if entered is None or run.case.current_step != step_id:
        return 0
    return max(0, int((run.now - entered).total_seconds() * 1000))
