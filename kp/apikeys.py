"""`kp apikey`: create, list and revoke the API keys platforms use to send events to ingest."""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
import typer

from kp.dbcmd import database_url, on_connection, refuse_unknown_municipalities, revoke_on_stack, run_on_stack
from services.ingest import repository, service
from shared.reference import municipalities as reference_municipalities

apikey_app = typer.Typer(help="API keys of the platforms sending usage events (stored hashed).", no_args_is_help=True)

DEMO_PLATFORM = "kp-simulator"
DEMO_DESCRIPTION = "demo traffic of `kp stack up`"


async def create_key(database_url: str, platform: str, municipalities: list[str], rate_per_s: float = 50.0,
                     burst: int = 100, description: str = "") -> tuple[str, service.ApiKey]:
    """Store a new key; return the plain key (shown once, never stored) and its record."""
    plain, key, key_hash = service.new_api_key(platform, municipalities, rate_per_s, burst, description)
    await on_connection(database_url, lambda conn: repository.insert_api_key(conn, key, key_hash))
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
    refuse_unknown_municipalities(municipality, new_member)
    try:
        plain, key = asyncio.run(create_key(database_url(), platform, municipality, rate, burst, description))
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
    for key in run_on_stack(lambda conn: repository.list_api_keys(conn, all_keys)):
        state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        scope = ",".join(sorted(key.municipalities or []))
        typer.echo(f"{key.id}  {key.key_prefix}…  {key.platform:<20} {key.rate_per_s:g}/s burst {key.burst}  "
                   f"{state}  {scope}")


@apikey_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Id of the key (see `kp apikey list`).")]) -> None:
    """Revoke a key; ingest instances stop accepting it within their key-cache time."""
    revoke_on_stack(key_id, "key", repository.revoke_api_key)
