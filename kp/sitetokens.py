"""`kp sitetoken`: public site tokens of the web tracker and the feedback widget (bound to origins)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Annotated

import asyncpg
import typer

from kp.apikeys import unknown_municipalities
from services.ingest.tracker import repository
from services.ingest.tracker.service import SiteToken, new_site_token
from shared.reference import is_known_service
from shared.reference import municipalities as reference_municipalities

sitetoken_app = typer.Typer(help="Public site tokens of the web tracker and feedback widget.", no_args_is_help=True)


async def create_site_token(database_url: str, municipality: str, service: str, origins: list[str],
                            rate_per_s: float = 50.0, burst: int = 200, description: str = "") -> SiteToken:
    """Store a new site token and return it (the token is public: it stands in the site's pages)."""
    token = new_site_token(municipality, service, origins, rate_per_s, burst, description)
    conn = await asyncpg.connect(database_url)
    try:
        await repository.insert_site_token(conn, token)
    finally:
        await conn.close()
    return token


def _database_url() -> str:
    from kp.cli import _urls

    return _urls()[1]


@sitetoken_app.command("create")
def create(
    municipality: Annotated[str, typer.Option("--municipality", "-m", help="AGS of the city the site belongs to.")],
    origin: Annotated[list[str], typer.Option(help="Origin allowed to send, e.g. https://www.example-stadt.de; "
                                                   "repeat for several.")],
    service: Annotated[str, typer.Option(help="LeiKa key page views count for (a form may name its own).")]
    = "99115005104000",
    rate: Annotated[float, typer.Option(help="Requests per second for the whole site (per ingest instance).")] = 50.0,
    burst: Annotated[int, typer.Option(help="Requests allowed at once before the rate applies.")] = 200,
    description: Annotated[str, typer.Option(help="Free note, e.g. the site's name.")] = "",
    new_member: Annotated[bool, typer.Option("--new-member", help="Allow an AGS not (yet) in the reference data.")]
    = False,
) -> None:
    """Create a site token and print the tags to embed."""
    if unknown_municipalities([municipality]) and not new_member:
        typer.echo(f"error: unknown municipality {municipality}; members: "
                   f"{', '.join(f'{m.ags} {m.name}' for m in reference_municipalities())} "
                   "(for a new member city add --new-member)", err=True)
        raise typer.Exit(2)
    if not is_known_service(service):
        typer.echo(f"error: service {service} is not in the reference data (or KP_EXTRA_SERVICES)", err=True)
        raise typer.Exit(2)
    try:
        token = asyncio.run(create_site_token(_database_url(), municipality, service, origin, rate, burst,
                                              description))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"id       {token.id}")
    typer.echo(f"token    {token.token}")
    typer.echo(f"origins  {', '.join(sorted(token.origins))}")
    typer.echo("Embed (replace INGEST with the public URL of ingest):")
    typer.echo(f'  <script src="https://INGEST/tracker.js" data-token="{token.token}" defer></script>')
    typer.echo(f'  <script src="https://INGEST/feedback.js" data-token="{token.token}" async></script>')


@sitetoken_app.command("list")
def list_tokens(all_tokens: Annotated[bool, typer.Option("--all", help="Include revoked tokens.")] = False) -> None:
    """List site tokens with their municipality, service and origins."""

    async def fetch() -> list[SiteToken]:
        conn = await asyncpg.connect(_database_url())
        try:
            return await repository.list_site_tokens(conn, all_tokens)
        finally:
            await conn.close()

    for t in asyncio.run(fetch()):
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        typer.echo(f"{t.id}  {t.token}  {t.municipality}  {t.service}  {t.rate_per_s:g}/s burst {t.burst}  "
                   f"{state}  {','.join(sorted(t.origins))}")


@sitetoken_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="Id of the token (see `kp sitetoken list`).")]) -> None:
    """Revoke a site token; ingest refuses it within its token-cache time."""
    try:
        parsed = uuid.UUID(token_id)
    except ValueError as exc:
        typer.echo(f"error: {token_id!r} is not a token id", err=True)
        raise typer.Exit(2) from exc

    async def run() -> bool:
        conn = await asyncpg.connect(_database_url())
        try:
            return await repository.revoke_site_token(conn, parsed)
        finally:
            await conn.close()

    if not asyncio.run(run()):
        typer.echo(f"error: no active site token {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {token_id}")
