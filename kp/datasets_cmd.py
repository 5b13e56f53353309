"""`kp datasets`: data officers register, update, upload to and withdraw portal datasets from YAML/JSON files.

Everything but `issue-key` goes through the publisher's write API, so the same validation applies as for any
other client; errors are printed field by field (and, for CSV uploads, with the Frictionless report).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import httpx
import typer
import yaml

datasets_app = typer.Typer(help="Datasets of the open data portal (data officers).", no_args_is_help=True)

UrlOpt = Annotated[str | None, typer.Option("--url", envvar="KP_PUBLISHER_URL",
                                            help="Publisher base URL (default: the local stack's).")]
KeyOpt = Annotated[str, typer.Option("--key", envvar="KP_PORTAL_KEY", help="Data officer key.")]
TIMEOUT = 60.0


def _publisher_url(url: str | None) -> str:
    if url:
        return url.rstrip("/")
    from kp import local
    from kp.cli import RUN_DIR

    state = local.read_state(RUN_DIR) or {}
    services = state.get("services") or {}
    if isinstance(services, dict) and "publisher" in services:
        return str(services["publisher"]["url"])
    return "http://127.0.0.1:8003"


def load_description(path: Path) -> dict[str, Any]:
    """A dataset description from a .yaml/.yml/.json file (YAML dates are passed on as ISO strings)."""
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
        raise typer.BadParameter(f"{path} is not valid {kind}: {exc}") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path} must hold one mapping describing a dataset")
    out: dict[str, Any] = json.loads(json.dumps(data, default=str))
    return out


def _report(resp: httpx.Response) -> None:
    """Print a problem-details answer readably and stop with exit code 1."""
    try:
        body = resp.json()
    except ValueError:
        typer.echo(f"error: HTTP {resp.status_code}: {resp.text[:500]}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"error: HTTP {resp.status_code} {body.get('title', '')}: {body.get('detail', '')}", err=True)
    for e in body.get("errors", []):
        typer.echo(f"  {e['field']}: {e['detail']}", err=True)
    report = body.get("report")
    if report:
        typer.echo(f"  Frictionless: {report['error_count']} error(s)", err=True)
        for e in report["errors"]:
            where = f"row {e['row']}" + (f", field {e['field']}" if e.get("field") else "")
            typer.echo(f"    {where}: {e['type']}: {e['message']}", err=True)
    raise typer.Exit(1)


def _files(description: dict[str, Any], base: Path) -> list[tuple[Path, str | None]]:
    files = description.pop("files", None) or []
    out = []
    for f in files:
        entry = {"path": f} if isinstance(f, str) else dict(f)
        out.append(((base / entry["path"]).resolve(), entry.get("title")))
    return out


def _upload(client: httpx.Client, name: str, path: Path, title: str | None) -> None:
    resp = client.put(f"/v1/portal/datasets/{name}/files/{path.name}", content=path.read_bytes(),
                      params={"title": title} if title else None)
    if resp.status_code != 201:
        _report(resp)
    body = resp.json()
    rows = (body.get("report") or {}).get("rows")
    typer.echo(f"uploaded {path.name}: {body['distribution']['download_url']}"
               + (f" ({rows} rows, Frictionless: valid)" if rows is not None else ""))


def _client(url: str | None, key: str) -> httpx.Client:
    return httpx.Client(base_url=_publisher_url(url), headers={"Authorization": f"Bearer {key}"}, timeout=TIMEOUT)


@datasets_app.command("create")
def create(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON description")],
           key: KeyOpt, url: UrlOpt = None) -> None:
    """Register a dataset; files listed under `files:` are uploaded after it (paths relative to FILE)."""
    description = load_description(file)
    files = _files(description, file.parent)
    with _client(url, key) as client:
        resp = client.post("/v1/portal/datasets", json=description)
        if resp.status_code != 201:
            _report(resp)
        name = resp.json()["name"]
        typer.echo(f"created {name} (version {resp.json()['version']})")
        for path, title in files:
            _upload(client, name, path, title)


@datasets_app.command("update")
def update(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON description")],
           key: KeyOpt, url: UrlOpt = None) -> None:
    """Replace a dataset's description (hosted files stay); files under `files:` are added."""
    description = load_description(file)
    files = _files(description, file.parent)
    name = description.get("name")
    if not isinstance(name, str):
        raise typer.BadParameter("the description needs a `name`")
    with _client(url, key) as client:
        resp = client.put(f"/v1/portal/datasets/{name}", json=description)
        if resp.status_code != 200:
            _report(resp)
        typer.echo(f"updated {name} (version {resp.json()['version']})")
        for path, title in files:
            _upload(client, name, path, title)


@datasets_app.command("upload")
def upload(name: str, file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)], key: KeyOpt,
           title: Annotated[str | None, typer.Option(help="Title of the distribution")] = None,
           url: UrlOpt = None) -> None:
    """Upload a CSV, JSON or GeoJSON file as a hosted distribution of dataset NAME."""
    with _client(url, key) as client:
        _upload(client, name, file, title)


@datasets_app.command("withdraw")
def withdraw(name: str, key: KeyOpt, url: UrlOpt = None) -> None:
    """Withdraw dataset NAME from catalog, search and CKAN API (it stays in the history)."""
    with _client(url, key) as client:
        resp = client.delete(f"/v1/portal/datasets/{name}")
        if resp.status_code != 200:
            _report(resp)
        typer.echo(f"withdrew {name} (version {resp.json()['version']})")


async def _issue(database_url: str, label: str, municipalities: list[str]) -> str:
    from services.publisher.portal import service

    conn = await asyncpg.connect(database_url)
    try:
        return await service.issue_key(conn, label, municipalities)
    finally:
        await conn.close()


@datasets_app.command("issue-key")
def issue_key(
    label: Annotated[str, typer.Option(help="Who holds the key, e.g. open-data-offenbach.")],
    municipality: Annotated[list[str], typer.Option("--municipality", "-m", help="AGS the key may write; repeat.")],
) -> None:
    """Create a data officer key (printed once; only its SHA-256 is stored)."""
    from kp.cli import _urls

    _, database_url = _urls()
    try:
        key = asyncio.run(_issue(database_url, label, municipality))
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(key)
