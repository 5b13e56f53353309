"""Site tokens in PostgreSQL (`ingest_site_tokens`, migration 0680); the caller owns the transaction."""

from __future__ import annotations

import uuid
from typing import Any

from services.ingest.tracker.service import SiteToken
from shared.db import Conn

_COLUMNS = "id, token, municipality, service, origins, rate_per_s, burst, description, created_at, revoked_at"


def _token(row: Any) -> SiteToken:
    return SiteToken(id=row["id"], token=row["token"], municipality=row["municipality"], service=row["service"],
                     origins=frozenset(row["origins"]), rate_per_s=row["rate_per_s"], burst=row["burst"],
                     description=row["description"], created_at=row["created_at"], revoked_at=row["revoked_at"])


async def insert_site_token(conn: Conn, token: SiteToken) -> None:
    await conn.execute(
        """INSERT INTO ingest_site_tokens (id, token, municipality, service, origins, rate_per_s, burst, description)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        token.id, token.token, token.municipality, token.service, sorted(token.origins), token.rate_per_s,
        token.burst, token.description,
    )


async def find_active_site_token(conn: Conn, token: str) -> SiteToken | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM ingest_site_tokens WHERE token = $1 AND revoked_at IS NULL", token)
    return _token(row) if row is not None else None


async def list_site_tokens(conn: Conn, include_revoked: bool = False) -> list[SiteToken]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ingest_site_tokens WHERE $1 OR revoked_at IS NULL ORDER BY created_at, id",
        include_revoked)
    return [_token(r) for r in rows]


async def active_origins(conn: Conn) -> list[str]:
    """Every origin of an active token: the member sites, whose referrers count as `municipal`."""
    rows = await conn.fetch(
        "SELECT DISTINCT unnest(origins) AS origin FROM ingest_site_tokens WHERE revoked_at IS NULL")
    return [r["origin"] for r in rows]


async def revoke_site_token(conn: Conn, token_id: uuid.UUID) -> bool:
    status = await conn.execute(
        "UPDATE ingest_site_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", token_id)
    return bool(status.endswith(" 1"))
