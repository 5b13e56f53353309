"""Dedup retention: ids are forgotten only once their events are older than the late horizon plus margin."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.aggregator import repository


class TestDedupRetention:
    async def test_only_ids_older_than_the_cutoff_are_deleted_in_chunks(self, db: asyncpg.Connection) -> None:
        now = datetime.now(UTC)
        # far in the past, so no other test's ids fall before this cutoff
        cutoff = datetime(1971, 1, 1, tzinfo=UTC)
        old = [uuid.uuid4() for _ in range(5)]
        kept = [uuid.uuid4() for _ in range(3)]
        await repository.insert_ids(db, old, [(cutoff - timedelta(hours=i + 1)).timestamp() for i in range(5)])
        await repository.insert_ids(db, kept, [t.timestamp() for t in (cutoff + timedelta(seconds=1), now, now)])

        assert await repository.delete_expired_ids(db, cutoff, limit=3) == 3
        assert await repository.delete_expired_ids(db, cutoff, limit=3) == 2
        assert await repository.delete_expired_ids(db, cutoff, limit=3) == 0
        left = {r["event_id"] for r in await db.fetch(
            "SELECT event_id FROM agg_processed_events WHERE event_id = ANY($1::uuid[])", old + kept)}
        assert left == set(kept)

    async def test_a_forgotten_id_is_new_again(self, db: asyncpg.Connection) -> None:
        # which is why events older than the horizon are rejected as too_late before the dedup step
        event_id = uuid.uuid4()
        very_old = datetime(2000, 1, 1, tzinfo=UTC)
        epoch = very_old.timestamp()
        assert await repository.insert_ids(db, [event_id], [epoch]) == set()  # new: none was known
        assert await repository.insert_ids(db, [event_id], [epoch]) == {event_id}
        await repository.delete_expired_ids(db, very_old + timedelta(seconds=1), limit=1000)
        assert await repository.insert_ids(db, [event_id], [epoch]) == set()
        await db.execute("DELETE FROM agg_processed_events WHERE event_id = $1", event_id)
