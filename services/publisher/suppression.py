"""Small-count suppression with secondary suppression, checked by linear algebra.

A table is a set of integer cells and a list of linear identities between them (a period's channel counts add
up to its sessions started, a metric's periods add up to its total over the range, ...). Everything a reader
sees — the published cells and the identities — forms a linear system whose unknowns are the suppressed
cells. A suppressed cell is disclosed exactly when its unit vector lies in the row space of that system.

Primary suppression hides every count with 0 < value < k. Secondary suppression then repeats: find a
disclosed cell, hide the smallest published cell that shares an identity with it, until no suppressed cell
is disclosed any more. Ranks are computed modulo a large prime: the identities have coefficients ±1, so
the rank over the rationals and modulo this prime coincide.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
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
    rows: list[dict[Cell, int]] = []
    for identity in identities:
        row: dict[Cell, int] = {}
        for cell, coef in identity:
            if cell in hidden:
                row[cell] = (row.get(cell, 0) + coef) % _P
        row = {c: v for c, v in row.items() if v}
        if row:
            rows.append(row)
    result: set[Cell] = set()
    for component in _components(rows):
        result |= _determined(component)
    return result


def _components(rows: list[dict[Cell, int]]) -> list[list[dict[Cell, int]]]:
    parent: dict[Cell, Cell] = {}

    def find(x: Cell) -> Cell:
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
    groups: dict[Cell, list[dict[Cell, int]]] = {}
    for row in rows:
        groups.setdefault(find(next(iter(row))), []).append(row)
    return list(groups.values())


def _determined(rows: list[dict[Cell, int]]) -> set[Cell]:
    """Gauss-Jordan elimination mod P; a variable is determined iff a reduced row holds only it."""
    if len(rows) == 1:
        only = rows[0]
        return set(only) if len(only) == 1 else set()
    pivots: dict[Cell, dict[Cell, int]] = {}
    for original in rows:
        row = dict(original)
        for pc, prow in pivots.items():
            f = row.get(pc)
            if f:
                for c, v in prow.items():
                    nv = (row.get(c, 0) - f * v) % _P
                    if nv:
                        row[c] = nv
                    else:
                        row.pop(c, None)
        if not row:
            continue
        pc = min(row, key=repr)
        inv = pow(row[pc], _P - 2, _P)
        row = {c: v * inv % _P for c, v in row.items()}
        for other in pivots.values():
            f = other.get(pc)
            if f:
                for c, v in row.items():
                    nv = (other.get(c, 0) - f * v) % _P
                    if nv:
                        other[c] = nv
                    else:
                        other.pop(c, None)
        pivots[pc] = row
    return {pc for pc, row in pivots.items() if len(row) == 1}


def suppress(cells: Mapping[C, int], identities: Sequence[Identity], k: int) -> set[C]:
    """Primary plus secondary suppression: the returned cells must be published as suppressed."""
    hidden = primary(cells, k)
    if not hidden:
        return hidden
    touching: dict[Cell, list[int]] = {}
    for i, identity in enumerate(identities):
        for cell, _ in identity:
            touching.setdefault(cell, []).append(i)
    relevant = [identities[i] for i in sorted({i for c in hidden for i in touching.get(c, ())})]
    while True:
        open_cells = disclosed(relevant, hidden)
        if not open_cells:
            return hidden
        # Fix one disclosed cell per round; the next round re-checks, since one complement often covers several.
        target = min(open_cells, key=repr)
        candidates = {
            cell for i in touching.get(target, ()) for cell, _ in identities[i]
            if cell not in hidden and cells.get(cell, 0) > 0
        }
        if not candidates:  # every neighbour is hidden already: widen to cells next to any hidden cell
            candidates = {
                cell for h in hidden for i in touching.get(h, ()) for cell, _ in identities[i]
                if cell not in hidden and cells.get(cell, 0) > 0
            }
        if not candidates:
            return hidden
        chosen = min(candidates, key=lambda c: (cells[c], repr(c)))
        hidden.add(chosen)
        known = {id(r) for r in relevant}
        relevant.extend(identities[i] for i in touching.get(chosen, ()) if id(identities[i]) not in known)
