"""The computed path with plain tuples (services/publisher/kpis/fastpath.py) against the typed reference in
services/publisher/service.py: the same tables and the same published cells, cell for cell, for random rows."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.publisher.kpis import fastpath, service
from services.publisher.kpis.definitions import DEFINITIONS, FAMILIES, STORED_COUNTS, Family
from shared.kpis import DURATION_BUCKETS_S, PROCESSING_BUCKETS_S

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
def test_tables_and_cells_equal_the_typed_path(seed: int) -> None:
    rng = random.Random(seed)
    rows = random_rows(rng)
    typed = service.build_tables(rows)
    fast = fastpath.build_tables(epoch_rows(rows))
    assert fields(fast) == fields(typed)
    for fams in (FAMILIES, families(rng), families(rng)):
        assert fastpath.kpi_cells(fast, fams) == service.kpi_cells(typed, fams)
        assert fastpath.total_cells(fast, fams) == service.total_cells(typed, fams)


def test_period_starts_are_the_datetimes_asyncpg_would_give() -> None:
    rows = [("06413000", "99115005104000", SPRING + timedelta(hours=1), "sessions_started", "", 5, 7)]
    (table,) = fastpath.build_tables(epoch_rows(rows))
    (start,) = table.periods
    assert start == SPRING + timedelta(hours=1)
    assert start.tzinfo is UTC
    assert service.local_iso(start) == "2026-03-29T03:00:00+02:00"


def test_every_derived_metric_has_a_place_in_the_order() -> None:
    """The fast path orders the rates, means and percentiles that `derived_values` returns by a fixed list."""
    counts = {("sessions_started", ""): 10, ("sessions_submitted", ""): 4, ("sessions_abandoned", ""): 3,
              ("feedback", "5"): 2, ("duration_le", "60"): 3, ("processing_le", "3600"): 1}
    derived = {m for m, *_ in service.derived_values(counts)}
    assert derived == set(fastpath._DERIVED)
    assert derived == {d.metric for d in DEFINITIONS if d.kind != "count"}


def test_no_rows_no_tables() -> None:
    assert fastpath.build_tables([]) == []
