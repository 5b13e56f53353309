"""Publisher logic: stored KPI rows -> suppressed, derived, published rows (no I/O, no framework types)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from services.publisher import suppression
from services.publisher.definitions import FAMILIES, METRIC_ORDER, Family, metrics_of
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S, Granularity
from shared.reference import Municipality, municipalities

BERLIN: Final = ZoneInfo("Europe/Berlin")
TOTAL: Final = "total"
"""Period key of a table's margin: the sum over all periods of the requested range."""

# Distributions whose dimensions add up to another published count in the same period. A reader may assume
# these identities, so suppression treats them as known.
_SPLITS: Final = (
    ("channel", "sessions_started"),
    ("device", "sessions_started"),
    ("abandoned_after_step", "sessions_abandoned"),
    ("feedback", "feedback_count"),
    ("duration_le", "sessions_submitted"),
)
_EQUAL_SUMS: Final = (("processing_le", "cases_closed"),)


@dataclass(frozen=True, slots=True)
class KpiQuery:
    """A validated KPI query; dates are Europe/Berlin calendar days, both inclusive."""

    municipalities: tuple[str, ...]
    services: tuple[str, ...]
    period: Granularity
    date_from: date
    date_to: date
    families: tuple[Family, ...] = FAMILIES

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) as aware datetimes; months cover the whole months that `from` and `to` fall in."""
        start, last = self.date_from, self.date_to
        if self.period == "month":
            start = start.replace(day=1)
            last = (last.replace(day=1) + timedelta(days=32)).replace(day=1) - timedelta(days=1)
        return (datetime.combine(start, datetime.min.time(), BERLIN),
                datetime.combine(last + timedelta(days=1), datetime.min.time(), BERLIN))


@dataclass(slots=True)
class Table:
    """All cells of one municipality x service over the range: per period and the range total."""

    municipality: str
    service: str
    periods: list[datetime]
    cells: dict[tuple[Any, str, str], int]
    hidden: set[tuple[Any, str, str]] = field(default_factory=set)
    by_period: dict[Any, dict[tuple[str, str], int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for (p, m, d), v in self.cells.items():
            self.by_period.setdefault(p, {})[(m, d)] = v


def build_tables(rows: Iterable[Any]) -> list[Table]:
    """Group stored rows (municipality, service, period_start, metric, dimension, value) into tables."""
    grouped: dict[tuple[str, str], dict[tuple[Any, str, str], int]] = defaultdict(dict)
    for muni, svc, start, metric, dim, value in rows:
        grouped[(muni, svc)][(start, metric, dim)] = value
    tables = []
    for (muni, svc), cells in sorted(grouped.items()):
        periods = sorted({p for p, _, _ in cells})
        feedback: dict[Any, int] = defaultdict(int)
        for (p, m, _), v in cells.items():
            if m == "feedback":
                feedback[p] += v
        for p, n in feedback.items():
            if n:
                cells[(p, "feedback_count", "")] = n
        totals: dict[tuple[Any, str, str], int] = defaultdict(int)
        for (_, m, d), v in cells.items():
            totals[(TOTAL, m, d)] += v
        cells.update(totals)
        tables.append(Table(muni, svc, periods, cells))
    return tables


def identities(table: Table) -> list[list[tuple[Any, int]]]:
    """Every linear identity a reader can rely on between the cells of one table."""
    by_period: dict[Any, dict[str, list[tuple[Any, str, str]]]] = defaultdict(lambda: defaultdict(list))
    series: dict[tuple[str, str], list[tuple[Any, str, str]]] = defaultdict(list)
    for key in table.cells:
        p, m, d = key
        by_period[p][m].append(key)
        if p != TOTAL:
            series[(m, d)].append(key)
    out: list[list[tuple[Any, int]]] = []
    for (m, d), keys in series.items():
        out.append([(k, 1) for k in keys] + [((TOTAL, m, d), -1)])
    for p, metrics in by_period.items():
        for part, whole in _SPLITS:
            if part in metrics or (p, whole, "") in table.cells:
                out.append([(k, 1) for k in metrics.get(part, [])] + [((p, whole, ""), -1)])
        for a, b in _EQUAL_SUMS:
            if a in metrics or b in metrics:
                out.append([(k, 1) for k in metrics.get(a, [])] + [(k, -1) for k in metrics.get(b, [])])
    return out


def apply_suppression(tables: list[Table], k: int) -> None:
    for t in tables:
        # cells in time order (the range total last), then metric and dimension; periods ranked once
        rank = {p: i for i, p in enumerate(t.periods)}
        last = len(rank)

        def order(cell: tuple[Any, str, str], rank: dict[Any, int] = rank, last: int = last) -> tuple[int, str, str]:
            return (rank.get(cell[0], last), cell[1], cell[2])

        t.hidden = suppression.suppress(t.cells, identities(t), k, order)


def percentile(counts: dict[str, int], bounds: tuple[int, ...], q: float) -> float | None:
    """q-quantile from fixed, non-cumulative buckets, interpolated linearly inside the bucket."""
    n = sum(counts.values())
    if n <= 0:
        return None
    target, below, lower = q * n, 0, 0
    for upper in bounds:
        c = counts.get(str(upper), 0)
        if c and below + c >= target:
            return round(lower + (upper - lower) * (target - below) / c, 1)
        below += c
        lower = upper
    return float(lower)  # the open bucket above the last bound: its lower bound is all we know


def _derived(t: Table, p: Any) -> list[tuple[str, str, float | None, bool]]:
    """(metric, dimension, value, suppressed) of the values computed from one period's counts."""
    c, hidden = t.by_period.get(p, {}), t.hidden
    out: list[tuple[str, str, float | None, bool]] = []
    started = c.get(("sessions_started", ""), 0)
    if started:
        for metric, part in (("conversion_rate", "sessions_submitted"), ("abandonment_rate", "sessions_abandoned")):
            hid = (p, "sessions_started", "") in hidden or (p, part, "") in hidden
            out.append((metric, "", None if hid else round(c.get((part, ""), 0) / started, 4), hid))
    stars = {d: v for (m, d), v in c.items() if m == "feedback"}
    if stars:
        hid = (p, "feedback_count", "") in hidden or any((p, "feedback", d) in hidden for d in stars)
        mean = sum(int(d) * v for d, v in stars.items() if d.isdigit()) / sum(stars.values())
        out.append(("mean_stars", "", None if hid else round(mean, 2), hid))
    for metric, bounds in (("duration", DURATION_BUCKETS_S), ("processing", PROCESSING_BUCKETS_S)):
        buckets = {d: v for (m, d), v in c.items() if m == f"{metric}_le"}
        if buckets:
            hid = any((p, f"{metric}_le", d) in hidden for d in buckets)
            for q, name in ((0.5, "p50"), (0.9, "p90")):
                out.append((f"{metric}_{name}_s", "", None if hid else percentile(buckets, bounds, q), hid))
    return out


