"""Background loops of the workflow service: timer firing and metric refresh."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from services.workflow import repository
from services.workflow.metrics import WorkflowMetrics
from services.workflow.model import CaseState
from services.workflow.service import Engine
from services.workflow.unit_of_work import PostgresUnitOfWork
from shared.runner import poll

log = logging.getLogger(__name__)


async def fire_due_once(pool: asyncpg.Pool, engine: Engine, limit: int) -> int:
    """Fire the timers that are due now; each in its own savepoint so one failure does not block the rest."""
    fired = 0
    async with pool.acquire() as conn, conn.transaction():
        for timer in await repository.take_due(conn, engine.clock.now(), limit):
            try:
                async with conn.transaction():
                    if await engine.on_timer(PostgresUnitOfWork(conn), timer):
                        fired += 1
            except Exception:
                log.exception("timer %s of case %s failed; postponed", timer.kind.value, timer.case_id)
                backoff = timedelta(seconds=min(600, 2 ** min(timer.attempts, 9)))
                await repository.postpone_due(conn, timer.id, engine.clock.now() + backoff)
    return fired


async def run_timers(pool: asyncpg.Pool, engine: Engine, batch: int, interval_s: float) -> None:
    """Poll the due table until cancelled; drains quickly when many timers are due."""
    await poll(lambda: fire_due_once(pool, engine, batch), batch=batch, interval_s=interval_s, what="timer poll")


async def refresh_metrics(pool: asyncpg.Pool, metrics: WorkflowMetrics, interval_s: float) -> None:
    """Gauges that come from the database: cases by state, parked cases, oldest unpublished outbox row."""
    while True:
        try:
            async with pool.acquire() as conn:
                counts = await repository.count_cases_by_state(conn)
                for state in (*CaseState, *counts):
                    metrics.cases_by_state.labels(state).set(counts.get(state, 0))
                metrics.parked_cases.set(counts.get(CaseState.PARKED, 0))
                metrics.outbox_oldest.set(await repository.oldest_unpublished_age_s(conn))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("metric refresh failed")
        await asyncio.sleep(interval_s)
