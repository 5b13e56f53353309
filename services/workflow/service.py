"""Workflow engine: moves cases through their pinned definition.

Every entry point (application event, timer, task decision, operator action) runs inside the caller's
transaction: the case row is locked, the state change, its outbox rows, timers, tasks and audit rows are
written on the same connection, and the caller commits. External effects (E-Akte) carry an idempotency key,
so a step repeated after a crash before the commit files once.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

from services.workflow import repository
from services.workflow.adapters import Clock, EAkte, FilingRecord
from services.workflow.definitions import (
    AutomaticStep,
    Definition,
    EndStep,
    HumanStep,
    Registry,
    TimerStep,
    WaitStep,
)
from services.workflow.metrics import WorkflowMetrics
from shared.db import Conn
from shared.events import ApplicationEvent, application_event_adapter
from shared.events import workflow as wf
from shared.events.base import Contract

SOURCE = "kp-workflow"
MAX_STEPS_PER_RUN = 100

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


class WorkflowError(Exception):
    """A request that does not fit the case's current state (mapped to 409 by the API)."""


class NotFound(Exception):
    """Case or task not found (or not visible to the caller)."""


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamping the day (31 Jan + 1 month = end of February)."""
    month0 = moment.month - 1 + months
    year, month = moment.year + month0 // 12, month0 % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def event_id(case_id: UUID, seq: int) -> str:
    """`str(uuid.uuid5(case_id, f"event:{seq}"))` (RFC 4122 name-based, SHA-1), without the UUID objects: the
    engine derives one per emitted event, so a repeated step emits the same id."""
    return _event_id(case_id.bytes, seq)


def _event_id(case_bytes: bytes, seq: int) -> str:
    digest = bytearray(hashlib.sha1(case_bytes + b"event:%d" % seq, usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def case_id_for(application_id: str) -> UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"kp:case:{application_id}")


# --- event data on the hot path ------------------------------------------------------------------
# Every case emits these; they are built as plain dicts, field for field what their contract model dumps
# (tests/unit/test_workflow_emit.py holds each builder against its model): building and dumping a pydantic
# model per event cost more than the rest of `Run.emit`. Rarer events are still built from the models.

CASE_OPENED: dict[str, Any] = {}


def step_started(step: str, kind: str) -> dict[str, Any]:
    return {"step": step, "kind": kind}


def step_completed(step: str, duration_ms: int) -> dict[str, Any]:
    return {"step": step, "duration_ms": duration_ms}


def case_closed(outcome: str, processing_time_s: int) -> dict[str, Any]:
    return {"outcome": outcome, "processing_time_s": processing_time_s}


def notification(kind: str, deadline: datetime | None = None, consequence: str | None = None,
                 amount_cents: int | None = None, documents: list[str] | None = None) -> dict[str, Any]:
    return {"kind": kind, "deadline": deadline, "consequence": consequence, "amount_cents": amount_cents,
            "documents": documents or []}


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

    async def on_application_event(self, conn: Conn, event: ApplicationEvent, sink: Sink | None = None) -> str:
        """Apply one application event; returns what happened (duplicate, pending, opened, applied, ignored).

        With a sink, outbox and audit rows are collected for one write at the end of the caller's transaction.
        """
        if sink is not None and sink.claimed is not None:  # prepared lane: claims and case rows read up front
            if event.id not in sink.claimed:
                return "duplicate"
            sink.claimed.discard(event.id)
            case = sink.cases.get(event.application_id)
        else:
            if not await repository.claim_inbox(conn, event.id):
                return "duplicate"
            case = await repository.lock_case_by_application(conn, event.application_id)
        if event.type == "application.submitted":
            if case is not None:
                run = self._run(conn, case, sink)
                run.audit(f"event:{event.source}", "duplicate_submission_ignored", {"event_id": str(event.id)})
                await run.flush()
                return "ignored"
            return await self._open(conn, event, sink)
        if case is None:
            await repository.add_pending(conn, event.id, event.application_id, event.model_dump(mode="json"))
            if sink is not None:
                sink.pended.add(event.application_id)
            return "pending"
        run = self._run(conn, case, sink)
        await self._apply(run, event)
        await run.flush()
        return "applied"

    async def on_timer(self, conn: Conn, due: dict[str, Any]) -> bool:
        """Fire one locked timer row; False if its case is busy (the row stays for the next poll)."""
        case = await repository.lock_case(conn, due["case_id"], skip_locked=True)
        if case is None:
            return False
        await repository.delete_due(conn, due["id"])
        case["context"].get("_timers", {}).pop(due["name"], None)
        now = self.clock.now()
        self.metrics.timer_lag.labels(due["name"]).observe(max(0.0, (now - due["due_at"]).total_seconds()))
        self.metrics.timers_fired.labels(due["name"]).inc()
        run = self._run(conn, case)
        if case["state"] == "closed" or (due["step"] is not None and due["step"] != case["current_step"]):
            run.audit("timer", "stale_timer_ignored", {"timer": due["name"], "step": due["step"]})
            await run.flush()
            return True
        await self._fire(run, due["name"], due["due_at"])
        await run.flush()
        return True

    async def complete_task(self, conn: Conn, task_id: UUID, decision: str, actor: str,
                            municipalities: set[str], reason: str | None = None) -> dict[str, Any]:
        task = await repository.get_task(conn, task_id)
        if task is None or task["municipality"] not in municipalities:
            raise NotFound("task")
        case = await repository.lock_case(conn, task["case_id"])
        assert case is not None
        task = await repository.get_task(conn, task_id)
        assert task is not None
        if task["status"] != "claimed" or task["assignee"] != actor:
            raise WorkflowError("the task must be claimed by you before it can be completed")
        run = self._run(conn, case)
        step = run.definition.step(case["current_step"])
        if not isinstance(step, HumanStep) or step.id != task["step"] or case["state"] != "task":
            raise WorkflowError("the case is no longer at this task")
        if decision not in step.decisions:
            raise WorkflowError(f"decision {decision!r} is not offered here; choose one of {sorted(step.decisions)}")
        if decision == "extend":
            await self._extend_fiction(run, actor, reason)
        await self._decide(run, step, task, decision, actor, reason)
        await run.flush()
        return run.case

    async def claim_task(self, conn: Conn, task_id: UUID, actor: str, municipalities: set[str]) -> dict[str, Any]:
        task = await self._visible_task(conn, task_id, municipalities)
        if task["status"] == "claimed" and task["assignee"] != actor:
            raise WorkflowError(f"the task is claimed by {task['assignee']}")
        if task["status"] not in ("open", "claimed"):
            raise WorkflowError(f"the task is {task['status']}")
        await repository.update_task(conn, task_id, status="claimed", assignee=actor)
        run = await self._locked_run(conn, task["case_id"])
        run.audit(actor, "task_claimed", {"task_id": str(task_id), "queue": task["queue"]})
        await run.flush()
        return {**task, "status": "claimed", "assignee": actor}

    async def reassign_task(self, conn: Conn, task_id: UUID, actor: str, municipalities: set[str],
                            queue: str | None, assignee: str | None, reason: str | None) -> dict[str, Any]:
        task = await self._visible_task(conn, task_id, municipalities)
        if task["status"] not in ("open", "claimed"):
            raise WorkflowError(f"the task is {task['status']}")
        new_queue = queue or task["queue"]
        status = "claimed" if assignee else "open"
        await repository.update_task(conn, task_id, queue=new_queue, assignee=assignee, status=status)
        run = await self._locked_run(conn, task["case_id"])
        run.audit(actor, "task_reassigned", {"task_id": str(task_id), "reason": reason},
                  before={"queue": task["queue"], "assignee": task["assignee"]},
                  after={"queue": new_queue, "assignee": assignee})
        if new_queue != task["queue"]:
            run.emit("workflow.task.assigned", wf.TaskAssignedData(step=task["step"], queue=new_queue))
        await run.flush()
        return {**task, "queue": new_queue, "assignee": assignee, "status": status}

    async def operator_retry(self, conn: Conn, case_id: UUID, actor: str, reason: str,
                             municipalities: set[str]) -> dict[str, Any]:
        """Run the parked step again now (attempts start over)."""
        run = await self._locked_run(conn, case_id, municipalities)
        if run.case["state"] not in ("parked", "retrying"):
            raise WorkflowError(f"only parked or retrying cases can be retried; this one is {run.case['state']}")
        before = run.snapshot()
        await run.clear_timers(["retry"])
        run.case.update(state="running", attempts=0)
        run.audit(actor, "operator_retry", {"reason": reason}, before=before)
        await self._drive(run)
        await run.flush()
        return run.case

    async def operator_skip(self, conn: Conn, case_id: UUID, actor: str, reason: str,
                            municipalities: set[str]) -> dict[str, Any]:
        """Leave the parked step as if it succeeded and continue with its default transition."""
        run = await self._locked_run(conn, case_id, municipalities)
        if run.case["state"] not in ("parked", "retrying"):
            raise WorkflowError(f"only parked or retrying cases can be skipped; this one is {run.case['state']}")
        step = run.definition.step(run.case["current_step"])
        assert isinstance(step, AutomaticStep)
        target = step.target(_default_outcome(step))
        assert target is not None
        before = run.snapshot()
        run.case.update(attempts=0, last_error=None)
        run.audit(actor, "operator_skip", {"reason": reason, "step": step.id}, before=before)
        await self._enter(run, target)
        await self._drive(run)
        await run.flush()
        return run.case

    async def prepare_lane(self, conn: Conn, events: list[ApplicationEvent], sink: Sink) -> None:
        """Do the reads and inserts of a lane's events in one statement each, before they are applied in order:
        inbox claims, row locks on the existing cases, the rows of the cases the lane opens (locked by the
        insert) and their pending events. `on_application_event` then uses these through the sink, and the case
        rows are written back together by `Sink.write`."""
        claimed = await repository.claim_inbox_many(conn, [e.id for e in events])
        fresh = [e for e in events if e.id in claimed]
        rows = await repository.lock_cases_by_application(conn, sorted({e.application_id for e in fresh}))
        cases = {c["application_id"]: c for c in rows}
        opening: dict[str, dict[str, Any]] = {}
        for e in fresh:
            if e.type == "application.submitted" and e.application_id not in cases and e.application_id not in opening:
                definition = self.registry.for_service(e.service)
                if definition is not None:
                    opening[e.application_id] = self._new_case(e, definition)
        inserted = await repository.insert_cases(conn, list(opening.values()))
        sink.claimed, sink.cases = claimed, cases
        sink.opening = {a: c for a, c in opening.items() if a in inserted}
        sink.pending = await repository.take_pending_many(conn, sorted(sink.opening))

    # --- opening and events -------------------------------------------------------------------------

    def _new_case(self, event: ApplicationEvent, definition: Definition) -> dict[str, Any]:
        assert event.type == "application.submitted"
        now = self.clock.now()
        return {
            "case_id": case_id_for(event.application_id), "application_id": event.application_id,
            "municipality": event.municipality, "service": event.service, "definition": definition.name,
            "definition_version": definition.version, "state": "running", "current_step": definition.start,
            "step_entered_at": now, "attempts": 0, "last_error": None, "event_seq": 0, "outcome": None,
            "opened_at": now, "closed_at": None,
            "context": {"documents": sorted(set(event.data.documents)), "paid_cents": 0,
                        "submitted_at": event.time.isoformat(), "channel": event.data.channel,
                        "_timers": {}, "_task": False},
        }

    async def _open(self, conn: Conn, event: ApplicationEvent, sink: Sink | None = None) -> str:
        assert event.type == "application.submitted"
        definition = self.registry.for_service(event.service)
        if definition is None:
            # Kept (not lost, not redelivered forever): it opens its case once a definition is deployed and the
            # event is replayed from wf_pending by an operator.
            await repository.add_pending(conn, event.id, event.application_id, event.model_dump(mode="json"))
            return "no_definition"
        if sink is not None and event.application_id in sink.opening:  # inserted by prepare_lane
            case = sink.opening.pop(event.application_id)
            sink.cases[event.application_id] = case
            pending = sink.pending.pop(event.application_id, [])
            if event.application_id in sink.pended:  # events of this lane that came before the submission
                pending += await repository.take_pending(conn, event.application_id)
            return await self._opened(conn, event, sink, case, definition, pending)
        case = self._new_case(event, definition)
        if not await repository.insert_case(conn, case):
            return "ignored"
        if sink is not None and sink.claimed is not None:
            sink.cases[event.application_id] = case
        return await self._opened(conn, event, sink, case, definition,
                                  await repository.take_pending(conn, event.application_id))

    async def _opened(self, conn: Conn, event: ApplicationEvent, sink: Sink | None, case: dict[str, Any],
                      definition: Definition, pending: list[dict[str, Any]]) -> str:
        run = Run(self, conn, case, definition, sink)
        run.emit("workflow.case.opened", CASE_OPENED)
        run.audit(f"event:{event.source}", "case_opened", {"event_id": str(event.id)}, after=run.snapshot())
        for body in pending:
            await self._apply(run, application_event_adapter.validate_python(body), drive=False)
        if case["state"] != "closed":
            await self._enter(run, definition.start)
            await self._drive(run)
        await run.flush()
        return "opened"

    async def _apply(self, run: Run, event: ApplicationEvent, drive: bool = True) -> None:
        case, ctx = run.case, run.case["context"]
        actor = f"event:{event.source}"
        if case["state"] == "closed":
            run.audit(actor, "event_after_close_ignored", {"type": event.type, "event_id": str(event.id)})
            return
        if event.type == "application.documents.added":
            ctx["documents"] = sorted(set(ctx["documents"]) | set(event.data.documents))
            run.audit(actor, "documents_added", {"documents": event.data.documents})
        elif event.type == "application.payment.received":
            ctx["paid_cents"] = int(ctx.get("paid_cents", 0)) + event.data.amount_cents
            run.audit(actor, "payment_received", {"amount_cents": event.data.amount_cents,
                                                  "method": event.data.method})
        elif event.type == "application.withdrawn":
            run.audit(actor, "withdrawn", {"event_id": str(event.id)})
            await self._close(run, "withdrawn")
            return
        elif event.type == "application.decided":
            ctx["decision"] = event.data.outcome
            run.audit(actor, "decided_externally", {"outcome": event.data.outcome})
            if case["state"] == "task" and drive:
                step = run.definition.step(case["current_step"])
                task = await repository.active_task(run.conn, case["case_id"])
                if isinstance(step, HumanStep) and task is not None and event.data.outcome in step.decisions:
                    await self._decide(run, step, task, event.data.outcome, actor, None)
                    return
        if drive and case["state"] == "waiting":
            await self._drive(run)

    # --- timers -------------------------------------------------------------------------------------

    async def _fire(self, run: Run, name: str, due_at: datetime) -> None:
        case = run.case
        step = run.definition.step(case["current_step"]) if case["current_step"] else None
        if name == "retry" and case["state"] == "retrying":
            case["state"] = "running"
            run.audit("timer", "retry_due", {"attempt": case["attempts"] + 1})
            await self._drive(run)
        elif name == "timer" and isinstance(step, TimerStep):
            run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
            await self._enter(run, step.next)
            await self._drive(run)
        elif name == "reminder" and isinstance(step, (WaitStep, HumanStep)) and step.deadline:
            deadline = case["step_entered_at"] + step.deadline.after
            run.audit("timer", "reminder", {"step": step.id, "deadline": deadline.isoformat()})
            if isinstance(step, WaitStep):
                missing = _missing(run.definition, case["context"]) if step.wait_for == "documents" else []
                run.emit("workflow.notification.requested", wf.NotificationRequestedData(
                    kind="erinnerung", deadline=deadline, documents=missing))
            else:
                run.emit("workflow.deadline.approaching",
                         wf.DeadlineApproachingData(deadline=step.id, due_at=deadline))
        elif name == "deadline" and isinstance(step, (WaitStep, HumanStep)) and step.deadline:
            run.emit("workflow.deadline.breached", wf.DeadlineBreachedData(deadline=step.id))
            run.audit("timer", "deadline_breached", {"step": step.id})
            if step.deadline.on_breach:
                await run.cancel_tasks()
                await self._enter(run, step.deadline.on_breach)
                await self._drive(run)
            elif isinstance(step, HumanStep) and step.deadline.escalate_to_queue:
                task = await repository.active_task(run.conn, case["case_id"])
                if task is not None:
                    queue = step.deadline.escalate_to_queue
                    await repository.update_task(run.conn, task["task_id"], queue=queue, status="open",
                                                 assignee=None)
                    run.emit("workflow.task.assigned", wf.TaskAssignedData(step=step.id, queue=queue))
                    run.audit("timer", "task_escalated", {"task_id": str(task["task_id"])},
                              before={"queue": task["queue"]}, after={"queue": queue})
        elif name == "fiction_alert":
            due = datetime.fromisoformat(case["context"]["fiction_due"])
            run.emit("workflow.deadline.approaching",
                     wf.DeadlineApproachingData(deadline="genehmigungsfiktion", due_at=due))
            run.audit("timer", "fiction_alert", {"fiction_due": due.isoformat()})
        elif name == "fiction" and run.definition.fiction is not None:
            run.emit("workflow.deadline.breached", wf.DeadlineBreachedData(deadline="genehmigungsfiktion"))
            case["context"]["fiction_occurred"] = True
            case["context"]["decision"] = "approved"
            run.audit("timer", "genehmigungsfiktion_eingetreten", {"fiction_due": case["context"]["fiction_due"]})
            await run.cancel_tasks()
            if case["state"] in ("running", "retrying", "parked"):
                case["attempts"], case["last_error"] = 0, None
            await self._enter(run, run.definition.fiction.on_fiction)
            await self._drive(run)
        else:
            run.audit("timer", "timer_ignored", {"timer": name, "state": case["state"]})

    # --- the state machine --------------------------------------------------------------------------

    async def _enter(self, run: Run, step_id: str) -> None:
        case = run.case
        step = run.definition.step(step_id)
        await run.clear_step_timers()
        before = run.snapshot()
        case["current_step"], case["step_entered_at"] = step_id, run.now
        case["attempts"], case["last_error"] = 0, None
        case["state"] = {"automatic": "running", "end": "running", "human": "task"}.get(step.kind, "waiting")
        run.emit("workflow.step.started", step_started(step_id, step.kind))
        run.audit("system", "step_entered", {"step": step_id, "kind": step.kind}, before=before,
                  after=run.snapshot())
        if isinstance(step, (WaitStep, HumanStep)) and step.deadline:
            d = step.deadline
            await run.set_timer("deadline", step_id, run.now + d.after)
            if d.reminder_before:
                await run.set_timer("reminder", step_id, run.now + d.after - d.reminder_before)
        if isinstance(step, TimerStep):
            await run.set_timer("timer", step_id, run.now + step.after)
        if isinstance(step, HumanStep):
            await self._assign(run, step)

    async def _assign(self, run: Run, step: HumanStep) -> None:
        if run.sink is None:
            await self._assign_locked(run, step)
            return
        async with run.sink.assign_lock:  # cases of one lane see each other's new tasks when balancing load
            await self._assign_locked(run, step)

    async def _assign_locked(self, run: Run, step: HumanStep) -> None:
        case = run.case
        candidates = step.assignment.by_municipality.get(case["municipality"], step.assignment.queues)
        loads = await repository.queue_loads(run.conn, case["municipality"], candidates)
        queue = min(candidates, key=lambda q: (loads.get(q, 0), candidates.index(q)))
        due = run.now + step.deadline.after if step.deadline else _statutory_due(run.definition, case)
        task_id = uuid.uuid4()
        await repository.create_task(run.conn, {
            "task_id": task_id, "case_id": case["case_id"], "step": step.id, "queue": queue,
            "municipality": case["municipality"], "service": case["service"], "due_at": due, "created_at": run.now,
        })
        case["context"]["_task"] = True
        run.emit("workflow.task.assigned", wf.TaskAssignedData(step=step.id, queue=queue))
        run.audit("system", "task_assigned", {"task_id": str(task_id), "queue": queue, "loads": loads})

    async def _drive(self, run: Run) -> None:
        """Run automatic steps and satisfied waits until the case needs a person, an event or time."""
        case = run.case
        for _ in range(MAX_STEPS_PER_RUN):
            if case["state"] not in ("running", "waiting"):
                return
            step = run.definition.step(case["current_step"])
            if isinstance(step, EndStep):
                outcome = step.outcome if step.outcome != "decision" else case["context"].get("decision", "filed")
                await self._close(run, outcome)
                return
            if isinstance(step, WaitStep):
                if not _satisfied(run.definition, step, case):
                    return
                run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
                await self._enter(run, step.next)
                continue
            if not isinstance(step, AutomaticStep) or case["state"] != "running":
                return
            started = time.perf_counter()
            try:
                outcome = await self._act(run, step)
            except Exception as exc:  # any failing step is retried, then parked; never lost
                self.metrics.step(step.action, "error").observe(time.perf_counter() - started)
                await self._failed(run, step, exc)
                return
            self.metrics.step(step.action, "ok").observe(time.perf_counter() - started)
            run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
            target = step.target(outcome)
            assert target is not None
            await self._enter(run, target)
        await self._failed(run, run.definition.step(case["current_step"]),
                           RuntimeError(f"more than {MAX_STEPS_PER_RUN} steps without waiting"), park=True)

    async def _failed(self, run: Run, step: Any, exc: Exception, park: bool = False) -> None:
        case = run.case
        case["attempts"] += 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        case["last_error"] = error
        run.emit("workflow.step.failed", wf.StepFailedData(step=step.id, attempt=case["attempts"], error=error))
        retry = step.retry if isinstance(step, AutomaticStep) else None
        if park or retry is None or case["attempts"] >= retry.max_attempts:
            before = run.snapshot()
            case["state"] = "parked"
            run.emit("workflow.case.parked", wf.CaseParkedData(step=step.id, error=error))
            run.audit("system", "case_parked", {"error": error, "attempts": case["attempts"]}, before=before,
                      after=run.snapshot())
            self.metrics.cases_parked.inc()
            return
        delay = min(retry.max_s, retry.base_s * 2 ** (case["attempts"] - 1))
        delay *= 1 + self.rng.uniform(0, self.retry_jitter)
        case["state"] = "retrying"
        await run.set_timer("retry", step.id, run.now + timedelta(seconds=delay))
        run.audit("system", "step_failed", {"error": error, "attempt": case["attempts"], "retry_in_s": delay})
        self.metrics.step_retries.labels(step.action).inc()

    async def _decide(self, run: Run, step: HumanStep, task: dict[str, Any], decision: str, actor: str,
                      reason: str | None) -> None:
        await repository.update_task(run.conn, task["task_id"], status="done", decision=decision,
                                     completed_at=run.now)
        run.case["context"]["_task"] = False
        if decision != "extend":
            run.case["context"]["decision"] = decision
        run.audit(actor, "task_completed", {"task_id": str(task["task_id"]), "decision": decision,
                                            "reason": reason})
        run.emit("workflow.step.completed", step_completed(step.id, _ms(run, step.id)))
        await self._enter(run, step.decisions[decision])  # type: ignore[index]
        await self._drive(run)

    async def _extend_fiction(self, run: Run, actor: str, reason: str | None) -> None:
        fiction, ctx = run.definition.fiction, run.case["context"]
        if fiction is None or "fiction_due" not in ctx:
            raise WorkflowError("no Genehmigungsfiktion is being watched for this case")
        if ctx.get("fiction_extended"):
            raise WorkflowError("the Genehmigungsfiktion deadline may be extended only once")
        old = datetime.fromisoformat(ctx["fiction_due"])
        new = add_months(old, fiction.extension_months)
        ctx["fiction_due"], ctx["fiction_extended"] = new.isoformat(), True
        await run.set_timer("fiction", None, new)
        await run.set_timer("fiction_alert", None, new - fiction.alert_before)
        run.audit(actor, "fiction_extended", {"reason": reason}, before={"fiction_due": old.isoformat()},
                  after={"fiction_due": new.isoformat()})
        run.emit("workflow.notification.requested", wf.NotificationRequestedData(
            kind="information", deadline=new, consequence="genehmigungsfiktion"))

    async def _close(self, run: Run, outcome: str) -> None:
        case = run.case
        before = run.snapshot()
        await run.clear_timers()
        await run.cancel_tasks()
        case.update(state="closed", outcome=outcome, closed_at=run.now, attempts=0, last_error=None)
        seconds = max(0, int((run.now - case["opened_at"]).total_seconds()))
        run.emit("workflow.case.closed", case_closed(outcome, seconds))
        run.audit("system", "case_closed", {"outcome": outcome, "processing_time_s": seconds}, before=before,
                  after=run.snapshot())

    # --- built-in automatic actions -----------------------------------------------------------------

    async def _act(self, run: Run, step: AutomaticStep) -> str:
        case, ctx, d = run.case, run.case["context"], run.definition
        if step.action == "acknowledge":
            deadline = run.now + timedelta(days=d.statutory.processing_days)
            text = ACK_TEXT.format(
                received=run.now.date().isoformat(), days=d.statutory.processing_days,
                deadline=deadline.date().isoformat(), consequence=CONSEQUENCE_TEXT[d.statutory.consequence],
                basis=d.statutory.legal_basis)
            run.emit("workflow.notification.requested",
                     notification("eingangsbestaetigung", deadline=deadline, consequence=d.statutory.consequence))
            run.audit("system", "eingangsbestaetigung", {"text": text, "deadline": deadline.isoformat()})
            return "done"
        if step.action == "check_completeness":
            missing = _missing(d, ctx)
            ctx["missing"] = missing
            return "incomplete" if missing else "complete"
        if step.action == "request_documents":
            nxt = d.step(step.target("done") or "")
            within = nxt.deadline.after if isinstance(nxt, WaitStep) and nxt.deadline else timedelta(days=14)
            run.emit("workflow.notification.requested", wf.NotificationRequestedData(
                kind="nachforderung", deadline=run.now + within, documents=_missing(d, ctx)))
            return "done"
        if step.action == "calculate_fee":
            assert d.fees is not None
            fee = d.fees.fee_for(case["municipality"])
            ctx["fee_cents"] = fee
            if fee == 0:
                return "free"
            run.emit("workflow.notification.requested", wf.NotificationRequestedData(
                kind="zahlungsaufforderung", amount_cents=fee, deadline=run.now + timedelta(days=14)))
            run.audit("system", "fee_calculated", {"fee_cents": fee})
            return "due"
        if step.action == "file":
            key = f"{case['case_id']}:{step.id}"
            record = FilingRecord(
                case_id=str(case["case_id"]), application_id=case["application_id"],
                municipality=case["municipality"], service=case["service"], definition=d.name,
                definition_version=d.version, step=step.id, decision=ctx.get("decision"),
                documents=list(ctx.get("documents", [])), filed_at=run.now)
            reference = await self.eakte.file(key, record)
            ctx.setdefault("filed", {})[step.id] = reference
            run.audit("system", "filed", {"idempotency_key": key, "reference": reference})
            return "done"
        if step.action == "notify":
            assert step.notification is not None
            run.emit("workflow.notification.requested", notification(step.notification))
            return "done"
        if step.action == "start_fiction_watch":
            assert d.fiction is not None
            due = add_months(run.now, d.fiction.months)
            ctx["fiction_due"] = due.isoformat()
            await run.set_timer("fiction", None, due)
            await run.set_timer("fiction_alert", None, due - d.fiction.alert_before)
            run.audit("system", "fiction_watch_started", {"fiction_due": due.isoformat()})
            return "done"
        if step.action == "stop_fiction_watch":
            await run.clear_timers(["fiction", "fiction_alert"])
            run.audit("system", "fiction_watch_stopped", {})
            return "done"
        raise AssertionError(step.action)

    # --- helpers ------------------------------------------------------------------------------------

    def _run(self, conn: Conn, case: dict[str, Any], sink: Sink | None = None) -> Run:
        return Run(self, conn, case, self.registry.get(case["definition"], case["definition_version"]), sink)

    async def _locked_run(self, conn: Conn, case_id: UUID, municipalities: set[str] | None = None) -> Run:
        case = await repository.lock_case(conn, case_id)
        if case is None or (municipalities is not None and case["municipality"] not in municipalities):
            raise NotFound("case")
        return self._run(conn, case)

    async def _visible_task(self, conn: Conn, task_id: UUID, municipalities: set[str]) -> dict[str, Any]:
        task = await repository.get_task(conn, task_id)
        if task is None or task["municipality"] not in municipalities:
            raise NotFound("task")
        await repository.lock_case(conn, task["case_id"])
        fresh = await repository.get_task(conn, task_id)
        assert fresh is not None
        return fresh


@dataclass
class Sink:
    """Outbox and audit rows of several cases, written together before the transaction commits."""

    outbox: list[tuple[str, bytes, list[bytes]]] = field(default_factory=list)
    audit: list[tuple[UUID | str, datetime, str, str, Any, Any, Any]] = field(default_factory=list)
    # Filled by Engine.prepare_lane: claimed event ids, locked cases by application id, cases inserted for the
    # lane's submissions and their pending events, applications with events pended in this lane.
    claimed: set[UUID] | None = None
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    opening: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pended: set[str] = field(default_factory=set)
    dirty: dict[UUID, dict[str, Any]] = field(default_factory=dict)
    assign_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def write(self, conn: Conn) -> None:
        await repository.save_cases(conn, list(self.dirty.values()))
        await repository.add_outbox(conn, self.outbox)
        await repository.add_audit(conn, self.audit)
        self.outbox, self.audit, self.dirty = [], [], {}


@dataclass
class Run:
    """One case inside one transaction: collects outbox and audit rows, written by `flush`."""

    engine: Engine
    conn: Conn
    case: dict[str, Any]
    definition: Definition
    sink: Sink | None = None
    outbox: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    audit_rows: list[tuple[UUID | str, datetime, str, str, Any, Any, Any]] = field(default_factory=list)
    now: datetime = field(init=False)
    case_key: str = field(init=False)
    """The case id as text (formatted once; events and audit rows carry it)."""
    case_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.now = self.engine.clock.now()
        self.case_key = str(self.case["case_id"])
        self.case_bytes = self.case["case_id"].bytes

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.case["state"], "step": self.case["current_step"]}

    def emit(self, type_: str, data: Contract | dict[str, Any]) -> None:
        """Queue a workflow event for the outbox. The envelope comes from the case row (validated when the case
        opened) and `data` is an already validated contract model, so the event is serialised directly; tests
        validate every emitted type against the contract (`workflow_event_adapter`)."""
        c = self.case
        c["event_seq"] += 1
        event = {
            "id": _event_id(self.case_bytes, c["event_seq"]), "schema_version": 1, "source": SOURCE,
            "time": self.now, "municipality": c["municipality"], "service": c["service"], "case_id": self.case_key,
            "application_id": c["application_id"], "definition": c["definition"],
            "definition_version": c["definition_version"], "type": type_,
            "data": data if isinstance(data, dict) else data.model_dump(),
        }
        key = f"{c['municipality']}:{c['service']}".encode()  # the contract's partition key (Envelope.kafka_key)
        self.outbox.append((self.engine.topic, key, orjson.dumps(event, option=orjson.OPT_UTC_Z)))

    def audit(self, actor: str, action: str, detail: dict[str, Any], before: Any = None, after: Any = None) -> None:
        self.audit_rows.append((self.case_key, self.now, actor, action, before, after, detail))

    # Timers and the active task are tracked in the case context, so steps without them cost no query.

    async def set_timer(self, name: str, step: str | None, due_at: datetime) -> None:
        await repository.set_timer(self.conn, self.case["case_id"], name, step, due_at)
        self.case["context"].setdefault("_timers", {})[name] = step

    async def clear_step_timers(self) -> None:
        tracked = self.case["context"].get("_timers")
        if tracked is not None and all(step is None for step in tracked.values()):
            return
        await repository.clear_step_timers(self.conn, self.case["case_id"])
        self.case["context"]["_timers"] = {n: s for n, s in (tracked or {}).items() if s is None}

    async def clear_timers(self, names: list[str] | None = None) -> None:
        tracked = self.case["context"].get("_timers")
        if tracked is not None and not (set(tracked) if names is None else set(tracked) & set(names)):
            return
        await repository.clear_timers(self.conn, self.case["case_id"], names)
        self.case["context"]["_timers"] = {} if names is None else {
            n: s for n, s in (tracked or {}).items() if n not in names}

    async def cancel_tasks(self) -> None:
        if self.case["context"].get("_task") is False:
            return
        await repository.cancel_tasks(self.conn, self.case["case_id"], self.now)
        self.case["context"]["_task"] = False

    async def flush(self) -> None:
        if self.sink is not None and self.sink.claimed is not None:
            self.sink.dirty[self.case["case_id"]] = self.case  # saved with the lane's other cases
        else:
            await repository.save_case(self.conn, self.case)
        rows = outbox_rows(self.outbox)
        if self.sink is not None:
            self.sink.outbox += rows
            self.sink.audit += self.audit_rows
        else:
            await repository.add_outbox(self.conn, rows)
            await repository.add_audit(self.conn, self.audit_rows)
        self.outbox, self.audit_rows = [], []


def outbox_rows(events: list[tuple[str, bytes, bytes]]) -> list[tuple[str, bytes, list[bytes]]]:
    """Outbox rows for a case's events: consecutive events with the same topic and key share a row."""
    rows: list[tuple[str, bytes, list[bytes]]] = []
    for topic, key, payload in events:
        if rows and rows[-1][0] == topic and rows[-1][1] == key:
            rows[-1][2].append(payload)
        else:
            rows.append((topic, key, [payload]))
    return rows


