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
    """(municipality, service, period_start, metric, dimension, value) of periods starting in [start, end);
    at most `limit` rows when given."""
    return await conn.fetch(
        """SELECT municipality::text, service::text, period_start, metric, dimension, value FROM kpi_values
           WHERE granularity = $1 AND period_start >= $2 AND period_start < $3
             AND ($4::text[] IS NULL OR municipality = ANY($4::text[]::char(8)[]))
             AND ($5::text[] IS NULL OR service = ANY($5::text[]::char(14)[]))
           LIMIT $6""",
        granularity, start, end, municipalities, services, limit,
    )


async def last_change(conn: Conn) -> datetime | None:
    """When kpi_values last changed (index-only on kpi_values_updated)."""
    value: datetime | None = await conn.fetchval("SELECT max(updated_at) FROM kpi_values")
    return value
