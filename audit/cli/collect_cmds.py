"""Collector commands: target add/list, collect, worker, export run, serve-target replay/faults."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from audit.cli import app, export_app, serve_app, target_app
from audit.cli.common import fail, get_store


def _parse_params(items: list[str] | None) -> dict:
    params: dict = {}
    for item in items or []:
        if "=" not in item:
            fail(f"--param {item!r}: expected key=value")
        key, value = item.split("=", 1)
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


@target_app.command("add")
def target_add(
    name: str = typer.Argument(..., help="A name for the target."),
    provider: str = typer.Option(..., "--provider", help="openai | anthropic | http"),
    base_url: str = typer.Option(None, "--base-url", help="API base URL (http provider: the full URL)."),
    model: str = typer.Option(None, "--model", help="Model name sent to the API."),
    api_key_env: str = typer.Option(None, "--api-key-env", help="Env variable holding the API key (never stored)."),
    param: list[str] = typer.Option(None, "--param", help="key=value (value parsed as JSON if it is JSON); repeatable."),
    header: list[str] = typer.Option(None, "--header", help="'Name: value' (value may use ${ENV_VAR}); repeatable."),
    body_template: str = typer.Option(None, "--body-template", help="http: JSON body with {{prompt}}, {{messages}}, {{model}}..."),
    response_path: str = typer.Option(None, "--response-path", help="http: dotted path to the text, e.g. choices.0.message.content"),
    refuse_token: str = typer.Option(None, "--refuse-token", help="Refusal token the model emits, e.g. '[refuse]'."),
    respond_token: str = typer.Option(None, "--respond-token", help="Respond token, e.g. '[respond]'."),
    category_token: list[str] = typer.Option(None, "--category-token", help="CATEGORY=TOKEN; repeatable."),
    prefix_token: list[str] = typer.Option(None, "--prefix-token", help="Token the model may emit before its answer; repeatable."),
    replace: bool = typer.Option(False, "--replace", help="Overwrite a target of the same name."),
) -> None:
    """Add a target (a chat model behind an API). Keys are read from --api-key-env at collect time."""
    from audit.targets import add_target

    params = _parse_params(param)
    if header:
        headers = dict(params.get("headers") or {})
        for h in header:
            if ":" not in h:
                fail(f"--header {h!r}: expected 'Name: value'")
            k, v = h.split(":", 1)
            headers[k.strip()] = v.strip()
        params["headers"] = headers
    if body_template:
        try:
            params["body_template"] = json.loads(body_template)
        except json.JSONDecodeError as exc:
            fail(f"--body-template is not JSON: {exc}")
    if response_path:
        params["response_path"] = response_path
    tokens = None
    if refuse_token or respond_token or category_token or prefix_token:
        cats = {}
        for ct in category_token or []:
            if "=" not in ct:
                fail(f"--category-token {ct!r}: expected CATEGORY=TOKEN")
            c, t = ct.split("=", 1)
            cats[c.strip()] = t.strip()
        tokens = {"refuse": refuse_token, "respond": respond_token, "categories": cats, "prefix_tokens": list(prefix_token or [])}
    try:
        row = add_target(get_store(), name, provider, base_url, model, api_key_env, params, tokens, replace=replace)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"target {row.name}: {row.provider} {row.base_url or ''} model={row.model or '-'}")


@target_app.command("list")
def target_list() -> None:
    """List targets (provider, URL, model, key variable, params)."""
    from rich.console import Console
    from rich.table import Table

    from audit.targets import list_targets

    table = Table("name", "provider", "base_url", "model", "api_key_env", "params", "refusal tokens")
    for t in list_targets(get_store()):
        table.add_row(
            t.name, t.provider, t.base_url or "", t.model or "", t.api_key_env or "",
            json.dumps(t.params or {}), json.dumps(t.refusal_tokens) if t.refusal_tokens else "",
        )
    Console().print(table)


def _print_summary(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {summary.run_name}: {summary.status}", show_header=False)
    for k, v in summary.to_dict().items():
        if k in ("run_name", "status"):
            continue
        table.add_row(k, json.dumps(v) if isinstance(v, dict) else str(round(v, 2) if isinstance(v, float) else v))
    Console().print(table)


@app.command("collect")
def collect_cmd(
    set_name: str = typer.Option(None, "--set", help="Prompt set (needed to start a run)."),
    target: str = typer.Option(None, "--target", help="Target name (needed to start a run)."),
    run: str = typer.Option(..., "--run", help="Run name; an existing run is resumed."),
    samples: int = typer.Option(1, "--samples", help="Samples per prompt (temperature > 0)."),
    temperature: float = typer.Option(None, "--temperature"),
    concurrency: int = typer.Option(8, "--concurrency", help="Requests in flight."),
    rpm: float = typer.Option(None, "--rpm", help="Requests per minute."),
    tpm: float = typer.Option(None, "--tpm", help="Tokens per minute."),
    max_requests: int = typer.Option(None, "--max-requests", help="Stop after this many requests (resumable)."),
    max_tokens_total: int = typer.Option(None, "--max-tokens-total", help="Stop after this many tokens (resumable)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Send identical requests again."),
    logprobs: int = typer.Option(None, "--logprobs", help="Store the first tokens' logprobs with K alternatives."),
    max_tokens: int = typer.Option(None, "--max-tokens", help="Max tokens per response."),
    timeout: float = typer.Option(60.0, "--timeout", help="Per-request timeout, seconds."),
    retries: int = typer.Option(5, "--retries", help="Retries after the first try."),
    budget: int = typer.Option(None, "--budget", help="Query only this many prompts, chosen by --strategy."),
    strategy: str = typer.Option("random", "--strategy", help="random | stratified | uncertainty | ppi"),
    model_dir: Path = typer.Option(None, "--model", help="Prompt classifier DIR for --strategy uncertainty/ppi."),
    seed: int = typer.Option(0, "--seed"),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Collect responses of a target to a prompt set into a run (resumable)."""
    from audit.collect import collect
    from audit.targets import ConfigError

    store = get_store()
    prompt_ids = None
    if budget is not None:
        if not set_name:
            fail("--budget needs --set")
        from audit.ppi import choose_prompts

        prompt_ids = choose_prompts(store, set_name, budget, strategy, str(model_dir) if model_dir else None, seed)
    try:
        summary = collect(
            store, run_name=run, set_name=set_name, target_name=target, samples=samples,
            temperature=temperature, concurrency=concurrency, rpm=rpm, tpm=tpm,
            max_requests=max_requests, max_tokens_total=max_tokens_total, use_cache=not no_cache,
            logprobs=logprobs, max_tokens=max_tokens, prompt_ids=prompt_ids, progress=not no_progress,
            timeout=timeout, max_attempts=retries + 1,
        )
    except (ValueError, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: every finished response is stored; run the same command again to resume", 130)
    _print_summary(summary)
    if budget is not None:
        _record_sampling_design(store, run, budget, strategy, model_dir, seed)
        typer.echo(f"queried {len(prompt_ids)} prompts by {strategy!r}; after `label --run {run}`, "
                   f"`estimate --run {run}` gives the prediction-powered rates")
    if summary.stopped_reason:
        typer.echo(f"stopped: {summary.stopped_reason}; run the same command again to resume")


def _record_sampling_design(store, run_name: str, budget: int, strategy: str, model_dir, seed: int) -> None:
    """Keep how the budgeted prompts were chosen in the run's config (``estimate`` reads it back)."""
    from sqlalchemy import select

    from audit.store import Run

    with store.session() as session:
        row = session.scalar(select(Run).where(Run.name == run_name))
        row.config = {**(row.config or {}), "budget": budget, "strategy": strategy,
                      "prompt_model": str(model_dir) if model_dir else None, "seed": seed}


@app.command("worker")
def worker_cmd(
    run: str = typer.Option(..., "--run", help="Run to work on (created from --set/--target if missing)."),
    set_name: str = typer.Option(None, "--set"),
    target: str = typer.Option(None, "--target"),
    samples: int = typer.Option(1, "--samples"),
    temperature: float = typer.Option(None, "--temperature"),
    lease_seconds: float = typer.Option(60.0, "--lease-seconds", help="A claimed batch is taken over after this."),
    batch: int = typer.Option(16, "--batch", help="Tasks claimed at once."),
    concurrency: int = typer.Option(8, "--concurrency"),
    rpm: float = typer.Option(None, "--rpm", help="Requests per minute for this worker."),
    tpm: float = typer.Option(None, "--tpm", help="Tokens per minute for this worker."),
    timeout: float = typer.Option(60.0, "--timeout"),
    retries: int = typer.Option(5, "--retries"),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="Re-open tasks that ended in an error."),
    no_progress: bool = typer.Option(False, "--no-progress"),
) -> None:
    """Work on a shared run (PostgreSQL scale-out): claim leased task batches until the run is done."""
    from audit.targets import ConfigError
    from audit.worker import run_worker

    try:
        summary = run_worker(
            get_store(), run_name=run, set_name=set_name, target_name=target, samples=samples,
            temperature=temperature, lease_seconds=lease_seconds, batch=batch, concurrency=concurrency,
            rpm=rpm, tpm=tpm, timeout=timeout, max_attempts=retries + 1, retry_errors=retry_errors,
            progress=not no_progress,
        )
    except (ValueError, ConfigError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted: unfinished tasks were released (or will be after their lease)", 130)
    _print_summary(summary)


@export_app.command("run")
def export_run_cmd(
    run: str = typer.Argument(..., help="Run name."),
    out: Path = typer.Option(..., "--out", help="Output JSONL file."),
) -> None:
    """Export a run's responses as JSONL (one line per response)."""
    from audit.export import export_run

    try:
        n = export_run(get_store(), run, out)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"wrote {n} responses to {out}")


