"""KPIs through real Kafka and PostgreSQL: every metric on a hand-checked dataset, late events, rejections."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson
import pytest

from kp.local import ServiceProcess
from services.aggregator.fold import day_start, hour_start
from tests.factories import usage_event
from tests.integration.test_aggregator_exactly_once import Lane, lane, scrape, settled, stored_position
from tests.waiting import eventually

__all__ = ["lane"]  # the fixture is shared with the exactly-once tests


@pytest.fixture
def running(lane: Lane) -> Iterator[ServiceProcess]:
    agg = lane.aggregator(KP_LATE_HORIZON_DAYS="7")
    agg.start()
    agg.wait_ready()
    try:
        yield agg
    finally:
        agg.stop()


async def rows(db: asyncpg.Connection, ags: str, granularity: str = "day") -> dict[tuple[datetime, str, str], int]:
    found = await db.fetch(
        """SELECT period_start, metric, dimension, value FROM kpi_values
           WHERE municipality = $1 AND granularity = $2""", ags, granularity)
    return {(r["period_start"], r["metric"], r["dimension"]): r["value"] for r in found}


def berlin_midnight(t: datetime) -> datetime:
    return day_start(hour_start(t))


class TestEveryKpi:
    async def test_hand_checked_usage_dataset(
        self, lane: Lane, running: ServiceProcess, db: asyncpg.Connection
    ) -> None:
        svc = lane.services[0]
        t = berlin_midnight(datetime.now(UTC)) - timedelta(days=2) + timedelta(hours=10)  # 10:00 two days ago

        def ev(kind: str, data: dict[str, Any], minutes: int = 0,
               version: int | Literal["omit"] | None = None) -> dict[str, Any]:
            return usage_event(kind, municipality=lane.ags, service=svc, time=t + timedelta(minutes=minutes),
                               data=data, schema_version=version)

        events = [
            # page views of schema version 1 (upcast by the aggregator) and 2 count into the same classes
            ev("usage.page.viewed", {"page": "/wohnsitz/start", "device": "mobile", "referrer": "search"}, version=1),
            ev("usage.page.viewed", {"page": "/wohnsitz/start", "device": "desktop", "referrer": "portal"},
               version="omit"),
            ev("usage.page.viewed", {"page": "/wohnsitz/daten", "device": "mobile", "referrer": "direct"}),
            ev("usage.page.viewed", {"page": "/wohnsitz/daten", "device": "mobile", "referrer": "social"}),
            ev("usage.page.viewed", {"page": "/wohnsitz/daten", "device": "tablet", "referrer": "search"}),
            ev("usage.session.started", {"channel": "web", "device": "mobile"}),
            ev("usage.session.started", {"channel": "web", "device": "desktop"}),
            ev("usage.session.started", {"channel": "app", "device": "mobile"}),
            ev("usage.step.completed", {"step": 1, "step_name": "Start"}),
            ev("usage.step.completed", {"step": 1, "step_name": "Start"}),
            ev("usage.step.completed", {"step": 2, "step_name": "Daten"}),
            ev("usage.auth.completed", {"method": "bundid_basis", "level": "substantiell"}),
            ev("usage.auth.completed", {"method": "eid", "level": "hoch"}),
            ev("usage.payment.completed", {"method": "paypal", "amount_cents": 1200}),
            ev("usage.payment.completed", {"method": "sepa_lastschrift", "amount_cents": 2850}),
            ev("usage.session.submitted", {"duration_s": 250}, minutes=5),
            ev("usage.session.submitted", {"duration_s": 4000}, minutes=70),  # next hour, same day
            ev("usage.session.abandoned", {"last_step": 1}),
            ev("usage.feedback.given", {"stars": 5}),
            ev("usage.feedback.given", {"stars": 3}),
            ev("usage.feedback.given", {"stars": 5}),
        ]
        await lane.produce(events)
        await settled(db, lane, len(events), counted=3)

        day = berlin_midnight(t)
        expected = {
            "page_views": {"/wohnsitz/start": 2, "/wohnsitz/daten": 3},
            "page_views_device": {"mobile": 3, "desktop": 1, "tablet": 1},
            "page_views_referrer": {"search": 2, "portal": 1, "direct": 1, "social": 1},
            "sessions_started": {"": 3}, "channel": {"web": 2, "app": 1}, "device": {"mobile": 2, "desktop": 1},
            "step_completed": {"1": 2, "2": 1},
            "auth": {"bundid_basis:substantiell": 1, "eid:hoch": 1},
            "payment": {"paypal": 1, "sepa_lastschrift": 1},
            "payment_amount_cents": {"paypal": 1200, "sepa_lastschrift": 2850},
            "sessions_submitted": {"": 2}, "duration_le": {"300": 1, "7200": 1}, "duration_sum_s": {"": 4250},
            "sessions_abandoned": {"": 1}, "abandoned_after_step": {"1": 1},
            "feedback": {"5": 2, "3": 1},
        }
        flat = {(day, m, d): v for m, dims in expected.items() for d, v in dims.items()}
        assert await rows(db, lane.ags, "day") == flat
        hours = await rows(db, lane.ags, "hour")
        assert hours[(hour_start(t), "sessions_submitted", "")] == 1
        assert hours[(hour_start(t) + timedelta(hours=1), "sessions_submitted", "")] == 1
        month = await rows(db, lane.ags, "month")
        assert sum(v for (_, m, _), v in month.items() if m == "feedback") == 3

    async def test_workflow_processing_time_kpis(
        self, lane: Lane, running: ServiceProcess, db: asyncpg.Connection
    ) -> None:
        t = datetime.now(UTC) - timedelta(minutes=5)

        def wf(kind: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": str(uuid.uuid4()), "type": kind, "source": "workflow", "time": t.isoformat(),
                "municipality": lane.ags, "service": lane.services[0], "case_id": str(uuid.uuid4()),
                "application_id": f"APP-{uuid.uuid4().hex[:8]}", "definition": "wohnsitz", "definition_version": 1,
            }
            if data is not None:
                body["data"] = data
            return body

        events = [
            wf("workflow.case.opened"), wf("workflow.case.opened"), wf("workflow.case.opened"),
            wf("workflow.case.closed", {"outcome": "approved", "processing_time_s": 3 * 3600}),
            wf("workflow.case.closed", {"outcome": "approved", "processing_time_s": 10 * 86400}),
            wf("workflow.deadline.breached", {"deadline": "ack_71b"}),
            wf("workflow.case.parked", {"step": "file_eakte", "error": "adapter timeout"}),
            wf("workflow.step.completed", {"step": "ack", "duration_ms": 12}),
        ]
        await lane.produce(events + events[:2], topic=lane.workflow_topic)  # two redelivered

        def wf_rows() -> Any:
            return rows(db, lane.ags, "day")

        day = berlin_midnight(t)
        expected = {
            (day, "cases_opened", ""): 3, (day, "cases_closed", "approved"): 2,
            (day, "processing_le", "14400"): 1, (day, "processing_le", "1209600"): 1,
            (day, "processing_sum_s", ""): 3 * 3600 + 10 * 86400,
            (day, "deadline_breached", "ack_71b"): 1, (day, "cases_parked", ""): 1,
        }
        await eventually(lambda: stored_position(db, f"agg-wf-{lane.unique}", lane.workflow_topic),
                         lambda p: p >= len(events) + 2)
        assert await wf_rows() == expected


class TestLateAndInvalid:
    async def test_late_event_corrects_its_past_day_and_too_late_goes_to_rejected(
        self, lane: Lane, running: ServiceProcess, db: asyncpg.Connection
    ) -> None:
        svc = lane.services[0]
        now = datetime.now(UTC)
        three_days_ago = now - timedelta(days=3)
        on_time = [usage_event("usage.session.started", municipality=lane.ags, service=svc, time=three_days_ago)
                   for _ in range(2)]
        await lane.produce(on_time)
        await settled(db, lane, 2)

        late = usage_event("usage.session.started", municipality=lane.ags, service=svc, time=three_days_ago)
        too_late = usage_event("usage.session.started", municipality=lane.ags, service=svc,
                               time=now - timedelta(days=8))
        await lane.produce([late, too_late])
        await settled(db, lane, 4, counted=3)

        day = berlin_midnight(three_days_ago)
        assert (await rows(db, lane.ags, "day"))[(day, "sessions_started", "")] == 3
        assert (await rows(db, lane.ags, "hour"))[(hour_start(three_days_ago), "sessions_started", "")] == 3
        [rejected] = await lane.rejected(1)
        assert rejected["reason"] == "too_late"
        assert rejected["event_id"] == too_late["id"]
        assert rejected["origin"] == "aggregator"
        assert rejected["topic"] == lane.usage_topic
        values = scrape(running)
        assert values[("kp_aggregator_late_corrections_total", (lane.usage_topic,))] >= 3
        assert values[("kp_aggregator_rejected_total", ("too_late", lane.usage_topic))] == 1

    async def test_foreign_records_go_to_rejected_and_the_partition_keeps_flowing(
        self, lane: Lane, running: ServiceProcess, db: asyncpg.Connection
    ) -> None:
        # what a hand-run `kcat -P` might put on the topic: all with the same key as real events
        svc = lane.services[0]
        key = f"{lane.ags}:{svc}"
        bad_schema = usage_event("usage.session.started", municipality=lane.ags, service=svc)
        bad_schema["data"] = {"channel": "fax", "device": "mobile"}
        await lane.produce_raw(b"hello from kcat\n", key=key)
        await lane.produce_raw(b"\xff\xfe\x00binary", key=key)
        await lane.produce_raw(orjson.dumps(bad_schema), key=key)
        await lane.produce_raw(b"x" * 20_000, key=key, headers=[("trace", b"\xff\xfe")])
        good = [dict(e, service=svc) for e in lane.started_events(5)]
        await lane.produce(good)
        await settled(db, lane, 9, counted=5)

        found = await lane.rejected(4)
        by_reason = sorted(r["reason"] for r in found)
        assert by_reason == ["invalid_event", "invalid_json", "invalid_json", "invalid_json"]
        schema = next(r for r in found if r["reason"] == "invalid_event")
        assert schema["errors"][0]["loc"][-1] == "channel"
        assert schema["event_id"] == bad_schema["id"]
        assert schema["platform"] == "test-platform"
        big = next(r for r in found if r["raw_bytes"] == 20_000)
        assert big["raw_truncated"] is True
        assert len(big["raw"]) < 20_000
        # all four sat on the partition of the good events, in front of them
        assert len({(r["partition"], r["offset"]) for r in found}) == 4
        assert len({r["partition"] for r in found}) == 1
