"""Batch jobs: how often the drift alert fires by chance, how often it catches a real change, and
what a job run costs beyond collecting.

    .venv/bin/python -m bench.jobs_drift            # drift statistics (~3 min on 2 shared cores) + one example job run
    .venv/bin/python -m bench.jobs_drift --no-job   # drift statistics only

Drift statistics: both nights are binomial draws of known per-category refusal probabilities, fed to
the job's own detector (:func:`audit.drift.compare_rates`: two-proportion test per category, Holm,
minimum change). The job run: the example config (docs/examples/audit.toml) on a fresh SQLite store,
with the stage timings the job records in summary.json; the baseline is the time spent inside the
collector in the same process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from audit.drift import compare_rates
from audit.rates import _rate


def night(rng, ps, n):
    ks = rng.binomial(n, ps)
    rows = [_rate(f"c{i}", n, int(k)) for i, k in enumerate(ks)]
    rows.append(_rate("(all)", n * len(ps), int(ks.sum())))
    return rows


def alert_rate(rng, p_prev, p_cur, n, trials, alpha=0.05, min_change=0.10) -> tuple[float, float]:
    """(share of trials with any alert, share of trials alerting on category c0)."""
    any_alert = c0 = 0
    for _ in range(trials):
        rows = compare_rates("cur", "prev", night(rng, p_cur, n), night(rng, p_prev, n), alpha=alpha, min_change=min_change)
        alerts = [r.category for r in rows if r.alert]
        any_alert += bool(alerts)
        c0 += "c0" in alerts
    return any_alert / trials, c0 / trials


def drift_stats(trials: int) -> list[dict]:
    rng = np.random.default_rng(0)
    base = np.array([0.2, 0.35, 0.5, 0.65, 0.8])
    out = []
    for n in (50, 100, 200):
        fa, _ = alert_rate(rng, base, base, n, trials)
        row = {"n_per_category": n, "false_alert_rate": fa}
        for delta in (0.10, 0.15, 0.25):
            cur = base.copy()
            cur[0] += delta
            _, hit = alert_rate(rng, base, cur, n, trials)
            row[f"detect_+{delta:.2f}"] = hit
        out.append(row)
    # the same with no minimum change: the test alone (family-wise error under Holm)
    fa0, _ = alert_rate(rng, base, base, 100, trials, min_change=0.0)
    out.append({"n_per_category": 100, "false_alert_rate_no_min_change": fa0})
    return out


def job_run() -> dict:
    from audit.jobs import load_config, run_job

    repo = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(repo / "docs" / "examples" / "audit.toml", output_dir=tmp)
        t0 = time.monotonic()
        res = run_job(cfg, run_date="2026-01-01", echo=lambda *_: None)
        first = time.monotonic() - t0
        t0 = time.monotonic()
        res2 = run_job(cfg, run_date="2026-01-01", echo=lambda *_: None)
        again = time.monotonic() - t0
        n_resp = sum(r["responses"] for r in res.summary["runs"])
        return {"exit_code": res.exit_code, "responses": n_resp, "first_run_s": round(first, 2),
                "timings": res.summary["timings"], "resume_same_date_s": round(again, 2),
                "resume_timings": res2.summary["timings"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--no-job", action="store_true")
    args = ap.parse_args()
    t = time.monotonic()
    stats = drift_stats(args.trials)
    print(f"drift detector, {args.trials} trials per cell, 5 categories at p = .2/.35/.5/.65/.8, "
          f"alpha = 0.05, min_change = 0.10 ({time.monotonic() - t:.1f} s)")
    for row in stats:
        print("  " + json.dumps(row))
    if not args.no_job:
        j = job_run()
        tm = j["timings"]
        print(f"example job: exit {j['exit_code']}, {j['responses']} responses, {j['first_run_s']} s "
              f"(collector {tm['collect_s']:.2f} s -> job/collector = {tm['total_s'] / tm['collect_s']:.2f}x)")
        print("  stage timings: " + json.dumps(tm))
        print(f"  re-run of the same date (resume, nothing to ask): {j['resume_same_date_s']} s; "
              + json.dumps(j["resume_timings"]))


if __name__ == "__main__":
    main()