@lru_cache(maxsize=10_000)
def dimension_key(d: str) -> tuple[int, float, str]:
    if d == "inf":
        return (0, math.inf, d)
    try:
        return (0, float(d), d)
    except ValueError:
        return (1, 0.0, d)


@lru_cache(maxsize=100_000)
def local_iso(ts: datetime) -> str:
    return ts.astimezone(BERLIN).isoformat()


Cell = tuple[str, str, str, str, str, float | int | None, bool]
"""(period_start or '', municipality, service, metric, dimension, value, suppressed)."""


def table_cells(t: Table, metrics: frozenset[str], period: Any) -> list[Cell]:
    """Published cells of one period (or TOTAL) of a table, in stable order."""
    cells: list[Cell] = []
    label = "" if period == TOTAL else local_iso(period)
    for (m, d), v in t.by_period.get(period, {}).items():
        if m in metrics:
            hid = (period, m, d) in t.hidden
            cells.append((label, t.municipality, t.service, m, d, None if hid else v, hid))
    for m, d, value, hid in _derived(t, period):
        if m in metrics:
            cells.append((label, t.municipality, t.service, m, d, value, hid))
    cells.sort(key=lambda r: (METRIC_ORDER[r[3]], dimension_key(r[4])))
    return cells


def kpi_cells(tables: list[Table], families: tuple[Family, ...]) -> list[Cell]:
    metrics = metrics_of(families)
    out: list[Cell] = []
    for t in tables:
        for p in t.periods:
            out.extend(table_cells(t, metrics, p))
    return out


def total_cells(tables: list[Table], families: tuple[Family, ...]) -> list[Cell]:
    metrics = metrics_of(families)
    out: list[Cell] = []
    for t in tables:
        out.extend(table_cells(t, metrics, TOTAL))
    return out


# --- comparison -------------------------------------------------------------------------------------------

SizeClassId = Literal["grossstadt", "grosse_mittelstadt", "kleine_mittelstadt", "kleinstadt", "landgemeinde"]


