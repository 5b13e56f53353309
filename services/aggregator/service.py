"""Aggregation logic: triage records, fold a batch into KPI deltas (pure functions, no I/O)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from pydantic import TypeAdapter, ValidationError

from shared.ckm import record_key
from shared.events import UsageEvent
from shared.events.base import Envelope
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
from shared.poison import ConsumedRecord, declared, validation_errors

BERLIN = ZoneInfo("Europe/Berlin")

E = TypeVar("E", bound=Envelope)


@dataclass(frozen=True, slots=True)
class Record:
    """One consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    value: bytes
    key: bytes | None = None


RecordLike = ConsumedRecord
"""What the aggregator reads of a consumed record (aiokafka's ConsumerRecord as it is, or `Record`)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that is not counted, with the reason for the rejected topic."""

    record: RecordLike
    reason: str
    errors: list[dict[str, Any]]
    source: str | None = None
    event_id: str | None = None


@dataclass(slots=True)
class Triage:
    """A batch split into countable events (first occurrence per id) and rejections."""

    events: list[Any] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    in_batch_duplicates: int = 0


def _window(r: RecordLike, event: Any, oldest: float, newest: float, horizon: timedelta,
            future_skew: timedelta) -> tuple[float, Rejection | None]:
    """Event time as epoch seconds, and the rejection if it lies outside the accepted window."""
    t: float = event.time.timestamp()
    if t < oldest:
        return t, Rejection(r, "too_late", [{
            "type": "too_late", "loc": ["time"],
            "msg": f"event time is older than the late horizon ({horizon.days} days)",
        }], event.source, str(event.id))
    if t > newest:
        return t, Rejection(r, "from_future", [{
            "type": "from_future", "loc": ["time"],
            "msg": f"event time lies more than {int(future_skew.total_seconds())} s in the future",
        }], event.source, str(event.id))
    return t, None


def _tombstone(r: RecordLike) -> Rejection:
    return Rejection(r, "tombstone", [{"type": "tombstone", "loc": [], "msg": "the record has no value"}])


def _invalid(r: RecordLike, exc: ValidationError) -> Rejection:
    reason, errors = validation_errors(exc)
    source, event_id = declared(r.value or b"")
    return Rejection(r, reason, errors, source, event_id)


def _validate(adapter: TypeAdapter[Any], value: bytes) -> Any:
    try:
        return adapter.validate_json(value)
    except ValidationError as exc:
        return revalidate_json(adapter, value, exc)


def triage(
    records: Sequence[RecordLike], adapter: TypeAdapter[Any], now: datetime, horizon: timedelta, future_skew: timedelta
) -> Triage:
    """Validate every record again (foreign producers may write to the topic) and apply the time window.

    Invalid records, events older than the late horizon and events too far in the future become rejections;
    the rest is returned once per event id (a producer retry inside one batch counts once).
    """
    out = Triage()
    oldest, newest = (now - horizon).timestamp(), (now + future_skew).timestamp()
    seen: set[UUID] = set()
    for r in records:
        if r.value is None:
            out.rejections.append(_tombstone(r))
            continue
        try:
            event = _validate(adapter, r.value)
        except ValidationError as exc:
            out.rejections.append(_invalid(r, exc))
            continue
        _, rejection = _window(r, event, oldest, newest, horizon, future_skew)
        if rejection is not None:
            out.rejections.append(rejection)
            continue
        if event.id in seen:
            out.in_batch_duplicates += 1
            continue
        seen.add(event.id)
        out.events.append(event)
    return out


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
    """Triage and fold a chunk; pure, so it can run in a worker thread while the previous chunk is written.

    Same checks as `triage`, but each event is reduced to what the write path needs right after validation
    (keeping thousands of validated models alive costs more in allocation and garbage collection than the
    validation itself), and the fold happens in the same pass. `secret` keys the record keys of the Cell Key
    Method.
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
            _, rejection = _window(r, event, oldest, newest, horizon, future_skew)
            assert rejection is not None
            rejections.append(rejection)
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


def berlin_day(event: Envelope) -> date:
    """The Europe/Berlin calendar day a KPI counts the event on."""
    return event.time.astimezone(BERLIN).date()


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


def fold(events: Iterable[E], contributions: Callable[[E], list[Contribution]]) -> dict[KpiKey, int]:
    """Sum a batch into KPI deltas for hour, day and month."""
    return fold_contributions((e, contributions(e)) for e in events)


def fold_contributions(items: Iterable[tuple[Envelope, Sequence[Contribution]]]) -> dict[KpiKey, int]:
    """Sum (event, its contributions) pairs into KPI deltas for hour, day and month.

    Events are folded per hour first; days and months are unions of whole hours in Europe/Berlin, so they are
    rolled up from the (far fewer) hourly keys.
    """
    # Keyed by the epoch hour as an int: hashing aware datetimes per event is the slow part of a fold.
    hourly: HourlyDeltas = {}
    get = hourly.get
    for e, contributed in items:
        epoch_hour = int(e.time.timestamp()) // 3600
        muni, svc = e.municipality, e.service
        for metric, dim, value in contributed:
            key = (epoch_hour, muni, svc, metric, dim)
            old = get(key, _ZERO)
            hourly[key] = (old[0] + value, 0)
    return {k: v for k, (v, _) in roll_up(hourly).items()}


Delta = tuple[int, int]
"""(value, key sum): what a batch adds to one KPI row. The key sum is the sum of the record keys of the events
counted in the row (Cell Key Method), kept unreduced here and reduced modulo 2^32 when written."""
_ZERO: Delta = (0, 0)

HourlyDeltas = dict[tuple[int, str, str, str, str], Delta]
"""(epoch hour, municipality, service, metric, dimension) -> delta."""


def fold_hourly(events: Iterable[Counted], into: HourlyDeltas | None = None) -> HourlyDeltas:
    """Sum events already reduced by `prepare` per UTC hour (optionally adding to `into`); every
    contribution also adds the event's record key to its row's key sum."""
    hourly: HourlyDeltas = {} if into is None else into
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


def fold_counted(events: Iterable[Counted]) -> dict[KpiKey, Delta]:
    """Like `fold_contributions`, for events already reduced by `prepare` (with key sums)."""
    return roll_up(fold_hourly(events))


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


def fold_counts(events: Iterable[UsageEvent]) -> Counter[CountKey]:
    """Daily counts per event type (the walking-skeleton table `kpi_event_counts_daily`)."""
    counts: Counter[CountKey] = Counter()
    for e in events:
        counts[(berlin_day(e), e.municipality, e.service, e.type)] += 1
    return counts


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


def relevant(events: Iterable[E], contributions: Callable[[E], list[Contribution]]) -> list[E]:
    """Events that change some KPI (only those need a dedup entry)."""
    return [e for e in events if contributions(e)]


def late_count(events: Iterable[Envelope | Counted], now: datetime) -> int:
    """Events that correct an hour that had already ended when they were processed."""
    current = hour_start(now).timestamp()
    return sum(1 for e in events if (e.epoch if isinstance(e, Counted) else e.time.timestamp()) < current)


def next_offsets(records: Iterable[RecordLike]) -> dict[tuple[str, int], int]:
    """Position to resume from per partition: one past the highest consumed offset."""
    result: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        result[key] = max(result.get(key, 0), r.offset + 1)
    return result
