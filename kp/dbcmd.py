"""Plumbing shared by the `kp` commands that work on the stack's database (keys, site tokens)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
import typer

from shared.reference import municipalities as reference_municipalities
from shared.reference import municipality_by_ags

T = TypeVar("T")


def database_url() -> str:
    """The running stack's database (or `KP_DATABASE_URL`)."""
    from kp.cli import _urls

    return _urls()[1]


async def on_connection(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on a connection of its own, closed afterwards."""
    conn = await asyncpg.connect(url)
    try:
        return await work(conn)
    finally:
        await conn.close()


def run_on_stack(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run `work` on a connection to the stack's database, from a synchronous command."""
    return asyncio.run(on_connection(database_url(), work))


def parse_id(value: str, what: str) -> uuid.UUID:
    """The id a command was given, or exit 2 saying it is none."""
    try:
        return uuid.UUID(value)
    except ValueError as exc:
        typer.echo(f"error: {value!r} is not a {what} id", err=True)
        raise typer.Exit(2) from exc


def unknown_municipalities(codes: list[str]) -> list[str]:
    """The codes that are not a member city of the reference data."""
    return [c for c in codes if c not in municipality_by_ags()]


def refuse_unknown_municipalities(codes: list[str], new_member: bool) -> None:
    """Exit 2 naming the members when a code is no member city, unless `--new-member` allows it."""
    unknown = unknown_municipalities(codes)
    if unknown and not new_member:
        typer.echo(f"error: unknown municipality {', '.join(unknown)}; members: "
                   f"{', '.join(f'{m.ags} {m.name}' for m in reference_municipalities())} "
                   "(for a new member city not yet in the reference data add --new-member)", err=True)
        raise typer.Exit(2)


def revoke_on_stack(given: str, what: str, revoke: Callable[[asyncpg.Connection, uuid.UUID], Awaitable[bool]]) -> None:
    """Revoke the credential with id `given`; exit 2 for no id, 1 when there is no active one of that id."""
    parsed = parse_id(given, what)
    if not run_on_stack(lambda conn: revoke(conn, parsed)):
        typer.echo(f"error: no active {what} {given}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {given}")
