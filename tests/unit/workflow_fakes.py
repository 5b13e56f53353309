"""In-memory stand-ins for the workflow engine's unit of work and E-Akte, and a harness that drives cases."""

from __future__ import annotations

import contextlib
import copy
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from services.workflow.adapters import EAkteError, FilingRecord, ManualClock
from services.workflow.definitions import Registry, load_definitions
from services.workflow.metrics import WorkflowMetrics
from services.workflow.model import ACTIVE_TASK, Case, Task, TaskStatus, Timer, TimerKind
from services.workflow.service import Engine
from services.workflow.unit_of_work import AuditRow, Lanes, LaneWork, NewCase, OutboxRow
from shared.events import ApplicationEvent, application_event_adapter
from shared.events import workflow as wf

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@dataclass
class FakeUnitOfWork:
    """`UnitOfWork` in memory: what a committed database would hold, copied in and out like rows."""

    inbox: set[UUID] = field(default_factory=set)
    cases: dict[UUID, Case] = field(default_factory=dict)
    pending: list[ApplicationEvent] = field(default_factory=list)
    timers: dict[tuple[UUID, TimerKind], Timer] = field(default_factory=dict)
    tasks: dict[UUID, Task] = field(default_factory=dict)
    outbox: list[OutboxRow] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def prefetch(self, events: Sequence[ApplicationEvent], new_case: NewCase) -> None:
        """Nothing to read ahead in memory."""

    async def claim(self, event_id: UUID) -> bool:
        if event_id in self.inbox:
            return False
        self.inbox.add(event_id)
        return True

    async def case_for_application(self, application_id: str) -> Case | None:
        found = next((c for c in self.cases.values() if c.application_id == application_id), None)
        return copy.deepcopy(found)

    async def lock_case(self, case_id: UUID, *, skip_locked: bool = False) -> Case | None:
        return copy.deepcopy(self.cases.get(case_id))

    async def insert_case(self, application_id: str, build: Callable[[], Case]) -> Case | None:
        if any(c.application_id == application_id for c in self.cases.values()):
            return None
        case = build()
        self.cases[case.case_id] = copy.deepcopy(case)
        return case

    async def keep_pending(self, event: ApplicationEvent) -> None:
        self.pending.append(event)

    async def take_pending(self, application_id: str) -> list[ApplicationEvent]:
        taken = [e for e in self.pending if e.application_id == application_id]
        self.pending = [e for e in self.pending if e.application_id != application_id]
        return taken

    async def set_timer(self, case_id: UUID, kind: TimerKind, step: str | None, due_at: datetime) -> None:
        self.timers[(case_id, kind)] = Timer(next(self._ids), case_id, kind, step, due_at)

    async def clear_timers(self, case_id: UUID, kinds: Collection[TimerKind] | None = None) -> None:
        for key in [k for k in self.timers if k[0] == case_id and (kinds is None or k[1] in kinds)]:
            del self.timers[key]

    async def clear_step_timers(self, case_id: UUID) -> None:
        for key in [k for k, t in self.timers.items() if k[0] == case_id and t.step is not None]:
            del self.timers[key]

    async def delete_timer(self, case_id: UUID, timer_id: int, kind: TimerKind) -> None:
        timer = self.timers.get((case_id, kind))
        if timer is not None and timer.id == timer_id:
            del self.timers[(case_id, kind)]

    async def queue_loads(self, municipality: str, queues: list[str]) -> dict[str, int]:
        loads: dict[str, int] = {}
        for t in self.tasks.values():
            if t.municipality == municipality and t.queue in queues and t.active:
                loads[t.queue] = loads.get(t.queue, 0) + 1
        return loads

    @contextlib.asynccontextmanager
    async def _nothing(self) -> AsyncIterator[None]:
        yield

    def assigning(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._nothing()

    async def create_task(self, task: Task) -> None:
        assert self.active_of(task.case_id) is None, "one active task per case (a unique index in PostgreSQL)"
        self.tasks[task.task_id] = replace(task)

    async def active_task(self, case_id: UUID) -> Task | None:
        return self.active_of(case_id)

    async def get_task(self, task_id: UUID) -> Task | None:
        task = self.tasks.get(task_id)
        return replace(task) if task else None

    async def update_task(self, task: Task) -> None:
        self.tasks[task.task_id] = replace(task)

    async def cancel_tasks(self, case_id: UUID, now: datetime) -> None:
        for t in list(self.tasks.values()):
            if t.case_id == case_id and t.status in ACTIVE_TASK:
                self.tasks[t.task_id] = replace(t, status=TaskStatus.CANCELLED, completed_at=now)

    async def save(self, case: Case, outbox: list[OutboxRow], audit: list[AuditRow]) -> None:
        assert case.case_id in self.cases
        self.cases[case.case_id] = copy.deepcopy(case)
        self.outbox += outbox
        self.audit += audit

    # --- for the tests ---

    def active_of(self, case_id: UUID) -> Task | None:
        return next((replace(t) for t in self.tasks.values() if t.case_id == case_id and t.active), None)

    def due(self, now: datetime) -> list[Timer]:
        return sorted((t for t in self.timers.values() if t.due_at <= now), key=lambda t: (t.due_at, t.id))


@dataclass
class FakeEAkte:
    """Files in memory by idempotency key; fails the next `failures` calls."""

    filed: dict[str, FilingRecord] = field(default_factory=dict)
    calls: int = 0
    failures: int = 0

    async def file(self, key: str, record: FilingRecord) -> str:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise EAkteError("E-Akte nicht erreichbar")
        self.filed.setdefault(key, record)
        return f"akte:{key}"


def fake_lanes(uow: FakeUnitOfWork) -> Lanes:
    """Every lane in the one fake unit of work."""

    @contextlib.asynccontextmanager
    async def lane() -> AsyncIterator[LaneWork]:
        yield uow

    return lane


_REGISTRY: Registry | None = None


def registry() -> Registry:
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = load_definitions()
    return _REGISTRY


class Harness:
    """One engine with the fakes and a manual clock; each call is one committed transaction."""

    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.uow = FakeUnitOfWork()
        self.eakte = FakeEAkte()
        self.engine = Engine(registry=registry(), eakte=self.eakte, clock=self.clock, metrics=WorkflowMetrics(),
                             retry_jitter=0.0)

    # --- input ---

    def event(self, type_: str, application_id: str, data: dict[str, Any], municipality: str = "06531005",
              service: str = "99115005104000") -> ApplicationEvent:
        return application_event_adapter.validate_python({
            "id": str(uuid.uuid4()), "type": type_, "source": "test-portal", "time": self.clock.now().isoformat(),
            "municipality": municipality, "service": service, "application_id": application_id, "data": data})

    async def send(self, event: ApplicationEvent) -> str:
        return await self.engine.on_application_event(self.uow, event)

    async def submit(self, service: str, documents: list[str], municipality: str = "06531005",
                     application_id: str | None = None) -> Case:
        application_id = application_id or f"APP-{uuid.uuid4().hex[:12]}"
        result = await self.send(self.event("application.submitted", application_id,
                                            {"channel": "online", "documents": documents}, municipality, service))
        assert result == "opened", result
        return self.case_of(application_id)

    async def follow_up(self, case: Case, type_: str, data: dict[str, Any]) -> str:
        return await self.send(self.event(type_, case.application_id, data, case.municipality, case.service))

    async def advance(self, delta: timedelta) -> list[TimerKind]:
        """Move the clock and fire what is due, in due order; the kinds fired."""
        self.clock.advance(delta)
        fired: list[TimerKind] = []
        while due := self.uow.due(self.clock.now()):
            timer = due[0]
            assert await self.engine.on_timer(self.uow, timer)
            fired.append(timer.kind)
        return fired

    async def decide(self, case: Case, decision: str, clerk: str = "sb-1", reason: str | None = None) -> Case:
        task = self.task(case)
        await self.engine.claim_task(self.uow, task.task_id, clerk, {case.municipality})
        return await self.engine.complete_task(self.uow, task.task_id, decision, clerk, {case.municipality}, reason)

    # --- what happened ---

    def case_of(self, application_id: str) -> Case:
        return next(c for c in self.uow.cases.values() if c.application_id == application_id)

    def reload(self, case: Case) -> Case:
        return self.uow.cases[case.case_id]

    def task(self, case: Case) -> Task:
        task = self.uow.active_of(case.case_id)
        assert task is not None, "no open task"
        return task

    def events(self, case: Case) -> list[wf.WorkflowEvent]:
        """The case's workflow events, validated against the contract, in order."""
        out = [wf.workflow_event_adapter.validate_json(p) for _, _, ps in self.uow.outbox for p in ps]
        return [e for e in out if e.case_id == case.case_id]

    def types(self, case: Case) -> list[str]:
        return [e.type for e in self.events(case)]

    def steps(self, case: Case) -> list[str]:
        """The steps the case entered, in order."""
        return [e.data.step for e in self.events(case) if isinstance(e.data, wf.StepStartedData)]

    def notifications(self, case: Case) -> list[str]:
        return [e.data.kind for e in self.events(case) if isinstance(e.data, wf.NotificationRequestedData)]

    def actions(self, case: Case) -> list[str]:
        return [row[3] for row in self.uow.audit if row[0] == str(case.case_id)]

    def timers(self, case: Case) -> dict[TimerKind, str | None]:
        return {k: t.step for (c, k), t in self.uow.timers.items() if c == case.case_id}
