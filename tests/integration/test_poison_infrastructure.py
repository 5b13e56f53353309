"""Infrastructure errors are not poison: while PostgreSQL is down the aggregator and the workflow consumer retry
and commit nothing, reject nothing; after it is back every valid event counts once (or opens its case) and only
the real poison record is rejected."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from asgi_lifespan import LifespanManager

from kp.local import LocalStack
from kp.rejected_cmd import read_all
from kp.stack import PostgresNode
from services.aggregator.app import create_app
from shared.db import migrate
from shared.kafka import Topic, ensure_topics
from tests.integration.poison_support import Poison, js, send
from tests.integration.test_poison_aggregator import AggLane, kpi, settled
from tests.integration.test_poison_workflow import DOCS, WOHNSITZ, cases, drained
from tests.integration.test_workflow_support import RunningApp, WfEnv, random_ags, running_app, submitted, wf_env
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["wf_env"]


@pytest.fixture
async def node(unique: str) -> AsyncIterator[PostgresNode]:
    pg = PostgresNode(ROOT / ".run" / f"poison-pg-{unique}")
    await asyncio.to_thread(pg.start)
    try:
        await migrate(pg.url)
        yield pg
    finally:
        await asyncio.to_thread(pg.stop, "immediate")
        shutil.rmtree(pg.root, ignore_errors=True)


def failures(lane: AggLane) -> float:
    assert lane.app is not None
    return sum(s.value for m in lane.app.state.metrics.batch_failures.collect() for s in m.samples
               if s.name.endswith("_total") and s.labels["topic"] == lane.usage_topic)


class TestDatabaseOutage:
    async def test_an_outage_retries_without_rejecting_and_the_poison_record_is_isolated_after_it(
        self, stack: LocalStack, kafka_bootstrap: str, node: PostgresNode, unique: str
    ) -> None:
        lane = AggLane(kafka_bootstrap, unique, "99" + f"{uuid.uuid4().int % 10**6:06d}",
                       f"99{uuid.uuid4().int % 10**12:012d}")
        await ensure_topics(kafka_bootstrap, (Topic(lane.usage_topic, 2), Topic(lane.workflow_topic, 1),
                                              Topic(lane.usage_rejected, 1), Topic(lane.workflow_rejected, 1)))
        app = create_app(lane.settings(node.url))
        async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
            lane.app = app
            before = [lane.page_viewed() for _ in range(50)]
            await send(kafka_bootstrap, lane.usage_topic,
                       [Poison("v", lambda _g, e=e: js(e), (None,)) for e in before], lane.page_viewed, 0)
            db = await asyncpg.connect(node.url)
            try:
                await settled(db, kafka_bootstrap, f"agg-{unique}", lane.usage_topic)
            finally:
                await db.close()

            await asyncio.to_thread(node.stop, "immediate")
            during = [lane.page_viewed() for _ in range(80)]
            during[40]["data"]["page"] = "/antrag\u0000x"
            await send(kafka_bootstrap, lane.usage_topic,
                       [Poison("v", lambda _g, e=e: js(e), (None,)) for e in during], lane.page_viewed, 0)
            # The batches fail while PostgreSQL is down; none of their records is set aside for it.
            await eventually(lambda: asyncio.sleep(0, failures(lane)), lambda n: n >= 3, timeout=60)
            assert [f for f in await read_all(kafka_bootstrap, [lane.usage_rejected])] == []

            await asyncio.to_thread(node.start)
            db = await asyncpg.connect(node.url)
            try:
                await settled(db, kafka_bootstrap, f"agg-{unique}", lane.usage_topic)
                assert await kpi(db, lane.ags, "page_views") == {"hour": 129, "day": 129, "month": 129}
            finally:
                await db.close()
            rejected = [f.record for f in await read_all(kafka_bootstrap, [lane.usage_rejected]) if f.record]
            # The contract refuses the NUL page; it is set aside only once the database is back (the rejection
            # and the offsets move in the same transaction).
            assert {(r.reason, r.event_id) for r in rejected} == {("invalid_event", during[40]["id"])}


def batches_seen(running: RunningApp) -> float:
    return sum(s.value for m in running.app.state.metrics.batch_size.collect() for s in m.samples
               if s.name.endswith("_count"))


class TestWorkflowDatabaseOutage:
    async def test_the_workflow_retries_an_outage_without_rejecting_and_applies_everything_after_it(
        self, wf_env: WfEnv, node: PostgresNode
    ) -> None:
        suffix = uuid.uuid4().hex[:8]
        group, rejected = f"wf-outage-{suffix}", f"application.events.rejected.outage-{suffix}"
        await ensure_topics(wf_env.kafka_bootstrap, (Topic(rejected, 1),))
        ags = random_ags()
        first = [submitted(ags, WOHNSITZ, DOCS) for _ in range(5)]
        second = [submitted(ags, WOHNSITZ, DOCS) for _ in range(10)]
        env = dataclasses.replace(wf_env, database_url=node.url)
        async with running_app(env, consumer_group=group, application_rejected_topic=rejected) as running:
            await env.publish(*first)
            await eventually(lambda: cases(env, [e["application_id"] for e in first]), lambda n: n == 5, timeout=60)

            await asyncio.to_thread(node.stop, "immediate")
            seen = batches_seen(running)
            await env.publish(*second)
            # The batch is tried again and again while PostgreSQL is down; nothing of it is set aside.
            await eventually(lambda: asyncio.sleep(0, batches_seen(running)), lambda n: n >= seen + 3, timeout=60)
            assert await read_all(wf_env.kafka_bootstrap, [rejected]) == []

            await asyncio.to_thread(node.start)
            ids = [e["application_id"] for e in first + second]
            await eventually(lambda: cases(env, ids), lambda n: n == 15, timeout=90)
            await drained(env, group)
        assert await read_all(wf_env.kafka_bootstrap, [rejected]) == []
