"""Cell Key Method: record keys, additive cell keys and the perturbation table (docs/privacy.md, ADR 0050).

Every counted event gets a record key, a pseudo-random 32-bit integer from a keyed hash (BLAKE2b in keyed
mode) of its id under a deployment secret. A cell's key is the sum of its records' keys modulo 2^32 (read as a
fraction of 2^32 it is the census' "sum of record keys modulo 1"), so the aggregator keeps one exact integer
beside each count and the key of any union of rows is the sum of their key sums. The perturbation table maps
(true count, cell key) to the published count; the same records always give the same key and so the same
published value.

The table is the maximum-entropy construction the statistical offices' `ptable` tooling uses: for each true
count i, the deviations j in [-D, D] that keep i + j >= 0 (and i + j = 0 or >= JS) get the distribution of
largest entropy with mean 0 and variance V, p_i(j) proportional to exp(a*j + b*j^2), fitted by Newton's method
on the convex dual. Zero stays zero (row 0 is j = 0 only). From some count N_MAX on (D when JS = 1) the whole
range [-D, D] is allowed and all rows are alike, so the table has rows 0 .. N_MAX and a larger count uses row
N_MAX.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final
from uuid import UUID

KEY_BITS: Final = 32
MODULUS: Final = 1 << KEY_BITS
"""Record and cell keys are integers in [0, 2^32); key sums are reduced modulo this."""

MAX_DEVIATION: Final = 3
"""D: no published count differs from the true count by more than this."""
VARIANCE: Final = 2.0
"""V: the variance of the deviation, the same for every true count (including 1 and 2)."""
SMALLEST_PUBLISHED: Final = 1
"""JS: the smallest value published other than 0 (1: no extra threshold, see ADR 0051)."""
PRECISION: Final = 6
"""Probabilities are rounded to this many decimals before the cumulative thresholds are taken."""
TABLE_VERSION: Final = "ckm-d3-v2-js1"
"""Names the table parameters; part of every cache key and shown in the data descriptions."""


@lru_cache(maxsize=8)
def _keyed(secret: bytes) -> Any:
    """A BLAKE2b state that has absorbed the key; copying it is cheaper than keying a new one per event."""
    return hashlib.blake2b(key=hashlib.sha256(secret).digest(), digest_size=4)


def record_key(secret: bytes, event_id: UUID) -> int:
    """The record key of one event: a 32-bit keyed BLAKE2b MAC of the id's 16 bytes, keyed with SHA-256 of the
    secret (any length). BLAKE2b in keyed mode is a pseudo-random function like HMAC-SHA256 and costs a fraction
    of it per event on the aggregator's hot path."""
    mac = _keyed(secret).copy()
    mac.update(event_id.bytes)
    return int.from_bytes(mac.digest(), "big")


def cell_key(key_sums: Sequence[int]) -> int:
    """Key of a cell made of rows with these key sums (any range, any filter): their sum modulo 2^32."""
    return sum(key_sums) % MODULUS


def _support(i: int, d: int, js: int) -> list[int]:
    if i == 0:
        return [0]
    return [j for j in range(-d, d + 1) if i + j == 0 or i + j >= js]


def _max_entropy(support: list[int], variance: float) -> list[float]:
    """Maximum-entropy distribution on `support` with mean 0 and the given variance (Newton on the dual)."""
    if len(support) == 1:
        return [1.0]
    a = b = 0.0
    for _ in range(200):
        # log-sum-exp stabilised weights
        e = [a * j + b * j * j for j in support]
        top = max(e)
        w = [math.exp(x - top) for x in e]
        z = sum(w)
        p = [x / z for x in w]
        m1 = sum(pi * j for pi, j in zip(p, support, strict=True))
        m2 = sum(pi * j * j for pi, j in zip(p, support, strict=True))
        m3 = sum(pi * j ** 3 for pi, j in zip(p, support, strict=True))
        m4 = sum(pi * j ** 4 for pi, j in zip(p, support, strict=True))
        g1, g2 = m1, m2 - variance
        if abs(g1) < 1e-13 and abs(g2) < 1e-13:
            return p
        # Hessian of the dual: the covariance of (j, j^2)
        h11, h12, h22 = m2 - m1 * m1, m3 - m1 * m2, m4 - m2 * m2
        det = h11 * h22 - h12 * h12
        if det <= 0:
            break
        da = (h22 * g1 - h12 * g2) / det
        db = (h11 * g2 - h12 * g1) / det
        a, b = a - da, b - db
    raise ValueError(f"no distribution with mean 0 and variance {variance} on {support}")