@dataclass(frozen=True, slots=True)
class SizeClass:
    id: SizeClassId
    label_de: str
    min_population: int
    max_population: int | None


# Thresholds of the BBSR city and municipality types (Stadt- und Gemeindetypen in Deutschland).
SIZE_CLASSES: Final = (
    SizeClass("grossstadt", "Großstadt", 100_000, None),
    SizeClass("grosse_mittelstadt", "Größere Mittelstadt", 50_000, 99_999),
    SizeClass("kleine_mittelstadt", "Kleinere Mittelstadt", 20_000, 49_999),
    SizeClass("kleinstadt", "Kleinstadt", 5_000, 19_999),
    SizeClass("landgemeinde", "Landgemeinde", 0, 4_999),
)


def size_class(population: int) -> SizeClass:
    return next(s for s in SIZE_CLASSES if population >= s.min_population)


def size_class_members(m: Municipality) -> list[Municipality]:
    cls = size_class(m.population)
    return [o for o in municipalities() if size_class(o.population) == cls]


COMPARED_METRICS: Final = (
    "sessions_started_per_10k", "conversion_rate", "abandonment_rate", "mean_stars", "duration_p50_s",
    "processing_p50_s",
)


def _pooled(tables: list[Table], population: int) -> dict[str, tuple[float | None, bool]]:
    """Compared KPIs over the range for a group of tables; a value is suppressed if any input cell is."""
    cells: dict[tuple[str, str], int] = defaultdict(int)
    hidden: set[tuple[str, str]] = set()
    for t in tables:
        for (p, m, d), v in t.cells.items():
            if p == TOTAL:
                cells[(m, d)] += v
                if (p, m, d) in t.hidden:
                    hidden.add((m, d))
    out: dict[str, tuple[float | None, bool]] = {}

    def put(metric: str, inputs: Iterable[tuple[str, str]], value: float | None) -> None:
        if value is None:
            return
        hid = any(i in hidden for i in inputs)
        out[metric] = (None if hid else value, hid)

    started = cells.get(("sessions_started", ""), 0)
    if started and population:
        put("sessions_started_per_10k", [("sessions_started", "")], round(started * 10_000 / population, 2))
    if started:
        for metric, part in (("conversion_rate", "sessions_submitted"), ("abandonment_rate", "sessions_abandoned")):
            put(metric, [("sessions_started", ""), (part, "")], round(cells.get((part, ""), 0) / started, 4))
    stars = {d: v for (m, d), v in cells.items() if m == "feedback" and v}
    if stars:
        mean = sum(int(d) * v for d, v in stars.items() if d.isdigit()) / sum(stars.values())
        put("mean_stars", [("feedback", d) for d in stars] + [("feedback_count", "")], round(mean, 2))
    for metric, bounds in (("duration", DURATION_BUCKETS_S), ("processing", PROCESSING_BUCKETS_S)):
        buckets = {d: v for (m, d), v in cells.items() if m == f"{metric}_le" and v}
        if buckets:
            put(f"{metric}_p50_s", [(f"{metric}_le", d) for d in buckets], percentile(buckets, bounds, 0.5))
    return out


def comparison_items(
    subject: Municipality, tables: list[Table], services: Sequence[str],
) -> list[dict[str, Any]]:
    """Per service and compared KPI: the municipality, the Hessen value and its size-class value."""
    by_key = {(t.municipality, t.service): t for t in tables}
    members = {m.ags: m for m in municipalities()}
    peers = size_class_members(subject)
    items: list[dict[str, Any]] = []
    for svc in services:
        def group(ms: Iterable[Municipality], svc: str = svc) -> dict[str, tuple[float | None, bool]]:
            ms = list(ms)
            ts = [by_key[(m.ags, svc)] for m in ms if (m.ags, svc) in by_key]
            return _pooled(ts, sum(m.population for m in ms))

        own = group([subject])
        hessen = group(members.values())
        cls = group(peers)
        for metric in COMPARED_METRICS:
            if metric not in own and metric not in hessen:
                continue
            v, s = own.get(metric, (None, False))
            hv, hs = hessen.get(metric, (None, False))
            cv, cs = cls.get(metric, (None, False))
            items.append({
                "service": svc, "metric": metric, "value": v, "suppressed": s, "hessen": hv,
                "hessen_suppressed": hs, "size_class": cv, "size_class_suppressed": cs,
            })
    return items


def today_berlin() -> date:
    return datetime.now(UTC).astimezone(BERLIN).date()
