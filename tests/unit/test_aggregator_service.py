"""The aggregator's batch orchestration with a fake unit of work: exactly-once counting, dedup re-fold,
rejections, offsets stored with the effect, the poison rule around a batch, and the metrics of each outcome."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError

from services.aggregator import service
from services.aggregator.fold import Record
from services.aggregator.metrics import AggregatorMetrics
from shared.ckm import record_key
from tests.factories import usage_event
from tests.unit.aggregator_fakes import FakeDatabase, usage_stream
from tests.waiting import eventually

TOPIC = "usage.events.v1"
NOW = datetime.now(UTC)


def rec(payload: dict[str, Any] | bytes | None, offset: int, partition: int = 0) -> Record:
    value = payload if isinstance(payload, bytes | None) else orjson.dumps(payload)
    return Record(TOPIC, partition, offset, value)  # type: ignore[arg-type]  # None: a tombstone


def started(n: int, **kw: Any) -> list[dict[str, Any]]:
    return [usage_event("usage.session.started", time=NOW - timedelta(minutes=1), **kw) for _ in range(n)]


class Published:
    """The rejected topic: what was sent to it, decoded."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[dict[str, Any]] = []
        self.fail = fail

    async def __call__(self, key: bytes, value: bytes) -> None:
        if self.fail:
            raise KafkaConnectionError("broker unreachable")
        self.records.append(orjson.loads(value))

    def reasons(self) -> dict[int, str]:
        return {r["offset"]: r["reason"] for r in self.records}


def sample(metrics: AggregatorMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"topic": TOPIC, **labels}) or 0.0


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase()


