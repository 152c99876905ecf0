"""The ``refusal-audit`` command line (Typer). Each command parses, calls one function, prints.

Commands live in one module per step of the data flow; each registers on the groups below.
Nothing else imports this package.
"""

from __future__ import annotations

import typer

from audit.cli.common import state

app = typer.Typer(
    name="refusal-audit",
    help="Black-box refusal prediction and auditing of chat models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
target_app = typer.Typer(help="Manage targets (chat models behind an API).", no_args_is_help=True)
serve_app = typer.Typer(help="Serve a built-in loopback target.", no_args_is_help=True)
classify_app = typer.Typer(help="Classify responses or prompts, file to file.", no_args_is_help=True)
train_app = typer.Typer(help="Train response or prompt classifiers.", no_args_is_help=True)
eval_app = typer.Typer(help="Evaluate classifiers on labelled files.", no_args_is_help=True)
report_app = typer.Typer(help="Write reports.", no_args_is_help=True)
export_app = typer.Typer(help="Export stored data.", no_args_is_help=True)
tokens_app = typer.Typer(help="Refusal-token audit: calibrated vs observed rates.", no_args_is_help=True)

app.add_typer(target_app, name="target")
app.add_typer(serve_app, name="serve-target")
app.add_typer(classify_app, name="classify")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(report_app, name="report")
app.add_typer(export_app, name="export")
app.add_typer(tokens_app, name="tokens")


@app.callback()
def _main(
    db: str = typer.Option(
        None, "--db", envvar="REFUSAL_AUDIT_DB", help="SQLAlchemy URL or SQLite path of the store."
    ),
) -> None:
    state.db_url = db


# Command modules register themselves on the groups above.
from audit.cli import (  # noqa: E402,F401
    collect_cmds,
    data_cmds,
    job_cmds,
    prompt_cmds,
    response_cmds,
    token_cmds,
)


def main() -> None:
    app()
