"""Refusal-token audit benchmarks and measured statistical properties.

Speed (ratios against a baseline measured in the same process):
  1. noise floor of the 5 calibration metrics: vectorised (``_Metric.batch``) vs one call of
     ``classifiers.calibration`` per simulated outcome vector;
  2. reading refusal probabilities from stored logprobs vs just ``json.loads`` of the same logprobs.
Statistics (against the simulator's known truth, many seeds):
  3. coverage of the Wilson (observed) and bootstrap/Wilson (expected) 95% intervals;
  4. share of solved thresholds that hit the wanted rate within +-2 points on fresh prompts;
  5. share of runs flagged, calibrated vs miscalibrated (temperature 2.5 and 0.5);
  6. held-out calibration after each recalibration method (fit on one draw, report on another).

    .venv/bin/python -m bench.tokens_audit [--quick]
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def _timeit(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_noise_floor(n: int = 1000, n_sim: int = 500) -> dict:
    from audit.stats import calibration_noise_floor
    from audit.tokens import _metric_fns

    rng = np.random.default_rng(0)
    p = rng.beta(2, 2, n)
    fast = _metric_fns(10)
    slow = {k: (lambda m: (lambda y, q: m(y, q)))(m) for k, m in fast.items()}  # no .batch: looped
    a = calibration_noise_floor(p, fast, n_sim=n_sim)
    b = calibration_noise_floor(p, slow, n_sim=n_sim)
    assert all(abs(a[k]["mean"] - b[k]["mean"]) < 1e-9 for k in a)
    t_fast = _timeit(lambda: calibration_noise_floor(p, fast, n_sim=n_sim))
    t_slow = _timeit(lambda: calibration_noise_floor(p, slow, n_sim=n_sim), repeat=1)
    return {"n": n, "n_sim": n_sim, "batched_s": t_fast, "looped_s": t_slow, "speedup": t_slow / t_fast}


def bench_reading(n: int = 2000) -> dict:
    from audit.targets.base import openai_logprobs
    from audit.targets.refusal_token_sim import SimConfig, _Sim, make_prompts
    from audit.tokens import TokenConfig, read_refusal_probability

    out = {}
    for split in (False, True):
        cfg = SimConfig.from_dict({"split_tokens": split, "use_category_tokens": True, "filler_mass": 0.05})
        sim = _Sim(cfg)
        tc = TokenConfig.from_json(cfg.refusal_tokens())
        texts = [r["text"] for r in make_prompts(cfg, n // 5)]
        stored = [json.dumps(openai_logprobs(sim.answer(t, None, True, 20)["choice"]["logprobs"])) for t in texts]
        t_base = _timeit(lambda: [json.loads(s) for s in stored], repeat=7)
        t_read = _timeit(lambda: [read_refusal_probability(json.loads(s), tc) for s in stored], repeat=7)
        out["split" if split else "whole"] = {
            "responses": len(stored), "json_only_s": t_base, "json_plus_read_s": t_read,
            "ratio_vs_json": t_read / t_base, "per_response_us": 1e6 * t_read / len(stored),
        }
    return out


def stats_coverage(trials: int, n: int = 150) -> dict:
    from scipy import stats as st

    from audit.stats import bootstrap_interval, wilson_interval
    from audit.targets.refusal_token_sim import SimConfig, simulate

    cfg = SimConfig.from_dict({})
    k = cfg.concentration
    out = {}
    for c in cfg.categories.values():
        p = c.p_refuse
        thr_truth = float(st.beta(k * p, k * (1 - p)).sf(0.5))
        cw = cb = ct = 0
        for seed in range(trials):
            d = simulate(cfg, n, seed=seed, categories=[c.name])[c.name]
            lo, hi = wilson_interval(int(d["y"].sum()), n)
            cw += lo <= p <= hi
            lo, hi = bootstrap_interval(d["q"], n_resamples=1000, seed=seed)
            cb += lo <= p <= hi
            lo, hi = wilson_interval(int((d["q"] >= 0.5).sum()), n)
            ct += lo <= thr_truth <= hi
        out[c.name] = {"p": p, "observed_wilson": cw / trials, "expected_bootstrap": cb / trials,
                       "expected_threshold_wilson": ct / trials}
    return out


def stats_thresholds(seeds: int, n: int = 20_000) -> dict:
    from audit.targets.refusal_token_sim import SimConfig, simulate
    from audit.tokens import solve_threshold

    cfg = SimConfig.from_dict({})
    want = {c: w for c, w in zip(cfg.categories, (0.1, 0.3, 0.05, 0.9, 0.5))}
    hits = total = 0
    worst = 0.0
    for seed in range(seeds):
        fit = simulate(cfg, n, seed=seed)
        thr = {c: solve_threshold(fit[c]["q"], w) for c, w in want.items()}
        fresh = simulate(SimConfig.from_dict({"decision": "threshold", "thresholds": thr}), n, seed=10_000 + seed)
        for c, w in want.items():
            err = abs(fresh[c]["y"].mean() - w)
            worst = max(worst, err)
            hits += err <= 0.02
            total += 1
    return {"n_per_category": n, "checks": total, "hit_share": hits / total, "worst_abs_error": worst}


def stats_flags(seeds: int, n_per_category: int = 100) -> dict:
    from audit.targets.refusal_token_sim import SimConfig, simulate
    from audit.tokens import Group, compare_groups

    out = {}
    for t in (1.0, 1.5, 2.5, 0.5):
        cfg = SimConfig.from_dict({"temperature": t})
        flags = 0
        for seed in range(seeds):
            d = simulate(cfg, n_per_category, seed=seed)
            g = Group(np.concatenate([v["q"] for v in d.values()]), np.concatenate([v["y"] for v in d.values()]))
            flags += compare_groups({"all": g}, n_sim=200, n_boot=300, include_total=False, metrics=("ece",), seed=seed)[0]["flagged"]
        out[f"temperature={t}"] = flags / seeds
    return {"n": 5 * n_per_category, "flag_share": out}


def stats_recalibration(n_per_category: int = 600) -> dict:
    from audit.targets.refusal_token_sim import SimConfig, simulate
    from classifiers.recalibration import evaluate_recalibrators

    out = {}
    for t in (2.5, 0.5, 1.0):
        cfg = SimConfig.from_dict({"temperature": t})
        fit, ev = simulate(cfg, n_per_category, seed=1), simulate(cfg, n_per_category, seed=2)
        cat = lambda d, k: np.concatenate([v[k] for v in d.values()])  # noqa: E731
        rows = evaluate_recalibrators(cat(fit, "q"), cat(fit, "y"), cat(ev, "q"), cat(ev, "y"))
        out[f"temperature={t}"] = {r["method"]: {"ece": round(r["ece"], 4), "brier": round(r["brier"], 4),
                                                 "nll": round(r["nll"], 4)} for r in rows}
    return out


def main(argv: list[str] | None = None) -> None:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    trials, seeds = (200, 20) if quick else (1000, 100)
    results = {
        "noise_floor": bench_noise_floor(n_sim=200 if quick else 500),
        "reading": bench_reading(500 if quick else 2000),
        "coverage": stats_coverage(trials),
        "thresholds": stats_thresholds(seeds // 2),
        "flags": stats_flags(seeds),
        "recalibration": stats_recalibration(),
    }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
