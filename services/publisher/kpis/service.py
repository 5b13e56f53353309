"""Publisher logic: stored KPI rows -> perturbed (Cell Key Method), derived, published rows (no I/O, no framework
types)."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo

from services.publisher.kpis.definitions import FAMILIES, METRIC_ORDER, STORED_COUNTS, Family, metrics_of
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


def _lookup(table: ckm.PerturbationTable | None) -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], int]:
    t = table or ckm.table()
    return [(row.deviations, row.thresholds) for row in t.rows], t.n_max


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


def build_tables(rows: Iterable[Any]) -> list[Table]:
    """Group stored rows (municipality, service, period_start, metric, dimension, value, key_sum) into tables of
    perturbed cells: each period's cells, the ratings count, and the range totals, each a cell of its own.

    Only counts are published: stored sums of amounts and durations are dropped here. (One pass per table
    with plain dicts: this is the computed path of every KPI query.)"""
    grouped: dict[tuple[str, str], list[tuple[Any, str, str, int, int]]] = defaultdict(list)
    counts = STORED_COUNTS
    for muni, svc, start, metric, dim, value, key_sum in rows:
        if metric in counts:
            grouped[(muni, svc)].append((start, metric, dim, value, key_sum))
    lookup, last = _lookup(None)
    modulus = ckm.MODULUS
    tables = []
    for (muni, svc), items in sorted(grouped.items()):
        raw: dict[tuple[Any, str, str], Raw] = {}
        total_v: dict[tuple[str, str], int] = {}
        total_k: dict[tuple[str, str], int] = {}
        fb_v: dict[Any, int] = {}
        fb_k: dict[Any, int] = {}
        for p, m, d, v, k in items:
            raw[(p, m, d)] = (v, k)
            md = (m, d)
            total_v[md] = total_v.get(md, 0) + v
            total_k[md] = total_k.get(md, 0) + k
            if m == "feedback":
                fb_v[p] = fb_v.get(p, 0) + v
                fb_k[p] = fb_k.get(p, 0) + k
        if fb_v:
            for p, v in fb_v.items():
                raw[(p, "feedback_count", "")] = (v, fb_k[p])
            total_v[("feedback_count", "")] = sum(fb_v.values())
            total_k[("feedback_count", "")] = sum(fb_k.values())
        for md, v in total_v.items():
            raw[(TOTAL, md[0], md[1])] = (v, total_k[md])
        cells: dict[tuple[Any, str, str], int] = {}
        by_period: dict[Any, dict[tuple[str, str], int]] = {}
        for c, (v, k) in raw.items():
            if v <= 0:
                value = 0
            else:
                devs, bounds = lookup[v if v < last else last]
                value = v + devs[bisect_right(bounds, k % modulus)]
            cells[c] = value
            period = by_period.get(c[0])
            if period is None:
                period = by_period[c[0]] = {}
            period[(c[1], c[2])] = value
        periods = sorted(p for p in by_period if p != TOTAL)
        tables.append(Table(muni, svc, periods, cells, raw, by_period=by_period))
    return tables


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
    """(metric, dimension, value, suppressed) of the values computed from one period's perturbed counts."""
    return derived_values(t.by_period.get(p, {}))


def derived_values(c: dict[tuple[str, str], int]) -> list[tuple[str, str, float | None, bool]]:
    """Rates, mean and percentiles from published (perturbed) counts; never from true ones."""
    out: list[tuple[str, str, float | None, bool]] = []
    started = c.get(("sessions_started", ""), 0)
    if started > 0:
        for metric, part in (("conversion_rate", "sessions_submitted"), ("abandonment_rate", "sessions_abandoned")):
            out.append((metric, "", round(c.get((part, ""), 0) / started, 4), False))
    stars: dict[str, int] = {}
    buckets: dict[str, dict[str, int]] = {"duration_le": {}, "processing_le": {}}
    for (m, d), v in c.items():
        if m == "feedback":
            stars[d] = v
        elif m in buckets:
            buckets[m][d] = v
    rated = sum(stars.values())
    if rated > 0:
        mean = sum(int(d) * v for d, v in stars.items() if d.isdigit()) / rated
        out.append(("mean_stars", "", round(mean, 2), False))
    for metric, bounds in (("duration", DURATION_BUCKETS_S), ("processing", PROCESSING_BUCKETS_S)):
        counted = buckets[f"{metric}_le"]
        if counted:
            for q, name in ((0.5, "p50"), (0.9, "p90")):
                out.append((f"{metric}_{name}_s", "", percentile(counted, bounds, q), False))
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
    """Published cells of one period (or TOTAL) of a table, in stable order.

    A count perturbed to 0 is left out like a true 0 (no event): so a missing cell does not tell which it
    was, and "a missing cell means 0" holds for every reader."""
    cells: list[Cell] = []
    label = "" if period == TOTAL else local_iso(period)
    for (m, d), v in t.by_period.get(period, {}).items():
        if v and m in metrics:
            cells.append((label, t.municipality, t.service, m, d, v, False))
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
    """Compared KPIs over the range for a group of tables: the group's counts are cells of their own (true
    counts and key sums added, then perturbed), and the KPIs are computed from those perturbed counts."""
    raw: dict[tuple[str, str], Raw] = {}
    for t in tables:
        for (p, m, d), (v, k) in t.raw.items():
            if p == TOTAL:
                _add(raw, (m, d), v, k)
    cells: dict[tuple[str, str], int] = perturbed(raw)
    out: dict[str, tuple[float | None, bool]] = {}
    started = cells.get(("sessions_started", ""), 0)
    if started > 0 and population:
        out["sessions_started_per_10k"] = (round(started * 10_000 / population, 2), False)
    for metric, _, value, _ in derived_values(cells):
        if metric in COMPARED_METRICS and value is not None:
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
