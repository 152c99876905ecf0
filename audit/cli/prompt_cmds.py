"""Prompt classifier commands: train prompt, classify prompts, forecast, estimate, report ngrams."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from audit.cli import app, classify_app, report_app, train_app
from audit.cli.common import fail, get_store


@train_app.command("prompt")
def train_prompt_cmd(
    out: Path = typer.Option(..., "--out", help="Directory to write the model (JSON + npz + model card)."),
    in_file: Path = typer.Option(None, "--in", help="Labelled CSV/JSON/JSONL: prompt, refusal, optional category."),
    run: str = typer.Option(None, "--run", help="Bootstrap from a labelled run (human labels over machine labels)."),
    model: str = typer.Option("auto", "--model", help="auto | baseline | tfidf_lr | minilm_lr | minilm_svm | minilm_xgb | blend | minilm_ft | minilm_ft_svm (fine-tuned; slow)."),
) -> None:
    """Train the prompt classifier from a labelled file or from a run's labels."""
    from audit.bootstrap import BootstrapError, train_prompt_from_file, train_prompt_from_run
    from audit.prompts import InputError

    if (in_file is None) == (run is None):
        fail("give exactly one of --in FILE or --run RUN")
    try:
        if in_file is not None:
            clf = train_prompt_from_file(in_file, out, model=model, progress=True)
        else:
            clf = train_prompt_from_run(get_store(), run, out, model=model, progress=True)
    except (InputError, BootstrapError, ValueError) as exc:
        fail(str(exc))
    sel = clf.selection_.get(clf.kind_, {})
    ll = f", out-of-fold log loss {sel['log_loss']:.4f}" if sel else ""
    typer.echo(f"trained {clf.kind_} (calibration {clf.calibrator_.method}) on {clf.n_train_} prompts{ll} -> {out}")


@classify_app.command("prompts")
def classify_prompts_cmd(
    model: Path = typer.Option(..., "--model", help="Directory of a trained prompt classifier."),
    in_file: Path = typer.Option(..., "--in", help="JSONL with 'prompt' (and optional 'category')."),
    out: Path = typer.Option(..., "--out", help="JSONL to write: input fields + p_refusal, refusal, category_probs."),
) -> None:
    """Predict, from the prompt alone, whether the model will refuse (file to file)."""
    from audit.forecast import classify_prompt_file
    from audit.prompts import InputError

    try:
        n = classify_prompt_file(model, in_file, out)
    except InputError as exc:
        fail(str(exc))
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    typer.echo(f"classified {n} prompts -> {out}")


def _pct(v) -> str:
    return "—" if v is None or v != v else f"{v:.1%}"


@app.command("forecast")
def forecast_cmd(
    set_name: str = typer.Option(..., "--set", help="Prompt set to forecast."),
    model: Path = typer.Option(..., "--model", help="Directory of a trained prompt classifier."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Expected refusal rate per category, with a 95% interval, before any query."""
    from audit.forecast import ForecastError, forecast

    try:
        rows = forecast(get_store(), set_name, model)
    except (ForecastError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"Forecast refusal rate of set {set_name} (before any query)")
    for col in ("category", "n", "expected rate", "95% interval"):
        t.add_column(col, justify="left" if col == "category" else "right")
    for r in rows:
        t.add_row(r["category"], str(r["n"]), _pct(r["rate"]), f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]")
    Console().print(t)


@app.command("estimate")
def estimate_cmd(
    run: str = typer.Option(..., "--run", help="A run that queried only some prompts of its set (collect --budget)."),
    model: Path = typer.Option(None, "--model", help="Pre-trained prompt classifier (optional; its logit is a feature)."),
    set_name: str = typer.Option(None, "--set", help="Prompt set (default: the run's)."),
    strategy: str = typer.Option(None, "--strategy", help="Sampling design of the run (default: the run's config)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Prediction-powered estimate of each category's refusal rate over the whole set, with a 95% CI."""
    from audit.ppi import PPIError, ppi_rates

    try:
        rows = ppi_rates(get_store(), run, set_name, model, strategy=strategy)
    except (PPIError, FileNotFoundError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=float))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"PPI estimate of refusal rates, run {run}")
    for col in ("category", "queried", "prompts", "PPI rate", "95% CI", "labels only"):
        t.add_column(col, justify="left" if col == "category" else "right")
    for r in rows:
        t.add_row(r["category"], str(r["n"]), str(r["N"]), _pct(r["rate"]), f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
                  _pct(r["classical"]))
    Console().print(t)


@report_app.command("ngrams")
def report_ngrams_cmd(
    run: str = typer.Option(..., "--run", help="Run whose labelled responses (and prompts) to analyse."),
    out: Path = typer.Option(..., "--out", help="Output directory."),
    fmt: str = typer.Option("csv,md", "--format", help="Comma-separated: csv, json, md, html."),
    min_count: int = typer.Option(5, "--min-count", help="Minimum number of texts an n-gram must occur in."),
    top: int = typer.Option(20, "--top", help="N-grams per direction in md/html/png."),
) -> None:
    """N-grams most indicative of refusal and of compliance (log-odds with Dirichlet prior, LR coefficients)."""
    from audit.reports.ngrams import NgramReportError, write_ngram_report

    if min_count < 1:
        fail("--min-count must be at least 1")
    try:
        files = write_ngram_report(get_store(), run, out, fmt, min_count=min_count, top=top)
    except NgramReportError as exc:
        fail(str(exc))
    for f in files:
        typer.echo(str(f))
