"""All SQL of the workflow service. Functions receive a connection; the caller owns the transaction."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from shared.db import Conn


async def claim_inbox(conn: Conn, event_id: UUID) -> bool:
    """Record an incoming event id; False if it was processed before."""
    row = await conn.fetchval(
        "INSERT INTO wf_inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id", event_id
    )
    return row is not None


async def open_case(conn: Conn, case: dict[str, object]) -> bool:
    row = await conn.fetchval(
        """INSERT INTO wf_cases (case_id, application_id, municipality, service, definition,
                                 definition_version, state, opened_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (application_id) DO NOTHING RETURNING case_id""",
        case["case_id"], case["application_id"], case["municipality"], case["service"], case["definition"],
        case["definition_version"], case["state"], case["opened_at"],
    )
    return row is not None


async def add_outbox(conn: Conn, rows: list[tuple[str, bytes, bytes]]) -> None:
    if rows:
        await conn.executemany("INSERT INTO wf_outbox (topic, key, payload) VALUES ($1, $2, $3)", rows)


async def take_unpublished(conn: Conn, limit: int) -> list[asyncpg.Record]:
    """Lock a slice of unpublished rows; concurrent relays skip each other's rows."""
    return await conn.fetch(
        """SELECT id, topic, key, payload FROM wf_outbox WHERE published_at IS NULL
           ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
    )


async def mark_published(conn: Conn, ids: list[int]) -> None:
    await conn.execute("UPDATE wf_outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)


async def get_case(conn: Conn, case_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM wf_cases WHERE case_id = $1", case_id)