class TestApplyBatch:
    async def test_a_batch_counts_each_event_once_and_stores_the_offsets_with_the_effect(self, db: FakeDatabase
                                                                                         ) -> None:
        events = started(5)
        records = [rec(e, 10 + i, partition=i % 2) for i, e in enumerate(events)]
        outcome = await service.apply_batch(usage_stream(), records, db.begin, Published())
        assert db.commits == 1
        assert db.value("hour", "sessions_started") == db.value("day", "sessions_started") == 5
        assert db.value("month", "sessions_started") == 5
        assert sum(db.counts.values()) == 5
        assert set(db.ids) == {uuid.UUID(e["id"]) for e in events}
        assert db.offsets == {("kp-aggregator", TOPIC, 0): 15, ("kp-aggregator", TOPIC, 1): 14}
        assert (outcome.records, outcome.counted, outcome.duplicates, outcome.rejected) == (5, 5, 0, ())

    @pytest.mark.parametrize("chunk_records", [1, 3, 4000])
    async def test_events_counted_before_are_folded_out_again(self, db: FakeDatabase, chunk_records: int) -> None:
        events = started(6)
        stream = usage_stream(chunk_records=chunk_records)
        await service.apply_batch(stream, [rec(e, i) for i, e in enumerate(events[:4])], db.begin, Published())
        # a redelivery of the first four, with two new events behind them
        outcome = await service.apply_batch(stream, [rec(e, 4 + i) for i, e in enumerate(events)], db.begin,
                                            Published())
        assert db.value("day", "sessions_started") == 6
        assert db.value("day", "channel", "web") == 6
        assert sum(db.counts.values()) == 6
        assert (outcome.counted, outcome.duplicates) == (2, 4)
        assert db.offsets[("kp-aggregator", TOPIC, 0)] == 10

    async def test_the_same_id_twice_in_a_batch_counts_once(self, db: FakeDatabase) -> None:
        (e,) = started(1)
        outcome = await service.apply_batch(usage_stream(chunk_records=1), [rec(e, 0), rec(e, 1)], db.begin,
                                            Published())
        assert db.value("day", "sessions_started") == 1
        assert (outcome.counted, outcome.duplicates) == (1, 1)

    async def test_a_redelivery_changes_neither_count_nor_key_sum(self, db: FakeDatabase) -> None:
        events = started(2)
        stream, batch = usage_stream(), [rec(e, i) for i, e in enumerate(events)]
        await service.apply_batch(stream, batch, db.begin, Published())
        once = dict(db.kpis)
        await service.apply_batch(stream, batch, db.begin, Published())
        assert db.kpis == once
        day = next(k for k in db.kpis if k[0] == "day" and k[4] == "sessions_started")
        assert db.kpis[day] == (2, sum(record_key(stream.secret, uuid.UUID(e["id"])) for e in events) % 2**32)

    async def test_rejections_are_published_and_their_positions_committed(self, db: FakeDatabase) -> None:
        good = started(1)[0]
        late = usage_event(time=NOW - timedelta(days=8))
        records = [rec(b"\xff not json", 0), rec(good, 1), rec(late, 2), rec(None, 3),
                   rec(usage_event(time=NOW + timedelta(hours=1)), 4)]
        published = Published()
        outcome = await service.apply_batch(usage_stream(), records, db.begin, published)
        assert published.reasons() == {0: "invalid_json", 2: "too_late", 3: "tombstone", 4: "from_future"}
        assert {r["consumer"] for r in published.records} == {"aggregator/usage"}
        assert db.value("day", "sessions_started") == 1
        assert db.offsets == {("kp-aggregator", TOPIC, 0): 5}
        assert sorted(outcome.rejected) == ["from_future", "invalid_json", "tombstone", "too_late"]

    async def test_nothing_is_committed_when_a_rejection_cannot_be_published(self, db: FakeDatabase) -> None:
        with pytest.raises(KafkaConnectionError):
            await service.apply_batch(usage_stream(), [rec(started(1)[0], 0), rec(b"{}", 1)], db.begin,
                                      Published(fail=True))
        assert (db.commits, db.rollbacks) == (0, 1)
        assert (db.kpis, db.ids, db.offsets) == ({}, {}, {})

    async def test_workflow_steps_are_ignored_and_need_no_dedup_entry(self, db: FakeDatabase) -> None:
        from services.aggregator import fold
        from shared.events.workflow import workflow_event_adapter

        stream = usage_stream(topic="workflow.events.v1")
        stream.adapter, stream.contributions, stream.daily_counts = (
            workflow_event_adapter, fold.workflow_contributions, False)
        body = {"source": "workflow", "time": NOW.isoformat(), "municipality": "06413000",
                "service": "99115005104000", "case_id": str(uuid.uuid4()), "application_id": "APP-1",
                "definition": "wohnsitz", "definition_version": 1}
        opened_id = str(uuid.uuid4())
        opened = {"id": opened_id, "type": "workflow.case.opened", **body}
        step = {"id": str(uuid.uuid4()), "type": "workflow.step.completed", **body,
                "data": {"step": "ack", "duration_ms": 5}}
        outcome = await service.apply_batch(stream, [rec(opened, 0), rec(step, 1)], db.begin, Published())
        assert (outcome.counted, outcome.ignored) == (1, 1)
        assert set(db.ids) == {uuid.UUID(opened_id)}
        assert db.value("hour", "cases_opened") == 1
        assert db.counts == {}


class TestConsumeBatch:
    async def test_a_good_batch_is_one_transaction(self, db: FakeDatabase) -> None:
        await service.consume_batch(usage_stream(), [rec(e, i) for i, e in enumerate(started(500))], db.begin,
                                    Published())
        assert (db.commits, db.rollbacks) == (1, 0)
        assert db.value("day", "sessions_started") == 500

    async def test_an_infrastructure_error_is_raised_without_splitting(self, db: FakeDatabase) -> None:
        stream = usage_stream()
        db.down = True
        with pytest.raises(Exception, match="starting up"):
            await service.consume_batch(stream, [rec(e, i) for i, e in enumerate(started(10))], db.begin,
                                        Published())
        assert stream.failures == 1
        assert sample(stream.metrics, "kp_aggregator_batch_failures_total") == 1
        assert sample(stream.metrics, "kp_aggregator_batch_splits_total") == 0
        db.down = False
        await service.consume_batch(stream, [rec(e, i) for i, e in enumerate(started(10))], db.begin, Published())
        assert stream.failures == 0

    async def test_the_record_postgres_refuses_is_isolated_and_the_rest_counted(self, db: FakeDatabase) -> None:
        events = started(200)
        db.refused = {uuid.UUID(events[77]["id"])}
        stream, published = usage_stream(chunk_records=64), Published()
        await service.consume_batch(stream, [rec(e, i) for i, e in enumerate(events)], db.begin, published)
        assert published.reasons() == {77: "database_refused"}
        assert published.records[0]["event_id"] == events[77]["id"]
        assert db.value("day", "sessions_started") == 199
        assert db.offsets == {("kp-aggregator", TOPIC, 0): 200}
        assert db.rollbacks <= 2 * 8 + 1
        assert sample(stream.metrics, "kp_aggregator_batch_splits_total") >= 1
        assert sample(stream.metrics, "kp_aggregator_rejected_total", reason="database_refused") == 1
        assert sample(stream.metrics, "kp_aggregator_events_total", outcome="counted") == 199
        assert sample(stream.metrics, "kp_aggregator_events_total", outcome="rejected") == 1

    async def test_an_empty_batch_changes_nothing(self, db: FakeDatabase) -> None:
        await service.consume_batch(usage_stream(), [], db.begin, Published())
        assert (db.commits, db.rollbacks) == (0, 0)
        outcome = await service.apply_batch(usage_stream(), [], db.begin, Published())
        assert (outcome.records, db.offsets) == (0, {})


