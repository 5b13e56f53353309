"""All SQL of the aggregator. Functions receive a connection; the caller owns the transaction."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from uuid import UUID

from services.aggregator.fold import CountKey, Delta, KpiKey
from shared.ckm import MODULUS
from shared.db import Conn


async def insert_ids(conn: Conn, ids: list[UUID], epochs: list[float]) -> set[UUID]:
    """Record event ids (unique within the call) with their event time (epoch seconds); return those that were
    recorded before (usually none).

    The known ids are looked up and only the others inserted with a plain INSERT: `ON CONFLICT DO NOTHING`
    (speculative insertion) cost about 60 % more per row. Event times travel as float8 (encoding aware
    datetimes cost the client more than the insert); they only steer retention, so sub-microsecond rounding
    does not matter. Another writer of the same id at the same moment (only possible while a partition changes
    hands) makes the INSERT fail with a unique violation or a deadlock; the batch then rolls back, is
    redelivered, and the lookup finds the id.
    """
    if not ids:
        return set()
    # One statement, the arrays encoded once: every part of it sees the snapshot from before the INSERT, so
    # `known` holds exactly the ids recorded earlier.
    rows = await conn.fetch(
        """WITH given AS (SELECT * FROM unnest($1::uuid[], $2::float8[]) AS g (event_id, epoch)),
                known AS (SELECT p.event_id FROM agg_processed_events p
                          WHERE p.event_id IN (SELECT event_id FROM given)),
                inserted AS (INSERT INTO agg_processed_events (event_id, event_time)
                             SELECT event_id, to_timestamp(epoch) FROM given
                             WHERE event_id NOT IN (SELECT event_id FROM known))
           SELECT event_id FROM known""",
        ids, epochs,
    )
    return {r["event_id"] for r in rows}


async def upsert_kpis(conn: Conn, deltas: Mapping[KpiKey, Delta]) -> None:
    """Add KPI deltas and their key sums to `kpi_values` in one statement.

    Key sums are kept modulo 2^32 (exact integer arithmetic; the stored value is always in [0, 2^32), so the sum
    of two fits a bigint without overflow)."""
    if not deltas:
        return
    # Primary-key order, so concurrent writers lock rows in the same order (no deadlocks).
    keys = sorted(deltas, key=lambda k: (k[0], k[2], k[3], k[1], k[4], k[5]))
    # Period starts travel as epoch seconds (whole seconds, exact in float8): encoding aware datetimes cost the
    # client several times more.
    starts: dict[datetime, int] = {}
    await conn.execute(
        """INSERT INTO kpi_values AS k (granularity, period_start, municipality, service, metric, dimension, value,
                                        key_sum)
           SELECT g, to_timestamp(p), m, s, x, d, v, c
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],
                       $8::bigint[]) AS u (g, p, m, s, x, d, v, c)
           ON CONFLICT (granularity, municipality, service, period_start, metric, dimension)
           DO UPDATE SET value = k.value + EXCLUDED.value, key_sum = (k.key_sum + EXCLUDED.key_sum) % $9,
                         updated_at = now()""",
        [k[0] for k in keys], [_epoch(k[1], starts) for k in keys], [k[2] for k in keys], [k[3] for k in keys],
        [k[4] for k in keys], [k[5] for k in keys], [deltas[k][0] for k in keys],
        [deltas[k][1] % MODULUS for k in keys], MODULUS,
    )


def _epoch(moment: datetime, known: dict[datetime, int]) -> int:
    value = known.get(moment)
    if value is None:
        value = known[moment] = int(moment.timestamp())
    return value


async def add_counts(conn: Conn, counts: Counter[CountKey]) -> None:
    """Add to the daily per-event-type counts (`kpi_event_counts_daily`)."""
    if not counts:
        return
    keys = sorted(counts)
    await conn.execute(
        """INSERT INTO kpi_event_counts_daily AS k (day, municipality, service, event_type, count)
           SELECT * FROM unnest($1::date[], $2::text[], $3::text[], $4::text[], $5::bigint[])
           ON CONFLICT (day, municipality, service, event_type)
           DO UPDATE SET count = k.count + EXCLUDED.count, updated_at = now()""",
        [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys],
        [counts[k] for k in keys],
    )


async def store_offsets(conn: Conn, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Remember where to resume per partition (never moves backwards)."""
    if not offsets:
        return
    keys = sorted(offsets)
    await conn.execute(
        """INSERT INTO agg_offsets AS o (consumer_group, topic, partition, next_offset)
           SELECT $1, * FROM unnest($2::text[], $3::int[], $4::bigint[])
           ON CONFLICT (consumer_group, topic, partition)
           DO UPDATE SET next_offset = GREATEST(o.next_offset, EXCLUDED.next_offset), updated_at = now()""",
        group, [k[0] for k in keys], [k[1] for k in keys], [offsets[k] for k in keys],
    )


async def load_offsets(conn: Conn, group: str, topic: str) -> dict[int, int]:
    """Stored resume positions of a consumer group on a topic, per partition."""
    rows = await conn.fetch(
        "SELECT partition, next_offset FROM agg_offsets WHERE consumer_group = $1 AND topic = $2", group, topic
    )
    return {r["partition"]: r["next_offset"] for r in rows}


async def delete_expired_ids(conn: Conn, older_than: datetime, limit: int) -> int:
    """Forget up to `limit` event ids whose event time is before `older_than`; return how many."""
    result = await conn.execute(
        """DELETE FROM agg_processed_events WHERE event_id IN (
               SELECT event_id FROM agg_processed_events WHERE event_time < $1 LIMIT $2)""",
        older_than, limit,
    )
    return int(result.split()[-1])
