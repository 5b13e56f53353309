"""The aggregator's subscribers wired to the service, with FastStream's TestKafkaBroker and a fake unit of work:
a record on a subscribed topic reaches the handler, the service and the unit of work; what cannot be counted
reaches the rejected topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from faststream.kafka import KafkaBroker, TestKafkaBroker

from services.aggregator.handlers import build_router
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.settings import AggregatorSettings
from tests.factories import usage_event
from tests.unit.aggregator_fakes import FakeDatabase


def wired(db: FakeDatabase, settings: AggregatorSettings | None = None) -> tuple[KafkaBroker, list[dict[str, Any]]]:
    """A broker with the aggregator's router and a test subscriber collecting both rejected topics."""
    settings = settings or AggregatorSettings()
    router, _ = build_router(settings, db.begin, AggregatorMetrics.create())
    broker = KafkaBroker()
    broker.include_router(router)
    rejected: list[dict[str, Any]] = []

    @broker.subscriber(settings.rejected_topic, settings.workflow_rejected_topic)
    async def collect(body: dict[str, Any]) -> None:
        rejected.append(body)

    return broker, rejected


def workflow_event(kind: str = "workflow.case.opened") -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "type": kind, "source": "workflow", "time": datetime.now(UTC).isoformat(),
            "municipality": "06413000", "service": "99115005104000", "case_id": str(uuid.uuid4()),
            "application_id": "APP-1", "definition": "wohnsitz", "definition_version": 1}


class TestUsageSubscriber:
    async def test_a_usage_event_is_counted_and_its_position_stored(self) -> None:
        db = FakeDatabase()
        broker, rejected = wired(db)
        event = usage_event("usage.session.started")
        async with TestKafkaBroker(broker) as br:
            await br.publish(orjson.dumps(event), topic="usage.events.v1", key=b"06413000:99115005104000")
        assert db.value("day", "sessions_started") == 1
        assert set(db.ids) == {uuid.UUID(event["id"])}
        assert db.offsets.keys() == {("kp-aggregator", "usage.events.v1", 0)}
        assert rejected == []

    async def test_a_record_that_is_not_an_event_goes_to_the_rejected_topic(self) -> None:
        db = FakeDatabase()
        broker, rejected = wired(db)
        async with TestKafkaBroker(broker) as br:
            await br.publish(b"\xff not json", topic="usage.events.v1", key=b"k")
        assert [(r["reason"], r["consumer"], r["topic"]) for r in rejected] == [
            ("invalid_json", "aggregator/usage", "usage.events.v1")]
        assert db.kpis == {}
        assert db.commits == 1  # its position is committed: the partition moves on

    async def test_a_renamed_topic_is_the_one_subscribed(self) -> None:
        db = FakeDatabase()
        broker, _ = wired(db, AggregatorSettings(usage_topic="usage.test", consume_workflow=False))
        async with TestKafkaBroker(broker) as br:
            await br.publish(orjson.dumps(usage_event()), topic="usage.test")
        assert db.offsets.keys() == {("kp-aggregator", "usage.test", 0)}


class TestWorkflowSubscriber:
    async def test_a_workflow_event_is_counted_under_its_own_group(self) -> None:
        db = FakeDatabase()
        broker, rejected = wired(db)
        async with TestKafkaBroker(broker) as br:
            await br.publish(orjson.dumps(workflow_event()), topic="workflow.events.v1")
        assert db.value("hour", "cases_opened") == 1
        assert db.offsets.keys() == {("kp-aggregator-workflow", "workflow.events.v1", 0)}
        assert db.counts == {}  # daily type counts are a usage-event table
        assert rejected == []

    async def test_an_invalid_workflow_event_goes_to_the_workflow_rejected_topic(self) -> None:
        db = FakeDatabase()
        broker, rejected = wired(db)
        async with TestKafkaBroker(broker) as br:
            await br.publish(orjson.dumps({**workflow_event(), "municipality": "1"}), topic="workflow.events.v1")
        assert [(r["reason"], r["consumer"]) for r in rejected] == [("invalid_event", "aggregator/workflow")]
