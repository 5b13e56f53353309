"""The PostgreSQL units of work against a database built by the migrations: timers and tasks come from wf_due
and wf_tasks only, also for case rows that an earlier release wrote with its own copy (`_timers`, `_task`) in
the context."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from services.workflow.adapters import FilingRecord, ManualClock
from services.workflow.definitions import load_definitions
from services.workflow.metrics import WorkflowMetrics
from services.workflow.repository import init_connection
from services.workflow.service import Engine, case_id_for
from services.workflow.unit_of_work import PostgresUnitOfWork, postgres_lanes
from shared.events import ApplicationEvent, application_event_adapter
from tests.integration.test_workflow_support import WfEnv, wf_env

__all__ = ["wf_env"]

HUND = "99102013104000"
GIESSEN = "06531005"
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class NoEAkte:
    async def file(self, key: str, record: FilingRecord) -> str:
        raise AssertionError("nothing is filed here")


def engine() -> Engine:
    return Engine(registry=load_definitions(), eakte=NoEAkte(), clock=ManualClock(NOW), metrics=WorkflowMetrics())


async def old_release_case(conn: asyncpg.Connection) -> str:
    """A Hundesteuer case at its clerk task with a deadline timer, stored as an earlier release did: its context
    holds a copy of the timers and the task that is out of date (it claims neither)."""
    application_id = f"APP-{uuid.uuid4().hex[:12]}"
    case_id = case_id_for(application_id)
    context = {"documents": [], "paid_cents": 0, "submitted_at": NOW.isoformat(), "channel": "online",
               "missing": [], "_timers": {}, "_task": False}
    await conn.execute(
        """INSERT INTO wf_cases (case_id, application_id, municipality, service, definition, definition_version,
                                 state, current_step, step_entered_at, context, opened_at, event_seq)
           VALUES ($1, $2, $3, $4, 'hundesteuer-anmeldung', 1, 'task', 'festsetzung', $5, $6::text::jsonb, $5, 7)""",
        case_id, application_id, GIESSEN, HUND, NOW, orjson.dumps(context).decode())
    await conn.execute(
        """INSERT INTO wf_due (case_id, name, step, due_at) VALUES ($1, 'deadline', 'festsetzung', $2)""",
        case_id, NOW + timedelta(days=21))
    await conn.execute(
        """INSERT INTO wf_tasks (task_id, case_id, step, queue, municipality, service, status, due_at, created_at)
           VALUES ($1, $2, 'festsetzung', 'steueramt', $3, $4, 'open', $5, $6)""",
        uuid.uuid4(), case_id, GIESSEN, HUND, NOW + timedelta(days=21), NOW)
    return application_id


def withdrawn(application_id: str) -> ApplicationEvent:
    return application_event_adapter.validate_python({
        "id": str(uuid.uuid4()), "type": "application.withdrawn", "source": "test-portal", "time": NOW.isoformat(),
        "municipality": GIESSEN, "service": HUND, "application_id": application_id, "data": {}})


class TestCasesOfEarlierReleases:
    @pytest.mark.parametrize("unit", ["direct", "lane"])
    async def test_withdrawal_clears_the_timers_and_task_that_wf_due_and_wf_tasks_hold(
        self, wf_env: WfEnv, unit: str
    ) -> None:
        pool = await asyncpg.create_pool(wf_env.database_url, min_size=1, max_size=2, init=init_connection)
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                application_id = await old_release_case(conn)
            event, wf = withdrawn(application_id), engine()
            if unit == "direct":
                async with pool.acquire() as conn, conn.transaction():
                    assert await wf.on_application_event(PostgresUnitOfWork(conn), event) == "applied"
            else:
                async with postgres_lanes(pool)() as lane:
                    await lane.prefetch([event], wf.new_case)
                    assert await wf.on_application_event(lane, event) == "applied"
            async with pool.acquire() as conn:
                case_id = case_id_for(application_id)
                row = await conn.fetchrow("SELECT state, outcome, context FROM wf_cases WHERE case_id = $1", case_id)
                assert row is not None
                assert (row["state"], row["outcome"]) == ("closed", "withdrawn")
                assert "_timers" not in row["context"]
                assert "_task" not in row["context"]
                assert await conn.fetchval("SELECT count(*) FROM wf_due WHERE case_id = $1", case_id) == 0
                statuses = await conn.fetch("SELECT status FROM wf_tasks WHERE case_id = $1", case_id)
                assert [r["status"] for r in statuses] == ["cancelled"]
        finally:
            await pool.close()
