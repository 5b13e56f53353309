"""The computed path of a KPI query with plain tuples: stored rows -> perturbed tables -> published cells.

Same results as `service.build_tables`, `service.kpi_cells` and `service.total_cells` (the typed reference,
which the dashboard uses and tests/unit/test_publisher_fastpath.py holds this module to, cell for cell, on
random rows), with less work per row and per cell, because this is the path of every first request of a query
(docs/adr/0052-computed-kpi-path.md):

* period starts arrive as epoch microseconds (`repository.kpi_rows_epoch`): asyncpg builds no datetime per
  row, and the few distinct starts of a query become datetimes once each;
* a table's rows are found without a lookup per row (rows arrive table by table) and each row's cell key and
  (metric, dimension) key are built once and shared by raw, perturbed and per-period cells;
* the published cells of a table are emitted in the order of its (metric, dimension) keys sorted once per
  table instead of a sort per period.

Boundaries are typed: rows in, `service.Table` and `service.Cell` out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from services.publisher.kpis.definitions import DEFINITIONS, METRIC_ORDER, STORED_COUNTS, Family, metrics_of
from services.publisher.kpis.service import TOTAL, Cell, Raw, Table, dimension_key, local_iso
from shared import ckm
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S

EpochRow = tuple[str, str, int, str, str, int, int]
"""(municipality, service, period start in microseconds since 1970-01-01 UTC, metric, dimension, value,
key_sum): what `repository.kpi_rows_epoch` returns."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_FEEDBACK_COUNT: Final = ("feedback_count", "")
_DERIVED: Final = tuple(d.metric for d in DEFINITIONS if d.kind != "count")
"""Metrics `service.derived_values` may return (rates, means, percentiles; all with an empty dimension)."""


def _lookup() -> tuple[list[tuple[tuple[int, ...], tuple[int, ...]]], int]:
    t = ckm.table()
    return [(row.deviations, row.thresholds) for row in t.rows], t.n_max


def build_tables(rows: Iterable[EpochRow] | Iterable[asyncpg.Record]) -> list[Table]:
    """Perturbed tables of stored rows, equal to `service.build_tables` of the same rows with datetimes."""
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
    lookup, last = _lookup()
    modulus = ckm.MODULUS
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
        cells: dict[tuple[Any, str, str], int] = {}
        by_period: dict[Any, dict[tuple[str, str], int]] = {}
        period: dict[tuple[str, str], int] = {}
        last_p: Any = None
        for c, (v, k) in raw.items():
            if v <= 0:
                value = 0
            else:
                devs, bounds = lookup[v if v < last else last]
                value = v + devs[bisect_right(bounds, k % modulus)]
            cells[c] = value
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
    order = [(m, d, (m, d), False) for m, d in keys if m in metrics]
    order += [(m, "", (m, ""), True) for m in _DERIVED if m in metrics]
    order.sort(key=lambda r: (METRIC_ORDER[r[0]], dimension_key(r[1])))
    stars = sorted((k, k[1]) for k in keys if k[0] == "feedback")
    buckets = [(name, sorted(k for k in keys if k[0] == f"{name}_le"),
                [(b, (f"{name}_le", str(b))) for b in bounds]) for name, bounds in _BUCKETS]
    return _Layout(order, stars, buckets)


def _percentile(c: dict[Key, int], bounds: list[tuple[int, Key]], n: int, q: float) -> float | None:
    """`service.percentile` over the bucket counts of one period (n: their sum)."""
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
    """`service.derived_values` of one period, by metric, with lookups of the table's keys instead of a scan."""
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


def kpi_cells(tables: list[Table], families: tuple[Family, ...]) -> list[Cell]:
    """`service.kpi_cells`: the published cells of every period, table by table."""
    metrics = metrics_of(families)
    out: list[Cell] = []
    for t in tables:
        layout = _layout(t, metrics)
        for p in t.periods:
            _table_cells(t, layout, p, out)
    return out


def total_cells(tables: list[Table], families: tuple[Family, ...]) -> list[Cell]:
    """`service.total_cells`: the published range totals, table by table."""
    metrics = metrics_of(families)
    out: list[Cell] = []
    for t in tables:
        _table_cells(t, _layout(t, metrics), TOTAL, out)
    return out
