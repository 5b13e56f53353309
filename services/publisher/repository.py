"""All SQL of the publisher (read-only)."""

from __future__ import annotations

from datetime import date

import asyncpg

from shared.db import Conn


async def event_counts(
    conn: Conn, municipality: str | None, service: str | None, date_from: date | None,
    date_to: date | None, limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT day, municipality, service, event_type, count FROM kpi_event_counts_daily
           WHERE ($1::text IS NULL OR municipality = $1) AND ($2::text IS NULL OR service = $2)
             AND ($3::date IS NULL OR day >= $3) AND ($4::date IS NULL OR day <= $4)
           ORDER BY day, municipality, service, event_type LIMIT $5""",
        municipality, service, date_from, date_to, limit,
    )
