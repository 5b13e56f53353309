"""An independent, plain computation of the open-data API's KPI tables and cells, for tests.

It is written for clarity, not speed: grouping into tables, one perturbation per cell through
`shared.ckm.perturb`, derived values by a scan of each period's cells, then one sort per period.
`services.publisher.kpis.service` (the code the API and the dashboard run) must give the same results,
cell for cell, for any stored rows (tests/unit/test_publisher_kpis.py, tests/integration/test_publisher_kpis.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from services.publisher.kpis.definitions import METRIC_ORDER, STORED_COUNTS, Family, metrics_of
from services.publisher.kpis.service import TOTAL, Cell, Raw, Table, dimension_key, local_iso
from shared import ckm
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S


def build_tables(rows: Iterable[Any]) -> list[Table]:
    """Group stored rows (municipality, service, period_start, metric, dimension, value, key_sum) into tables of
    perturbed cells: each period's cells, the ratings count, and the range totals, each a cell of its own.

    Only counts are published: stored sums of amounts and durations are dropped."""
    grouped: dict[tuple[str, str], list[tuple[Any, str, str, int, int]]] = defaultdict(list)
    counts = STORED_COUNTS
    for muni, svc, start, metric, dim, value, key_sum in rows:
        if metric in counts:
            grouped[(muni, svc)].append((start, metric, dim, value, key_sum))
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
            value = ckm.perturb(v, k % ckm.MODULUS) if v > 0 else 0
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


