"""The unit of work the engine changes cases through, and its PostgreSQL implementations.

The engine sees only `UnitOfWork`: locked cases, the inbox, pending events, timers, tasks, and `save` for a
case with its outbox and audit rows. The caller owns the transaction: `PostgresUnitOfWork` runs on a
connection inside one and writes each `save` at once; `LaneUnitOfWork` serves a lane of events (ADR 0002): it
claims the inbox ids, locks the existing cases, inserts the cases the lane opens and takes their pending
events in one statement each up front, and writes the saved cases, outbox and audit rows of the whole lane
with one statement each in `write`, before the caller commits. Unit tests use the in-memory fake in
`tests/unit/workflow_fakes.py`.

What `wf_due` and `wf_tasks` hold for a case is read with its locked row (`repository.Locked`) and kept up to
date by the writes of this unit of work, so clearing timers or cancelling tasks of a case that has none costs
no statement; the tables stay the only record of timers and tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from datetime import datetime
from typing import Any, Protocol, cast
from uuid import UUID

import asyncpg

from services.workflow import repository
from services.workflow.model import Case, Task, TimerKind
from shared.db import Conn
from shared.events import ApplicationEvent, application_event_adapter

OutboxRow = tuple[str, bytes, list[bytes]]
"""Topic, key and the events (serialised) one case emitted in one transaction."""
AuditRow = tuple[str, datetime, str, str, Any, Any, Any]
"""Case id, time, actor, action, before, after, detail."""


class UnitOfWork(Protocol):
    """What the engine reads and writes while it changes cases, inside the caller's transaction."""

    async def claim(self, event_id: UUID) -> bool:
        """Record an incoming event id in the inbox; False if it was processed before."""

    async def case_for_application(self, application_id: str) -> Case | None:
        """The application's case, locked for this unit of work."""

    async def lock_case(self, case_id: UUID, *, skip_locked: bool = False) -> Case | None:
        """The case, locked; with skip_locked None when another transaction holds it."""

    async def insert_case(self, application_id: str, build: Callable[[], Case]) -> Case | None:
        """Store the new case `build` makes for the application (locked from now on); the case as stored, None if
        the application has one."""

    async def keep_pending(self, event: ApplicationEvent) -> None:
        """Keep an event that has no case (yet) until its case opens."""

    async def take_pending(self, application_id: str) -> list[ApplicationEvent]:
        """The kept events of an application, in the order they arrived, removed."""

    async def set_timer(self, case_id: UUID, kind: TimerKind, step: str | None, due_at: datetime) -> None:
        """Set (or move) the case's timer of this kind; `step` ties it to a step (cleared when the case leaves)."""

    async def clear_timers(self, case_id: UUID, kinds: Collection[TimerKind] | None = None) -> None:
        """Remove the case's timers of these kinds (all without kinds)."""

    async def clear_step_timers(self, case_id: UUID) -> None:
        """Remove the case's timers tied to a step."""

    async def delete_timer(self, case_id: UUID, timer_id: int, kind: TimerKind) -> None:
        """Remove a timer that fires."""

    async def queue_loads(self, municipality: str, queues: list[str]) -> dict[str, int]:
        """Open and claimed tasks per queue."""

    def assigning(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Held while a task's queue is chosen and the task created, so concurrent cases see each other's."""

    async def create_task(self, task: Task) -> None: ...

    async def active_task(self, case_id: UUID) -> Task | None:
        """The case's open or claimed task."""

    async def get_task(self, task_id: UUID) -> Task | None: ...

    async def update_task(self, task: Task) -> None:
        """Store a task's new status, assignee, queue, due time, decision and completion time."""

    async def cancel_tasks(self, case_id: UUID, now: datetime) -> None:
        """Cancel the case's open or claimed task."""

    async def save(self, case: Case, outbox: list[OutboxRow], audit: list[AuditRow]) -> None:
        """Store the case's new state with the events it emitted and its audit rows."""


class SerialConnection:
    """One connection shared by the concurrent applications of a lane: statements run one at a time."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._lock = asyncio.Lock()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.execute(*args, **kwargs)

    async def executemany(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.executemany(*args, **kwargs)

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.fetch(*args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.fetchrow(*args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            return await self._conn.fetchval(*args, **kwargs)


class PostgresUnitOfWork:
    """`UnitOfWork` on one connection inside the caller's transaction; every `save` is written at once."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self._timers: dict[UUID, dict[str, str | None]] = {}
        """Per locked case, its `wf_due` rows (name -> step) as this transaction has them."""
        self._tasks: dict[UUID, bool] = {}
        """Per locked case, whether it has an open or claimed task."""
        self._assigning = asyncio.Lock()

    def _known(self, locked: repository.Locked | None) -> Case | None:
        if locked is None:
            return None
        self._timers[locked.case.case_id] = dict(locked.timers)
        self._tasks[locked.case.case_id] = locked.has_task
        return locked.case

    def _inserted(self, case: Case) -> Case:
        self._timers[case.case_id], self._tasks[case.case_id] = {}, False
        return case

    async def claim(self, event_id: UUID) -> bool:
        return await repository.claim_inbox(self.conn, event_id)

    async def case_for_application(self, application_id: str) -> Case | None:
        return self._known(await repository.lock_case_by_application(self.conn, application_id))

    async def lock_case(self, case_id: UUID, *, skip_locked: bool = False) -> Case | None:
        return self._known(await repository.lock_case(self.conn, case_id, skip_locked))

    async def insert_case(self, application_id: str, build: Callable[[], Case]) -> Case | None:
        case = build()
        return self._inserted(case) if await repository.insert_case(self.conn, case) else None

    async def keep_pending(self, event: ApplicationEvent) -> None:
        await repository.add_pending(self.conn, event.id, event.application_id, event.model_dump(mode="json"))

    async def take_pending(self, application_id: str) -> list[ApplicationEvent]:
        return _events(await repository.take_pending(self.conn, application_id))

    async def set_timer(self, case_id: UUID, kind: TimerKind, step: str | None, due_at: datetime) -> None:
        await repository.set_timer(self.conn, case_id, kind, step, due_at)
        self._timers.setdefault(case_id, {})[kind.value] = step

    async def clear_timers(self, case_id: UUID, kinds: Collection[TimerKind] | None = None) -> None:
        known = self._timers.get(case_id)
        names = None if kinds is None else {k.value for k in kinds}
        if known is not None and not (set(known) if names is None else set(known) & names):
            return
        await repository.clear_timers(self.conn, case_id, kinds)
        self._timers[case_id] = {} if names is None else {n: s for n, s in (known or {}).items() if n not in names}

    async def clear_step_timers(self, case_id: UUID) -> None:
        known = self._timers.get(case_id)
        if known is not None and all(step is None for step in known.values()):
            return
        await repository.clear_step_timers(self.conn, case_id)
        self._timers[case_id] = {n: s for n, s in (known or {}).items() if s is None}

    async def delete_timer(self, case_id: UUID, timer_id: int, kind: TimerKind) -> None:
        await repository.delete_due(self.conn, timer_id)
        self._timers.get(case_id, {}).pop(kind.value, None)

    async def queue_loads(self, municipality: str, queues: list[str]) -> dict[str, int]:
        return await repository.queue_loads(self.conn, municipality, queues)

    @contextlib.asynccontextmanager
    async def _assignment(self) -> AsyncIterator[None]:
        async with self._assigning:
            yield

    def assigning(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._assignment()

    async def create_task(self, task: Task) -> None:
        await repository.create_task(self.conn, task)
        self._tasks[task.case_id] = True

    async def active_task(self, case_id: UUID) -> Task | None:
        if self._tasks.get(case_id) is False:
            return None
        return await repository.active_task(self.conn, case_id)

    async def get_task(self, task_id: UUID) -> Task | None:
        return await repository.get_task(self.conn, task_id)

    async def update_task(self, task: Task) -> None:
        await repository.update_task(self.conn, task)
        if task.case_id in self._tasks:
            self._tasks[task.case_id] = task.active

    async def cancel_tasks(self, case_id: UUID, now: datetime) -> None:
        if self._tasks.get(case_id) is False:
            return
        await repository.cancel_tasks(self.conn, case_id, now)
        self._tasks[case_id] = False

    async def save(self, case: Case, outbox: list[OutboxRow], audit: list[AuditRow]) -> None:
        await repository.save_case(self.conn, case)
        await repository.add_outbox(self.conn, outbox)
        await repository.add_audit(self.conn, audit)


NewCase = Callable[[ApplicationEvent], Case | None]
"""The case a submission opens (None if no definition serves it)."""


class LaneWork(UnitOfWork, Protocol):
    """The unit of work of a lane: told the lane's events first, so it can read ahead for all of them."""

    async def prefetch(self, events: Sequence[ApplicationEvent], new_case: NewCase) -> None: ...


Lanes = Callable[[], contextlib.AbstractAsyncContextManager[LaneWork]]
"""Opens the unit of work of one lane: one transaction, committed when the block ends without an error."""


def postgres_lanes(pool: asyncpg.Pool) -> Lanes:
    """Each lane on a pooled connection in one transaction; the collected rows are written before the commit."""

    @contextlib.asynccontextmanager
    async def lane() -> AsyncIterator[LaneWork]:
        async with pool.acquire() as conn, conn.transaction():
            uow = LaneUnitOfWork(conn)
            yield uow
            await uow.write()

    return lane


class LaneUnitOfWork(PostgresUnitOfWork):
    """`UnitOfWork` for a lane of events applied together (several applications at a time) in one transaction:
    reads done up front by `prefetch`, writes collected until `write`."""

    def __init__(self, conn: Conn) -> None:
        super().__init__(cast(Conn, SerialConnection(conn)))
        self._direct = conn
        self._claimed: set[UUID] = set()
        self._cases: dict[str, Case] = {}
        self._opening: dict[str, Case] = {}
        self._pending: dict[str, list[ApplicationEvent]] = {}
        self._pended: set[str] = set()
        self._dirty: dict[UUID, Case] = {}
        self._outbox: list[OutboxRow] = []
        self._audit: list[AuditRow] = []

    async def prefetch(self, events: Sequence[ApplicationEvent], new_case: NewCase) -> None:
        """Claim the lane's inbox ids, lock its existing cases, insert the cases its submissions open (locked by
        the insert) and take their pending events: one statement each."""
        conn = self._direct
        self._claimed = await repository.claim_inbox_many(conn, [e.id for e in events])
        fresh = [e for e in events if e.id in self._claimed]
        for locked in await repository.lock_cases_by_application(conn, sorted({e.application_id for e in fresh})):
            self._known(locked)
            self._cases[locked.case.application_id] = locked.case
        opening: dict[str, Case] = {}
        for e in fresh:
            app = e.application_id
            if e.type == "application.submitted" and app not in self._cases and app not in opening:
                case = new_case(e)
                if case is not None:
                    opening[app] = case
        inserted = await repository.insert_cases(conn, list(opening.values()))
        self._opening = {a: c for a, c in opening.items() if a in inserted}
        pending = await repository.take_pending_many(conn, sorted(self._opening))
        self._pending = {a: _events(bodies) for a, bodies in pending.items()}

    async def claim(self, event_id: UUID) -> bool:
        if event_id not in self._claimed:
            return False
        self._claimed.discard(event_id)
        return True

    async def case_for_application(self, application_id: str) -> Case | None:
        return self._cases.get(application_id)

    async def insert_case(self, application_id: str, build: Callable[[], Case]) -> Case | None:
        stored = self._opening.pop(application_id, None)  # inserted by prefetch
        if stored is None:
            stored = build()
            if not await repository.insert_case(self.conn, stored):
                return None
        self._cases[application_id] = self._inserted(stored)
        return stored

    async def keep_pending(self, event: ApplicationEvent) -> None:
        await super().keep_pending(event)
        self._pended.add(event.application_id)

    async def take_pending(self, application_id: str) -> list[ApplicationEvent]:
        events = self._pending.pop(application_id, [])
        if application_id in self._pended:  # events of this lane that came before the submission
            events += await super().take_pending(application_id)
        return events

    async def save(self, case: Case, outbox: list[OutboxRow], audit: list[AuditRow]) -> None:
        self._dirty[case.case_id] = case
        self._outbox += outbox
        self._audit += audit

    async def write(self) -> None:
        """Write the saved cases, their outbox rows and audit rows with one statement each."""
        await repository.save_cases(self._direct, list(self._dirty.values()))
        await repository.add_outbox(self._direct, self._outbox)
        await repository.add_audit(self._direct, self._audit)
        self._dirty, self._outbox, self._audit = {}, [], []


def _events(bodies: list[dict[str, Any]]) -> list[ApplicationEvent]:
    return [application_event_adapter.validate_python(b) for b in bodies]
