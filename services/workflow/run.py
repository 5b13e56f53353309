"""One case inside one unit of work, and the hot path of what it emits.

`Run` collects the case's workflow events (outbox) and audit rows and hands them with the case to the unit of
work in `flush`. Every case emits the events below, so their data is built as plain dicts, field for field
what the contract model dumps, and the event is serialised once with orjson: building and dumping a pydantic
model per event cost more than the rest of `Run.emit`. `tests/unit/test_workflow_emit.py` holds each builder
and the envelope against the contract models; rarer events are built from the models.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from services.workflow.adapters import EAkte
from services.workflow.definitions import Definition
from services.workflow.model import Case, TimerKind
from services.workflow.unit_of_work import AuditRow, OutboxRow, UnitOfWork
from shared.events.base import Contract

SOURCE = "kp-workflow"


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
class Run:
    """One case inside one unit of work: collects outbox and audit rows, handed over by `flush`."""

    uow: UnitOfWork
    case: Case
    definition: Definition
    now: datetime
    topic: str
    eakte: EAkte
    outbox: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    audit_rows: list[AuditRow] = field(default_factory=list)
    case_key: str = field(init=False)
    """The case id as text (formatted once; events and audit rows carry it)."""
    case_bytes: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.case_key = str(self.case.case_id)
        self.case_bytes = self.case.case_id.bytes

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.case.state, "step": self.case.current_step}  # a CaseState is a str

    def emit(self, type_: str, data: Contract | dict[str, Any]) -> None:
        """Queue a workflow event for the outbox. The envelope comes from the case (validated when the case
        opened) and `data` is an already validated contract model or its hot-path dict, so the event is
        serialised directly."""
        c = self.case
        c.event_seq += 1
        event = {
            "id": _event_id(self.case_bytes, c.event_seq), "schema_version": 1, "source": SOURCE,
            "time": self.now, "municipality": c.municipality, "service": c.service, "case_id": self.case_key,
            "application_id": c.application_id, "definition": c.definition,
            "definition_version": c.definition_version, "type": type_,
            "data": data if isinstance(data, dict) else data.model_dump(),
        }
        key = f"{c.municipality}:{c.service}".encode()  # the contract's partition key (Envelope.kafka_key)
        self.outbox.append((self.topic, key, orjson.dumps(event, option=orjson.OPT_UTC_Z)))

    def audit(self, actor: str, action: str, detail: dict[str, Any], before: Any = None, after: Any = None) -> None:
        self.audit_rows.append((self.case_key, self.now, actor, action, before, after, detail))

    async def set_timer(self, kind: TimerKind, step: str | None, due_at: datetime) -> None:
        await self.uow.set_timer(self.case.case_id, kind, step, due_at)

    async def clear_timers(self, kinds: Collection[TimerKind] | None = None) -> None:
        await self.uow.clear_timers(self.case.case_id, kinds)

    async def cancel_tasks(self) -> None:
        await self.uow.cancel_tasks(self.case.case_id, self.now)

    async def flush(self) -> None:
        await self.uow.save(self.case, outbox_rows(self.outbox), self.audit_rows)
        self.outbox, self.audit_rows = [], []


def outbox_rows(events: list[tuple[str, bytes, bytes]]) -> list[OutboxRow]:
    """Outbox rows for a case's events: consecutive events with the same topic and key share a row."""
    rows: list[OutboxRow] = []
    for topic, key, payload in events:
        if rows and rows[-1][0] == topic and rows[-1][1] == key:
            rows[-1][2].append(payload)
        else:
            rows.append((topic, key, [payload]))
    return rows