def _statutory_due(definition: Definition, case: dict[str, Any]) -> datetime:
    """Due date of a task whose step sets no deadline of its own: the processing deadline the
    Eingangsbestätigung announced, or the day the Genehmigungsfiktion would take effect if that is earlier."""
    due: datetime = case["opened_at"] + timedelta(days=definition.statutory.processing_days)
    fiction = case["context"].get("fiction_due")
    return min(due, datetime.fromisoformat(fiction)) if fiction else due


def _missing(definition: Definition, ctx: dict[str, Any]) -> list[str]:
    have = set(ctx.get("documents", []))
    return [d for d in definition.required_documents if d not in have]


def _satisfied(definition: Definition, step: WaitStep, case: dict[str, Any]) -> bool:
    ctx = case["context"]
    if step.wait_for == "documents":
        return not _missing(definition, ctx)
    return int(ctx.get("paid_cents", 0)) >= int(ctx.get("fee_cents", 0))


def _default_outcome(step: AutomaticStep) -> str:
    from services.workflow.definitions import ACTION_OUTCOMES

    return ACTION_OUTCOMES[step.action][0]


def _ms(run: Run, step_id: str) -> int:
    entered = run.case.get("step_entered_at")
    if entered is None or run.case.get("current_step") != step_id:
        return 0
    return max(0, int((run.now - entered).total_seconds() * 1000))
