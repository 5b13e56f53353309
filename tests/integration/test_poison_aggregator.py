"""The poison rule in the aggregator, through the real broker and PostgreSQL: every poison record of the corpus
lands in its rejected topic with its reason, the partitions move on by themselves, valid records count exactly."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from kp.local import LocalStack
from services.aggregator.app import create_app
from services.aggregator.settings import AggregatorSettings
from shared.kafka import Topic, ensure_topics
from shared.reference import extra_members
from tests.factories import usage_event
from tests.integration.poison_support import (
    KCAT,
    USAGE,
    WORKFLOW,
    Poison,
    check_outcomes,
    end_offsets,
    js,
    kcat_produce,
    read_rejected,
    send,
)
from tests.waiting import eventually


@dataclass
class AggLane:
    """One test's topics, consumer groups and municipality, with the aggregator running in-process."""

    bootstrap: str
    unique: str
    ags: str
    service: str
    app: FastAPI | None = None

    @property
    def usage_topic(self) -> str:
        return f"usage.events.poison-{self.unique}"

    @property
    def workflow_topic(self) -> str:
        return f"workflow.events.poison-{self.unique}"

    @property
    def usage_rejected(self) -> str:
        return f"usage.events.rejected.poison-{self.unique}"

    @property
    def workflow_rejected(self) -> str:
        return f"workflow.events.rejected.poison-{self.unique}"

    def settings(self, database_url: str) -> AggregatorSettings:
        # The lane's random keys are accepted as extra members, beside those other apps of this process use.
        municipalities, services = extra_members()
        return AggregatorSettings(
            extra_municipalities=tuple(sorted({*municipalities, self.ags})),
            extra_services=tuple(sorted({*services, self.service})),
            environment="test", kafka_bootstrap=self.bootstrap, database_url=database_url,
            usage_topic=self.usage_topic, workflow_topic=self.workflow_topic, rejected_topic=self.usage_rejected,
            workflow_rejected_topic=self.workflow_rejected, consumer_group=f"agg-{self.unique}",
            workflow_consumer_group=f"agg-wf-{self.unique}", max_batch_records=50, lag_refresh_interval_s=0.2,
            retry_backoff_max_s=0.5, db_pool_max=4,
        )

    def page_viewed(self) -> dict[str, Any]:
        return usage_event("usage.page.viewed", municipality=self.ags, service=self.service,
                           time=datetime.now(UTC) - timedelta(minutes=5))

    def case_opened(self) -> dict[str, Any]:
        return {"id": str(uuid.uuid4()), "type": "workflow.case.opened", "source": "kp-workflow",
                "time": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(), "municipality": self.ags,
                "service": self.service, "case_id": str(uuid.uuid4()),
                "application_id": f"APP-{uuid.uuid4().hex[:12]}", "definition": "wohnsitz-anmeldung",
                "definition_version": 1, "data": {}}


@pytest.fixture
async def agg(stack: LocalStack, kafka_bootstrap: str, database_url: str, unique: str) -> AsyncIterator[AggLane]:
    lane = AggLane(kafka_bootstrap, unique, "99" + f"{uuid.uuid4().int % 10**6:06d}",
                   f"99{uuid.uuid4().int % 10**12:012d}")
    await ensure_topics(kafka_bootstrap, (Topic(lane.usage_topic, 3), Topic(lane.workflow_topic, 2),
                                          Topic(lane.usage_rejected, 1), Topic(lane.workflow_rejected, 1)))
    app = create_app(lane.settings(database_url))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60):
        lane.app = app
        yield lane


async def positions(db: asyncpg.Connection, group: str, topic: str) -> dict[int, int]:
    rows = await db.fetch("SELECT partition, next_offset FROM agg_offsets WHERE consumer_group = $1 AND topic = $2",
                          group, topic)
    return {r["partition"]: r["next_offset"] for r in rows}


async def settled(db: asyncpg.Connection, bootstrap: str, group: str, topic: str) -> None:
    """Every record of the topic is behind the positions stored in PostgreSQL (nobody moved an offset)."""
    ends = {p: o for p, o in (await end_offsets(bootstrap, topic)).items() if o > 0}
    await eventually(lambda: positions(db, group, topic), lambda s: all(s.get(p, 0) >= o for p, o in ends.items()),
                     timeout=120, interval=0.25)


async def kpi(db: asyncpg.Connection, ags: str, metric: str) -> dict[str, int]:
    rows = await db.fetch("SELECT granularity, sum(value) AS v FROM kpi_values WHERE municipality = $1 "
                          "AND metric = $2 GROUP BY granularity", ags, metric)
    return {r["granularity"]: int(r["v"]) for r in rows}


def lag(app: FastAPI, topic: str) -> float:
    return sum(s.value for m in app.state.metrics.consumer_lag.collect() for s in m.samples
               if s.labels["topic"] == topic)


def rejected_metric(app: FastAPI, topic: str) -> dict[str, float]:
    return {s.labels["reason"]: s.value for m in app.state.metrics.rejected.collect() for s in m.samples
            if s.name.endswith("_total") and s.labels["topic"] == topic and s.value}


