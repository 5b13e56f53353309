"""SQL of the DCAT-AP.de catalog (read-only)."""

from __future__ import annotations

import asyncpg

from shared.db import Conn


async def kpi_coverage(conn: Conn) -> list[asyncpg.Record]:
    """Per municipality and metric: first and last day with daily KPI values and the last change."""
    return await conn.fetch(
        """SELECT municipality, metric,
                  min((period_start AT TIME ZONE 'Europe/Berlin')::date) AS first_day,
                  max((period_start AT TIME ZONE 'Europe/Berlin')::date) AS last_day,
                  max(updated_at) AS modified
           FROM kpi_values WHERE granularity = 'day'
           GROUP BY municipality, metric"""
    )
