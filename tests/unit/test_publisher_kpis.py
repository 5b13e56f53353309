"""The KPI tables and cells the API and the dashboard publish (services/publisher/kpis/service.py) against an
independent plain computation (tests/kpi_reference.py): the same tables and cells, cell for cell, for random rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.publisher.kpis import service
from services.publisher.kpis.definitions import DEFINITIONS, FAMILIES, STORED_COUNTS, Family, metrics_of
from shared import ckm
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S
from tests import kpi_reference as reference

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIELDS = ("municipality", "service", "periods", "cells", "raw", "hidden", "by_period")
MUNICIPALITIES = ("06411000", "06412000", "06413000", "06414000")
SERVICES = ("99115005104000", "99102012000000", "99999999000001")
# starts across both DST switches of 2026 (hours), Berlin midnights (days) and first days (months)
SPRING, AUTUMN = datetime(2026, 3, 29, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, tzinfo=UTC)
STARTS = ([SPRING + timedelta(hours=h) for h in range(-2, 4)] + [AUTUMN + timedelta(hours=h) for h in range(-2, 4)]
          + [datetime(2026, 2, 28, 23, tzinfo=UTC) + timedelta(days=d) for d in range(40)]
          + [datetime(2025, 12, 31, 23, tzinfo=UTC), datetime(2026, 1, 31, 23, tzinfo=UTC)])
# not published (sums) and unknown metrics must be dropped alike
OTHER_METRICS = ("payment_amount_cents", "duration_sum_s", "processing_sum_s", "not_a_metric")
DIMENSIONS: dict[str, tuple[str, ...]] = {
    "feedback": ("1", "2", "3", "4", "5", "x"),
    "duration_le": (*(str(b) for b in DURATION_BUCKETS_S), "inf", "45", "60.0"),
    "processing_le": (*(str(b) for b in PROCESSING_BUCKETS_S), "inf", "7"),
    "page_views": ("/start", "/formular", "/bestaetigung", "/a,b", ""),
    "step_completed": ("1", "2", "10", "1.5"),
    "abandoned_after_step": ("0", "1", "3"),
    "payment": ("paypal", "sepa_lastschrift", "kreditkarte"),
}


def random_rows(rng: random.Random) -> list[tuple[Any, ...]]:
    """Stored rows (municipality, service, period_start, metric, dimension, value, key_sum), unique per cell
    as the primary key keeps them; values from 0 (and a negative one now and then) to large, in any order."""
    metrics = [*sorted(STORED_COUNTS), *OTHER_METRICS]
    starts = rng.sample(STARTS, rng.randint(1, 12))
    cells: dict[tuple[Any, ...], tuple[int, int]] = {}
    for _ in range(rng.randint(0, 400)):
        metric = rng.choice(metrics)
        dim = rng.choice(DIMENSIONS.get(metric, ("",)))
        key = (rng.choice(MUNICIPALITIES[:rng.randint(1, 4)]), rng.choice(SERVICES[:rng.randint(1, 3)]),
               rng.choice(starts), metric, dim)
        value = rng.choice((0, 1, 2, 3, 4, rng.randint(5, 50), rng.randint(50, 100_000), -1))
        cells[key] = (value, rng.getrandbits(32))
    rows = [(*k, *v) for k, v in cells.items()]
    if rng.random() < 0.5:
        rows.sort(key=lambda r: (r[0], r[1], r[2]))  # as the primary key returns them
    else:
        rng.shuffle(rows)
    return rows


def epoch_rows(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [(m, s, (p - EPOCH) // timedelta(microseconds=1), *rest) for m, s, p, *rest in rows]


def families(rng: random.Random) -> tuple[Family, ...]:
    if rng.random() < 0.3:
        return FAMILIES
    return tuple(f for f in FAMILIES if rng.random() < 0.4) or ("usage",)


def fields(tables: list[service.Table]) -> list[list[Any]]:
    return [[getattr(t, f) for f in FIELDS] for t in tables]


@pytest.mark.parametrize("seed", range(300))
def test_tables_and_cells_equal_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    rows = random_rows(rng)
    expected = reference.build_tables(rows)
    tables = service.build_tables(epoch_rows(rows))
    assert fields(tables) == fields(expected)
    for fams in (FAMILIES, families(rng), families(rng)):
        assert service.kpi_cells(tables, fams) == reference.kpi_cells(expected, fams)
        assert service.total_cells(tables, fams) == reference.total_cells(expected, fams)
        metrics = metrics_of(fams)
        for t, e in zip(tables, expected, strict=True):
            assert service.table_cells(t, metrics, service.TOTAL) == reference.table_cells(e, metrics, service.TOTAL)


def test_period_starts_are_the_datetimes_asyncpg_would_give() -> None:
    rows = [("06413000", "99115005104000", SPRING + timedelta(hours=1), "sessions_started", "", 5, 7)]
    (table,) = service.build_tables(epoch_rows(rows))
    (start,) = table.periods
    assert start == SPRING + timedelta(hours=1)
    assert start.tzinfo is UTC
    assert service.local_iso(start) == "2026-03-29T03:00:00+02:00"


def test_every_derived_metric_has_a_place_in_the_order() -> None:
    """The published order places the rates, means and percentiles the reference derives by a fixed list."""
    counts = {("sessions_started", ""): 10, ("sessions_submitted", ""): 4, ("sessions_abandoned", ""): 3,
              ("feedback", "5"): 2, ("duration_le", "60"): 3, ("processing_le", "3600"): 1}
    derived = {m for m, *_ in reference.derived_values(counts)}
    assert derived == set(service._DERIVED)
    assert derived == {d.metric for d in DEFINITIONS if d.kind != "count"}


def test_no_rows_no_tables() -> None:
    assert service.build_tables([]) == []


@pytest.mark.parametrize("seed", range(100))
def test_pooled_comparison_values_equal_the_reference(seed: int) -> None:
    """A group's compared KPIs: its range totals added (true counts and key sums), perturbed as cells of their
    own, and the rates, mean and percentiles derived from those, as the reference derives them."""
    rng = random.Random(seed)
    tables = service.build_tables(epoch_rows(random_rows(rng)))
    population = rng.choice((0, 1, 48_000, 760_000))
    raw: dict[tuple[str, str], tuple[int, int]] = {}
    for t in tables:
        for (p, m, d), (v, k) in t.raw.items():
            if p == service.TOTAL:
                old = raw.get((m, d), (0, 0))
                raw[(m, d)] = (old[0] + v, old[1] + k)
    cells = {c: ckm.perturb(v, k % ckm.MODULUS) if v > 0 else 0 for c, (v, k) in raw.items()}
    expected = {m: (v, False) for m, _, v, _ in reference.derived_values(cells)
                if m in service.COMPARED_METRICS and v is not None}
    started = cells.get(("sessions_started", ""), 0)
    if started > 0 and population:
        expected["sessions_started_per_10k"] = (round(started * 10_000 / population, 2), False)
    assert service._pooled(tables, population) == expected
