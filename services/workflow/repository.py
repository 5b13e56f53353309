"""All SQL of the workflow service. Functions receive a connection; the caller owns the transaction."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
import orjson

from services.workflow.model import Case, CaseContext, CaseState, Task, TaskStatus, Timer, TimerKind
from shared.db import Conn

CASE_COLUMNS = """case_id, application_id, municipality, service, definition, definition_version, state,
    current_step, step_entered_at, attempts, last_error, context, event_seq, outcome, opened_at, closed_at"""


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb as Python objects (orjson) on every pooled connection."""
    await conn.set_type_codec("jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
                              schema="pg_catalog")


# --- inbox and pending events --------------------------------------------------------------------------

async def claim_inbox(conn: Conn, event_id: UUID) -> bool:
    """Record an incoming event id; False if it was processed before."""
    row = await conn.fetchval(
        "INSERT INTO wf_inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id", event_id
    )
    return row is not None


async def claim_inbox_many(conn: Conn, event_ids: list[UUID]) -> set[UUID]:
    """Record incoming event ids in one statement; returns those not processed before."""
    rows = await conn.fetch(
        """INSERT INTO wf_inbox (event_id) SELECT DISTINCT unnest($1::uuid[])
           ON CONFLICT DO NOTHING RETURNING event_id""",
        event_ids,
    )
    return {r["event_id"] for r in rows}


async def add_pending(conn: Conn, event_id: UUID, application_id: str, body: dict[str, Any]) -> None:
    await conn.execute(
        "INSERT INTO wf_pending (event_id, application_id, body) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        event_id, application_id, body,
    )


async def take_pending(conn: Conn, application_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "DELETE FROM wf_pending WHERE application_id = $1 RETURNING body, received_at", application_id
    )
    return [r["body"] for r in sorted(rows, key=lambda r: r["received_at"])]


