"""Shared CLI state and helpers: the store URL and a uniform way to fail with a clear message."""

from __future__ import annotations

from dataclasses import dataclass

import typer


@dataclass
class _State:
    db_url: str | None = None


state = _State()


def get_store():
    """Open the store named by ``--db`` / ``REFUSAL_AUDIT_DB`` / the default."""
    from audit.store import open_store

    return open_store(state.db_url)


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` to stderr and exit with ``code``."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
