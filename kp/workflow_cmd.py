"""`kp workflow`: check workflow definitions before deploying them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.workflow.definitions import DEFINITIONS_DIR, DefinitionError, load_definitions

workflow_app = typer.Typer(help="Workflow definitions.", no_args_is_help=True)


@workflow_app.command("validate")
def validate(
    directory: Annotated[Path, typer.Argument(help="Directory with *.yaml definitions.")] = DEFINITIONS_DIR,
) -> None:
    """Validate every definition in the directory; exit 1 with the file and field of each error."""
    try:
        registry = load_definitions(directory)
    except DefinitionError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc
    for d in sorted(registry.all(), key=lambda d: (d.name, d.version)):
        typer.echo(f"ok  {d.name} v{d.version}  service={d.service or '(fallback)'}  steps={len(d.steps)}")