async def take_pending_many(conn: Conn, application_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """`take_pending` for several applications in one statement."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not application_ids:
        return out
    rows = await conn.fetch(
        """DELETE FROM wf_pending WHERE application_id = ANY($1::text[])
           RETURNING application_id, body, received_at""",
        application_ids,
    )
    for r in sorted(rows, key=lambda r: r["received_at"]):
        out.setdefault(r["application_id"], []).append(r["body"])
    return out


# --- definitions ---------------------------------------------------------------------------------------

async def register_definition(conn: Conn, name: str, version: int, service: str | None, checksum: str,
                              body: dict[str, Any]) -> str:
    """Store a definition version once; return the checksum stored (differs if the version was changed)."""
    await conn.execute(
        """INSERT INTO wf_definitions (name, version, service, checksum, body) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (name, version) DO NOTHING""",
        name, version, service, checksum, body,
    )
    stored: str = await conn.fetchval(
        "SELECT checksum FROM wf_definitions WHERE name = $1 AND version = $2", name, version
    )
    return stored


async def versions_in_use(conn: Conn) -> list[tuple[str, int]]:
    """Definition versions that open cases are pinned to."""
    rows = await conn.fetch(
        "SELECT DISTINCT definition, definition_version FROM wf_cases WHERE state <> 'closed' ORDER BY 1, 2"
    )
    return [(r["definition"], r["definition_version"]) for r in rows]


# --- cases ---------------------------------------------------------------------------------------------

LOCKED_COLUMNS = f"""{CASE_COLUMNS},
    (SELECT coalesce(jsonb_object_agg(d.name, d.step), '{{}}'::jsonb) FROM wf_due d WHERE d.case_id = c.case_id)
        AS timers,
    EXISTS (SELECT 1 FROM wf_tasks t WHERE t.case_id = c.case_id AND t.status IN ('open', 'claimed')) AS has_task"""


@dataclass(frozen=True, slots=True)
class Locked:
    """A row-locked case with what `wf_due` and `wf_tasks` hold for it at that moment (timer name -> step, an
    active task), read in the same statement so steps without timers or tasks cost no further query."""

    case: Case
    timers: dict[str, str | None]
    has_task: bool


def case_from_row(row: asyncpg.Record) -> Case:
    return Case(
        case_id=row["case_id"], application_id=row["application_id"], municipality=row["municipality"],
        service=row["service"], definition=row["definition"], definition_version=row["definition_version"],
        state=CaseState(row["state"]), current_step=row["current_step"], step_entered_at=row["step_entered_at"],
        opened_at=row["opened_at"], context=CaseContext.from_json(row["context"]), attempts=row["attempts"],
        last_error=row["last_error"], event_seq=row["event_seq"], outcome=row["outcome"],
        closed_at=row["closed_at"],
    )


def _locked(row: asyncpg.Record) -> Locked:
    return Locked(case_from_row(row), row["timers"], row["has_task"])


async def insert_case(conn: Conn, case: Case) -> bool:
    row = await conn.fetchval(
        """INSERT INTO wf_cases (case_id, application_id, municipality, service, definition, definition_version,
                                 state, current_step, step_entered_at, context, opened_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (application_id) DO NOTHING RETURNING case_id""",
        case.case_id, case.application_id, case.municipality, case.service, case.definition,
        case.definition_version, case.state.value, case.current_step, case.step_entered_at,
        case.context.to_json(), case.opened_at,
    )
    return row is not None


async def insert_cases(conn: Conn, cases: list[Case]) -> set[str]:
    """`insert_case` for several cases in one statement; returns the application ids inserted."""
    if not cases:
        return set()
    rows = await conn.fetch(
        """INSERT INTO wf_cases (case_id, application_id, municipality, service, definition, definition_version,
                                 state, current_step, step_entered_at, opened_at, context)
           SELECT c, a, m, s, d, v, st, cs, se, o, ctx::jsonb
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::text[],
                       $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[])
                AS r(c, a, m, s, d, v, st, cs, se, o, ctx)
           ON CONFLICT (application_id) DO NOTHING RETURNING application_id""",
        [c.case_id for c in cases], [c.application_id for c in cases], [c.municipality for c in cases],
        [c.service for c in cases], [c.definition for c in cases], [c.definition_version for c in cases],
        [c.state.value for c in cases], [c.current_step for c in cases], [c.step_entered_at for c in cases],
        [c.opened_at for c in cases], [orjson.dumps(c.context.to_json()).decode() for c in cases],
    )
    return {r["application_id"] for r in rows}


async def lock_cases_by_application(conn: Conn, application_ids: list[str]) -> list[Locked]:
    """Row-lock the existing cases of several applications in one statement (in case id order)."""
    if not application_ids:
        return []
    rows = await conn.fetch(
        f"""SELECT {LOCKED_COLUMNS} FROM wf_cases c WHERE application_id = ANY($1::text[])
            ORDER BY case_id FOR UPDATE OF c""",
        application_ids,
    )
    return [_locked(r) for r in rows]


async def save_cases(conn: Conn, cases: list[Case]) -> None:
    """`save_case` for several cases in one statement."""
    if not cases:
        return
    await conn.execute(
        """UPDATE wf_cases w SET state = u.st, current_step = u.cs, step_entered_at = u.se, attempts = u.at,
               last_error = u.le, context = u.ctx::jsonb, event_seq = u.seq, outcome = u.oc, closed_at = u.cl,
               updated_at = now()
           FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::int[], $6::text[], $7::int[],
                       $8::text[], $9::timestamptz[], $10::text[]) AS u(id, st, cs, se, at, le, seq, oc, cl, ctx)
           WHERE w.case_id = u.id""",
        [c.case_id for c in cases], [c.state.value for c in cases], [c.current_step for c in cases],
        [c.step_entered_at for c in cases], [c.attempts for c in cases], [c.last_error for c in cases],
        [c.event_seq for c in cases], [c.outcome for c in cases], [c.closed_at for c in cases],
        [orjson.dumps(c.context.to_json()).decode() for c in cases],
    )


async def lock_case(conn: Conn, case_id: UUID, skip_locked: bool = False) -> Locked | None:
    """Row-lock a case for an update; with skip_locked, None when another transaction holds it."""
    suffix = "FOR UPDATE OF c SKIP LOCKED" if skip_locked else "FOR UPDATE OF c"
    row = await conn.fetchrow(f"SELECT {LOCKED_COLUMNS} FROM wf_cases c WHERE case_id = $1 {suffix}", case_id)
    return _locked(row) if row else None


async def lock_case_by_application(conn: Conn, application_id: str) -> Locked | None:
    row = await conn.fetchrow(
        f"SELECT {LOCKED_COLUMNS} FROM wf_cases c WHERE application_id = $1 FOR UPDATE OF c", application_id
    )
    return _locked(row) if row else None


async def save_case(conn: Conn, case: Case) -> None:
    await conn.execute(
        """UPDATE wf_cases SET state = $2, current_step = $3, step_entered_at = $4, attempts = $5,
               last_error = $6, context = $7, event_seq = $8, outcome = $9, closed_at = $10, updated_at = now()
           WHERE case_id = $1""",
        case.case_id, case.state.value, case.current_step, case.step_entered_at, case.attempts,
        case.last_error, case.context.to_json(), case.event_seq, case.outcome, case.closed_at,
    )


async def get_case(conn: Conn, case_id: UUID) -> Case | None:
    row = await conn.fetchrow(f"SELECT {CASE_COLUMNS} FROM wf_cases WHERE case_id = $1", case_id)
    return case_from_row(row) if row else None


async def list_cases(conn: Conn, municipalities: list[str], state: str | None, limit: int) -> list[Case]:
    rows = await conn.fetch(
        f"""SELECT {CASE_COLUMNS} FROM wf_cases WHERE municipality = ANY($1::text[])
            AND ($2::text IS NULL OR state = $2) ORDER BY opened_at DESC LIMIT $3""",
        municipalities, state, limit,
    )
    return [case_from_row(r) for r in rows]


async def count_cases_by_state(conn: Conn) -> dict[str, int]:
    rows = await conn.fetch("SELECT state, count(*) AS n FROM wf_cases GROUP BY state")
    return {r["state"]: r["n"] for r in rows}


# --- outbox --------------------------------------------------------------------------------------------

async def add_outbox(conn: Conn, rows: list[tuple[str, bytes, list[bytes]]]) -> None:
    """All rows in one statement; ids follow the list order, each row's events keep their order."""
    if rows:
        topics, keys, groups = zip(*rows, strict=True)
        payloads = [p for group in groups for p in group]
        owners = [n for n, group in enumerate(groups, 1) for _ in group]
        await conn.execute(
            """INSERT INTO wf_outbox (topic, key, payloads)
               SELECT r.t, r.k, e.ps
               FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS r(t, k, n)
               JOIN (SELECT g, array_agg(p ORDER BY i) AS ps
                     FROM unnest($3::bytea[], $4::int[]) WITH ORDINALITY AS x(p, g, i) GROUP BY g) e ON e.g = r.n
               ORDER BY r.n""",
            list(topics), list(keys), payloads, owners,
        )