class TestMetrics:
    async def test_one_batch_outcome_is_counted_by_outcome_and_reason(self, db: FakeDatabase) -> None:
        stream = usage_stream()
        events = started(4)
        await service.consume_batch(stream, [rec(e, i) for i, e in enumerate(events[:1])], db.begin, Published())
        late = usage_event(time=NOW - timedelta(hours=2))
        records = [*(rec(e, 1 + i) for i, e in enumerate(events)), rec(events[3], 5), rec(late, 6),
                   rec(b"[]", 7)]
        await service.consume_batch(stream, records, db.begin, Published())
        m = stream.metrics
        assert sample(m, "kp_aggregator_events_total", outcome="counted") == 1 + 3 + 1
        assert sample(m, "kp_aggregator_events_total", outcome="duplicate") == 2  # counted before; twice in batch
        assert sample(m, "kp_aggregator_duplicates_skipped_total") == 2
        assert sample(m, "kp_aggregator_events_total", outcome="rejected") == 1
        assert sample(m, "kp_aggregator_rejected_total", reason="invalid_event") == 1
        assert sample(m, "kp_aggregator_late_corrections_total") >= 1  # the event two hours ago
        assert sample(m, "kp_aggregator_batch_size_count") == 2
        assert sample(m, "kp_aggregator_batch_size_sum") == 1 + 7
        assert sample(m, "kp_aggregator_commit_seconds_count") == 2


class TestPartitions:
    async def test_assigned_partitions_resume_from_the_stored_positions(self, db: FakeDatabase) -> None:
        db.offsets = {("kp-aggregator", TOPIC, 0): 40, ("kp-aggregator", TOPIC, 3): 7,
                      ("other-group", TOPIC, 1): 9}
        stream = usage_stream()
        assert await service.resume_positions(stream, db.begin, {0, 1}) == {0: 40}
        assert stream.positions == {(TOPIC, 0): 40}
        await service.release_partitions(stream, [0])
        assert stream.positions == {}

    async def test_the_dedup_cleanup_forgets_ids_older_than_the_horizon_in_chunks(self, db: FakeDatabase) -> None:
        keep = timedelta(days=8)
        old = {uuid.uuid4(): (NOW - keep - timedelta(hours=h + 1)).timestamp() for h in range(5)}
        kept = {uuid.uuid4(): NOW.timestamp()}
        db.ids = {**old, **kept}
        metrics = AggregatorMetrics.create()
        task = asyncio.create_task(service.run_dedup_cleanup(db.begin, keep, 3600, 2, metrics))
        try:
            await eventually(lambda: _value(db.ids), lambda ids: set(ids) == set(kept), timeout=5, interval=0.01)
        finally:
            task.cancel()
        assert db.commits == 3  # 2 + 2 + 1
        assert metrics.registry.get_sample_value("kp_aggregator_dedup_ids_deleted_total") == 5


async def _value(x: Any) -> Any:
    return x
