"""A fake of the aggregator's unit of work (an in-memory database with commit and rollback) and a stream."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg

from services.aggregator import fold, service
from services.aggregator.metrics import AggregatorMetrics
from services.aggregator.unit_of_work import UnitOfWork
from shared.events import usage_event_adapter


@dataclass
class FakeDatabase:
    """What the aggregator's transactions committed; `begin` opens a unit of work on it."""

    ids: dict[UUID, float] = field(default_factory=dict)
    kpis: dict[fold.KpiKey, tuple[int, int]] = field(default_factory=dict)
    counts: Counter[fold.CountKey] = field(default_factory=Counter)
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    """(group, topic, partition) -> next offset."""
    commits: int = 0
    rollbacks: int = 0
    refused: set[UUID] = field(default_factory=set)
    """Ids whose recording fails as PostgreSQL fails on a value it cannot store (a data error)."""
    down: bool = False
    """Every unit of work fails as with the database unreachable."""

    @asynccontextmanager
    async def begin(self) -> AsyncIterator[UnitOfWork]:
        if self.down:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        uow = FakeUnitOfWork(self)
        try:
            yield uow
        except BaseException:
            self.rollbacks += 1
            raise
        uow.commit()

    def value(self, granularity: str, metric: str, dimension: str = "") -> int:
        """The committed total of a metric over all periods of a granularity."""
        return sum(v for k, (v, _) in self.kpis.items() if k[0] == granularity and k[4:] == (metric, dimension))


class FakeUnitOfWork:
    """Stages every change; `FakeDatabase.begin` applies them when the block ends normally."""

    def __init__(self, db: FakeDatabase) -> None:
        self.db = db
        self.ids: dict[UUID, float] = {}
        self.kpis: list[Mapping[fold.KpiKey, tuple[int, int]]] = []
        self.counts: Counter[fold.CountKey] = Counter()
        self.offsets: dict[tuple[str, str, int], int] = {}

    async def record_ids(self, ids: list[UUID], epochs: list[float]) -> set[UUID]:
        if self.db.refused & set(ids):
            raise asyncpg.CharacterNotInRepertoireError("invalid byte sequence for encoding \"UTF8\": 0x00")
        known = {i for i in ids if i in self.db.ids or i in self.ids}
        self.ids.update((i, e) for i, e in zip(ids, epochs, strict=True) if i not in known)
        return known

    async def add_kpis(self, deltas: Mapping[fold.KpiKey, fold.Delta]) -> None:
        self.kpis.append(dict(deltas))

    async def add_daily_counts(self, counts: Counter[fold.CountKey]) -> None:
        self.counts.update(counts)

    async def store_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), offset in offsets.items():
            key = (group, topic, partition)
            self.offsets[key] = max(self.offsets.get(key, 0), self.db.offsets.get(key, 0), offset)

    async def load_offsets(self, group: str, topic: str) -> dict[int, int]:
        return {p: o for (g, t, p), o in self.db.offsets.items() if (g, t) == (group, topic)}

    async def delete_expired_ids(self, older_than: datetime, limit: int) -> int:
        expired = [i for i, epoch in self.db.ids.items() if epoch < older_than.timestamp()][:limit]
        for i in expired:
            del self.db.ids[i]
        return len(expired)

    def commit(self) -> None:
        db = self.db
        db.ids.update(self.ids)
        for deltas in self.kpis:
            for k, (value, keys) in deltas.items():
                old = db.kpis.get(k, (0, 0))
                db.kpis[k] = (old[0] + value, (old[1] + keys) % 2**32)
        db.counts.update(self.counts)
        db.offsets.update(self.offsets)
        db.commits += 1


def usage_stream(metrics: AggregatorMetrics | None = None, chunk_records: int = 4000,
                 topic: str = "usage.events.v1") -> service.Stream:
    """The usage stream as the service sees it; no pause before a redelivery."""
    return service.Stream(
        topic=topic, group="kp-aggregator", consumer="aggregator/usage", adapter=usage_event_adapter,
        contributions=fold.usage_contributions, daily_counts=True, horizon=timedelta(days=7),
        future_skew=timedelta(minutes=15), secret=b"unit-test-ckm-secret", chunk_records=chunk_records,
        rejected_max_bytes=1_000_000, retry_backoff_max_s=0.0, metrics=metrics or AggregatorMetrics.create(),
    )
