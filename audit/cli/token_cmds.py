"""Refusal-token audit commands: tokens compare/thresholds/recalibrate, serve-target refusal-token-sim."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from audit.cli import serve_app, tokens_app
from audit.cli.common import fail, get_store


def _ci(ci) -> str:
    return "n/a" if ci is None or ci[0] is None else f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _run(fn, *args, **kwargs):
    from audit.prompts import InputError
    from audit.tokens import TokenAuditError

    try:
        return fn(*args, **kwargs)
    except (TokenAuditError, InputError) as e:
        fail(str(e))


@tokens_app.command("compare")
def compare_cmd(
    run: str = typer.Option(..., "--run", help="Run name."),
    thresholds: Path = typer.Option(None, "--thresholds", help="JSON {category: threshold}: threshold mode."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of per-category objects."),
    plots: Path = typer.Option(None, "--plots", help="Write reliability diagrams and threshold curves here."),
    prompt_model: Path = typer.Option(None, "--prompt-model", help="Prompt classifier dir for the no-logprobs fallback."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap and the noise-floor simulation."),
) -> None:
    """Expected (from refusal-token probabilities) vs observed refusal rates, per category."""
    from audit.tokens import compare, jsonable

    rows = _run(compare, get_store(), run, str(thresholds) if thresholds else None,
                plot_dir=plots, prompt_model_dir=prompt_model, seed=seed)
    rows = jsonable(rows)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    mode = rows[0]["mode"] if rows else "sampling"
    t = Table(title=f"Refusal tokens of run {run}: expected ({mode} mode) vs observed")
    for col in ("category", "n", "observed [95% CI]", "expected [95% CI]", "p", "ECE (floor q95)",
                "ECE mass (floor)", "Brier (floor)", "NLL (floor)", "flag", "source"):
        t.add_column(col)
    for r in rows:
        t.add_row(
            r["category"], str(r["n"]),
            f"{_f(r['observed_rate'])} {_ci(r['observed_ci'])}",
            f"{_f(r['expected_rate'])} {_ci(r['expected_ci'])}",
            _f(r["p_value"], 4),
            f"{_f(r['ece'])} ({_f(r['ece_floor_q95'])})",
            f"{_f(r['ece_mass'])} ({_f(r['ece_mass_floor'])})",
            f"{_f(r['brier'])} ({_f(r['brier_floor'])})",
            f"{_f(r['nll'])} ({_f(r['nll_floor'])})",
            "FLAG" if r["flagged"] else "",
            r["source"] + ("" if r["signal"] == "refusal-token" else f" ({r['signal']})"),
        )
    Console().print(t)
    notes = sorted({n for r in rows for n in r["notes"]})
    for n in notes:
        typer.echo(f"note: {n}")
    if plots:
        typer.echo(f"plots: {plots}")


@tokens_app.command("thresholds")
def thresholds_cmd(
    run: str = typer.Option(..., "--run", help="Run name."),
    want: str = typer.Option(..., "--want", help='Wanted rates, "category=rate,..." ("*" = every category).'),
    out: Path = typer.Option(None, "--out", help="Write the thresholds file that `tokens compare --thresholds` reads."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    prompt_model: Path = typer.Option(None, "--prompt-model", help="Prompt classifier dir for the no-logprobs fallback."),
) -> None:
    """Solve per-category thresholds on P(refusal token) that give the wanted refusal rates."""
    from audit.tokens import jsonable, solve_thresholds

    rows = jsonable(_run(solve_thresholds, get_store(), run, want, prompt_model_dir=prompt_model, out_path=out))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(
            f"{r['category']}: threshold {r['threshold']:.4f} {_ci(r['threshold_ci'])} -> rate "
            f"{r['achieved_rate']:.3f} {_ci(r['achieved_ci'])} (wanted {r['want']:.3f}, n={r['n']}, {r['source']})"
        )
    if out:
        typer.echo(f"wrote {out}")


@tokens_app.command("recalibrate")
def recalibrate_cmd(
    run: str = typer.Option(..., "--run", help="Run name."),
    method: list[str] = typer.Option(None, "--method", help="temperature|platt|isotonic|histogram|h-calibration (repeatable; default all)."),
    fit_fraction: float = typer.Option(0.5, "--fit-fraction", help="Share of responses to fit on; the rest is reported."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Fit recalibration maps of P(refusal token) on one split of a run; report on the other."""
    from audit.tokens import jsonable, recalibrate

    try:
        rows = jsonable(_run(recalibrate, get_store(), run, methods=method or None, fit_fraction=fit_fraction, seed=seed))
    except ValueError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(f"{'method':<14} {'n_fit':>6} {'n_eval':>6} {'ECE':>7} {'ECE-mass':>8} {'MCE':>7} {'Brier':>7} {'NLL':>7}")
    for r in rows:
        typer.echo(f"{r['method']:<14} {r['n_fit']:>6} {r['n_eval']:>6} {r['ece']:>7.4f} {r['ece_mass']:>8.4f} "
                   f"{r['mce']:>7.4f} {r['brier']:>7.4f} {r['nll']:>7.4f}")


@serve_app.command("refusal-token-sim")
def serve_refusal_token_sim(
    port: int = typer.Option(8011, "--port", help="Port on 127.0.0.1."),
    config: Path = typer.Option(None, "--config", help="Simulator config JSON (default: CoCoNot categories, calibrated)."),
    host: str = typer.Option("127.0.0.1", "--host"),
) -> None:
    """Serve the simulated refusal-token model (OpenAI chat completions) with known truth."""
    from audit.prompts import InputError
    from audit.targets.refusal_token_sim import SimConfig, make_app

    try:
        cfg = SimConfig.load(config) if config else SimConfig.from_dict(None)
    except (InputError, OSError) as e:
        fail(str(e))
    import uvicorn

    typer.echo(f"refusal-token-sim on http://{host}:{port}/v1 (tokens: {json.dumps(cfg.refusal_tokens())})")
    uvicorn.run(make_app(cfg), host=host, port=port, log_level="warning")
