"""Durability of the workflow service: kill -9 mid-case, and two instances firing the same timers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from kp.local import LocalStack
from services.workflow.adapters import FileSystemEAkte, ManualClock
from services.workflow.repository import init_connection
from tests.integration.test_workflow_support import (
    WfEnv,
    outbox_of,
    random_ags,
    running_app,
    submitted,
    wf_env,
)
from tests.waiting import eventually

__all__ = ["wf_env"]

WOHNSITZ = "99115005104000"
DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]


async def states(env: WfEnv, application_ids: list[str]) -> dict[str, str]:
    conn = await asyncpg.connect(env.database_url)
    try:
        rows = await conn.fetch("SELECT application_id, state FROM wf_cases WHERE application_id = ANY($1::text[])",
                                application_ids)
        return {r["application_id"]: r["state"] for r in rows}
    finally:
        await conn.close()


async def per_case_counts(env: WfEnv, application_ids: list[str], sql_filter: str) -> dict[str, int]:
    """How many outbox events per application match the filter (a jsonb condition on `p`)."""
    conn = await asyncpg.connect(env.database_url)
    await init_connection(conn)
    try:
        rows = await conn.fetch(
            f"""SELECT p->>'application_id' AS a, count(*) AS n
                FROM (SELECT convert_from(e, 'UTF8')::jsonb AS p
                      FROM wf_outbox, unnest(coalesce(payloads, ARRAY[payload])) AS e) o
                WHERE p->>'application_id' = ANY($1::text[]) AND {sql_filter} GROUP BY 1""",
            application_ids)
        return {r["a"]: r["n"] for r in rows}
    finally:
        await conn.close()


class TestKillDuringCases:
    async def test_kill_9_mid_case_then_restart_loses_no_step_and_repeats_none(
        self, stack: LocalStack, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        events = [submitted(ags, WOHNSITZ, DOCS) for _ in range(80)]
        ids = [e["application_id"] for e in events]
        env = wf_env.env(KP_CONSUMER_GROUP=f"wf-kill-{ags}")
        first = stack.service("workflow", extra_env=env)
        first.start()
        try:
            first.wait_ready()
            await wf_env.publish(*events)
            await eventually(lambda: states(wf_env, ids),
                             lambda s: sum(v == "closed" for v in s.values()) >= 5, timeout=60, interval=0.02)
        finally:
            first.kill()
        at_kill = await states(wf_env, ids)
        assert sum(v == "closed" for v in at_kill.values()) < len(ids), "all done before the kill; test proves nothing"

        second = stack.service("workflow", extra_env=env)
        second.start()
        try:
            second.wait_ready()
            final = await eventually(lambda: states(wf_env, ids),
                                     lambda s: len(s) == len(ids) and set(s.values()) == {"closed"}, timeout=90)
        finally:
            second.stop()
        assert len(final) == len(ids)

        one_each = {a: 1 for a in ids}
        assert await per_case_counts(wf_env, ids, "p->>'type' = 'workflow.case.opened'") == one_each
        assert await per_case_counts(wf_env, ids, "p->>'type' = 'workflow.case.closed'") == one_each
        assert await per_case_counts(
            wf_env, ids, "p->>'type' = 'workflow.step.completed' AND p->'data'->>'step' = 'akte'") == one_each
        conn = await asyncpg.connect(wf_env.database_url)
        try:
            case_ids = [r["case_id"] for r in await conn.fetch(
                "SELECT case_id FROM wf_cases WHERE application_id = ANY($1::text[])", ids)]
            filed = await conn.fetch(
                "SELECT case_id, count(*) AS n FROM wf_audit WHERE action = 'filed' AND case_id = ANY($1::uuid[]) "
                "GROUP BY case_id", case_ids)
        finally:
            await conn.close()
        assert sorted(r["n"] for r in filed) == [1] * len(ids)
        stored = FileSystemEAkte(wf_env.eakte_root).stored()
        keys = {f"{c}:akte" for c in case_ids}
        assert keys <= set(stored)
        # a filing repeated after the kill reaches the E-Akte with the same key: counted, not stored twice
        assert all(stored[k]["calls"] >= 1 for k in keys)
        assert len([d for d in stored.values() if d["record"]["municipality"] == ags]) == len(ids)


class TestTwoInstances:
    async def test_two_instances_fire_each_timer_once(self, wf_env: WfEnv) -> None:
        clock = ManualClock(datetime.now(UTC))
        ags = random_ags()
        events = [submitted(ags, WOHNSITZ, ["ausweisdokument"]) for _ in range(40)]
        ids = [e["application_id"] for e in events]
        async with running_app(wf_env, clock=clock) as one, running_app(wf_env, clock=clock) as two:
            await wf_env.publish(*events)
            await eventually(lambda: states(wf_env, ids),
                             lambda s: len(s) == len(ids) and set(s.values()) == {"waiting"}, timeout=60)
            clock.advance(timedelta(days=10, seconds=1))  # every case's reminder is due at once

            async def reminders() -> dict[str, int]:
                return await per_case_counts(
                    wf_env, ids, "p->>'type' = 'workflow.notification.requested' "
                                 "AND p->'data'->>'kind' = 'erinnerung'")

            await eventually(reminders, lambda r: len(r) == len(ids), timeout=60)
            # no reminder row is left that could fire again: each was deleted with its effect
            assert await _reminder_rows(wf_env, ids) == 0
            assert await reminders() == {a: 1 for a in ids}
            fired = [_fired_sync(a) for a in (one, two)]
            assert sum(fired) == len(ids)
        duplicates = await outbox_of(wf_env.database_url, ids[0])
        assert [e["data"]["kind"] for e in duplicates if e["type"] == "workflow.notification.requested"].count(
            "erinnerung") == 1


def _fired_sync(running: Any) -> int:
    metric = running.app.state.metrics.timers_fired.labels("reminder")
    return int(metric._value.get())


async def _reminder_rows(env: WfEnv, application_ids: list[str]) -> int:
    conn = await asyncpg.connect(env.database_url)
    try:
        n: int = await conn.fetchval(
            "SELECT count(*) FROM wf_due d JOIN wf_cases c USING (case_id) "
            "WHERE d.name = 'reminder' AND c.application_id = ANY($1::text[])", application_ids)
        return n
    finally:
        await conn.close()


class TestStandaloneRelay:
    async def test_relay_as_its_own_process_publishes_what_the_service_commits(
        self, stack: LocalStack, wf_env: WfEnv
    ) -> None:
        import asyncio
        import os
        import sys

        import orjson
        from aiokafka import AIOKafkaConsumer

        ags = random_ags()
        event = submitted(ags, WOHNSITZ, DOCS)
        service = stack.service("workflow", extra_env=wf_env.env(KP_CONSUMER_GROUP=f"wf-relay-{ags}",
                                                                  KP_RELAY_IN_PROCESS="false"))
        relay = await asyncio.create_subprocess_exec(sys.executable, "-m", "services.workflow.relay",
                                                     env={**os.environ, **stack.env, **wf_env.env()})
        consumer = AIOKafkaConsumer(wf_env.workflow_topic, bootstrap_servers=wf_env.kafka_bootstrap,
                                    auto_offset_reset="earliest", group_id=f"t-relay-{ags}")
        service.start()
        await consumer.start()
        try:
            service.wait_ready()
            await wf_env.publish(event)
            seen: list[dict[str, Any]] = []

            async def received() -> list[dict[str, Any]]:
                for records in (await consumer.getmany(timeout_ms=300)).values():
                    seen.extend(p for r in records if (p := orjson.loads(r.value))["application_id"]
                                == event["application_id"])
                return seen

            await eventually(received, lambda s: "workflow.case.closed" in [e["type"] for e in s], timeout=60)
        finally:
            await consumer.stop()
            service.stop()
            relay.terminate()
            await asyncio.wait_for(relay.wait(), 30)
        assert relay.returncode == 0  # SIGTERM is a graceful stop
        assert [e["type"] for e in seen] == [e["type"] for e in await outbox_of(wf_env.database_url,
                                                                                 event["application_id"])]
