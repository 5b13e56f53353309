"""Small-count suppression: primary, secondary, and that no hidden count follows from what is published."""

from __future__ import annotations

import random
from collections.abc import Hashable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

import pytest

from services.publisher import service, suppression


def _nullspace(rows: list[list[Fraction]], n: int) -> list[list[Fraction]]:
    """Basis of {x : rows x = 0} over the rationals (independent of the code under test)."""
    m = [r[:] for r in rows]
    pivots: list[int] = []
    r = 0
    for c in range(n):
        pivot = next((i for i in range(r, len(m)) if m[i][c] != 0), None)
        if pivot is None:
            continue
        m[r], m[pivot] = m[pivot], m[r]
        inv = 1 / m[r][c]
        m[r] = [a * inv for a in m[r]]
        for i in range(len(m)):
            if i != r and m[i][c] != 0:
                f = m[i][c]
                m[i] = [a - f * b for a, b in zip(m[i], m[r], strict=True)]
        pivots.append(c)
        r += 1
    basis = []
    for free in (c for c in range(n) if c not in pivots):
        x = [Fraction(0)] * n
        x[free] = Fraction(1)
        for i, pc in enumerate(pivots):
            x[pc] = -m[i][free]
        basis.append(x)
    return basis


def recoverable(identities: Iterable[Sequence[tuple[Hashable, int]]], hidden: set[Any]) -> set[Any]:
    """Hidden cells a reader can compute exactly: every solution of the identities agrees on them, i.e. they
    are zero in every vector of the null space (the other hidden values can move, these cannot)."""
    unknowns = sorted(hidden, key=repr)
    index = {c: i for i, c in enumerate(unknowns)}
    rows = []
    for identity in identities:
        row = [Fraction(0)] * len(unknowns)
        for cell, coef in identity:
            if cell in index:
                row[index[cell]] += coef
        if any(row):
            rows.append(row)
    basis = _nullspace(rows, len(unknowns))
    return {c for c, i in index.items() if all(v[i] == 0 for v in basis)}


class TestPrimary:
    def test_counts_below_k_are_hidden_zero_and_k_are_not(self) -> None:
        cells = {"a": 0, "b": 1, "c": 4, "d": 5, "e": 100}
        assert suppression.primary(cells, 5) == {"b", "c"}

    def test_k_one_hides_nothing(self) -> None:
        assert suppression.suppress({"a": 1, "t": 1}, [[("a", 1), ("t", -1)]], 1) == set()


class TestSecondary:
    def test_lone_small_cell_in_a_row_with_total_gets_a_complement(self) -> None:
        cells = {"a": 3, "b": 7, "c": 20, "t": 30}
        row = [("a", 1), ("b", 1), ("c", 1), ("t", -1)]
        hidden = suppression.suppress(cells, [row], 5)
        assert hidden == {"a", "b"}  # b is the smallest other cell
        assert recoverable([row], hidden) == set()

    def test_two_small_cells_need_no_complement(self) -> None:
        cells = {"a": 3, "b": 2, "c": 20, "t": 25}
        row = [("a", 1), ("b", 1), ("c", 1), ("t", -1)]
        assert suppression.suppress(cells, [row], 5) == {"a", "b"}

    def test_signs_of_identities_count(self) -> None:
        # a + b = c and a - b = f - e: each identity alone leaves a and b open, both together fix them
        cells = {"a": 2, "b": 3, "c": 5, "e": 10, "f": 9}
        ids = [[("a", 1), ("b", 1), ("c", -1)], [("a", 1), ("b", -1), ("e", 1), ("f", -1)]]
        hidden = suppression.suppress(cells, ids, 5)
        assert {"a", "b"} < hidden
        assert recoverable(ids, hidden) == set()

    def test_two_by_two_pattern_in_a_table_with_both_margins_stays_hidden(self) -> None:
        # rows r1, r2 with row totals; columns x, y, z with column totals; one small cell at r1.x
        v = {("r1", "x"): 2, ("r1", "y"): 10, ("r1", "z"): 30, ("r2", "x"): 9, ("r2", "y"): 40, ("r2", "z"): 8}
        cells: dict[Any, int] = dict(v)
        for r in ("r1", "r2"):
            cells[(r, "T")] = sum(val for (rr, _), val in v.items() if rr == r)
        for c in ("x", "y", "z"):
            cells[("T", c)] = sum(val for (_, cc), val in v.items() if cc == c)
        cells[("T", "T")] = sum(v.values())
        ids = [[((r, c), 1) for c in ("x", "y", "z")] + [((r, "T"), -1)] for r in ("r1", "r2", "T")]
        ids += [[((r, c), 1) for r in ("r1", "r2")] + [(("T", c), -1)] for c in ("x", "y", "z", "T")]
        hidden = suppression.suppress(cells, ids, 5)
        assert ("r1", "x") in hidden
        assert len(hidden) >= 4  # a hidden cell needs a partner in its row and in its column
        assert recoverable(ids, hidden) == set()