class TestUsageCorpus:
    async def test_every_poison_record_is_rejected_and_the_valid_ones_count_exactly(
        self, agg: AggLane, db: asyncpg.Connection
    ) -> None:
        sent = await send(agg.bootstrap, agg.usage_topic, USAGE, agg.page_viewed, valid_after_each=2)
        await settled(db, agg.bootstrap, f"agg-{agg.unique}", agg.usage_topic)

        must_reject = [s for s in sent if None not in s.case.outcomes]
        rejected = await read_rejected(agg.bootstrap, agg.usage_rejected, len(must_reject))
        applied = check_outcomes(sent, rejected, agg.usage_topic)
        n = len(applied)
        assert n >= 2 * len(USAGE)
        assert await kpi(db, agg.ags, "page_views") == {"hour": n, "day": n, "month": n}
        ours = [r for r in rejected if r.topic == agg.usage_topic]
        assert {r.consumer for r in ours} == {"aggregator/usage"}
        assert agg.app is not None
        assert sum(rejected_metric(agg.app, agg.usage_topic).values()) == len(ours)
        app = agg.app
        assert app is not None
        await eventually(lambda: asyncio.sleep(0, lag(app, agg.usage_topic)), lambda v: v == 0)

    async def test_the_record_postgres_refuses_is_isolated_from_a_full_batch(
        self, agg: AggLane, db: asyncpg.Connection
    ) -> None:
        # A record the contract accepts but PostgreSQL refuses (here a trigger raises a data exception for one
        # event id, standing in for any value check the contract does not know): the batches holding it are
        # split, the other 120 count, the bad one lands in the rejected topic with the database's reason.
        events = [agg.page_viewed() for _ in range(121)]
        refused = events[60]["id"]
        await db.execute(f"""
            CREATE OR REPLACE FUNCTION refuse_{agg.unique}() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF NEW.event_id = '{refused}'::uuid THEN
                RAISE EXCEPTION 'value refused by a check' USING ERRCODE = '22023';
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_{agg.unique} BEFORE INSERT ON agg_processed_events
              FOR EACH ROW EXECUTE FUNCTION refuse_{agg.unique}();""")
        try:
            cases = [Poison(f"e{i}", lambda _g, e=e: js(e), (None,)) for i, e in enumerate(events)]
            cases[60] = Poison("refused by PostgreSQL", lambda _g, e=events[60]: js(e), ("database_refused",))
            sent = await send(agg.bootstrap, agg.usage_topic, cases, agg.page_viewed, valid_after_each=0)
            await settled(db, agg.bootstrap, f"agg-{agg.unique}", agg.usage_topic)
            rejected = await read_rejected(agg.bootstrap, agg.usage_rejected, 1)
            check_outcomes(sent, rejected, agg.usage_topic)
            assert await kpi(db, agg.ags, "page_views") == {"hour": 120, "day": 120, "month": 120}
            (bad,) = [r for r in rejected if r.topic == agg.usage_topic]
            assert bad.replayable
            assert bad.event_id == refused
        finally:
            await db.execute(f"DROP TRIGGER refuse_{agg.unique} ON agg_processed_events;"
                             f"DROP FUNCTION refuse_{agg.unique}()")


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (scripts/setup-system.sh)")
class TestHeaderNames:
    async def test_header_names_that_are_not_utf8_neither_stall_the_partition_nor_lose_records(
        self, agg: AggLane, db: asyncpg.Connection
    ) -> None:
        # kcat writes header names as raw bytes, which aiokafka alone cannot unpack: a valid event with such a
        # name counts, an invalid one is rejected with the name's bytes kept, the valid records after them count.
        key = f"{agg.ags}:{agg.service}".encode()
        await kcat_produce(agg.bootstrap, agg.usage_topic, 0, js(agg.page_viewed()), key=key,
                           headers=[(b"\xff\xfe", b"v"), (b"trace", b"t1")])
        await kcat_produce(agg.bootstrap, agg.usage_topic, 0, b"not json", key=key,
                           headers=[(b"caf\xe9", b"\x01\xff")])
        after = [Poison(f"after {i}", js, (None,)) for i in range(5)]
        await send(agg.bootstrap, agg.usage_topic, after, agg.page_viewed, valid_after_each=0)
        await settled(db, agg.bootstrap, f"agg-{agg.unique}", agg.usage_topic)

        assert await kpi(db, agg.ags, "page_views") == {"hour": 6, "day": 6, "month": 6}
        (bad,) = [r for r in await read_rejected(agg.bootstrap, agg.usage_rejected, 1) if r.topic == agg.usage_topic]
        assert (bad.reason, bad.partition, bad.offset, bad.raw_value()) == ("invalid_json", 0, 1, b"not json")
        assert [(k.encode("utf-8", "surrogateescape"), v) for k, v in bad.raw_headers()] == [(b"caf\xe9", b"\x01\xff")]
        app = agg.app
        assert app is not None
        await eventually(lambda: asyncio.sleep(0, lag(app, agg.usage_topic)), lambda v: v == 0)


class TestWorkflowCorpus:
    async def test_every_poison_workflow_event_is_rejected_and_the_valid_ones_count_exactly(
        self, agg: AggLane, db: asyncpg.Connection
    ) -> None:
        sent = await send(agg.bootstrap, agg.workflow_topic, WORKFLOW, agg.case_opened)
        await settled(db, agg.bootstrap, f"agg-wf-{agg.unique}", agg.workflow_topic)
        must_reject = [s for s in sent if None not in s.case.outcomes]
        rejected = await read_rejected(agg.bootstrap, agg.workflow_rejected, len(must_reject))
        applied = check_outcomes(sent, rejected, agg.workflow_topic)
        n = len(applied)
        assert await kpi(db, agg.ags, "cases_opened") == {"hour": n, "day": n, "month": n}
        assert {r.consumer for r in rejected} == {"aggregator/workflow"}

