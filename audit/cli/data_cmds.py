"""Prompt-set commands: import."""

from __future__ import annotations

from pathlib import Path

import typer

from audit.cli import app
from audit.cli.common import fail, get_store


@app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., help="CSV, JSON (array) or JSONL with 'prompt' and optional 'category', 'response', 'label'."),
    set_name: str = typer.Option(..., "--set", help="Name of the prompt set to import into."),
) -> None:
    """Import prompts into a prompt set, in one transaction."""
    from audit.prompts import InputError, import_prompts

    try:
        result = import_prompts(get_store(), file, set_name)
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"set {result.set_name}: {result.added} prompts added, {result.skipped} already present")
