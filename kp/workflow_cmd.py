"""`kp workflow`: check workflow definitions before deploying them; export the file-system E-Akte."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.workflow.adapters import FileSystemEAkte
from services.workflow.definitions import DEFINITIONS_DIR, DefinitionError, load_definitions

workflow_app = typer.Typer(help="Workflow definitions and the file-system E-Akte.", no_args_is_help=True)


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


@workflow_app.command("export-xdomea")
def export_xdomea(
    target: Annotated[Path, typer.Argument(help="Directory for the XML files (one per filed document).")],
    root: Annotated[Path | None, typer.Option(help="E-Akte root; default KP_EAKTE_ROOT.")] = None,
) -> None:
    """Export every document of the file-system E-Akte as XDOMEA-style XML (Akte / Vorgang / Dokument)."""
    from services.workflow.settings import WorkflowSettings

    count = FileSystemEAkte(root or WorkflowSettings().eakte_root).export_xdomea(target)
    typer.echo(f"{count} documents exported to {target}")
