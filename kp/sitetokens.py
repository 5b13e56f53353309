"""`kp sitetoken`: public site tokens of the web tracker and the feedback widget (bound to origins)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from kp.dbcmd import (
    database_url,
    on_connection,
    refuse_unknown_municipalities,
    revoke_on_stack,
    run_on_stack,
)
from services.ingest.tracker import repository
from services.ingest.tracker.service import SiteToken, new_site_token
from shared.reference import is_known_service

sitetoken_app = typer.Typer(help="Public site tokens of the web tracker and feedback widget.", no_args_is_help=True)


async def create_site_token(database_url: str, municipality: str, service: str, origins: list[str],
                            rate_per_s: float = 50.0, burst: int = 200, description: str = "") -> SiteToken:
    """Store a new site token and return it (the token is public: it stands in the site's pages)."""
    token = new_site_token(municipality, service, origins, rate_per_s, burst, description)
    await on_connection(database_url, lambda conn: repository.insert_site_token(conn, token))
    return token


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
    refuse_unknown_municipalities([municipality], new_member)
    if not is_known_service(service):
        typer.echo(f"error: service {service} is not in the reference data (or KP_EXTRA_SERVICES)", err=True)
        raise typer.Exit(2)
    try:
        token = asyncio.run(create_site_token(database_url(), municipality, service, origin, rate, burst,
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

    for t in run_on_stack(lambda conn: repository.list_site_tokens(conn, all_tokens)):
        state = f"revoked {t.revoked_at:%Y-%m-%d %H:%M}" if t.revoked_at else "active"
        typer.echo(f"{t.id}  {t.token}  {t.municipality}  {t.service}  {t.rate_per_s:g}/s burst {t.burst}  "
                   f"{state}  {','.join(sorted(t.origins))}")


@sitetoken_app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(help="Id of the token (see `kp sitetoken list`).")]) -> None:
    """Revoke a site token; ingest refuses it within its token-cache time."""
    revoke_on_stack(token_id, "site token", repository.revoke_site_token)