async def take_unpublished(conn: Conn, limit: int) -> list[asyncpg.Record]:
    """Lock a slice of unpublished rows; concurrent relays skip each other's rows."""
    return await conn.fetch(
        """SELECT id, topic, key, coalesce(payloads, ARRAY[payload]) AS payloads, created_at
           FROM wf_outbox WHERE published_at IS NULL
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )


async def mark_published(conn: Conn, ids: list[int]) -> datetime:
    now: datetime = await conn.fetchval(
        "UPDATE wf_outbox SET published_at = clock_timestamp() WHERE id = ANY($1::bigint[]) RETURNING published_at", ids
    )
    return now


async def mark_rejected(conn: Conn, reasons: dict[int, str]) -> None:
    """Note why events of these rows went to the rejected topic (the rows are marked published as well)."""
    if reasons:
        await conn.execute(
            """UPDATE wf_outbox o SET rejected_reason = r.reason
               FROM unnest($1::bigint[], $2::text[]) AS r (id, reason) WHERE o.id = r.id""",
            list(reasons), list(reasons.values()),
        )


async def oldest_unpublished_age_s(conn: Conn) -> float:
    age = await conn.fetchval(
        """SELECT EXTRACT(EPOCH FROM now() - min(created_at)) FROM wf_outbox WHERE published_at IS NULL"""
    )
    return float(age or 0.0)


# --- timers --------------------------------------------------------------------------------------------

async def set_timer(conn: Conn, case_id: UUID, kind: TimerKind, step: str | None, due_at: datetime) -> None:
    await conn.execute(
        """INSERT INTO wf_due (case_id, name, step, due_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (case_id, name) DO UPDATE SET step = EXCLUDED.step, due_at = EXCLUDED.due_at, attempts = 0""",
        case_id, kind.value, step, due_at,
    )


async def clear_step_timers(conn: Conn, case_id: UUID) -> None:
    await conn.execute("DELETE FROM wf_due WHERE case_id = $1 AND step IS NOT NULL", case_id)


async def clear_timers(conn: Conn, case_id: UUID, kinds: Collection[TimerKind] | None = None) -> None:
    if kinds is None:
        await conn.execute("DELETE FROM wf_due WHERE case_id = $1", case_id)
    else:
        await conn.execute("DELETE FROM wf_due WHERE case_id = $1 AND name = ANY($2::text[])", case_id,
                           [k.value for k in kinds])


async def take_due(conn: Conn, now: datetime, limit: int) -> list[Timer]:
    """Lock due timers; another instance polling at the same time skips these rows."""
    rows = await conn.fetch(
        """SELECT id, case_id, name, step, due_at, attempts FROM wf_due WHERE due_at <= $1
           ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now, limit,
    )
    return [Timer(id=r["id"], case_id=r["case_id"], kind=TimerKind(r["name"]), step=r["step"], due_at=r["due_at"],
                  attempts=r["attempts"]) for r in rows]


async def delete_due(conn: Conn, due_id: int) -> None:
    await conn.execute("DELETE FROM wf_due WHERE id = $1", due_id)


async def postpone_due(conn: Conn, due_id: int, due_at: datetime) -> None:
    await conn.execute("UPDATE wf_due SET due_at = $2, attempts = attempts + 1 WHERE id = $1", due_id, due_at)


async def timers_of(conn: Conn, case_id: UUID) -> list[dict[str, Any]]:
    """The case's timers for display (name, step, due time), the next first."""
    rows = await conn.fetch("SELECT name, step, due_at FROM wf_due WHERE case_id = $1 ORDER BY due_at", case_id)
    return [dict(r) for r in rows]


# --- tasks ---------------------------------------------------------------------------------------------

TASK_COLUMNS = """task_id, case_id, step, queue, municipality, service, status, assignee, due_at, decision,
    created_at, completed_at"""


def task_from_row(row: asyncpg.Record) -> Task:
    return Task(
        task_id=row["task_id"], case_id=row["case_id"], step=row["step"], queue=row["queue"],
        municipality=row["municipality"], service=row["service"], status=TaskStatus(row["status"]),
        due_at=row["due_at"], created_at=row["created_at"], assignee=row["assignee"], decision=row["decision"],
        completed_at=row["completed_at"],
    )


async def queue_loads(conn: Conn, municipality: str, queues: list[str]) -> dict[str, int]:
    rows = await conn.fetch(
        """SELECT queue, count(*) AS n FROM wf_tasks WHERE municipality = $1 AND queue = ANY($2::text[])
           AND status IN ('open', 'claimed') GROUP BY queue""",
        municipality, queues,
    )
    return {r["queue"]: r["n"] for r in rows}


async def create_task(conn: Conn, task: Task) -> None:
    await conn.execute(
        """INSERT INTO wf_tasks (task_id, case_id, step, queue, municipality, service, status, due_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        task.task_id, task.case_id, task.step, task.queue, task.municipality, task.service, task.status.value,
        task.due_at, task.created_at,
    )


async def active_task(conn: Conn, case_id: UUID) -> Task | None:
    row = await conn.fetchrow(
        f"SELECT {TASK_COLUMNS} FROM wf_tasks WHERE case_id = $1 AND status IN ('open', 'claimed')", case_id
    )
    return task_from_row(row) if row else None


async def get_task(conn: Conn, task_id: UUID) -> Task | None:
    row = await conn.fetchrow(f"SELECT {TASK_COLUMNS} FROM wf_tasks WHERE task_id = $1", task_id)
    return task_from_row(row) if row else None


async def update_task(conn: Conn, task: Task) -> None:
    """Write what a task's life changes: status, assignee, queue, due time, decision, completion time."""
    await conn.execute(
        """UPDATE wf_tasks SET status = $2, assignee = $3, queue = $4, due_at = $5, decision = $6, completed_at = $7
           WHERE task_id = $1""",
        task.task_id, task.status.value, task.assignee, task.queue, task.due_at, task.decision, task.completed_at,
    )


async def cancel_tasks(conn: Conn, case_id: UUID, now: datetime) -> None:
    await conn.execute(
        """UPDATE wf_tasks SET status = 'cancelled', completed_at = $2
           WHERE case_id = $1 AND status IN ('open', 'claimed')""",
        case_id, now,
    )


async def list_tasks(conn: Conn, municipalities: list[str], queue: str | None, status: list[str],
                     due_before: datetime | None, limit: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT t.*, c.application_id, c.definition, c.definition_version FROM wf_tasks t
           JOIN wf_cases c USING (case_id)
           WHERE t.municipality = ANY($1::text[]) AND ($2::text IS NULL OR t.queue = $2)
             AND t.status = ANY($3::text[]) AND ($4::timestamptz IS NULL OR t.due_at <= $4)
           ORDER BY t.due_at NULLS LAST, t.created_at LIMIT $5""",
        municipalities, queue, status, due_before, limit,
    )
    return [dict(r) for r in rows]


# --- audit ---------------------------------------------------------------------------------------------

async def add_audit(conn: Conn, rows: Sequence[tuple[UUID | str, datetime, str, str, Any, Any, Any]]) -> None:
    """All rows in one statement; ids follow the list order (the trail's order).

    The rows travel as one JSON array of arrays (a single C-level serialisation) instead of seven parameter
    arrays, whose element-wise encoding cost the service more than the audit is worth.
    """
    if rows:
        await conn.execute(
            """INSERT INTO wf_audit (case_id, at, actor, action, before, after, detail)
               SELECT (e->>0)::uuid, (e->>1)::timestamptz, e->>2, e->>3, nullif(e->4, 'null'), nullif(e->5, 'null'),
                      e->6
               FROM jsonb_array_elements($1::text::jsonb) WITH ORDINALITY AS r(e, n)
               ORDER BY n""",
            orjson.dumps([r if isinstance(r[0], str) else (str(r[0]), *r[1:]) for r in rows]).decode(),
        )


async def audit_of(conn: Conn, case_id: UUID) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, at, actor, action, before, after, detail FROM wf_audit WHERE case_id = $1 ORDER BY id", case_id
    )
    return [dict(r) for r in rows]


# --- clerk view sign-in (keys are SHA-256 digests of the cookie values) ---------------------------------

async def add_login(conn: Conn, row: dict[str, Any]) -> None:
    """A login in flight; logins that were never finished are removed here once expired."""
    await conn.execute("DELETE FROM wf_oidc_logins WHERE expires_at <= $1", row["created_at"])
    await conn.execute(
        """INSERT INTO wf_oidc_logins (login_hash, state, nonce, code_verifier, return_to, created_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        row["login_hash"], row["state"], row["nonce"], row["code_verifier"], row["return_to"], row["created_at"],
        row["expires_at"],
    )


async def take_login(conn: Conn, login_hash: str, now: datetime) -> dict[str, Any] | None:
    """A login in flight is used once: taking it deletes it (and expired ones)."""
    await conn.execute("DELETE FROM wf_oidc_logins WHERE expires_at <= $1", now)
    row = await conn.fetchrow("DELETE FROM wf_oidc_logins WHERE login_hash = $1 RETURNING *", login_hash)
    return dict(row) if row else None


async def add_session(conn: Conn, row: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO wf_sessions (session_hash, subject, display_name, roles, municipalities, csrf_token, id_token,
                                    created_at, last_seen_at, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)""",
        row["session_hash"], row["subject"], row["display_name"], row["roles"], row["municipalities"],
        row["csrf_token"], row["id_token"], row["created_at"], row["expires_at"],
    )


async def touch_session(conn: Conn, session_hash: str, now: datetime, idle_after: datetime) -> dict[str, Any] | None:
    """The live session (not expired, seen after `idle_after`), marked as seen now; expired rows are removed."""
    row = await conn.fetchrow(
        """UPDATE wf_sessions SET last_seen_at = $2
           WHERE session_hash = $1 AND expires_at > $2 AND last_seen_at > $3 RETURNING *""",
        session_hash, now, idle_after,
    )
    if row is None:
        await conn.execute("DELETE FROM wf_sessions WHERE session_hash = $1 OR expires_at <= $2 OR last_seen_at <= $3",
                           session_hash, now, idle_after)
    return dict(row) if row else None


async def delete_session(conn: Conn, session_hash: str) -> dict[str, Any] | None:
    row = await conn.fetchrow("DELETE FROM wf_sessions WHERE session_hash = $1 RETURNING *", session_hash)
    return dict(row) if row else None


# --- clerk view task list -------------------------------------------------------------------------------

async def task_page(conn: Conn, municipalities: list[str], queue: str | None, status: list[str],
                    assignee: str | None, limit: int, offset: int) -> tuple[list[dict[str, Any]], int]:
    """One page of open/claimed tasks by due date, and how many match in all."""
    where = """t.municipality = ANY($1::text[]) AND ($2::text IS NULL OR t.queue = $2)
               AND t.status = ANY($3::text[]) AND ($4::text IS NULL OR t.assignee = $4)"""
    total = await conn.fetchval(f"SELECT count(*) FROM wf_tasks t WHERE {where}",
                                municipalities, queue, status, assignee)
    rows = await conn.fetch(
        f"""SELECT t.*, c.application_id, c.definition, c.definition_version, c.opened_at, c.context
            FROM wf_tasks t JOIN wf_cases c USING (case_id)
            WHERE {where} ORDER BY t.due_at NULLS LAST, t.created_at, t.task_id LIMIT $5 OFFSET $6""",
        municipalities, queue, status, assignee, limit, offset,
    )
    return [dict(r) for r in rows], int(total)


async def task_queues(conn: Conn, municipalities: list[str]) -> list[str]:
    """Queues with open or claimed tasks in the municipalities (the filter's choices)."""
    rows = await conn.fetch(
        """SELECT DISTINCT queue FROM wf_tasks WHERE municipality = ANY($1::text[]) AND status IN ('open', 'claimed')
           ORDER BY queue""", municipalities)
    return [r["queue"] for r in rows]