def _random_table(rng: random.Random, periods: int) -> service.Table:
    t0 = datetime(2026, 3, 1, tzinfo=UTC)
    rows: list[tuple[str, str, datetime, str, str, int]] = []
    for p in range(periods):
        start = t0 + timedelta(days=p)

        def put(metric: str, dim: str, value: int, start: datetime = start) -> None:
            if value:
                rows.append(("99000001", "99000000000001", start, metric, dim, value))

        channels = {"web": rng.choice([0, 1, 2, 3, 8, 20]), "app": rng.choice([0, 1, 4, 12])}
        devices = {"desktop": rng.choice([0, 2, 6]), "mobile": 0}
        devices["mobile"] = sum(channels.values()) - devices["desktop"]
        if devices["mobile"] < 0:
            devices["desktop"], devices["mobile"] = sum(channels.values()), 0
        for d, n in channels.items():
            put("channel", d, n)
        for d, n in devices.items():
            put("device", d, n)
        put("sessions_started", "", sum(channels.values()))
        steps = {str(s): rng.choice([0, 1, 2, 5, 9]) for s in range(4)}
        for d, n in steps.items():
            put("abandoned_after_step", d, n)
        put("sessions_abandoned", "", sum(steps.values()))
        for s in range(1, 6):
            put("feedback", str(s), rng.choice([0, 1, 3, 6, 11]))
        buckets = {"60": rng.choice([0, 1, 7]), "300": rng.choice([0, 2, 15]), "inf": rng.choice([0, 1])}
        for d, n in buckets.items():
            put("duration_le", d, n)
        put("sessions_submitted", "", sum(buckets.values()))
        put("payment", "paypal", rng.choice([0, 1, 2, 30]))
    return service.build_tables(rows)[0]


class TestNothingRecoverable:
    @pytest.mark.parametrize("seed", range(12))
    def test_random_tables_disclose_no_hidden_cell(self, seed: int) -> None:
        table = _random_table(random.Random(seed), periods=5)
        service.apply_suppression([table], 5)
        primary = suppression.primary(table.cells, 5)
        assert primary <= table.hidden
        assert recoverable(service.identities(table), table.hidden) == set()

    def test_rates_and_means_from_hidden_counts_are_hidden(self) -> None:
        table = _random_table(random.Random(7), periods=6)
        service.apply_suppression([table], 5)
        for p in [*table.periods, service.TOTAL]:
            cells = {c[3]: c for c in service.table_cells(table, frozenset({"conversion_rate", "mean_stars"}), p)}
            if "conversion_rate" in cells:
                hid = {(p, "sessions_started", ""), (p, "sessions_submitted", "")} & table.hidden
                assert cells["conversion_rate"][6] == bool(hid)
                assert (cells["conversion_rate"][5] is None) == bool(hid)
            if "mean_stars" in cells:
                hid = {c for c in table.hidden if c[0] == p and c[1] in ("feedback", "feedback_count")}
                assert cells["mean_stars"][6] == bool(hid)


class TestPercentile:
    def test_median_interpolates_inside_the_bucket(self) -> None:
        # 10 in (0, 60], 10 in (60, 120]: the median is the top of the first bucket
        assert service.percentile({"60": 10, "120": 10}, (60, 120, 300), 0.5) == 60.0
        # 4 in (0,60], 6 in (60,120]: p50 = 60 + 60 * (5 - 4) / 6 = 70
        assert service.percentile({"60": 4, "120": 6}, (60, 120, 300), 0.5) == 70.0

    def test_open_bucket_reports_its_lower_bound(self) -> None:
        assert service.percentile({"inf": 3}, (60, 120), 0.9) == 120.0
