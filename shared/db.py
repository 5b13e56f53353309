"""PostgreSQL plumbing: connection pools and the migration runner."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import asyncpg
from asyncpg.pool import PoolConnectionProxy

Conn = asyncpg.Connection | PoolConnectionProxy
"""What repositories receive: a plain connection or one borrowed from a pool."""

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x4B50_4D49  # advisory lock id so concurrent starters migrate once


async def create_pool(url: str, min_size: int = 1, max_size: int = 10, *,
                      server_settings: dict[str, str] | None = None) -> asyncpg.Pool:
    """Create a pool; connections use UTC so timestamps come back unambiguous. `server_settings` are further
    session defaults of every connection (they survive the reset when a connection returns to the pool)."""
    pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings={"timezone": "UTC", **(server_settings or {})},
        command_timeout=30,
    )
    assert pool is not None
    track_pool(pool)
    return pool


_POOLS: list[asyncpg.Pool] = []  # asyncpg pools take no weak references; closed ones are dropped on read


def track_pool(pool: asyncpg.Pool) -> None:
    """Report this pool in the `kp_db_pool_*` metrics (done by `create_pool`; call it for pools made otherwise)."""
    _POOLS.append(pool)


def open_pools() -> list[asyncpg.Pool]:
    """The tracked pools of this process that are not closed."""
    _POOLS[:] = [p for p in _POOLS if not p.is_closing()]
    return list(_POOLS)


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(p for p in directory.glob("*.sql") if p.is_file())


async def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations in file-name order, each in its own transaction; return applied names."""
    conn = await asyncpg.connect(url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["name"]: r["checksum"] for r in await conn.fetch("SELECT name, checksum FROM schema_migrations")}
        for path in migration_files(directory):
            sql = path.read_text(encoding="utf-8")
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if path.name in done:
                if done[path.name] != checksum:
                    raise RuntimeError(f"migration {path.name} changed after it was applied; add a new one instead")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", path.name, checksum
                )
            applied.append(path.name)
            log.info("applied migration %s", path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
    return applied
