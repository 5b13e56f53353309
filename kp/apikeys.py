"""`kp apikey`: create, list and revoke the API keys platforms use to send events to ingest."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import asyncpg
import typer

from services.ingest import repository, service
from shared.reference import municipalities as reference_municipalities
from shared.reference import municipality_by_ags

apikey_app = typer.Typer(help="API keys of the platforms sending usage events (stored hashed).", no_args_is_help=True)

DEMO_PLATFORM = "kp-simulator"
DEMO_DESCRIPTION = "demo traffic of `kp stack up`"


async def create_key(database_url: str, platform: str, municipalities: list[str], rate_per_s: float = 50.0,
                     burst: int = 100, description: str = "") -> tuple[str, service.ApiKey]:
    """Store a new key; return the plain key (shown once, never stored) and its record."""
    plain, key, key_hash = service.new_api_key(platform, municipalities, rate_per_s, burst, description)
    conn = await asyncpg.connect(database_url)
    try:
        await repository.insert_api_key(conn, key, key_hash)
    finally:
        await conn.close()
    return plain, key


async def provision_demo_key(database_url: str) -> str:
    """A fresh key for the demo simulator, scoped to the six cities; earlier demo keys are revoked."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await repository.revoke_api_keys_by_description(conn, DEMO_PLATFORM, DEMO_DESCRIPTION)
            plain, key, key_hash = service.new_api_key(
                DEMO_PLATFORM, [m.ags for m in reference_municipalities()], 1000.0, 2000, DEMO_DESCRIPTION)
            await repository.insert_api_key(conn, key, key_hash)
    finally:
        await conn.close()
    return plain


def unknown_municipalities(codes: list[str]) -> list[str]:
    """The codes that are not a member city of the reference data."""
    return [c for c in codes if c not in municipality_by_ags()]


def _database_url() -> str:
    from kp.cli import _urls

    return _urls()[1]


@apikey_app.command("create")
def create(
    platform: Annotated[str, typer.Option(help="Platform identifier, e.g. civento-offenbach.")],
    municipality: Annotated[list[str], typer.Option("--municipality", "-m", help="AGS the key may send for; repeat.")],
    rate: Annotated[float, typer.Option(help="Requests per second allowed (per ingest instance).")] = 50.0,
    burst: Annotated[int, typer.Option(help="Requests allowed at once before the rate applies.")] = 100,
    description: Annotated[str, typer.Option(help="Free note, e.g. who holds the key.")] = "",
    new_member: Annotated[bool, typer.Option(
        "--new-member", help="Allow AGS that are not (yet) in the reference data, for a new member city.")] = False,
) -> None:
    """Create a key; the plain key is printed once and cannot be shown again."""
    unknown = unknown_municipalities(municipality)
    if unknown and not new_member:
        typer.echo(f"error: unknown municipality {', '.join(unknown)}; members: "
                   f"{', '.join(f'{m.ags} {m.name}' for m in reference_municipalities())} "
                   "(for a new member city not yet in the reference data add --new-member)", err=True)
        raise typer.Exit(2)
    try:
        plain, key = asyncio.run(create_key(_database_url(), platform, municipality, rate, burst, description))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"id        {key.id}")
    typer.echo(f"platform  {key.platform}")
    typer.echo(f"scope     {', '.join(sorted(key.municipalities or []))}")
    typer.echo(f"key       {plain}")
    typer.echo("Store the key now: only its hash is kept.")


@apikey_app.command("list")
def list_keys(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
) -> None:
    """List keys (id, prefix, platform, scope, limits, state); never the keys themselves."""

    async def fetch() -> list[service.ApiKey]:
        conn = await asyncpg.connect(_database_url())
        try:
            return await repository.list_api_keys(conn, all_keys)
        finally:
            await conn.close()

    for key in asyncio.run(fetch()):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        scope = ",".join(sorted(key.municipalities or []))
        typer.echo(f"{key.id}  {key.key_prefix}…  {key.platform:<20} {key.rate_per_s:g}/s burst {key.burst}  "
                   f"{state}  {scope}")


@apikey_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Id of the key (see `kp apikey list`).")]) -> None:
    """Revoke a key; ingest instances stop accepting it within their key-cache time."""
    try:
        parsed = uuid.UUID(key_id)
    except ValueError as exc:
        typer.echo(f"error: {key_id!r} is not a key id", err=True)
        raise typer.Exit(2) from exc

    async def run() -> bool:
        conn = await asyncpg.connect(_database_url())
        try:
            return await repository.revoke_api_key(conn, parsed)
        finally:
            await conn.close()

    if not asyncio.run(run()):
        typer.echo(f"error: no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")
