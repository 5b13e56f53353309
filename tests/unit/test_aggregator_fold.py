"""The aggregator's fold on a small hand-checked dataset, through the functions every batch goes through:
`prepare` (validate, window, fold per UTC hour) per chunk, `merge_hourly` over the chunks, `roll_up`."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import orjson
import pytest

from services.aggregator import fold
from services.aggregator.fold import Record
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


HORIZON, SKEW, SECRET = timedelta(days=7), timedelta(minutes=15), b"unit-test-ckm-secret"


def prepare(records: Sequence[Record], adapter: Any = usage_event_adapter,
            contributions: Callable[[Any], Sequence[fold.Contribution]] = fold.usage_contributions,
            daily_counts: bool = False, now: datetime = NOW) -> fold.Prepared:
    return fold.prepare(records, adapter, contributions, daily_counts, now, HORIZON, SKEW, SECRET)


def kpis(payloads: list[dict[str, Any]], chunk: int = 4000, adapter: Any = usage_event_adapter,
         contributions: Callable[[Any], Sequence[fold.Contribution]] = fold.usage_contributions,
         now: datetime = NOW) -> dict[fold.KpiKey, int]:
    """The KPI rows a batch of `payloads` adds, folded in chunks of `chunk` records as the service does."""
    records = [rec(p, i) for i, p in enumerate(payloads)]
    parts = [prepare(records[i:i + chunk], adapter, contributions, now=now) for i in range(0, len(records), chunk)]
    assert [r for p in parts for r in p.rejections] == []
    return {k: value for k, (value, _key_sum) in fold.roll_up(fold.merge_hourly(p.hourly for p in parts)).items()}


def by_metric(deltas: dict[fold.KpiKey, int], granularity: str, period: datetime) -> dict[tuple[str, str], int]:
    return {(k[4], k[5]): v for k, v in deltas.items() if k[0] == granularity and k[1] == period}


DAY_29 = datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # Berlin midnight (CET) as UTC
DAY_30 = datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # Berlin midnight (CEST) as UTC


class TestFold:
    @pytest.mark.parametrize("chunk", [1, 5, 4000])
    def test_every_kpi_on_the_hand_checked_dataset(self, chunk: int) -> None:
        deltas = kpis(hand_checked_dataset(), chunk)

        assert by_metric(deltas, "day", DAY_29) == {
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
        assert by_metric(deltas, "day", DAY_30) == {("sessions_abandoned", ""): 1, ("abandoned_after_step", "1"): 1}
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

    def test_daily_counts_per_type_on_the_hand_checked_dataset(self) -> None:
        prepared = prepare([rec(e, i) for i, e in enumerate(hand_checked_dataset())], daily_counts=True)
        counts = fold.daily_counts(prepared.hourly_counts)
        day = {k[3]: n for k, n in counts.items() if k[0] == date(2026, 3, 29)}
        assert day == {"usage.session.started": 2, "usage.step.completed": 3, "usage.auth.completed": 1,
                       "usage.payment.completed": 1, "usage.session.submitted": 1, "usage.feedback.given": 2,
                       "usage.page.viewed": 2}
        assert {k[3]: n for k, n in counts.items() if k[0] == date(2026, 3, 30)} == {"usage.session.abandoned": 1}

    def test_a_refold_without_known_events_equals_the_fold_of_the_rest(self) -> None:
        dataset = hand_checked_dataset()
        prepared = prepare([rec(e, i) for i, e in enumerate(dataset)])
        assert fold.fold_hourly(prepared.relevant) == prepared.hourly
        known = {prepared.relevant[0].id, prepared.relevant[5].id}
        rest = [e for e in prepared.relevant if e.id not in known]
        again = prepare([rec(e, i) for i, e in enumerate(dataset) if uuid.UUID(e["id"]) not in known])
        assert fold.fold_hourly(rest) == again.hourly

    def test_duration_bucket_boundaries(self) -> None:
        events = [usage_event("usage.session.submitted", time=NOW, data={"duration_s": s})
                  for s in (0, 60, 61, 86400, 86401)]
        deltas = kpis(events)
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
        prepared = prepare([rec(e, i) for i, e in enumerate(events)], workflow_event_adapter,
                           fold.workflow_contributions)
        assert prepared.events == 7
        assert len(prepared.relevant) == 6  # a completed step changes no KPI and needs no dedup entry
        deltas = kpis(events, adapter=workflow_event_adapter, contributions=fold.workflow_contributions)
        assert by_metric(deltas, "hour", NOW) == {
            ("cases_opened", ""): 2, ("cases_closed", "approved"): 1, ("cases_closed", "rejected"): 1,
            ("processing_le", "14400"): 1, ("processing_le", "inf"): 1, ("processing_sum_s", ""): 7200 + 8640000,
            ("deadline_breached", "ack_71b"): 1, ("cases_parked", ""): 1,
        }


class TestPrepare:
    def test_invalid_json_schema_errors_late_and_future_are_rejected_with_reasons(self) -> None:
        good = usage_event(time=NOW)
        bad = usage_event(time=NOW)
        bad["municipality"] = "123"
        late = usage_event(time=NOW - timedelta(days=8))
        future = usage_event(time=NOW + timedelta(hours=2))
        records = [rec(b"\xff not json", 0), rec(bad, 1), rec(good, 2), rec(late, 3), rec(future, 4),
                   rec(b'{"type": "usage.unknown"}', 5), Record("usage.events.v1", 0, 6, None)]  # type: ignore[arg-type]
        prepared = prepare(records)
        assert [str(e.id) for e in prepared.relevant] == [good["id"]]
        reasons = {r.record.offset: r.reason for r in prepared.rejections}
        assert reasons == {0: "invalid_json", 1: "invalid_event", 3: "too_late", 4: "from_future", 5: "invalid_event",
                           6: "tombstone"}
        bad_rej = next(r for r in prepared.rejections if r.record.offset == 1)
        assert bad_rej.errors[0]["loc"][-1] == "municipality"
        assert bad_rej.source == "test-platform"
        assert bad_rej.event_id == bad["id"]
        late_rej = next(r for r in prepared.rejections if r.record.offset == 3)
        assert (late_rej.source, late_rej.event_id) == ("test-platform", late["id"])

    def test_same_id_twice_in_one_chunk_counts_once(self) -> None:
        e = usage_event(time=NOW)
        prepared = prepare([rec(e, 0), rec(e, 1)])
        assert len(prepared.relevant) == 1
        assert prepared.in_batch_duplicates == 1
        assert kpis([e, e])[("day", fold.day_start(fold.hour_start(NOW)), e["municipality"], e["service"],
                             "sessions_started", "")] == 1

    def test_events_that_correct_an_ended_hour_are_late(self) -> None:
        prepared = prepare([rec(usage_event(time=NOW - timedelta(minutes=m)), m) for m in (0, 1, 61, 600)])
        assert fold.late_count(prepared.relevant, NOW + timedelta(minutes=5)) == 3  # all but the one at 12:00


class TestPeriods:
    @pytest.mark.parametrize(("t", "day"), [
        ("2026-10-25T00:30:00+00:00", "2026-10-24T22:00:00+00:00"),  # 02:30 CEST, day began in summer time
        ("2026-10-25T22:59:00+00:00", "2026-10-24T22:00:00+00:00"),  # 23:59 CET, the 25-hour day
        ("2026-10-25T23:00:00+00:00", "2026-10-25T23:00:00+00:00"),
    ])
    def test_berlin_day_start_across_the_autumn_switch(self, t: str, day: str) -> None:
        assert fold.day_start(fold.hour_start(at(t))) == at(day)

    def test_the_25_hour_day_rolls_up_all_its_hours(self) -> None:
        autumn = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # Berlin midnight of the 25th (CEST)
        events = [usage_event(time=autumn + timedelta(hours=h, minutes=30)) for h in range(26)]
        deltas = kpis(events, now=autumn + timedelta(days=1, hours=2))
        days = {k[1]: v for k, v in deltas.items() if k[0] == "day" and k[4] == "sessions_started"}
        assert days == {autumn: 25, autumn + timedelta(hours=25): 1}

    def test_month_start_in_winter(self) -> None:
        assert fold.month_start(fold.hour_start(at("2026-12-31T23:30:00+00:00"))) == at(
            "2026-12-31T23:00:00+00:00")

    def test_next_offsets_is_one_past_the_highest_per_partition(self) -> None:
        records = [rec(b"x", 5, 0), rec(b"x", 7, 0), rec(b"x", 2, 1)]
        assert fold.next_offsets(records) == {("usage.events.v1", 0): 8, ("usage.events.v1", 1): 3}


class TestPageViewVersions:
    """Page views of schema version 1 (upcast) and 2 count into the v2 referrer classes."""

    def page_views(self) -> list[dict[str, Any]]:
        def view(referrer: str, version: int | Literal["omit"]) -> dict[str, Any]:
            return usage_event("usage.page.viewed", time=NOW - timedelta(minutes=5), schema_version=version,
                               data={"page": "/anmelden", "device": "mobile", "referrer": referrer})
        return [view("search", 1), view("portal", "omit"), view("other", 1), view("direct", 1),
                view("search", 2), view("social", 2), view("social", 2), view("internal", 2), view("municipal", 2),
                view("portal", 2), view("other", 2)]

    def test_v1_and_v2_count_into_the_v2_classes(self) -> None:
        prepared = prepare([rec(e, i) for i, e in enumerate(self.page_views())])
        assert prepared.rejections == []
        assert prepared.events == 11
        counts = {k[5]: v for k, v in kpis(self.page_views()).items()
                  if k[0] == "day" and k[4] == "page_views_referrer"}
        assert counts == {"search": 2, "portal": 2, "other": 2, "direct": 1, "social": 2, "internal": 1,
                          "municipal": 1}

    def test_unknown_versions_and_v1_records_with_v2_classes_are_rejected(self) -> None:
        future = usage_event("usage.page.viewed", time=NOW, schema_version=3)
        mixed = usage_event("usage.page.viewed", time=NOW, schema_version=1,
                            data={"page": "/a", "device": "mobile", "referrer": "social"})
        prepared = prepare([rec(future, 0), rec(mixed, 1)])
        assert [(r.record.offset, r.reason, r.errors[0]["type"], r.event_id) for r in prepared.rejections] == [
            (0, "invalid_event", "unknown_schema_version", future["id"]),
            (1, "invalid_event", "v1_referrer", mixed["id"])]
        assert prepared.events == 0
