"""Publisher logic: stored KPI rows -> perturbed (Cell Key Method), derived, published rows (no I/O, no framework
types)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

import asyncpg

from services.publisher.kpis.definitions import DEFINITIONS, FAMILIES, METRIC_ORDER, STORED_COUNTS, Family, metrics_of
from shared import ckm
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S, Granularity
from shared.reference import Municipality, municipalities

BERLIN: Final = ZoneInfo("Europe/Berlin")
TOTAL: Final = "total"
"""Period key of a table's margin: the sum over all periods of the requested range."""

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


Raw = tuple[int, int]
"""(true count, key sum) of a cell: never published, only perturbed."""


@dataclass(slots=True)
class Table:
    """All cells of one municipality x service over the range: per period and the range total.

    `cells` holds the published (perturbed) counts; `raw` the true counts with their key sums, from which
    other cells (groups of tables in the comparison) are formed and perturbed as cells of their own.
    `hidden` stays empty: under the Cell Key Method no value is withheld."""

    municipality: str
    service: str
    periods: list[datetime]
    cells: dict[tuple[Any, str, str], int]
    raw: dict[tuple[Any, str, str], Raw] = field(default_factory=dict, repr=False)
    hidden: set[tuple[Any, str, str]] = field(default_factory=set)
    by_period: dict[Any, dict[tuple[str, str], int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.by_period:
            for (p, m, d), v in self.cells.items():
                self.by_period.setdefault(p, {})[(m, d)] = v


def _add(into: dict[Any, Raw], key: Any, value: int, keys: int) -> None:
    old = into.get(key)
    into[key] = (value, keys) if old is None else (old[0] + value, old[1] + keys)


Lookup = tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], int]
_LOOKUPS: dict[int, tuple[ckm.PerturbationTable, Lookup]] = {}


def _lookup(table: ckm.PerturbationTable | None) -> Lookup:
    """(deviations, thresholds) of each row of the table, and its last row's count; built once per table."""
    t = table or ckm.table()
    got = _LOOKUPS.get(id(t))
    if got is None or got[0] is not t:
        if len(_LOOKUPS) > 8:  # tables other than the published one are built by tests only
            _LOOKUPS.clear()
        got = _LOOKUPS[id(t)] = (t, ([(row.deviations, row.thresholds) for row in t.rows], t.n_max))
    return got[1]


def perturbed(raw: dict[Any, Raw], table: ckm.PerturbationTable | None = None) -> dict[Any, int]:
    """Published value of each cell: its true count perturbed by the table at its cell key."""
    rows, last = _lookup(table)
    modulus = ckm.MODULUS
    out: dict[Any, int] = {}
    for c, (v, k) in raw.items():
        if v <= 0:
            out[c] = 0
        else:
            devs, bounds = rows[v if v < last else last]
            out[c] = v + devs[bisect_right(bounds, k % modulus)]
    return out


