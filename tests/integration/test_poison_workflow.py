"""The poison rule in the workflow consumer, through the real broker and PostgreSQL: invalid application events
land in the application rejected topic with reason, position and payload; an event whose transaction fails
alone is isolated from its lane and rejected; every valid application opens its case."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer
from typer.testing import CliRunner

from kp.cli import app
from services.workflow.repository import add_outbox
from services.workflow.service import Engine
from shared.kafka import Topic, ensure_topics
from tests.integration.poison_support import (
    APPLICATION,
    KCAT,
    Poison,
    check_outcomes,
    committed,
    end_offsets,
    js,
    kcat_produce,
    read_rejected,
    send,
)
from tests.integration.test_workflow_support import RunningApp, WfEnv, random_ags, running_app, submitted, wf_env
from tests.waiting import eventually

__all__ = ["wf_env"]

WOHNSITZ = "99115005104000"
DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]


class Poisoned:
    """The running workflow app with its own consumer group and rejected topic."""

    def __init__(self, running: RunningApp, group: str, rejected_topic: str, relay_rejected_topic: str) -> None:
        self.running, self.group, self.rejected_topic = running, group, rejected_topic
        self.relay_rejected_topic = relay_rejected_topic

    @property
    def engine(self) -> Engine:
        engine: Engine = self.running.app.state.engine
        return engine


@pytest.fixture(scope="module")
async def wf(wf_env: WfEnv) -> AsyncIterator[Poisoned]:
    suffix = uuid.uuid4().hex[:8]
    group, rejected = f"wf-poison-{suffix}", f"application.events.rejected.test-{suffix}"
    relay_rejected = f"workflow.events.rejected.test-{suffix}"
    await ensure_topics(wf_env.kafka_bootstrap, (Topic(rejected, 1), Topic(relay_rejected, 1)))
    async with running_app(wf_env, consumer_group=group, application_rejected_topic=rejected,
                           workflow_rejected_topic=relay_rejected, batch_max_records=50) as running:
        yield Poisoned(running, group, rejected, relay_rejected)


async def cases(env: WfEnv, application_ids: list[str]) -> int:
    conn = await asyncpg.connect(env.database_url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM wf_cases WHERE application_id = ANY($1)",
                                       application_ids))
    finally:
        await conn.close()


async def drained(env: WfEnv, group: str) -> None:
    """The consumer group has committed every record of the application topic (nobody moved an offset)."""
    ends = await end_offsets(env.kafka_bootstrap, env.application_topic)

    async def probe() -> dict[int, int]:
        return await committed(env.kafka_bootstrap, group, env.application_topic)

    await eventually(probe, lambda c: all(c.get(p, 0) >= o for p, o in ends.items()), timeout=120, interval=0.3)


class TestApplicationCorpus:
    async def test_every_poison_event_is_rejected_and_every_valid_application_opens_a_case(
        self, wf: Poisoned, wf_env: WfEnv
    ) -> None:
        ags = random_ags()
        sent = await send(wf_env.kafka_bootstrap, wf_env.application_topic, APPLICATION,
                          lambda: submitted(ags, WOHNSITZ, DOCS))
        await drained(wf_env, wf.group)
        must_reject = [s for s in sent if None not in s.case.outcomes]
        rejected = await read_rejected(wf_env.kafka_bootstrap, wf.rejected_topic, len(must_reject))
        applied = check_outcomes(sent, rejected, wf_env.application_topic)
        ids = [s.good["application_id"] for s in applied]
        assert await cases(wf_env, ids) == len(ids)
        ours = [r for r in rejected if r.topic == wf_env.application_topic]
        assert {r.consumer for r in ours} == {"workflow/application"}
        assert all(r.origin == "workflow" and r.offset is not None for r in ours)
        counted = {s.labels["reason"]: s.value for m in wf.engine.metrics.rejected.collect() for s in m.samples
                   if s.name.endswith("_total") and s.value}
        assert sum(counted.values()) >= len(ours)


class TestIsolation:
    async def test_an_event_that_fails_alone_is_rejected_and_its_lane_is_applied(
        self, wf: Poisoned, wf_env: WfEnv, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # A failure nobody classified (as a bug in one step would raise) for one application only.
        ags = random_ags()
        events = [submitted(ags, WOHNSITZ, DOCS) for _ in range(30)]
        bad = events[13]["application_id"]
        original: Callable[..., Any] = wf.engine.on_application_event

        async def failing(uow: Any, event: Any) -> str:
            if event.application_id == bad:
                raise RuntimeError("unexpected state")
            result: str = await original(uow, event)
            return result

        monkeypatch.setattr(wf.engine, "on_application_event", failing)
        cases_ = [Poison(f"e{i}", lambda _g, e=e: js(e), ("unprocessable",) if i == 13 else (None,))
                  for i, e in enumerate(events)]
        sent = await send(wf_env.kafka_bootstrap, wf_env.application_topic, cases_, lambda: {},
                          valid_after_each=0)
        for s, e in zip(sent, events, strict=True):
            s.good.update(e)
        await drained(wf_env, wf.group)
        rejected = await read_rejected(wf_env.kafka_bootstrap, wf.rejected_topic, 1)
        check_outcomes(sent, [r for r in rejected if r.event_id in {e["id"] for e in events}],
                       wf_env.application_topic)
        assert await cases(wf_env, [e["application_id"] for e in events]) == 29
        (refused,) = [r for r in rejected if r.event_id == events[13]["id"]]
        assert refused.errors[0]["type"] == "RuntimeError"
        assert refused.replayable


@pytest.mark.skipif(KCAT is None, reason="kcat is not installed (scripts/setup-system.sh)")
class TestHeaderNames:
    async def test_header_names_that_are_not_utf8_neither_stall_the_partition_nor_lose_applications(
        self, wf: Poisoned, wf_env: WfEnv
    ) -> None:
        # kcat writes header names as raw bytes, which aiokafka alone cannot unpack: a valid application with
        # such a name opens its case, an invalid one is rejected with the name's bytes kept, the ones after count.
        ags = random_ags()
        first = submitted(ags, WOHNSITZ, DOCS)
        await kcat_produce(wf_env.kafka_bootstrap, wf_env.application_topic, 0, js(first),
                           key=f"{ags}:{WOHNSITZ}".encode(), headers=[(b"\xff\xfe", b"v")])
        marker = f"not json {uuid.uuid4().hex}".encode()
        await kcat_produce(wf_env.kafka_bootstrap, wf_env.application_topic, 0, marker, key=b"foreign",
                           headers=[(b"\xc3\x28", b"\x01\xff"), (b"ok", b"1")])
        after = [submitted(ags, WOHNSITZ, DOCS) for _ in range(5)]
        await wf_env.publish(*after)
        await drained(wf_env, wf.group)

        assert await cases(wf_env, [e["application_id"] for e in [first, *after]]) == 6
        rejected = await eventually(lambda: read_rejected(wf_env.kafka_bootstrap, wf.rejected_topic, 1),
                                    lambda rs: any(r.raw_value() == marker for r in rs))
        (bad,) = [r for r in rejected if r.raw_value() == marker]
        assert (bad.reason, bad.topic, bad.partition) == ("invalid_json", wf_env.application_topic, 0)
        assert [(k.encode("utf-8", "surrogateescape"), v) for k, v in bad.raw_headers()] == [
            (b"\xc3\x28", b"\x01\xff"), (b"ok", b"1")]


class TestReplay:
    async def test_a_record_rejected_by_a_bug_is_replayed_after_the_fix_and_applied_once(
        self, wf: Poisoned, wf_env: WfEnv, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        ags = random_ags()
        event = submitted(ags, WOHNSITZ, DOCS)
        original: Callable[..., Any] = wf.engine.on_application_event

        async def failing(uow: Any, e: Any) -> str:
            if e.application_id == event["application_id"]:
                raise RuntimeError("bug in a step")
            result: str = await original(uow, e)
            return result

        monkeypatch.setattr(wf.engine, "on_application_event", failing)
        await wf_env.publish(event, submitted(ags, WOHNSITZ, DOCS))
        await drained(wf_env, wf.group)
        await eventually(lambda: read_rejected(wf_env.kafka_bootstrap, wf.rejected_topic, 1),
                         lambda rs: any(r.event_id == event["id"] for r in rs))
        assert await cases(wf_env, [event["application_id"]]) == 0

        monkeypatch.undo()  # the fix is deployed
        args = ["rejected", "replay", "--bootstrap", wf_env.kafka_bootstrap, "--topic", wf.rejected_topic,
                "--reason", "unprocessable"]
        dry = await asyncio.to_thread(CliRunner().invoke, app, args)
        assert dry.exit_code == 0, dry.output
        assert "would replay" in dry.output
        assert await cases(wf_env, [event["application_id"]]) == 0
        for _ in range(2):  # replaying twice applies it once (the inbox dedups the event id)
            done = await asyncio.to_thread(CliRunner().invoke, app, [*args, "--yes"])
            assert done.exit_code == 0, done.output
            assert "replayed" in done.output
        await eventually(lambda: cases(wf_env, [event["application_id"]]), lambda n: n == 1)
        await drained(wf_env, wf.group)
        assert await cases(wf_env, [event["application_id"]]) == 1

        listed = await asyncio.to_thread(CliRunner().invoke, app, [
            "rejected", "list", "--bootstrap", wf_env.kafka_bootstrap, "--topic", wf.rejected_topic, "--json"])
        assert listed.exit_code == 0, listed.output
        shown = await asyncio.to_thread(CliRunner().invoke, app, [
            "rejected", "show", wf_env.application_topic, *_position(listed.output, event["id"]),
            "--bootstrap", wf_env.kafka_bootstrap, "--topic", wf.rejected_topic])
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.output)["errors"][0]["msg"] == "bug in a step"


def _position(listing: str, event_id: str) -> list[str]:
    for line in listing.splitlines():
        if line.startswith("{") and (doc := json.loads(line))["event_id"] == event_id:
            return [str(doc["partition"]), str(doc["offset"])]
    raise AssertionError(f"{event_id} not listed")


class TestRelay:
    async def test_an_event_larger_than_the_broker_accepts_is_set_aside_and_the_rest_is_published(
        self, wf: Poisoned, wf_env: WfEnv
    ) -> None:
        marker = uuid.uuid4().hex
        small = [js({"marker": marker, "n": n}) for n in range(3)]
        big = js({"marker": marker, "pad": "x" * 1_200_000})
        conn = await asyncpg.connect(wf_env.database_url)
        try:
            await add_outbox(conn, [(wf_env.workflow_topic, b"k1", [small[0], big, small[1]]),
                                    (wf_env.workflow_topic, b"k2", [small[2]])])
            rows = await eventually(
                lambda: conn.fetch("SELECT published_at, rejected_reason FROM wf_outbox "
                                   "WHERE convert_from((coalesce(payloads, ARRAY[payload]))[1], 'UTF8') LIKE $1",
                                   f"%{marker}%"),
                lambda rs: len(rs) == 2 and all(r["published_at"] for r in rs))
        finally:
            await conn.close()
        assert sorted(r["rejected_reason"] or "" for r in rows) == ["", "oversize"]

        (rejected,) = await read_rejected(wf_env.kafka_bootstrap, wf.relay_rejected_topic, 1)
        assert rejected.reason == "oversize"
        assert rejected.origin == "relay"
        assert rejected.topic == wf_env.workflow_topic
        assert rejected.raw_bytes == len(big)
        assert rejected.raw_key() == b"k1"
        published = await markers(wf_env.kafka_bootstrap, wf_env.workflow_topic, marker, 3)
        assert sorted(published) == sorted(small)


async def markers(bootstrap: str, topic: str, marker: str, expected: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=f"read-{uuid.uuid4().hex}", max_partition_fetch_bytes=2_000_000)
    await consumer.start()
    seen: list[bytes] = []
    try:
        async def poll() -> list[bytes]:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                seen.extend(r.value for r in records if r.value and marker.encode() in r.value)
            return seen

        return await eventually(poll, lambda s: len(s) >= expected)
    finally:
        await consumer.stop()
