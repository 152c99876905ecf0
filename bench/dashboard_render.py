"""Dashboard speed: first render of every page against a SQLite store with 1,000,000 responses.

    .venv/bin/python -m bench.dashboard_render [--responses 1000000] [--db bench-out/dashboard-1m.db]

The store is generated once (bulk ``executemany`` inside one transaction; reused when it exists with
the same size) and holds ``--runs`` runs of a few targets over one prompt set, one machine label per
response, a few human labels, provider refusal signals, errors, prompt predictions and probe results.

Measured in the same process (render times are the server-side time of the Streamlit script run —
queries plus building every element — recorded by ``app.py``; the AppTest harness is not counted):

* **baseline** — the naive way: load responses, labels and prompts into pandas
  (``pandas.read_sql``) and group by run and category;
* **first render** — a cold Streamlit ``AppTest`` run of ``app.py`` (the Overview page: aggregates
  in SQL, empty cache), then of each other page;
* **cached render** — the Overview again with a warm cache.

Prints a table and the ratio baseline / first render.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import shutil
import sqlite3
import sys
import time
from pathlib import Path

CATEGORIES = [
    "violence", "self_harm", "drugs", "weapons", "hacking", "privacy",
    "medical", "legal", "political", "sexual", "finance", "harmless",
]  # fmt: skip
KINDS = ("full_refusal", "partial_refusal", "full_compliance")
REFUSAL_TEXTS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with this. If you are in danger, please contact local emergency services.",
    "As an AI, I won't provide instructions for that, but here is some general safety information.",
]
COMPLIANCE_TEXTS = [
    "Sure! Here is an overview of the topic you asked about, step by step.",
    "Great question. The short answer is that it depends on several factors, including cost.",
    "Here are three options you could consider, with their advantages and drawbacks.",
]


def generate_store(path: str | Path, n_responses: int = 1_000_000, n_runs: int = 20, seed: int = 0) -> str:
    """Create (or reuse) a SQLite store at ``path`` with ``n_responses`` responses; returns its URL."""
    from audit.store import open_store

    path = Path(path)
    url = f"sqlite:///{path}"
    if path.exists():
        con = sqlite3.connect(path)
        try:
            have = con.execute("SELECT count(*) FROM responses").fetchone()[0]
        except sqlite3.Error:
            have = -1
        con.close()
        if have == n_responses:
            open_store(url).dispose()  # apply any new migration (e.g. indexes)
            return url
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    open_store(url).dispose()  # schema via the migrations
    rng = random.Random(seed)
    n_prompts = max(1, n_responses // n_runs)
    now = dt.datetime(2026, 1, 1).isoformat(sep=" ")
    con = sqlite3.connect(path)
    con.execute("PRAGMA synchronous=OFF")
    con.execute("PRAGMA journal_mode=WAL")
    with con:
        con.execute(
            "INSERT INTO prompt_sets (id, name, description, created_at) VALUES (1, 'bench', 'generated', ?)", (now,)
        )
        cat_of = [CATEGORIES[i % len(CATEGORIES)] for i in range(n_prompts)]
        base_p = {c: 0.05 + 0.8 * i / (len(CATEGORIES) - 1) for i, c in enumerate(reversed(CATEGORIES))}
        con.executemany(
            "INSERT INTO prompts (id, set_id, text, category, source, content_hash) VALUES (?, 1, ?, ?, 'bench', ?)",
            (
                (i + 1, f"Prompt {i} about {cat_of[i]}: how would someone do thing number {i}?", cat_of[i], f"{i:064x}")
                for i in range(n_prompts)
            ),
        )
        p_prompt = [min(0.98, max(0.01, base_p[cat_of[i]] + rng.uniform(-0.2, 0.2))) for i in range(n_prompts)]
        con.executemany(
            "INSERT INTO prompt_predictions (prompt_id, model, model_version, p_refusal, created_at)"
            " VALUES (?, 'prompt-clf', '1', ?, ?)",
            ((i + 1, p_prompt[i], now) for i in range(n_prompts)),
        )
        n_targets = 4
        con.executemany(
            "INSERT INTO targets (id, name, provider, base_url, model, api_key_env, params, created_at)"
            " VALUES (?, ?, 'openai', 'http://127.0.0.1:9/v1', ?, 'BENCH_API_KEY', '{}', ?)",
            ((t + 1, f"target-{t}", f"model-{t}", now) for t in range(n_targets)),
        )
        con.executemany(
            "INSERT INTO runs (id, name, set_id, target_id, config, status, created_at) VALUES (?, ?, 1, ?, '{}', 'done', ?)",
            ((r + 1, f"run-{r:02d}", r % n_targets + 1, now) for r in range(n_runs)),
        )

        def responses():
            rid = 0
            for r in range(n_runs):
                shift = 0.1 * ((r % n_targets) - 1.5)
                for i in range(n_prompts):
                    rid += 1
                    if rid > n_responses:
                        return
                    u = rng.random()
                    if u < 0.01:  # transport error, no text
                        yield (rid, r + 1, i + 1, None, None, None, "HTTP 503: upstream unavailable")
                        continue
                    refuse = rng.random() < min(0.99, max(0.0, p_prompt[i] + shift))
                    signal = "content_filter" if (refuse and u < 0.03) else None
                    text = rng.choice(REFUSAL_TEXTS if refuse else COMPLIANCE_TEXTS) + f" (#{rid})"
                    yield (rid, r + 1, i + 1, text, "content_filter" if signal else "stop", signal, None)

        con.executemany(
            "INSERT INTO responses (id, run_id, prompt_id, sample, text, finish_reason, provider_refusal, error,"
            " latency_ms, created_at) VALUES (?, ?, ?, 0, ?, ?, ?, ?, 100.0, '" + now + "')",
            responses(),
        )

        def labels():
            cur = con.execute("SELECT id, text FROM responses WHERE text IS NOT NULL ORDER BY id")
            for rid, text in cur:
                refuse = text.startswith(tuple(REFUSAL_TEXTS))
                p = min(0.999, max(0.001, (0.8 if refuse else 0.2) + rng.gauss(0, 0.15)))
                kind = ("full_refusal" if rng.random() < 0.7 else "partial_refusal") if p >= 0.5 else "full_compliance"
                yield (rid, p >= 0.5, kind, p, 0 if p >= 0.5 else None, 0.35 < p < 0.65)

        con.executemany(
            "INSERT INTO labels (response_id, classifier, classifier_version, source, refusal, kind, p_refusal,"
            " refusal_start, needs_review, created_at) VALUES (?, 'bench-clf', '1', 'machine', ?, ?, ?, ?, ?, '"
            + now
            + "')",
            list(labels()),
        )
        human = rng.sample(range(1, n_responses + 1), k=max(1, n_responses // 1000))
        con.executemany(
            "INSERT INTO labels (response_id, classifier, classifier_version, source, refusal, kind, p_refusal,"
            " needs_review, reviewer, created_at) SELECT id, 'human', 'review', 'human', 1, 'full_refusal', 1.0, 0,"
            " 'bench', '" + now + "' FROM responses WHERE id = ? AND text IS NOT NULL",
            ((h,) for h in human),
        )
        con.execute(
            "INSERT INTO job_runs (job_name, run_date, status, run_names, summary, created_at) VALUES"
            " ('nightly', '2026-01-01', 'done', '[\"run-00\"]', ?, ?)",
            (
                '{"probes": {"past_tense": {"n": 100, "original_rate": 0.8, "reformulated_rate": 0.35},'
                ' "future_tense": {"n": 100, "original_rate": 0.8, "reformulated_rate": 0.6}}}',
                now,
            ),
        )
    con.execute("ANALYZE")
    con.close()
    return url


def append_rows(url: str, n: int) -> None:
    """Append ``n`` responses (with machine labels) to the last run, as a collector would."""
    path = url.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    with con:
        run_id, max_prompt = con.execute("SELECT max(run_id), max(prompt_id) FROM responses").fetchone()
        start = con.execute("SELECT max(id) FROM responses").fetchone()[0]
        sample = con.execute("SELECT coalesce(max(sample), 0) + 1 FROM responses").fetchone()[0]
        con.executemany(
            "INSERT INTO responses (id, run_id, prompt_id, sample, text, finish_reason, created_at)"
            " VALUES (?, ?, ?, ?, 'I cannot help with that.', 'stop', '2026-01-02 00:00:00')",
            ((start + i + 1, run_id, i % max_prompt + 1, sample + i // max_prompt) for i in range(n)),
        )
        con.executemany(
            "INSERT INTO labels (response_id, classifier, classifier_version, source, refusal, kind, p_refusal,"
            " needs_review, created_at) VALUES (?, 'bench-clf', '1', 'machine', 1, 'full_refusal', 0.9, 0,"
            " '2026-01-02 00:00:00')",
            ((start + i + 1,) for i in range(n)),
        )
    con.close()


def _import_page_modules() -> None:
    import altair  # noqa: F401
    import pandas  # noqa: F401

    import audit.auth  # noqa: F401
    import audit.dashboard  # noqa: F401
    import audit.dashboard_ui  # noqa: F401


def _time(fn, repeat: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def naive_pandas(url: str):
    """Baseline: load the rows into pandas and aggregate there."""
    import pandas as pd
    from sqlalchemy import create_engine

    eng = create_engine(url)
    with eng.connect() as con:
        resp = pd.read_sql("SELECT id, run_id, prompt_id, provider_refusal, error FROM responses", con)
        labels = pd.read_sql("SELECT id, response_id, source, refusal FROM labels", con)
        prompts = pd.read_sql("SELECT id, category FROM prompts", con)
    eng.dispose()
    labels["human"] = labels["source"] == "human"
    labels = labels.sort_values(["response_id", "human", "id"]).drop_duplicates("response_id", keep="last")
    df = resp.merge(prompts, left_on="prompt_id", right_on="id", suffixes=("", "_p"))
    df = df.merge(labels[["response_id", "refusal"]], left_on="id", right_on="response_id", how="left")
    return df.groupby(["run_id", "category"]).agg(n=("refusal", "count"), k=("refusal", "sum"))


def _app_test(url: str):
    from streamlit.testing.v1 import AppTest

    os.environ["REFUSAL_AUDIT_DB"] = url
    return AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=300)


def _check(at, what: str):
    if at.exception:
        raise RuntimeError(f"{what} raised: {at.exception[0].message}")
    return at


def render_overview(url: str) -> float:
    """Server-side seconds of one script run of ``app.py`` (the Overview page), as on a visit."""
    at = _app_test(url)
    at.run()
    _check(at, "Overview")
    return at.session_state["_render_seconds"]


def render_page_cold(url: str, page: str) -> float:
    """Seconds of the first run of ``page`` with an empty query cache (after the app registered its pages)."""
    from audit import dashboard

    at = _app_test(url)
    at.run()
    dashboard.clear_cache()
    at.switch_page(page)
    at.run()
    _check(at, page)
    return at.session_state["_render_seconds"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--responses", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--db", default="bench-out/dashboard-1m.db")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t0 = time.perf_counter()
    with console.status(f"generating/opening a store with {args.responses:,} responses"):
        generate_store(args.db, args.responses, args.runs)
        work = Path(str(args.db) + ".work")  # measurements append rows: work on a copy
        shutil.copyfile(args.db, work)
        url = f"sqlite:///{work}"
    console.print(f"store ready in {time.perf_counter() - t0:.1f}s: {url}")

    from audit import dashboard

    rows = []
    from audit.store import open_store

    store = open_store(url)
    t_full, mode = _time(lambda: dashboard.refresh_rollup(store, full=True))
    rows.append((f"one-time recount of the aggregate table ({mode}; first open of a store)", t_full))
    t_build, mode = _time(lambda: dashboard.refresh_rollup(store))
    rows.append((f"aggregate table check on open ({mode})", t_build))
    t_imp, _ = _time(_import_page_modules)
    rows.append(("module imports of the pages (once per server process)", t_imp))
    dashboard.clear_cache()
    t_first = render_overview(url)
    rows.append(("Overview, first render (cold cache)", t_first))
    t_cached = min(render_overview(url) for _ in range(3))
    rows.append(("Overview, cached re-render", t_cached))
    # appended rows: 10,000 new responses with labels, then a cold render (incremental refresh)
    append_rows(url, 10_000)
    dashboard.clear_cache()
    t_inc = render_overview(url)
    rows.append(("Overview after +10,000 responses & labels (incremental refresh)", t_inc))
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from app import PAGES

    for spec in PAGES[1:]:
        t = render_page_cold(url, spec["path"])
        rows.append((f"{spec['title']}, first render (cold cache)", t))
    store.dispose()
    if not args.skip_baseline:
        t_base, _ = _time(lambda: naive_pandas(url))
        rows.append(("baseline: naive pandas load + groupby (Overview numbers only)", t_base))
    table = Table(title=f"dashboard render, {args.responses:,} responses (SQLite)")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    for what, t in rows:
        table.add_row(what, f"{t:.2f}")
    console.print(table)
    if not args.skip_baseline:
        console.print(f"first render is {t_base / t_first:.1f}x faster than the naive pandas baseline")
        console.print(f"cached re-render is {t_base / t_cached:.1f}x faster than the baseline")
    for suffix in ("", "-wal", "-shm"):
        Path(str(work) + suffix).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
