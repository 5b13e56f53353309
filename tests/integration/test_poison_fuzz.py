"""Fuzz: random records (bytes, JSON, mutated events; random keys and headers) written to each consumed topic,
interleaved with valid events. The consumers never stall (their positions reach the partition ends by
themselves), every random record is either rejected or a valid event, and the valid totals are exact."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from asgi_lifespan import LifespanManager
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from kp.local import LocalStack
from kp.rejected_cmd import read_all
from services.aggregator.app import create_app
from shared.events import application_event_adapter, usage_event_adapter
from shared.events.workflow import workflow_event_adapter
from shared.kafka import Topic, ensure_topics
from tests.integration.poison_support import Poison, send
from tests.integration.test_poison_aggregator import AggLane, kpi, settled
from tests.integration.test_poison_workflow import cases, drained
from tests.integration.test_workflow_support import WfEnv, random_ags, running_app, submitted, wf_env

__all__ = ["wf_env"]

WOHNSITZ = "99115005104000"
DOCS = ["wohnungsgeberbestaetigung", "ausweisdokument"]

texts = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)
scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | texts
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
                           max_leaves=12)
keys = st.none() | st.binary(max_size=40)
headers = st.lists(st.tuples(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12),
                             st.binary(max_size=40)), max_size=4)


def mutated(field_names: list[str]) -> st.SearchStrategy[tuple[str, Any]]:
    """(field, new value) to set on a valid event: top-level or in `data`, any JSON value or text."""
    return st.tuples(st.sampled_from(field_names), json_values | texts)


@st.composite
def record(draw: st.DrawFn, field_names: list[str]) -> tuple[str, Any, bytes | None, list[tuple[str, bytes]]]:
    """A random record: kind ('raw' bytes / value, or 'mutate' a valid event), payload, key, headers."""
    kind = draw(st.sampled_from(["bytes", "json", "mutate", "none"]))
    payload: Any
    if kind == "bytes":
        payload = draw(st.binary(max_size=300))
    elif kind == "json":
        payload = orjson.dumps(draw(json_values))
    elif kind == "mutate":
        payload = draw(mutated(field_names))
    else:
        payload = None
    key = draw(keys)
    return kind, payload, b"" if payload is None and key is None else key, draw(headers)


class Apps:
    def __init__(self, agg: AggLane, wf_group: str, rejected: dict[str, str]) -> None:
        self.agg, self.wf_group, self.rejected = agg, wf_group, rejected


@pytest.fixture(scope="module")
async def apps(stack: LocalStack, kafka_bootstrap: str, database_url: str, wf_env: WfEnv) -> AsyncIterator[Apps]:
    unique = uuid.uuid4().hex[:12]
    agg = AggLane(kafka_bootstrap, unique, random_ags(), f"99{uuid.uuid4().int % 10**12:012d}")
    app_rejected = f"application.events.rejected.fuzz-{unique}"
    await ensure_topics(kafka_bootstrap, (Topic(agg.usage_topic, 3), Topic(agg.workflow_topic, 2),
                                          Topic(agg.usage_rejected, 1), Topic(agg.workflow_rejected, 1),
                                          Topic(app_rejected, 1)))
    group = f"wf-fuzz-{unique}"
    app = create_app(agg.settings(database_url))
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60), \
            running_app(wf_env, consumer_group=group, application_rejected_topic=app_rejected, batch_max_records=50):
        agg.app = app
        yield Apps(agg, group, {agg.usage_topic: agg.usage_rejected, agg.workflow_topic: agg.workflow_rejected,
                                wf_env.application_topic: app_rejected})


def build(kind: str, payload: Any, good: dict[str, Any]) -> bytes | None:
    if kind != "mutate":
        return payload  # type: ignore[no-any-return]
    name, value = payload
    doc = {**good, "data": dict(good["data"])}
    if name.startswith("data."):
        doc["data"][name.removeprefix("data.")] = value
    else:
        doc[name] = value
    return orjson.dumps(doc)


def valid_for(adapter: Any, value: bytes | None, ags: str) -> bool:
    try:
        return value is not None and adapter.validate_json(value).municipality == ags
    except ValidationError:
        return False


USAGE_FIELDS = ["id", "type", "schema_version", "source", "time", "municipality", "service", "session", "data",
                "extra", "data.page", "data.device", "data.referrer"]
WORKFLOW_FIELDS = ["id", "type", "time", "municipality", "case_id", "application_id", "definition",
                   "definition_version", "data", "data.extra"]
APPLICATION_FIELDS = ["id", "type", "time", "municipality", "service", "application_id", "data", "data.channel",
                      "data.documents", "data.fee_cents"]


class TestFuzz:
    @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck),
              phases=(Phase.explicit, Phase.reuse, Phase.generate))  # no shrinking: each example costs seconds
    @given(usage=st.lists(record(USAGE_FIELDS), min_size=1, max_size=8),
           workflow=st.lists(record(WORKFLOW_FIELDS), min_size=1, max_size=6),
           application=st.lists(record(APPLICATION_FIELDS), min_size=1, max_size=6))
    async def test_random_records_never_stall_a_consumer_and_valid_totals_stay_exact(
        self, apps: Apps, wf_env: WfEnv, db: asyncpg.Connection, usage: list[Any], workflow: list[Any],
        application: list[Any],
    ) -> None:
        agg = apps.agg
        ags = random_ags()  # this example's municipality: totals of earlier examples do not mix in
        lane = AggLane(agg.bootstrap, agg.unique, ags, agg.service)
        flows = [
            (agg.usage_topic, usage, lane.page_viewed, usage_event_adapter),
            (agg.workflow_topic, workflow, lane.case_opened, workflow_event_adapter),
            (wf_env.application_topic, application, lambda: submitted(ags, WOHNSITZ, DOCS),
             application_event_adapter),
        ]
        sent_by_topic = {}
        for topic, records, good, _ in flows:
            cases_ = []
            for kind, payload, key, hdrs in records:
                g = good()
                value = build(kind, payload, g)
                cases_.append(Poison(kind, lambda _g, v=value: v, (), key=key, headers=hdrs))
            sent_by_topic[topic] = await send(agg.bootstrap, topic, cases_, good, valid_after_each=1)

        await settled(db, agg.bootstrap, f"agg-{agg.unique}", agg.usage_topic)
        await settled(db, agg.bootstrap, f"agg-wf-{agg.unique}", agg.workflow_topic)
        await drained(wf_env, apps.wf_group)

        expected: dict[str, int] = {}
        for topic, _, _, adapter in flows:
            sent = sent_by_topic[topic]
            randoms = [s for s in sent if s.case.name != "valid"]
            # Rejections are acknowledged before positions move, so all of them are in the topic by now.
            rejected = [f.record for f in await read_all(agg.bootstrap, [apps.rejected[topic]]) if f.record]
            at = {(r.partition, r.offset) for r in rejected if r.topic == topic}
            lost = [s.case.name for s in randoms if (s.partition, s.offset) not in at
                    and not _valid_json_event(adapter, s.case.value(s.good))]
            assert not lost, f"{topic}: records neither rejected nor valid: {lost}"
            assert not [s for s in sent if s.case.name == "valid" and (s.partition, s.offset) in at]
            expected[topic] = sum(1 for s in sent if (s.partition, s.offset) not in at
                                  and valid_for(adapter, s.case.value(s.good), ags))

        n_usage, n_wf = expected[agg.usage_topic], expected[agg.workflow_topic]
        assert (await kpi(db, ags, "page_views")).get("day", 0) == n_usage
        assert (await kpi(db, ags, "cases_opened")).get("day", 0) == n_wf
        fillers = [s.good["application_id"] for s in sent_by_topic[wf_env.application_topic]
                   if s.case.name == "valid"]
        assert await cases(wf_env, fillers) == len(fillers)


def _valid_json_event(adapter: Any, value: bytes | None) -> bool:
    """Whether the record is a valid event at all (for any municipality)."""
    try:
        adapter.validate_json(value or b"")
    except ValidationError:
        return False
    return value is not None