@dataclass(frozen=True, slots=True)
class PerturbationRow:
    """One true count's deviations, their probabilities and cumulative key thresholds (out of 2^32)."""

    deviations: tuple[int, ...]
    probabilities: tuple[float, ...]
    thresholds: tuple[int, ...]
    """thresholds[n] is the first key that no longer maps to deviations[n]; the last one is 2^32."""


@dataclass(frozen=True, slots=True)
class PerturbationTable:
    """Rows 0 .. n_max; row n_max serves every larger count."""

    max_deviation: int
    variance: float
    smallest_published: int
    rows: tuple[PerturbationRow, ...]

    @property
    def n_max(self) -> int:
        return len(self.rows) - 1

    def deviation(self, count: int, key: int) -> int:
        """Deviation added to a true `count` whose cell key is `key` (an integer in [0, 2^32))."""
        row = self.rows[count if count < len(self.rows) else -1]
        return row.deviations[bisect_right(row.thresholds, key)]

    def perturb(self, count: int, key: int) -> int:
        """The published value of a cell with true `count` and cell key `key`."""
        if count <= 0:
            return count if count < 0 else 0
        return count + self.deviation(count, key)


def build_table(max_deviation: int = MAX_DEVIATION, variance: float = VARIANCE,
                smallest_published: int = SMALLEST_PUBLISHED, precision: int = PRECISION) -> PerturbationTable:
    """Generate the perturbation table by the maximum-entropy construction (see the module docstring)."""
    if max_deviation < 1 or variance <= 0 or smallest_published < 1:
        raise ValueError("need D >= 1, V > 0 and JS >= 1")
    rows: list[PerturbationRow] = []
    # from this count on every deviation in [-D, D] is allowed, so all later rows are alike
    n_max = max_deviation if smallest_published == 1 else max_deviation + smallest_published
    for i in range(n_max + 1):
        support = _support(i, max_deviation, smallest_published)
        p = _max_entropy(support, variance)
        rounded = [round(x, precision) for x in p]
        # the rounding remainder goes to the most likely deviation, so each row sums to exactly 1
        top = max(range(len(rounded)), key=lambda n: rounded[n])
        rounded[top] = round(rounded[top] + 1 - sum(rounded), precision)
        thresholds, acc = [], 0.0
        for x in rounded:
            acc += x
            thresholds.append(min(MODULUS, round(acc * MODULUS)))
        thresholds[-1] = MODULUS
        kept = [n for n, x in enumerate(rounded) if x > 0]
        rows.append(PerturbationRow(tuple(support[n] for n in kept), tuple(rounded[n] for n in kept),
                                    tuple(thresholds[n] for n in kept)))
    return PerturbationTable(max_deviation, variance, smallest_published, tuple(rows))


@lru_cache(maxsize=1)
def table() -> PerturbationTable:
    """The table in force (parameters above), generated once per process."""
    return build_table()


def perturb(count: int, key: int) -> int:
    """Published value of a cell with true `count` and cell key `key` under the table in force."""
    return table().perturb(count, key)


def note_de() -> str:
    """What a reader of published counts must know, in German (API, data package, catalog, dashboard)."""
    return (f"Alle veröffentlichten Anzahlen sind mit der Cell-Key-Methode (stochastische Überlagerung, wie im "
            f"Zensus 2022) leicht verändert: jede Zahl weicht um höchstens {MAX_DEVIATION} vom wahren Wert ab "
            f"(Varianz {VARIANCE:g}), 0 bleibt 0, kein Wert ist negativ. Dieselbe Zelle hat bei jeder Abfrage "
            "denselben Wert; Summen und Gesamtwerte sind eigene Zellen und müssen nicht genau aufgehen. Quoten, "
            "Mittelwerte und Perzentile sind aus den veränderten Anzahlen berechnet.")


def note_en() -> str:
    """The same note in English."""
    return (f"All published counts are perturbed by the Cell Key Method (as in the 2022 German census): each "
            f"differs from the true value by at most {MAX_DEVIATION} (variance {VARIANCE:g}), 0 stays 0 and no "
            "value is negative. The same cell has the same value in every query; totals are cells of their own "
            "and need not add up exactly. Rates, means and percentiles are computed from the perturbed counts.")


def description() -> dict[str, object]:
    """The parameters as published with every answer that holds counts."""
    return {"method": "cell_key_method", "max_deviation": MAX_DEVIATION, "variance": VARIANCE,
            "smallest_published": SMALLEST_PUBLISHED, "table": TABLE_VERSION, "note_de": note_de(),
            "note_en": note_en()}
