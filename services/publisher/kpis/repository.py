"""All SQL of the publisher (read-only)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from shared.db import Conn

CHANGE_CHANNEL = "kpi_values_changed"
"""NOTIFY channel fed by the trigger of migration 0400."""


async def kpi_rows(
    conn: Conn, granularity: str, start: datetime, end: datetime, municipalities: list[str] | None,
    services: list[str] | None, limit: int | None = None,
) -> list[asyncpg.Record]:
    """(municipality, service, period start, metric, dimension, value, key_sum) of periods starting in [start, end);
    at most `limit` rows when given. `key_sum` is the row's Cell Key Method key sum (migration 0640), to be added
    up and perturbed, never published.

    The period start comes as microseconds since 1970-01-01 UTC (an exact integer): `service.build_tables` turns
    the few distinct starts of a query into datetimes once each instead of asyncpg building a datetime per row
    (about half of the client's CPU time for a query's rows).

    Planned for the actual parameters every time (the publisher's pool sets `plan_cache_mode =
    force_custom_plan`, see `app.py`): after five executions PostgreSQL would otherwise switch the prepared
    statement to a generic plan, which cannot see which filters are set or how long the range is and scans the
    period index over every municipality and service of the range (about 5 ms instead of 0.5 ms for a month of
    one city and service)."""
    return await conn.fetch(
        """SELECT municipality::text, service::text, (extract(epoch FROM period_start) * 1000000)::bigint,
                  metric, dimension, value, key_sum
           FROM kpi_values
           WHERE granularity = $1 AND period_start >= $2 AND period_start < $3
             AND ($4::text[] IS NULL OR municipality = ANY($4::text[]::char(8)[]))
             AND ($5::text[] IS NULL OR service = ANY($5::text[]::char(14)[]))
           LIMIT $6""",
        granularity, start, end, municipalities, services, limit,
    )


async def last_change(conn: Conn) -> datetime | None:
    """When kpi_values last changed (kept per writing backend by the table's statement trigger, migration 0500)."""
    value: datetime | None = await conn.fetchval("SELECT max(at) FROM kpi_values_writes")
    return value
