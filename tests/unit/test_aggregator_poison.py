"""The aggregator's rule around a batch: one transaction when it succeeds, split only on failure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from services.aggregator import handlers
from services.aggregator.service import Record


def records(n: int) -> list[Record]:
    return [Record("usage.events.v1", 0, i, b"{}") for i in range(n)]


class Fake:
    def __init__(self, bad: set[int], error: BaseException) -> None:
        self.bad, self.error = bad, error
        self.calls: list[list[int]] = []
        self.rejected: list[tuple[int, str]] = []

    async def apply_batch(self, _stream: Any, part: Sequence[Record], _publish: Any) -> None:
        self.calls.append([r.offset for r in part])
        if self.bad & {r.offset for r in part}:
            raise self.error

    async def reject_record(self, _stream: Any, record: Record, exc: BaseException, _publish: Any) -> None:
        self.rejected.append((record.offset, type(exc).__name__))


@pytest.fixture
def stream() -> Any:
    from services.aggregator.metrics import AggregatorMetrics

    class S:
        topic = "usage.events.v1"
        metrics = AggregatorMetrics.create()
    return S()


def patch(monkeypatch: pytest.MonkeyPatch, fake: Fake) -> None:
    monkeypatch.setattr(handlers, "apply_batch", fake.apply_batch)
    monkeypatch.setattr(handlers, "reject_record", fake.reject_record)


async def publish(_key: bytes, _value: bytes) -> None:
    return None


class TestConsumeBatch:
    async def test_a_good_batch_is_one_transaction(self, monkeypatch: pytest.MonkeyPatch, stream: Any) -> None:
        fake = Fake(set(), RuntimeError())
        patch(monkeypatch, fake)
        await handlers.consume_batch(stream, records(500), publish)
        assert fake.calls == [list(range(500))]

    async def test_an_infrastructure_error_propagates_without_splitting(
        self, monkeypatch: pytest.MonkeyPatch, stream: Any
    ) -> None:
        fake = Fake({3}, asyncpg.CannotConnectNowError("starting up"))
        patch(monkeypatch, fake)
        with pytest.raises(asyncpg.CannotConnectNowError):
            await handlers.consume_batch(stream, records(10), publish)
        assert len(fake.calls) == 1
        assert fake.rejected == []

    async def test_the_record_postgres_refuses_is_isolated_and_the_rest_applied(
        self, monkeypatch: pytest.MonkeyPatch, stream: Any
    ) -> None:
        fake = Fake({77}, asyncpg.CharacterNotInRepertoireError("invalid byte sequence 0x00"))
        patch(monkeypatch, fake)
        await handlers.consume_batch(stream, records(200), publish)
        assert fake.rejected == [(77, "CharacterNotInRepertoireError")]
        applied = sorted(o for call in fake.calls if 77 not in call for o in call)
        assert applied == [i for i in range(200) if i != 77]
        assert len(fake.calls) <= 2 * 8 + 1
