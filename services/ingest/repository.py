"""SQL of ingest: the API-key table; the caller owns the transaction."""

from __future__ import annotations

import uuid
from typing import Any

from services.ingest.service import ApiKey
from shared.db import Conn

_COLUMNS = "id, platform, municipalities, key_prefix, rate_per_s, burst, description, created_at, revoked_at"


def _key(row: Any) -> ApiKey:
    return ApiKey(
        id=row["id"], platform=row["platform"], municipalities=frozenset(m.strip() for m in row["municipalities"]),
        rate_per_s=row["rate_per_s"], burst=row["burst"], key_prefix=row["key_prefix"],
        description=row["description"], created_at=row["created_at"], revoked_at=row["revoked_at"],
    )


async def insert_api_key(conn: Conn, key: ApiKey, key_hash: str) -> None:
    assert key.id is not None
    assert key.municipalities is not None
    await conn.execute(
        """INSERT INTO ingest_api_keys (id, platform, municipalities, key_hash, key_prefix, rate_per_s, burst,
                                        description)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        key.id, key.platform, sorted(key.municipalities), key_hash, key.key_prefix, key.rate_per_s, key.burst,
        key.description,
    )


async def find_active_key(conn: Conn, key_hash: str) -> ApiKey | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM ingest_api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
    )
    return _key(row) if row is not None else None


async def list_api_keys(conn: Conn, include_revoked: bool = False) -> list[ApiKey]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM ingest_api_keys WHERE $1 OR revoked_at IS NULL ORDER BY created_at, id",
        include_revoked,
    )
    return [_key(r) for r in rows]


async def revoke_api_key(conn: Conn, key_id: uuid.UUID) -> bool:
    """Mark a key revoked; False if it does not exist or was already revoked."""
    status = await conn.execute(
        "UPDATE ingest_api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", key_id
    )
    return bool(status.endswith(" 1"))


async def revoke_api_keys_by_description(conn: Conn, platform: str, description: str) -> int:
    status = await conn.execute(
        """UPDATE ingest_api_keys SET revoked_at = now()
           WHERE platform = $1 AND description = $2 AND revoked_at IS NULL""",
        platform, description,
    )
    return int(status.split()[-1])
