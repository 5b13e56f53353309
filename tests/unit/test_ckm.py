"""Cell Key Method: the perturbation table's documented properties, record and cell keys, the key-sum fold."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.aggregator import fold
from services.aggregator.fold import Record
from services.publisher.kpis import service as publisher
from shared import ckm
from shared.events import usage_event_adapter
from tests.factories import usage_event

NOW = datetime(2026, 3, 30, 12, 0, tzinfo=UTC)
SECRET = b"test-secret-of-the-cell-key-method"


def _moments(row: ckm.PerturbationRow) -> tuple[float, float]:
    mean = sum(p * j for p, j in zip(row.probabilities, row.deviations, strict=True))
    var = sum(p * (j - mean) ** 2 for p, j in zip(row.probabilities, row.deviations, strict=True))
    return mean, var


class TestPerturbationTable:
    def test_every_row_is_a_distribution_within_the_maximum_deviation(self) -> None:
        t = ckm.table()
        for i, row in enumerate(t.rows):
            assert abs(sum(row.probabilities) - 1) < 1e-9
            assert all(p > 0 for p in row.probabilities)
            assert all(abs(j) <= ckm.MAX_DEVIATION for j in row.deviations)
            assert all(i + j >= 0 for j in row.deviations)  # no negative result
            assert all(i + j == 0 or i + j >= ckm.SMALLEST_PUBLISHED for j in row.deviations)
            assert row.thresholds[-1] == ckm.MODULUS
            assert list(row.thresholds) == sorted(row.thresholds)

    def test_zero_stays_zero_and_only_zero_row_is_fixed(self) -> None:
        t = ckm.table()
        assert t.rows[0].deviations == (0,)
        assert all(t.perturb(0, k) == 0 for k in (0, 1, ckm.MODULUS // 2, ckm.MODULUS - 1))
        assert all(len(row.deviations) > 1 for row in t.rows[1:])  # every positive count is perturbed

    def test_rows_have_mean_zero_and_the_documented_variance(self) -> None:
        for row in ckm.table().rows[1:]:
            mean, var = _moments(row)
            assert abs(mean) < 1e-4
            assert abs(var - ckm.VARIANCE) < 1e-4

    def test_the_table_is_the_maximum_entropy_one(self) -> None:
        """No other distribution on the same support with the same mean and variance has more entropy: moving
        probability along the two directions that keep sum, mean and variance fixed lowers the entropy."""
        import math

        def entropy(p: list[float]) -> float:
            return -sum(x * math.log(x) for x in p if x > 0)

        row = ckm.table().rows[-1]
        p = list(row.probabilities)
        js = list(row.deviations)
        def dot(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b, strict=True))

        # an orthonormal basis of the constraint vectors (1, j, j^2), then directions orthogonal to all three:
        # moving along them keeps the total, the mean and the variance
        basis: list[list[float]] = []
        for v in ([1.0] * len(js), [float(j) for j in js], [float(j * j) for j in js]):
            for b in basis:
                v = [x - dot(v, b) * y for x, y in zip(v, b, strict=True)]
            norm = dot(v, v) ** 0.5
            basis.append([x / norm for x in v])
        for power in (3, 4, 5):
            direction = [float(j ** power) for j in js]
            for b in basis:
                direction = [x - dot(direction, b) * y for x, y in zip(direction, b, strict=True)]
            assert all(abs(dot(direction, b)) < 1e-9 for b in basis)
            length = dot(direction, direction) ** 0.5
            direction = [x / length for x in direction]
            for eps in (1e-3, -1e-3):
                moved = [x + eps * d for x, d in zip(p, direction, strict=True)]
                assert min(moved) > 0
                assert entropy(moved) < entropy(p)

    @given(st.integers(0, 10_000))
    def test_mean_deviation_over_uniform_keys_is_near_zero(self, count: int) -> None:
        rng = random.Random(count)
        t = ckm.table()
        n = 4000
        deviations = [t.perturb(count, rng.getrandbits(32)) - count for _ in range(n)]
        mean = sum(deviations) / n
        assert all(abs(d) <= ckm.MAX_DEVIATION for d in deviations)
        assert all(count + d >= 0 for d in deviations)
        # the sample mean of n draws with variance V: 5 standard errors
        assert abs(mean) < 5 * (ckm.VARIANCE / n) ** 0.5
        if count:
            var = sum((d - mean) ** 2 for d in deviations) / (n - 1)
            assert abs(var - ckm.VARIANCE) < 0.25

    def test_regenerating_gives_the_same_table(self) -> None:
        assert ckm.build_table() == ckm.table()

    @pytest.mark.parametrize("js", [1, 2, 3])
    def test_the_last_row_is_the_first_with_every_deviation(self, js: int) -> None:
        t = ckm.build_table(3, 2.0 if js < 3 else 2.5, js)
        full = tuple(range(-3, 4))
        assert t.rows[-1].deviations == full
        assert all(row.deviations != full for row in t.rows[:-1])

    @pytest.mark.parametrize(("d", "v"), [(2, 1.0), (3, 2.0), (4, 3.0)])
    def test_other_parameters_keep_their_properties(self, d: int, v: float) -> None:
        t = ckm.build_table(d, v)
        for row in t.rows[1:]:
            mean, var = _moments(row)
            assert abs(mean) < 1e-4  # probabilities are rounded to 6 decimals
            assert abs(var - v) < 1e-4
            assert max(abs(j) for j in row.deviations) <= d

    def test_infeasible_parameters_are_refused(self) -> None:
        # true 1 can move at most to 0 (-1) or up by D = 1: variance 1 is the most it can have
        with pytest.raises(ValueError, match="variance"):
            ckm.build_table(1, 1.5)


class TestKeys:
    def test_record_key_is_a_keyed_32_bit_hash_of_the_id(self) -> None:
        event_id = uuid.uuid4()
        key = ckm.record_key(SECRET, event_id)
        assert 0 <= key < ckm.MODULUS
        assert key == ckm.record_key(SECRET, event_id)
        assert key != ckm.record_key(b"another secret", event_id)

    def test_record_keys_are_spread_evenly(self) -> None:
        keys = [ckm.record_key(SECRET, uuid.uuid4()) for _ in range(8000)]
        quarters = [sum(1 for k in keys if k * 4 // ckm.MODULUS == q) for q in range(4)]
        assert all(1800 < q < 2200 for q in quarters), quarters

    def test_cell_key_is_additive_modulo_2_32(self) -> None:
        keys = [ckm.record_key(SECRET, uuid.uuid4()) for _ in range(50)]
        assert ckm.cell_key(keys) == ckm.cell_key([ckm.cell_key(keys[:20]), ckm.cell_key(keys[20:])])
        assert 0 <= ckm.cell_key(keys) < ckm.MODULUS


class TestKeySumFold:
    def test_each_row_holds_the_sum_of_the_record_keys_it_counts(self) -> None:
        events = [usage_event("usage.session.started", time=NOW - timedelta(hours=h % 30),
                              data={"channel": "web" if h % 3 else "app", "device": "mobile"}) for h in range(40)]
        records = [Record("usage.events.v1", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
        prepared = fold.prepare(records, usage_event_adapter, fold.usage_contributions, False, NOW,
                                   timedelta(days=7), timedelta(minutes=15), secret=SECRET)
        rows = fold.roll_up(prepared.hourly)
        for (granularity, start, _m, _s, metric, dim), (value, key_sum) in rows.items():
            members = [e for e in events if _in(e, granularity, start)
                       and (metric == "sessions_started" or e["data"].get(metric) == dim)]
            assert value == len(members)
            assert key_sum == sum(ckm.record_key(SECRET, uuid.UUID(e["id"])) for e in members)

    def test_a_cell_asked_by_hours_days_or_month_has_one_key(self) -> None:
        events = [usage_event("usage.session.started", time=NOW - timedelta(hours=h), data={"channel": "web",
                                                                                            "device": "mobile"})
                  for h in range(48)]
        records = [Record("usage.events.v1", 0, i, orjson.dumps(e)) for i, e in enumerate(events)]
        prepared = fold.prepare(records, usage_event_adapter, fold.usage_contributions, False, NOW,
                                   timedelta(days=7), timedelta(minutes=15), secret=SECRET)
        rows = fold.roll_up(prepared.hourly)
        by = {g: [v for k, v in rows.items() if k[0] == g and k[4] == "sessions_started"]
              for g in ("hour", "day", "month")}
        sums = {g: (sum(v for v, _ in vs), ckm.cell_key([k for _, k in vs])) for g, vs in by.items()}
        assert sums["hour"] == sums["day"] == sums["month"]


def _in(event: dict[str, object], granularity: str, start: datetime) -> bool:
    t = datetime.fromisoformat(str(event["time"]))
    h = fold.hour_start(t)
    return {"hour": h, "day": fold.day_start(h), "month": fold.month_start(h)}[granularity] == start


def _us(t: datetime) -> int:
    """A period start as the repository returns it: microseconds since 1970-01-01 UTC."""
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class TestPublishedCells:
    def test_totals_and_feedback_count_are_cells_of_their_own(self) -> None:
        rng = random.Random(7)
        rows = []
        for d in range(5):
            for stars in ("1", "5"):
                rows.append(("06413000", "99115005104000", _us(datetime(2026, 3, d + 1, tzinfo=UTC)), "feedback", stars,
                             rng.randint(1, 6), rng.getrandbits(32)))
        (table,) = publisher.build_tables(rows)
        for cell, (value, key) in table.raw.items():
            assert table.cells[cell] == ckm.perturb(value, key % ckm.MODULUS)
        total = table.raw[(publisher.TOTAL, "feedback", "5")]
        assert total[0] == sum(r[5] for r in rows if r[4] == "5")
        assert total[1] == sum(r[6] for r in rows if r[4] == "5")

    def test_sums_of_amounts_and_durations_are_not_published(self) -> None:
        rows = [("06413000", "99115005104000", _us(NOW), m, "paypal" if m.startswith("pay") else "", 1250, 99)
                for m in ("payment", "payment_amount_cents", "duration_sum_s", "processing_sum_s")]
        (table,) = publisher.build_tables(rows)
        assert {m for _, m, _ in table.cells} == {"payment"}


class TestSecret:
    def test_the_default_secret_is_refused_in_production(self) -> None:
        from pydantic import ValidationError

        from services.aggregator.settings import AggregatorSettings

        db = "postgresql://kp:pw@db.example:5432/kp"
        with pytest.raises(ValidationError, match="KP_CKM_SECRET"):
            AggregatorSettings(environment="production", database_url=db)
        with pytest.raises(ValidationError, match="KP_CKM_SECRET"):
            AggregatorSettings(environment="production", database_url=db, ckm_secret="too-short")
        strong = "x" * 16 + uuid.uuid4().hex
        assert AggregatorSettings(environment="production", database_url=db, ckm_secret=strong).ckm_key() == (
            strong.encode())
        assert AggregatorSettings(environment="dev").ckm_key()  # the dev default works outside production
