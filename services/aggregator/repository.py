"""All SQL of the aggregator. Functions receive a connection; the caller owns the transaction."""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from uuid import UUID

from services.aggregator.service import CountKey
from shared.db import Conn


async def insert_new_ids(conn: Conn, ids: list[UUID], times: list[datetime]) -> set[UUID]:
    """Record event ids; return those not seen before."""
    rows = await conn.fetch(
        """INSERT INTO agg_processed_events (event_id, event_time)
           SELECT * FROM unnest($1::uuid[], $2::timestamptz[])
           ON CONFLICT (event_id) DO NOTHING
           RETURNING event_id""",
        ids, times,
    )
    return {r["event_id"] for r in rows}


async def add_counts(conn: Conn, counts: Counter[CountKey]) -> None:
    if not counts:
        return
    keys = list(counts)
    await conn.execute(
        """INSERT INTO kpi_event_counts_daily AS k (day, municipality, service, event_type, count)
           SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[])
           ON CONFLICT (day, municipality, service, event_type)
           DO UPDATE SET count = k.count + EXCLUDED.count, updated_at = now()""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys],
        [counts[k] for k in keys],
    )


async def store_offsets(conn: Conn, group: str, offsets: dict[tuple[str, int], int]) -> None:
    if not offsets:
        return
    keys = list(offsets)
    await conn.execute(
        """INSERT INTO agg_offsets AS o (consumer_group, topic, partition, next_offset)
           SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
           ON CONFLICT (consumer_group, topic, partition)
           DO UPDATE SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()""",
        group, [k[0] for k in keys], [k[1] for k in keys], [offsets[k] for k in keys],
    )


async def load_offsets(conn: Conn, group: str, topic: str) -> dict[int, int]:
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM agg_offsets WHERE consumer_group = $1 AND topic = $2", group, topic
    )
    return {r["partition"]: r["next_offset"] for r in rows}
