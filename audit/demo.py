"""``make demo``: a complete refusal audit on the embedded default, end to end over real HTTP.

1. import the paper's 1,706 labelled ChatGPT prompts as a prompt set;
2. start the replay target (ChatGPT's recorded answers, served over the OpenAI protocol) on a free
   loopback port and collect every answer;
3. label the responses with the shipped response classifier;
4. train the prompt classifier on the run (bootstrap, as in the paper) and forecast per category
   with cross-fitted predictions (no prompt is predicted by a model that saw it);
5. write the n-gram report;
6. audit the refusal-token simulator: calibrated vs observed rates;
7. print the summary and the command that opens the dashboard.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

console = Console(width=150) if not Console().is_terminal else Console()
SET_NAME = "chatgpt-refusals"
TARGET_NAME = "chatgpt-replay"
RUN_NAME = "demo-chatgpt-replay"


def _step(msg: str) -> None:
    console.print(f"[bold cyan]▶[/] {msg}")


def write_paper_jsonl(path: Path) -> int:
    """The paper's usable rows as JSONL (prompt, category = source, response, label)."""
    from classifiers.data import load_paper

    rows = load_paper()
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"prompt": r["prompt"], "category": r["source"], "response": r["response"], "label": r["refusal"]}) + "\n")
    return len(rows)


def hand_label_rates(session, run_id: int) -> dict[str, float]:
    """Refusal rate by the imported hand labels (``Prompt.reference_label``) of the run's prompts."""
    from sqlalchemy import Integer, cast, func, select

    from audit.rates import ALL
    from audit.store import Prompt, Response

    q = (
        select(Prompt.category, func.avg(cast(Prompt.reference_label, Integer)), func.count())
        .join(Response, Response.prompt_id == Prompt.id)
        .where(Response.run_id == run_id, Prompt.reference_label.is_not(None))
        .group_by(Prompt.category)
    )
    rows = session.execute(q).all()
    out = {c or "(none)": float(m) for c, m, _ in rows}
    if rows:
        out[ALL] = sum(float(m) * n for _, m, n in rows) / sum(n for *_, n in rows)
    return out


def run_demo(out_dir: Path, fresh: bool = False, concurrency: int = 16) -> dict:
    """Run every step; returns the numbers printed in the summary."""
    from audit.collect import collect
    from audit.labeling import label_run
    from audit.prompts import import_prompts
    from audit.rates import category_rates, run_by_name
    from audit.store import open_store
    from audit.targets import add_target
    from audit.targets.loopback import LoopbackServer
    from audit.targets.replay import make_app

    t0 = time.perf_counter()
    if fresh and out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    db_url = f"sqlite:///{out_dir / 'demo.db'}"
    store = open_store(db_url)

    _step("importing the paper's hand-labelled ChatGPT prompts")
    paper = out_dir / "paper.jsonl"
    write_paper_jsonl(paper)
    res = import_prompts(store, paper, SET_NAME)
    console.print(f"  {res.added} added, {res.skipped} already there")

    _step("collecting ChatGPT's answers from the replay target over HTTP")
    with LoopbackServer(make_app()) as server:
        # The port changes between demos, so the target is re-pointed each time.
        add_target(store, TARGET_NAME, "openai", server.base_url + "/v1", "gpt-3.5-turbo-replay", replace=True)
        summary = collect(store, run_name=RUN_NAME, set_name=SET_NAME, target_name=TARGET_NAME, concurrency=concurrency)
    console.print(f"  {summary.answered} answered now, {summary.already_done} already stored, {summary.errors} errors")

    _step("labelling responses with the response classifier")
    n_labelled = label_run(store, RUN_NAME)
    console.print(f"  {n_labelled} responses labelled")

    _step("training the prompt classifier on the labelled run (bootstrap) and forecasting")
    from audit.bootstrap import train_prompt_from_run
    from audit.forecast import crossfit_forecast

    model_dir = out_dir / "prompt-model"
    train_prompt_from_run(store, RUN_NAME, model_dir, model="minilm_lr")
    forecast = {row["category"]: row for row in crossfit_forecast(store, RUN_NAME)}

    _step("writing the n-gram report")
    from audit.reports.ngrams import write_ngram_report

    ngram_files = write_ngram_report(store, RUN_NAME, out_dir / "ngrams", formats=("csv", "json", "md", "html"))

    with store.session() as session:
        run = run_by_name(session, RUN_NAME)
        rates = category_rates(session, run.id)
        hand = hand_label_rates(session, run.id)

    table = Table(title=f"Refusal audit of {TARGET_NAME} (run {RUN_NAME})")
    for col in ("category", "n", "observed rate", "95% CI", "hand labels", "forecast (prompt only)", "95% CI "):
        table.add_column(col, justify="left" if col == "category" else "right")
    for r in rates:
        f = forecast.get(r.category, {})
        fr, fl, fh = f.get("rate"), f.get("ci_low"), f.get("ci_high")
        table.add_row(
            r.category,
            str(r.n),
            f"{r.rate:.1%}",
            f"[{r.ci_low:.1%}, {r.ci_high:.1%}]",
            "—" if r.category not in hand else f"{hand[r.category]:.1%}",
            "—" if fr is None else f"{fr:.1%}",
            "—" if fl is None else f"[{fl:.1%}, {fh:.1%}]",
        )
    console.print(table)
    console.print("  hand labels: the paper's own labels. The shipped response classifier was trained on these rows, so its\n"
                  "  agreement here is in-sample; held-out numbers are in docs/benchmarks.md. The forecast is cross-fitted.")

    _step("refusal-token audit of the simulated refusal-token model")
    from audit.tokens import demo_audit

    token_rows = demo_audit(store, out_dir / "tokens")
    tt = Table(title="Refusal-token model: calibrated (token probability) vs observed refusal rates")
    for col in ("simulator", "category", "n", "observed", "95% CI", "expected", "95% CI ", "p-value", "ECE", "source", "flagged"):
        tt.add_column(col, justify="left" if col in ("simulator", "category", "source") else "right")
    for r in token_rows:
        tt.add_row(
            "calibrated" if r.get("sim_temperature") == 1.0 else f"T={r.get('sim_temperature')}",
            r["category"].removesuffix(" requests"), str(r["n"]), f"{r['observed_rate']:.1%}",
            f"[{r['observed_ci'][0]:.1%}, {r['observed_ci'][1]:.1%}]",
            f"{r['expected_rate']:.1%}", f"[{r['expected_ci'][0]:.1%}, {r['expected_ci'][1]:.1%}]",
            f"{r['p_value']:.3g}", "—" if r.get("ece") is None else f"{r['ece']:.3f}", r["source"],
            "[bold red]yes[/]" if r.get("flagged") else "no",
        )
    console.print(tt)

    store.dispose()
    elapsed = time.perf_counter() - t0
    console.print(f"\nStore: {out_dir / 'demo.db'}   n-gram report: {out_dir / 'ngrams'}   ({elapsed:.0f} s)")
    console.print("Open the dashboard:  [bold]make dashboard[/]   "
                  f"(or: REFUSAL_AUDIT_DB={db_url} .venv/bin/streamlit run app.py)")
    return {"labelled": n_labelled, "rates": [r.as_dict() for r in rates], "ngram_files": [str(p) for p in ngram_files or []], "tokens": token_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-out", type=Path)
    parser.add_argument("--fresh", action="store_true", help="start from an empty store")
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    run_demo(args.out, fresh=args.fresh, concurrency=args.concurrency)


if __name__ == "__main__":
    main()
