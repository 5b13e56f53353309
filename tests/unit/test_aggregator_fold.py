"""Unit tests of the aggregator's pure logic: triage and fold on a small hand-checked dataset."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import pytest

from services.aggregator import service
from services.aggregator.service import Record
from shared.events import usage_event_adapter
from shared.events.workflow import workflow_event_adapter
from tests.factories import usage_event

AGS = "06413000"
SVC = "99115005104000"
NOW = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)


def rec(payload: dict[str, Any] | bytes, offset: int = 0, partition: int = 0) -> Record:
    value = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Record("usage.events.v1", partition, offset, value)


def at(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def hand_checked_dataset() -> list[dict[str, Any]]:
    """Two sessions on 2026-03-29 (the night Berlin switches to summer time) plus page views and feedback."""
    ev = usage_event
    kw: dict[str, Any] = {"municipality": AGS, "service": SVC}
    # 2026-03-29 00:30 UTC = 01:30 CET; 2026-03-29 01:30 UTC = 03:30 CEST (same Berlin day, hours 1h apart)
    return [
        ev("usage.session.started", time=at("2026-03-29T00:30:00+00:00"), data={"channel": "web", "device": "mobile"},
           **kw),
        ev("usage.session.started", time=at("2026-03-29T01:30:00+00:00"), data={"channel": "app", "device": "tablet"},
           **kw),
        ev("usage.step.completed", time=at("2026-03-29T00:31:00+00:00"), data={"step": 1, "step_name": "Start"}, **kw),
        ev("usage.step.completed", time=at("2026-03-29T01:31:00+00:00"), data={"step": 1, "step_name": "Start"}, **kw),
        ev("usage.step.completed", time=at("2026-03-29T01:32:00+00:00"), data={"step": 2, "step_name": "Daten"}, **kw),
        ev("usage.auth.completed", time=at("2026-03-29T01:33:00+00:00"),
           data={"method": "eid", "level": "hoch"}, **kw),
        ev("usage.payment.completed", time=at("2026-03-29T01:34:00+00:00"),
           data={"method": "paypal", "amount_cents": 1250}, **kw),
        ev("usage.session.submitted", time=at("2026-03-29T01:35:00+00:00"), data={"duration_s": 300}, **kw),
        # 22:10 UTC on the 29th is 00:10 CEST on the 30th: next Berlin day
        ev("usage.session.abandoned", time=at("2026-03-29T22:10:00+00:00"), data={"last_step": 1}, **kw),
        ev("usage.feedback.given", time=at("2026-03-29T01:36:00+00:00"), data={"stars": 5}, **kw),
        ev("usage.feedback.given", time=at("2026-03-29T01:37:00+00:00"), data={"stars": 2}, **kw),
        ev("usage.page.viewed", time=at("2026-03-29T00:29:00+00:00"),
           data={"page": "/anmelden", "device": "mobile", "referrer": "search"}, **kw),
        ev("usage.page.viewed", time=at("2026-03-29T01:29:00+00:00"),
           data={"page": "/anmelden", "device": "tablet", "referrer": "portal"}, **kw),
    ]


def by_metric(deltas: dict[service.KpiKey, int], granularity: str, period: datetime) -> dict[tuple[str, str], int]:
    return {(k[4], k[5]): v for k, v in deltas.items() if k[0] == granularity and k[1] == period}


class TestFold:
    def test_every_kpi_on_the_hand_checked_dataset(self) -> None:
        tri = service.triage([rec(e, i) for i, e in enumerate(hand_checked_dataset())], usage_event_adapter,
                             NOW, timedelta(days=7), timedelta(minutes=15))
        assert tri.rejections == []
        deltas = service.fold(tri.events, service.usage_contributions)

        day_29 = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # Berlin midnight (CET) as UTC
        day_30 = datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # Berlin midnight (CEST) as UTC
        assert by_metric(deltas, "day", day_29) == {
            ("sessions_started", ""): 2, ("channel", "web"): 1, ("channel", "app"): 1,
            ("device", "mobile"): 1, ("device", "tablet"): 1,
            ("step_completed", "1"): 2, ("step_completed", "2"): 1,
            ("auth", "eid:hoch"): 1,
            ("payment", "paypal"): 1, ("payment_amount_cents", "paypal"): 1250,
            ("sessions_submitted", ""): 1, ("duration_le", "300"): 1, ("duration_sum_s", ""): 300,
            ("feedback", "5"): 1, ("feedback", "2"): 1,
            ("page_views", "/anmelden"): 2, ("page_views_device", "mobile"): 1, ("page_views_device", "tablet"): 1,
            ("page_views_referrer", "search"): 1, ("page_views_referrer", "portal"): 1,
        }
        assert by_metric(deltas, "day", day_30) == {("sessions_abandoned", ""): 1, ("abandoned_after_step", "1"): 1}
        # March in Berlin starts 2026-02-28 23:00 UTC; both days roll up into it
        month = by_metric(deltas, "month", datetime(2026, 2, 28, 23, 0, tzinfo=UTC))
        assert month[("sessions_started", "")] == 2
        assert month[("sessions_abandoned", "")] == 1
        assert by_metric(deltas, "hour", datetime(2026, 3, 29, 0, 0, tzinfo=UTC)) == {
            ("sessions_started", ""): 1, ("channel", "web"): 1, ("device", "mobile"): 1, ("step_completed", "1"): 1,
            ("page_views", "/anmelden"): 1, ("page_views_device", "mobile"): 1, ("page_views_referrer", "search"): 1,
        }
        # every hour/day delta sums to the same month total
        for metric in ("sessions_started", "step_completed", "feedback", "page_views"):
            totals = {g: sum(v for k, v in deltas.items() if k[0] == g and k[4] == metric)
                      for g in ("hour", "day", "month")}
            assert len(set(totals.values())) == 1, (metric, totals)

    def test_duration_bucket_boundaries(self) -> None:
        events = [usage_event("usage.session.submitted", time=NOW, data={"duration_s": s})
                  for s in (0, 60, 61, 86400, 86401)]
        tri = service.triage([rec(e) for e in events], usage_event_adapter, NOW, timedelta(days=7),
                             timedelta(minutes=15))
        deltas = service.fold(tri.events, service.usage_contributions)
        buckets = {k[5]: v for k, v in deltas.items() if k[0] == "day" and k[4] == "duration_le"}
        assert buckets == {"60": 2, "120": 1, "86400": 1, "inf": 1}
        assert sum(v for k, v in deltas.items() if k[0] == "day" and k[4] == "duration_sum_s") == 172922

    def test_workflow_processing_kpis(self) -> None:
        def wf(kind: str, data: dict[str, Any] | None) -> dict[str, Any]:
            body: dict[str, Any] = {
                "id": str(uuid.uuid4()), "type": kind, "source": "workflow", "time": NOW.isoformat(),
                "municipality": AGS, "service": SVC, "case_id": str(uuid.uuid4()), "application_id": "APP-1",
                "definition": "wohnsitz", "definition_version": 1,
            }
            if data is not None:
                body["data"] = data
            return body

        events = [
            wf("workflow.case.opened", None), wf("workflow.case.opened", None),
            wf("workflow.case.closed", {"outcome": "approved", "processing_time_s": 7200}),
            wf("workflow.case.closed", {"outcome": "rejected", "processing_time_s": 100 * 86400}),
            wf("workflow.deadline.breached", {"deadline": "ack_71b"}),
            wf("workflow.case.parked", {"step": "file_eakte", "error": "timeout"}),
            wf("workflow.step.completed", {"step": "ack", "duration_ms": 5}),
        ]
        tri = service.triage([rec(e) for e in events], workflow_event_adapter, NOW, timedelta(days=7),
                             timedelta(minutes=15))
        relevant = service.relevant(tri.events, service.workflow_contributions)
        assert len(relevant) == 6
        deltas = service.fold(relevant, service.workflow_contributions)
        assert by_metric(deltas, "hour", NOW) == {
            ("cases_opened", ""): 2, ("cases_closed", "approved"): 1, ("cases_closed", "rejected"): 1,
            ("processing_le", "14400"): 1, ("processing_le", "inf"): 1, ("processing_sum_s", ""): 7200 + 8640000,
            ("deadline_breached", "ack_71b"): 1, ("cases_parked", ""): 1,
        }


class TestTriage:
    def test_invalid_json_schema_errors_late_and_future_are_rejected_with_reasons(self) -> None:
        good = usage_event(time=NOW)
        bad = usage_event(time=NOW)
        bad["municipality"] = "123"
        late = usage_event(time=NOW - timedelta(days=8))
        future = usage_event(time=NOW + timedelta(hours=2))
        records = [rec(b"\xff not json", 0), rec(bad, 1), rec(good, 2), rec(late, 3), rec(future, 4),
                   rec(b'{"type": "usage.unknown"}', 5)]
        tri = service.triage(records, usage_event_adapter, NOW, timedelta(days=7), timedelta(minutes=15))
        assert [str(e.id) for e in tri.events] == [good["id"]]
        reasons = {r.record.offset: r.reason for r in tri.rejections}
        assert reasons == {0: "invalid_json", 1: "invalid_event", 3: "too_late", 4: "from_future", 5: "invalid_event"}
        bad_rej = next(r for r in tri.rejections if r.record.offset == 1)
        assert bad_rej.errors[0]["loc"][-1] == "municipality"
        assert bad_rej.source == "test-platform"
        assert bad_rej.event_id == bad["id"]

    def test_same_id_twice_in_one_batch_counts_once(self) -> None:
        e = usage_event(time=NOW)
        tri = service.triage([rec(e, 0), rec(e, 1)], usage_event_adapter, NOW, timedelta(days=7),
                             timedelta(minutes=15))
        assert len(tri.events) == 1
        assert tri.in_batch_duplicates == 1


class TestPeriods:
    @pytest.mark.parametrize(("t", "day"), [
        ("2026-10-25T00:30:00+00:00", "2026-10-24T22:00:00+00:00"),  # 02:30 CEST, day began in summer time
        ("2026-10-25T22:59:00+00:00", "2026-10-24T22:00:00+00:00"),  # 23:59 CET, the 25-hour day
        ("2026-10-25T23:00:00+00:00", "2026-10-25T23:00:00+00:00"),
    ])
    def test_berlin_day_start_across_the_autumn_switch(self, t: str, day: str) -> None:
        assert service.day_start(service.hour_start(at(t))) == at(day)

    def test_month_start_in_winter(self) -> None:
        assert service.month_start(service.hour_start(at("2026-12-31T23:30:00+00:00"))) == at(
            "2026-12-31T23:00:00+00:00")

    def test_next_offsets_is_one_past_the_highest_per_partition(self) -> None:
        records = [rec(b"x", 5, 0), rec(b"x", 7, 0), rec(b"x", 2, 1)]
        assert service.next_offsets(records) == {("usage.events.v1", 0): 8, ("usage.events.v1", 1): 3}


class TestPageViewVersions:
    """Page views of schema version 1 (upcast) and 2 count into the v2 referrer classes, in both folds."""

    def page_views(self) -> list[dict[str, Any]]:
        def view(referrer: str, version: int | Literal["omit"]) -> dict[str, Any]:
            return usage_event("usage.page.viewed", time=NOW - timedelta(minutes=5), schema_version=version,
                               data={"page": "/anmelden", "device": "mobile", "referrer": referrer})
        return [view("search", 1), view("portal", "omit"), view("other", 1), view("direct", 1),
                view("search", 2), view("social", 2), view("social", 2), view("internal", 2), view("municipal", 2),
                view("portal", 2), view("other", 2)]

    def referrers(self, deltas: dict[service.KpiKey, Any]) -> dict[str, Any]:
        return {k[5]: v for k, v in deltas.items() if k[0] == "day" and k[4] == "page_views_referrer"}

    def test_the_fast_path_counts_v1_and_v2_into_the_v2_classes(self) -> None:
        prepared = service.prepare([rec(e, i) for i, e in enumerate(self.page_views())], usage_event_adapter,
                                   service.usage_contributions, False, NOW, timedelta(days=7),
                                   timedelta(minutes=15), secret=b"k" * 32)
        assert prepared.rejections == []
        assert prepared.events == 11
        counts = {dim: value for dim, (value, _key_sum) in self.referrers(service.roll_up(prepared.hourly)).items()}
        assert counts == {"search": 2, "portal": 2, "other": 2, "direct": 1, "social": 2, "internal": 1,
                          "municipal": 1}

    def test_triage_counts_the_same(self) -> None:
        tri = service.triage([rec(e, i) for i, e in enumerate(self.page_views())], usage_event_adapter, NOW,
                             timedelta(days=7), timedelta(minutes=15))
        assert tri.rejections == []
        assert self.referrers(service.fold(tri.events, service.usage_contributions)) == {
            "search": 2, "portal": 2, "other": 2, "direct": 1, "social": 2, "internal": 1, "municipal": 1}

    def test_unknown_versions_and_v1_records_with_v2_classes_are_rejected(self) -> None:
        future = usage_event("usage.page.viewed", time=NOW, schema_version=3)
        mixed = usage_event("usage.page.viewed", time=NOW, schema_version=1,
                            data={"page": "/a", "device": "mobile", "referrer": "social"})
        prepared = service.prepare([rec(future, 0), rec(mixed, 1)], usage_event_adapter,
                                   service.usage_contributions, False, NOW, timedelta(days=7),
                                   timedelta(minutes=15), secret=b"k" * 32)
        assert [(r.record.offset, r.reason, r.errors[0]["type"], r.event_id) for r in prepared.rejections] == [
            (0, "invalid_event", "unknown_schema_version", future["id"]),
            (1, "invalid_event", "v1_referrer", mixed["id"])]
        assert prepared.events == 0
