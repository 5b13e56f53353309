"""An attacker of the Cell Key Method: every published count is a linear constraint on the true counts, solved
exactly with integer linear programming.

The attacker knows the method and the perturbation table (they are published), so a published value y of a cell
whose true count is the sum of some unknowns tells them that sum lies in `feasible(y)`: the true counts the
table can map to y. A true count is determined when its minimum and maximum over all integer solutions of all
constraints coincide.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from shared import ckm


def feasible(published: int, table: ckm.PerturbationTable | None = None) -> tuple[int, int]:
    """The smallest and largest true count the table maps to `published` with positive probability."""
    t = table or ckm.table()
    d = t.max_deviation
    found = [x for x in range(max(0, published - d), published + d + 1)
             if published - x in t.rows[min(x, t.n_max)].deviations]
    return min(found), max(found)


@dataclass
class Attack:
    """Unknown true counts (named by any hashable) and what the attacker learnt about sums of them."""

    unknowns: list[Hashable] = field(default_factory=list)
    rows: list[tuple[frozenset[Hashable], int, int]] = field(default_factory=list)
    """(cells summed, lowest, highest) of the sum's true value."""

    def _index(self, name: Hashable) -> int:
        try:
            return self.unknowns.index(name)
        except ValueError:
            self.unknowns.append(name)
            return len(self.unknowns) - 1

    def published(self, cells: Iterable[Hashable], value: int) -> None:
        """A published count whose true value is the sum of `cells`."""
        members = frozenset(cells)
        for c in members:
            self._index(c)
        lo, hi = feasible(value)
        self.rows.append((members, lo, hi))

    def published_any(self, cells: Iterable[Hashable], values: Sequence[int]) -> None:
        """A published number that shows the perturbed count of `cells` was one of `values` (rounded rates)."""
        members = frozenset(cells)
        for c in members:
            self._index(c)
        ranges = [feasible(v) for v in values]
        self.rows.append((members, min(lo for lo, _ in ranges), max(hi for _, hi in ranges)))

    def bounds(self, targets: Sequence[Hashable]) -> Mapping[Hashable, tuple[int, int]]:
        """(minimum, maximum) of each target over all non-negative integer solutions."""
        n = len(self.unknowns)
        col = {u: i for i, u in enumerate(self.unknowns)}
        a = np.zeros((len(self.rows), n))
        lo, hi = np.zeros(len(self.rows)), np.zeros(len(self.rows))
        for r, (members, low, high) in enumerate(self.rows):
            for m in members:
                a[r, col[m]] = 1
            lo[r], hi[r] = low, high
        constraints = LinearConstraint(a, lo, hi)
        out: dict[Hashable, tuple[int, int]] = {}
        for target in targets:
            c = np.zeros(n)
            c[col[target]] = 1
            low_res = milp(c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 10_000))
            high_res = milp(-c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, 10_000))
            if not (low_res.success and high_res.success):
                raise AssertionError(f"the attacker's system has no solution: {low_res.message}")
            out[target] = (round(low_res.x[col[target]]), round(high_res.x[col[target]]))
        return out