@serve_app.command("replay")
def serve_replay(
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    data: Path = typer.Option(None, "--data", help="JSON/JSONL with prompt and response (default: the paper's ChatGPT set)."),
    fallback: str = typer.Option(None, "--fallback", help="Reply to unknown prompts (default: HTTP 404)."),
) -> None:
    """Serve recorded ChatGPT responses over the OpenAI (and Anthropic) chat protocol."""
    import uvicorn

    from audit.targets.replay import make_app

    typer.echo(f"replay target on http://{host}:{port}/v1 (Ctrl-C to stop)")
    uvicorn.run(make_app(data, fallback=fallback), host=host, port=port, log_level="warning")


@serve_app.command("faults")
def serve_faults(
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    rate_429: float = typer.Option(0.0, "--rate-429"),
    rate_500: float = typer.Option(0.0, "--rate-500"),
    rate_503: float = typer.Option(0.0, "--rate-503"),
    rate_slow: float = typer.Option(0.0, "--rate-slow"),
    rate_reset: float = typer.Option(0.0, "--rate-reset"),
    rate_malformed: float = typer.Option(0.0, "--rate-malformed"),
    rate_empty: float = typer.Option(0.0, "--rate-empty"),
    retry_after: float = typer.Option(1.0, "--retry-after", help="Retry-After seconds sent with 429."),
    slow_seconds: float = typer.Option(30.0, "--slow-seconds", help="Delay of a slow reply."),
    latency_ms: float = typer.Option(0.0, "--latency-ms", help="Delay of every normal reply."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Serve a fault-injecting OpenAI-compatible target (for tests and benchmarks)."""
    import uvicorn

    from audit.targets.faults import FaultRates, make_app

    rates = FaultRates(
        rate_429=rate_429, rate_500=rate_500, rate_503=rate_503, slow=rate_slow, reset=rate_reset,
        malformed=rate_malformed, empty_choices=rate_empty,
    )
    typer.echo(f"fault target on http://{host}:{port}/v1 ({rates.total():.0%} faults; Ctrl-C to stop)")
    app_ = make_app(rates, retry_after=retry_after, slow_seconds=slow_seconds, latency_ms=latency_ms, seed=seed)
    uvicorn.run(app_, host=host, port=port, log_level="warning")