EpochRow = tuple[str, str, int, str, str, int, int]
"""(municipality, service, period start in microseconds since 1970-01-01 UTC, metric, dimension, value,
key_sum): what `repository.kpi_rows` returns."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FEEDBACK_COUNT: Final = ("feedback_count", "")
_DERIVED: Final = tuple(d.metric for d in DEFINITIONS if d.kind != "count")
"""Metrics `_derived` may return (rates, means, percentiles; all with an empty dimension)."""


def build_tables(rows: Iterable[EpochRow] | Iterable[asyncpg.Record]) -> list[Table]:
    """Group stored rows into tables (municipality x service) of perturbed cells: each period's cells, the ratings
    count, and the range totals, each a cell of its own.

    Only counts are published: stored sums of amounts and durations are dropped here. This is the computed path
    of every first request of a query (ADR 0052): period starts arrive as epoch microseconds and become
    datetimes once per distinct start, rows arrive table by table, and every key is built once."""
    counts = STORED_COUNTS
    starts: dict[int, datetime] = {}
    # per table: raw cells in row order, totals per (metric, dimension), feedback per period
    groups: dict[tuple[str, str], tuple[dict[Any, Raw], dict[tuple[str, str], list[int]], dict[Any, list[int]]]] = {}
    raw: dict[Any, Raw] = {}
    totals: dict[tuple[str, str], list[int]] = {}
    feedback: dict[Any, list[int]] = {}
    cur_m = cur_s = None
    for muni, svc, us, m, d, v, k in rows:
        if m not in counts:
            continue
        if svc != cur_s or muni != cur_m:
            cur_m, cur_s = muni, svc
            group = groups.get((muni, svc))
            if group is None:
                group = groups[(muni, svc)] = ({}, {}, {})
            raw, totals, feedback = group
        p = starts.get(us)
        if p is None:
            p = starts[us] = _EPOCH + timedelta(microseconds=us)
        md = (m, d)
        raw[(p, m, d)] = (v, k)
        t = totals.get(md)
        if t is None:
            totals[md] = [v, k]
        else:
            t[0] += v
            t[1] += k
        if m == "feedback":
            f = feedback.get(p)
            if f is None:
                feedback[p] = [v, k]
            else:
                f[0] += v
                f[1] += k
    tables = []
    for (muni, svc), (raw, totals, feedback) in sorted(groups.items()):
        if feedback:
            fb_v = fb_k = 0
            for p, (v, k) in feedback.items():
                raw[(p, "feedback_count", "")] = (v, k)
                fb_v += v
                fb_k += k
            totals[_FEEDBACK_COUNT] = [fb_v, fb_k]
        for (m, d), (v, k) in totals.items():
            raw[(TOTAL, m, d)] = (v, k)
        cells: dict[tuple[Any, str, str], int] = perturbed(raw)
        by_period: dict[Any, dict[tuple[str, str], int]] = {}
        period: dict[tuple[str, str], int] = {}
        last_p: Any = None
        for c, value in cells.items():
            p = c[0]
            if p is not last_p:
                last_p = p
                got = by_period.get(p)
                if got is None:
                    got = by_period[p] = {}
                period = got
            period[(c[1], c[2])] = value
        periods = sorted(p for p in by_period if p != TOTAL)
        tables.append(Table(muni, svc, periods, cells, raw, by_period=by_period))
    return tables


Key = tuple[str, str]
"""(metric, dimension) of a cell within a period."""
_STARTED: Final = ("sessions_started", "")
_SUBMITTED: Final = ("sessions_submitted", "")
_ABANDONED: Final = ("sessions_abandoned", "")
_BUCKETS: Final = (("duration", DURATION_BUCKETS_S), ("processing", PROCESSING_BUCKETS_S))


@dataclass(frozen=True, slots=True)
class _Layout:
    """What one table's periods share: the order of their published keys and where derived values come from."""

    order: list[tuple[str, str, Key, bool]]
    """(metric, dimension, key, derived) of every key the table's cells may have, in the order of the cells."""
    stars: list[tuple[Key, str]]
    """The table's feedback keys and their dimensions (the stars)."""
    buckets: list[tuple[str, list[Key], list[tuple[int, Key]]]]
    """Per histogram: metric name, the table's keys of its buckets, and (bound, key) of each fixed bound."""


def _layout(t: Table, metrics: frozenset[str]) -> _Layout:
    keys: set[Key] = set()
    for period in t.by_period.values():
        keys.update(period)
    return _layout_of(keys, metrics)


def _layout_of(keys: Iterable[Key], metrics: frozenset[str]) -> _Layout:
    keys = set(keys)
    order = [(m, d, (m, d), False) for m, d in keys if m in metrics]
    order += [(m, "", (m, ""), True) for m in _DERIVED if m in metrics]
    order.sort(key=lambda r: (METRIC_ORDER[r[0]], dimension_key(r[1])))
    stars = sorted((k, k[1]) for k in keys if k[0] == "feedback")
    buckets = [(name, sorted(k for k in keys if k[0] == f"{name}_le"),
                [(b, (f"{name}_le", str(b))) for b in bounds]) for name, bounds in _BUCKETS]
    return _Layout(order, stars, buckets)


