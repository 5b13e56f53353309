"""The aggregator's unit of work: one transaction holding the dedup ids, the KPI deltas and the stored offsets.

`service` applies a batch through `UnitOfWork` only; `begin()` opens one. Leaving the `async with` block
normally commits, an exception rolls everything back, so the effect of a batch and the position after it are
stored together or not at all. `PostgresUnitOfWork` is the production implementation (SQL in `repository`);
the unit tests use a fake with the same protocol.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Protocol
from uuid import UUID

import asyncpg

from services.aggregator import repository
from services.aggregator.fold import CountKey, Delta, KpiKey
from shared.db import Conn


class UnitOfWork(Protocol):
    """What one transaction of the aggregator can do."""

    async def record_ids(self, ids: list[UUID], epochs: list[float]) -> set[UUID]:
        """Record event ids (unique within the call) with their event times; return those recorded before."""
        ...

    async def add_kpis(self, deltas: Mapping[KpiKey, Delta]) -> None:
        """Add KPI deltas and their key sums."""
        ...

    async def add_daily_counts(self, counts: Counter[CountKey]) -> None:
        """Add to the daily per-event-type counts."""
        ...

    async def store_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        """Remember where `group` resumes per (topic, partition); a position never moves backwards."""
        ...

    async def load_offsets(self, group: str, topic: str) -> dict[int, int]:
        """Stored resume positions of `group` on `topic`, per partition."""
        ...

    async def delete_expired_ids(self, older_than: datetime, limit: int) -> int:
        """Forget up to `limit` event ids whose event time is before `older_than`; return how many."""
        ...


Begin = Callable[[], AbstractAsyncContextManager[UnitOfWork]]
"""Opens a unit of work: commits when its block ends normally, rolls back on an exception."""


class PostgresUnitOfWork:
    """`UnitOfWork` on one PostgreSQL connection inside a transaction."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn

    async def record_ids(self, ids: list[UUID], epochs: list[float]) -> set[UUID]:
        return await repository.insert_ids(self._conn, ids, epochs)

    async def add_kpis(self, deltas: Mapping[KpiKey, Delta]) -> None:
        await repository.upsert_kpis(self._conn, deltas)

    async def add_daily_counts(self, counts: Counter[CountKey]) -> None:
        await repository.add_counts(self._conn, counts)

    async def store_offsets(self, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
        await repository.store_offsets(self._conn, group, offsets)

    async def load_offsets(self, group: str, topic: str) -> dict[int, int]:
        return await repository.load_offsets(self._conn, group, topic)

    async def delete_expired_ids(self, older_than: datetime, limit: int) -> int:
        return await repository.delete_expired_ids(self._conn, older_than, limit)


def postgres(pool_holder: Mapping[str, asyncpg.Pool]) -> Begin:
    """Units of work on connections of the pool in `pool_holder["pool"]` (created in the app's lifespan)."""

    @asynccontextmanager
    async def begin() -> AsyncIterator[UnitOfWork]:
        async with pool_holder["pool"].acquire() as conn, conn.transaction():
            yield PostgresUnitOfWork(conn)

    return begin
