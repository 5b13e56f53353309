"""Small-count suppression with secondary suppression, checked by linear algebra.

A table is a set of integer cells and a list of linear identities between them (a period's channel counts add
up to its sessions started, a metric's periods add up to its total over the range, ...). Everything a reader
sees — the published cells and the identities — forms a linear system whose unknowns are the suppressed
cells. A suppressed cell is disclosed exactly when its unit vector lies in the row space of that system.

Primary suppression hides every count with 0 < value < k. Secondary suppression then repeats two steps
until nothing is disclosed: (1) while an identity holds exactly one hidden cell, hide the smallest published
cell of that identity as its complement (cheap, and what almost every disclosure looks like); (2) run the
check (sparse elimination per connected group of hidden cells, then a random solution of the homogeneous
system, which is zero exactly at the fixed cells up to a chance of 1/P that errs towards suppressing more) and
give every cell it still finds disclosed a complement the same way. Arithmetic is modulo a large prime P: the
identities have coefficients ±1, so the rank over the rationals and modulo this prime coincide.

Ties are broken by a fixed order of the cells, so the same table always gives the same pattern.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

Cell = Any
C = TypeVar("C", bound=Hashable)
Identity = Sequence[tuple[Cell, int]]
"""sum(coefficient * cell) == 0 for the cells of one table; a cell missing from the table is a known zero."""

_P = (1 << 61) - 1


def primary(cells: Mapping[C, int], k: int) -> set[C]:
    """Cells whose count is below k (and above zero: an empty cell discloses nobody)."""
    return {c for c, v in cells.items() if 0 < v < k}


def disclosed(identities: Iterable[Identity], hidden: set[Cell]) -> set[Cell]:
    """Hidden cells whose value follows exactly from the published cells and the identities."""
    order = {c: i for i, c in enumerate(sorted(hidden, key=repr))}
    rows = []
    for identity in identities:
        row = _restrict(((order.get(c, -1), coef) for c, coef in identity))
        if row:
            rows.append(row)
    back = {i: c for c, i in order.items()}
    return {back[i] for i in _disclosed_ints(rows)}


def _restrict(pairs: Iterable[tuple[int, int]]) -> dict[int, int]:
    row: dict[int, int] = {}
    for i, coef in pairs:
        if i >= 0:
            row[i] = (row.get(i, 0) + coef) % _P
    return {i: v for i, v in row.items() if v}


def _peel(rows: list[dict[int, int]]) -> list[dict[int, int]]:
    """Drop identities holding two or more unknowns that occur nowhere else: they can always be met by moving
    those unknowns against each other, so they fix neither them nor the rest (exact, and much cheaper than
    eliminating them)."""
    uses: dict[int, int] = {}
    for row in rows:
        for c in row:
            uses[c] = uses.get(c, 0) + 1
    alive = list(rows)
    changed = True
    while changed:
        changed = False
        kept = []
        for row in alive:
            if sum(1 for c in row if uses[c] == 1) >= 2:
                for c in row:
                    uses[c] -= 1
                changed = True
            else:
                kept.append(row)
        alive = kept
    return alive


def _disclosed_ints(rows: list[dict[int, int]]) -> set[int]:
    rows = _peel(rows)
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for row in rows:
        it = iter(row)
        first = find(next(it))
        for c in it:
            r = find(c)
            if r != first:
                parent[r] = first
    groups: dict[int, list[dict[int, int]]] = {}
    for row in rows:
        groups.setdefault(find(next(iter(row))), []).append(row)
    out: set[int] = set()
    for group in groups.values():
        out |= _determined(group)
    return out


def _determined(rows: list[dict[int, int]]) -> set[int]:
    """Variables whose value the rows fix: forward elimination mod P, then one random solution of the
    homogeneous system. A variable is fixed iff it is zero in every such solution; a variable that is not
    fixed is a non-zero linear form of the free variables, so a random point (fixed seed, values in
    1..P-1) makes it zero with probability at most 1/P (about 4e-19). That rare miss only ever reports a
    free variable as fixed, which suppresses one cell more, never one less."""
    if len(rows) == 1:
        return set(rows[0]) if len(rows[0]) == 1 else set()
    pivot_of: dict[int, int] = {}  # column -> index into `pivot_rows`
    pivot_rows: list[tuple[int, dict[int, int]]] = []  # (pivot column, row normalised to 1 there)
    uses: dict[int, int] = {}
    for row in rows:
        for c in row:
            uses[c] = uses.get(c, 0) + 1
    for original in sorted(rows, key=len):  # short rows and rarely used pivots first: less fill-in
        row = dict(original)
        # a pivot row holds no column of an earlier pivot, so eliminating in pivot order takes one pass
        pending = sorted(pivot_of[c] for c in row if c in pivot_of)
        while pending:
            n = heapq.heappop(pending)
            pc, prow = pivot_rows[n]
            f = row.get(pc)
            if not f:
                continue
            for c, v in prow.items():
                old = row.get(c)
                if old is None:
                    row[c] = -f * v % _P
                    m = pivot_of.get(c)
                    if m is not None:
                        heapq.heappush(pending, m)
                else:
                    nv = (old - f * v) % _P
                    if nv:
                        row[c] = nv
                    else:
                        del row[c]
        if not row:
            continue
        pc = min(row, key=lambda c: (uses[c], c))
        inv = pow(row[pc], _P - 2, _P)
        pivot_of[pc] = len(pivot_rows)
        pivot_rows.append((pc, {c: v * inv % _P for c, v in row.items()}))
    rng = random.Random(len(rows))
    x: dict[int, int] = {}
    fixed: set[int] = set()
    for pc, prow in reversed(pivot_rows):  # a pivot row holds only free columns and later pivots
        acc = 0
        for c, v in prow.items():
            if c != pc:
                xc = x.get(c)
                if xc is None:
                    xc = x[c] = rng.getrandbits(61) % (_P - 1) + 1  # a free variable, in 1..P-1
                acc += v * xc
        x[pc] = value = -acc % _P
        if not value:
            fixed.add(pc)
    return fixed


def suppress(cells: Mapping[C, int], identities: Sequence[Identity], k: int,
             order: Callable[[C], Any] = repr) -> set[C]:
    """Primary plus secondary suppression: the returned cells must be published as suppressed.

    `order` sorts the cells (a total order); ties between equally small complements go to the first."""
    first = primary(cells, k)
    if not first:
        return first
    keys = sorted(cells, key=order)
    index = {c: i for i, c in enumerate(keys)}
    value = [cells[c] for c in keys]
    ids: list[list[int]] = []
    coefs: list[dict[int, int]] = []
    live = {c: i for i, c in enumerate(keys) if value[i] > 0}  # zeros are known
    for identity in identities:
        row: dict[int, int] = {}
        for c, coef in identity:
            i = live.get(c)
            if i is not None:
                row[i] = (row.get(i, 0) + coef) % _P
        if len(row) > 1 and 0 in row.values():
            row = {i: v for i, v in row.items() if v}
        if len(row) > 1:  # an identity left with one cell is not one the data satisfies
            ids.append(sorted(row))
            coefs.append(row)
    touching: list[list[int]] = [[] for _ in keys]
    for n, members in enumerate(ids):
        for i in members:
            touching[i].append(n)
    hidden = {index[c] for c in first}
    unknown = [sum(1 for i in members if i in hidden) for members in ids]

    def hide(i: int, queue: list[int]) -> None:
        hidden.add(i)
        for n in touching[i]:
            unknown[n] += 1
            if unknown[n] == 1:
                queue.append(n)

    def complement(target: int) -> int | None:
        options = [j for n in touching[target] for j in ids[n] if j not in hidden]
        return min(options, key=lambda j: (value[j], j)) if options else None

    queue = [n for n, u in enumerate(unknown) if u == 1]
    while True:
        while queue:
            n = queue.pop()
            if unknown[n] != 1:
                continue
            lone = next(i for i in ids[n] if i in hidden)
            options = [j for j in ids[n] if j not in hidden]
            chosen = min(options, key=lambda j: (value[j], j)) if options else complement(lone)
            if chosen is None:
                continue
            hide(chosen, queue)
        relevant = sorted({n for i in hidden for n in touching[i]})
        rows = [{i: v for i, v in coefs[n].items() if i in hidden} for n in relevant]
        still_open = sorted(_disclosed_ints([r for r in rows if r]))
        if not still_open:
            return {keys[i] for i in hidden}
        progress = False
        for target in still_open:
            chosen = complement(target)
            if chosen is not None:
                hide(chosen, queue)
                progress = True
        if not progress:
            return {keys[i] for i in hidden}
