"""Batch audit job commands: run.

Exit codes: 0 ok, 1 an alert fired, 2 config or input error, 3 target failures above the threshold,
4 another run of the job holds the lock, 5 the job itself failed (see its log).
"""

from __future__ import annotations

from pathlib import Path

import typer

from audit.cli import app
from audit.cli.common import state


@app.command("run")
def run_cmd(
    config: Path = typer.Argument(..., help="The job's TOML file (see docs/examples/audit.toml)."),
    out: Path = typer.Option(None, "--out", help="Output folder (overrides output_dir in the file)."),
    date: str = typer.Option(None, "--date", help="Run date YYYY-MM-DD (default: today). Same job + date resumes the same run."),
    progress: bool = typer.Option(None, "--progress/--no-progress", help="Show progress bars (default: only on a terminal)."),
) -> None:
    """Run a batch audit job: collect, label, probe, compare with the previous run, write reports."""
    from audit.jobs import EXIT_CONFIG, EXIT_CRASH, EXIT_LOCKED, ConfigError, JobInputError, LockHeld, load_config, run_job
    from audit.prompts import InputError

    try:
        cfg = load_config(config, output_dir=out)
    except ConfigError as exc:
        typer.echo(f"error: invalid job config:\n{exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    try:
        result = run_job(cfg, run_date=date, db_url=state.db_url, progress=progress, echo=typer.echo)
    except (InputError, JobInputError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    except LockHeld as exc:
        typer.echo(f"error: {exc}; not starting", err=True)
        raise typer.Exit(EXIT_LOCKED) from None
    except Exception as exc:  # noqa: BLE001 - cron needs a distinct code, not a bare traceback
        typer.echo(f"error: the job failed: {type(exc).__name__}: {exc} (traceback in the job log)", err=True)
        raise typer.Exit(EXIT_CRASH) from None
    for line in result.messages:
        typer.echo(line)
    typer.echo(f"job {cfg.job}: {result.summary['status'] if result.summary else 'failed'} (exit code {result.exit_code})")
    raise typer.Exit(result.exit_code)
