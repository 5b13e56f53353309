"""The aggregator's fold: validate consumed records and sum them into KPI deltas (pure functions, no I/O).

The one path every batch takes: `prepare` validates a chunk of records, applies the time window and reduces
each countable event to what the write path needs (`Counted`), summed per UTC hour (`fold_hourly`); the chunks
of a batch are summed (`merge_hourly`) and rolled up into the hour, day and month rows of `kpi_values`
(`roll_up`). Berlin's offsets are whole hours, so every Berlin day and month is a union of UTC hours, and the
23- and 25-hour days of the DST switches come out right.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError

from shared.ckm import record_key
from shared.events import UsageEvent
from shared.events.upcast import revalidate_json
from shared.events.usage import (
    AuthCompleted,
    FeedbackGiven,
    PageViewed,
    PaymentCompleted,
    SessionAbandoned,
    SessionStarted,
    SessionSubmitted,
    StepCompleted,
)
from shared.events.workflow import CaseClosed, CaseOpened, CaseParked, DeadlineBreached, WorkflowEvent
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S, bucket_label
from shared.poison import ConsumedRecord, Rejection, declared, validation_errors

BERLIN = ZoneInfo("Europe/Berlin")


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record made up outside Kafka (tests, tools): the fields the aggregator reads of aiokafka's
    `ConsumerRecord`."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


RecordLike = ConsumedRecord
"""What the aggregator reads of a consumed record (aiokafka's ConsumerRecord as it is, or `Record`)."""


def _out_of_window(r: RecordLike, event: Any, oldest: float, horizon: timedelta,
                   future_skew: timedelta) -> Rejection:
    """The rejection of an event whose time lies outside the accepted window."""
    if event.time.timestamp() < oldest:
        return Rejection(r, "too_late", [{
            "type": "too_late", "loc": ["time"],
            "msg": f"event time is older than the late horizon ({horizon.days} days)",
        }], event.source, str(event.id))
    return Rejection(r, "from_future", [{
        "type": "from_future", "loc": ["time"],
        "msg": f"event time lies more than {int(future_skew.total_seconds())} s in the future",
    }], event.source, str(event.id))


def _tombstone(r: RecordLike) -> Rejection:
    return Rejection(r, "tombstone", [{"type": "tombstone", "loc": [], "msg": "the record has no value"}])


def _invalid(r: RecordLike, exc: ValidationError) -> Rejection:
    reason, errors = validation_errors(exc)
    source, event_id = declared(r.value or b"")
    return Rejection(r, reason, errors, source, event_id)


@dataclass(slots=True)
class Counted:
    """What the write path needs of one countable event; the validated model itself is not kept."""

    id: UUID
    epoch: float
    """The event time in epoch seconds."""
    hour: int
    """Epoch hour (UTC) of the event time."""
    municipality: str
    service: str
    type: str
    contributions: Sequence[Contribution]
    key: int = 0
    """The record key (Cell Key Method, `shared.ckm.record_key`) every cell this event counts in adds."""


@dataclass(slots=True)
class Prepared:
    """A chunk of records validated and folded, ready to be written (deltas assume every event is new)."""

    records: Sequence[RecordLike]
    rejections: list[Rejection]
    events: int
    """Valid events within the window, once per id (counted, duplicate or ignored)."""
    in_batch_duplicates: int
    relevant: list[Counted]
    hourly: HourlyDeltas
    """KPI deltas per UTC hour; rolled up into hour/day/month rows once per batch (`roll_up`)."""
    hourly_counts: HourlyCounts
    seconds: float


def prepare(records: Sequence[RecordLike], adapter: TypeAdapter[Any],
            contributions: Callable[[Any], Sequence[Contribution]], daily_counts: bool, now: datetime,
            horizon: timedelta, future_skew: timedelta, secret: bytes) -> Prepared:
    """Validate and fold a chunk; pure, so it can run in a worker thread while the previous chunk is written.

    Every record is validated again (foreign producers may write to the topic; an older schema version is
    upcast); invalid records, events older than the late horizon and events too far in the future become
    rejections; the rest counts once per event id (a producer retry inside one chunk counts once). Each event
    is reduced to what the write path needs right after validation (keeping thousands of validated models alive
    costs more in allocation and garbage collection than the validation itself), and the fold happens in the
    same pass. `secret` keys the record keys of the Cell Key Method.
    """
    started = time.perf_counter()
    oldest, newest = (now - horizon).timestamp(), (now + future_skew).timestamp()
    validate = adapter.validate_json
    rejections: list[Rejection] = []
    relevant_events: list[Counted] = []
    seen: set[UUID] = set()
    events = duplicates = 0
    for r in records:
        value = r.value
        if value is None:
            rejections.append(_tombstone(r))
            continue
        try:
            event = validate(value)
        except ValidationError as exc:
            try:  # an older schema version (only those pay for the upcast), else the first error stands
                event = revalidate_json(adapter, value, exc)
            except ValidationError as final:
                rejections.append(_invalid(r, final))
                continue
        t: float = event.time.timestamp()
        if not oldest <= t <= newest:
            rejections.append(_out_of_window(r, event, oldest, horizon, future_skew))
            continue
        event_id = event.id
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        events += 1
        contributed = contributions(event)
        if contributed:
            relevant_events.append(Counted(event_id, t, int(t) // 3600, event.municipality, event.service,
                                           event.type, contributed, record_key(secret, event_id)))
    hourly = fold_hourly(relevant_events)
    hourly_counts = count_hourly(relevant_events) if daily_counts else Counter()
    return Prepared(records, rejections, events, duplicates, relevant_events, hourly, hourly_counts,
                    time.perf_counter() - started)


# --- periods -------------------------------------------------------------------------------------------

def hour_start(t: datetime) -> datetime:
    """Start of the Europe/Berlin hour containing `t`, as UTC (Berlin's offsets are whole hours)."""
    return t.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


@lru_cache(maxsize=4096)
def _hour(hour_no: int) -> datetime:
    return datetime.fromtimestamp(hour_no * 3600, UTC)


@lru_cache(maxsize=4096)
def day_start(hour: datetime) -> datetime:
    """Midnight (Europe/Berlin) of the day containing `hour`, as UTC."""
    local = hour.astimezone(BERLIN)
    return datetime(local.year, local.month, local.day, tzinfo=BERLIN).astimezone(UTC)


@lru_cache(maxsize=4096)
def month_start(hour: datetime) -> datetime:
    """Midnight (Europe/Berlin) of the first day of the month containing `hour`, as UTC."""
    local = hour.astimezone(BERLIN)
    return datetime(local.year, local.month, 1, tzinfo=BERLIN).astimezone(UTC)


# --- what each event adds ------------------------------------------------------------------------------

Contribution = tuple[str, str, int]
"""(metric, dimension, value) an event adds to its period's KPIs."""


def _page_viewed(e: PageViewed) -> list[Contribution]:
    d = e.data
    return [("page_views", d.page, 1), ("page_views_device", d.device, 1), ("page_views_referrer", d.referrer, 1)]


def _session_started(e: SessionStarted) -> list[Contribution]:
    return [("sessions_started", "", 1), ("channel", e.data.channel, 1), ("device", e.data.device, 1)]


def _step_completed(e: StepCompleted) -> list[Contribution]:
    return [("step_completed", str(e.data.step), 1)]


def _auth_completed(e: AuthCompleted) -> list[Contribution]:
    return [("auth", f"{e.data.method}:{e.data.level}", 1)]


def _payment_completed(e: PaymentCompleted) -> list[Contribution]:
    return [("payment", e.data.method, 1), ("payment_amount_cents", e.data.method, e.data.amount_cents)]


def _session_submitted(e: SessionSubmitted) -> list[Contribution]:
    s = e.data.duration_s
    return [("sessions_submitted", "", 1), ("duration_le", bucket_label(s, DURATION_BUCKETS_S), 1),
            ("duration_sum_s", "", s)]


def _session_abandoned(e: SessionAbandoned) -> list[Contribution]:
    return [("sessions_abandoned", "", 1), ("abandoned_after_step", str(e.data.last_step), 1)]


def _feedback_given(e: FeedbackGiven) -> list[Contribution]:
    return [("feedback", str(e.data.stars), 1)]


# Dispatch on the exact class: isinstance() against pydantic models goes through ABCMeta and costs more than
# the mapping itself. The contracts are closed (frozen, no subclasses are validated into).
_USAGE: dict[type, Callable[[Any], list[Contribution]]] = {
    PageViewed: _page_viewed, SessionStarted: _session_started, StepCompleted: _step_completed,
    AuthCompleted: _auth_completed, PaymentCompleted: _payment_completed, SessionSubmitted: _session_submitted,
    SessionAbandoned: _session_abandoned, FeedbackGiven: _feedback_given,
}


def usage_contributions(e: UsageEvent) -> list[Contribution]:
    """KPI increments of one usage event (see shared/kpis.py for the vocabulary)."""
    mapping = _USAGE.get(type(e))
    if mapping is None:
        for cls, fn in _USAGE.items():  # a subclass of a contract (not produced by validation)
            if isinstance(e, cls):
                return fn(e)
        raise TypeError(f"no KPI mapping for {type(e).__name__}")
    return mapping(e)


def _case_closed(e: CaseClosed) -> list[Contribution]:
    pt = e.data.processing_time_s
    return [("cases_closed", e.data.outcome, 1), ("processing_le", bucket_label(pt, PROCESSING_BUCKETS_S), 1),
            ("processing_sum_s", "", pt)]


_WORKFLOW: dict[type, Callable[[Any], list[Contribution]]] = {
    CaseOpened: lambda e: [("cases_opened", "", 1)], CaseClosed: _case_closed,
    DeadlineBreached: lambda e: [("deadline_breached", e.data.deadline, 1)],
    CaseParked: lambda e: [("cases_parked", "", 1)],
}


def workflow_contributions(e: WorkflowEvent) -> list[Contribution]:
    """KPI increments of one workflow event; steps and task assignments add none."""
    mapping = _WORKFLOW.get(type(e))
    if mapping is None:
        for cls, fn in _WORKFLOW.items():
            if isinstance(e, cls):
                return fn(e)
        return []
    return mapping(e)


# --- folding -------------------------------------------------------------------------------------------

KpiKey = tuple[str, datetime, str, str, str, str]
"""(granularity, period_start, municipality, service, metric, dimension) — the row of `kpi_values`."""

Delta = tuple[int, int]
"""(value, key sum): what a batch adds to one KPI row. The key sum is the sum of the record keys of the events
counted in the row (Cell Key Method), kept unreduced here and reduced modulo 2^32 when written."""
_ZERO: Delta = (0, 0)

HourlyDeltas = dict[tuple[int, str, str, str, str], Delta]
"""(epoch hour, municipality, service, metric, dimension) -> delta."""


def fold_hourly(events: Iterable[Counted]) -> HourlyDeltas:
    """Sum events reduced by `prepare` per UTC hour; every contribution also adds the event's record key to its
    row's key sum."""
    hourly: HourlyDeltas = {}
    get = hourly.get
    for e in events:
        epoch_hour, muni, svc, rk = e.hour, e.municipality, e.service, e.key
        for metric, dim, value in e.contributions:
            key = (epoch_hour, muni, svc, metric, dim)
            old = get(key, _ZERO)
            hourly[key] = (old[0] + value, old[1] + rk)
    return hourly


def merge_hourly(parts: Iterable[HourlyDeltas]) -> HourlyDeltas:
    """Sum several hourly folds (the chunks of one batch)."""
    out: HourlyDeltas = {}
    get = out.get
    for part in parts:
        for key, (value, keys) in part.items():
            old = get(key, _ZERO)
            out[key] = (old[0] + value, old[1] + keys)
    return out


def roll_up(hourly: HourlyDeltas) -> dict[KpiKey, Delta]:
    """Hourly deltas as rows of `kpi_values`: each hour, and its Berlin day and month (a day's or month's
    key sum is the sum of its hours', like its value)."""
    out: dict[KpiKey, Delta] = {}
    add = out.get
    for (epoch_hour, muni, svc, metric, dim), (value, keys) in hourly.items():
        h = _hour(epoch_hour)
        for k in (("hour", h, muni, svc, metric, dim), ("day", day_start(h), muni, svc, metric, dim),
                  ("month", month_start(h), muni, svc, metric, dim)):
            old = add(k, _ZERO)
            out[k] = (old[0] + value, old[1] + keys)
    return out


CountKey = tuple[date, str, str, str]


@lru_cache(maxsize=4096)
def _berlin_date(hour_no: int) -> date:
    return _hour(hour_no).astimezone(BERLIN).date()


HourlyCounts = Counter[tuple[int, str, str, str]]
"""(epoch hour, municipality, service, event type) -> events."""


def count_hourly(events: Iterable[Counted]) -> HourlyCounts:
    """Events per UTC hour and type (rolled up into `kpi_event_counts_daily` rows by `daily_counts`)."""
    return Counter((e.hour, e.municipality, e.service, e.type) for e in events)


def daily_counts(hourly: HourlyCounts) -> Counter[CountKey]:
    """Hourly event counts summed per Europe/Berlin day (the walking-skeleton table)."""
    counts: Counter[CountKey] = Counter()
    for (hour_no, muni, svc, kind), n in hourly.items():
        counts[(_berlin_date(hour_no), muni, svc, kind)] += n
    return counts


def late_count(events: Iterable[Counted], now: datetime) -> int:
    """Events that correct an hour that had already ended when they were processed."""
    current = hour_start(now).timestamp()
    return sum(1 for e in events if e.epoch < current)


def next_offsets(records: Iterable[RecordLike]) -> dict[tuple[str, int], int]:
    """Position to resume from per partition: one past the highest consumed offset."""
    result: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        result[key] = max(result.get(key, 0), r.offset + 1)
    return result