def _percentile(c: dict[Key, int], bounds: list[tuple[int, Key]], n: int, q: float) -> float | None:
    """q-quantile from fixed, non-cumulative buckets (n: their sum), interpolated linearly inside the bucket;
    the open bucket above the last bound gives its lower bound, all that is known."""
    if n <= 0:
        return None
    target, below, lower = q * n, 0, 0
    for upper, key in bounds:
        got = c.get(key, 0)
        if got and below + got >= target:
            return round(lower + (upper - lower) * (target - below) / got, 1)
        below += got
        lower = upper
    return float(lower)


def _derived(c: dict[Key, int], layout: _Layout) -> dict[str, float | None]:
    """Rates, mean and percentiles of one period from its published (perturbed) counts, never from true ones; by
    metric, with lookups of the table's keys instead of a scan."""
    out: dict[str, float | None] = {}
    started = c.get(_STARTED, 0)
    if started > 0:
        out["conversion_rate"] = round(c.get(_SUBMITTED, 0) / started, 4)
        out["abandonment_rate"] = round(c.get(_ABANDONED, 0) / started, 4)
    rated = weighted = 0
    for key, d in layout.stars:
        v = c.get(key)
        if v is not None:
            rated += v
            if d.isdigit():
                weighted += int(d) * v
    if rated > 0:
        out["mean_stars"] = round(weighted / rated, 2)
    for name, keys, bounds in layout.buckets:
        present = [v for v in map(c.get, keys) if v is not None]
        if present:
            n = sum(present)
            out[f"{name}_p50_s"] = _percentile(c, bounds, n, 0.5)
            out[f"{name}_p90_s"] = _percentile(c, bounds, n, 0.9)
    return out


def _table_cells(t: Table, layout: _Layout, period: Any, out: list[Cell]) -> None:
    label = "" if period == TOTAL else local_iso(period)
    muni, svc = t.municipality, t.service
    c = t.by_period.get(period, {})
    derived = _derived(c, layout)
    for m, d, key, is_derived in layout.order:
        if is_derived:
            if m in derived:
                out.append((label, muni, svc, m, "", derived[m], False))
        else:
            v = c.get(key)
            if v:
                out.append((label, muni, svc, m, d, v, False))


def table_cells(t: Table, metrics: frozenset[str], period: Any) -> list[Cell]:
    """Published cells of one period (or TOTAL) of a table, in stable order.

    A count perturbed to 0 is left out like a true 0 (no event): so a missing cell does not tell which it
    was, and "a missing cell means 0" holds for every reader."""
    out: list[Cell] = []
    _table_cells(t, _layout(t, metrics), period, out)
    return out


def kpi_cells(tables: list[Table], families: tuple[Family, ...]) -> list[Cell]:
    """The published cells of every period, table by table."""
    metrics = metrics_of(families)
    out: list[Cell] = []
    for t in tables:
        layout = _layout(t, metrics)
        for p in t.periods:
            _table_cells(t, layout, p, out)
    return out


def total_cells(tables: list[Table], families: tuple[Family, ...]) -> list[Cell]:
    """The published range totals, table by table."""
    metrics = metrics_of(families)
    out: list[Cell] = []
    for t in tables:
        _table_cells(t, _layout(t, metrics), TOTAL, out)
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
_COMPARED: Final = frozenset(COMPARED_METRICS)


def _pooled(tables: list[Table], population: int) -> dict[str, tuple[float | None, bool]]:
    """Compared KPIs over the range for a group of tables: the group's counts are cells of their own (true
    counts and key sums added, then perturbed), and the KPIs are computed from those perturbed counts."""
    raw: dict[tuple[str, str], Raw] = {}
    for t in tables:
        for (p, m, d), (v, k) in t.raw.items():
            if p == TOTAL:
                _add(raw, (m, d), v, k)
    cells: dict[tuple[str, str], int] = perturbed(raw)
    derived = _derived(cells, _layout_of(cells, _COMPARED))
    out: dict[str, tuple[float | None, bool]] = {}
    started = cells.get(("sessions_started", ""), 0)
    if started > 0 and population:
        out["sessions_started_per_10k"] = (round(started * 10_000 / population, 2), False)
    for metric, value in derived.items():
        if metric in _COMPARED and value is not None:
            out[metric] = (value, False)
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
