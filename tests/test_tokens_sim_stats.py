"""Statistical behaviour of the audit against the simulator's own sampling logic, over many seeds.

These run the simulator's sampling functions in-process (``simulate``: the same draw/report/decide
functions the HTTP app uses); ``test_tokens_e2e.py`` goes over HTTP with the collector.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as st

from audit.stats import bootstrap_interval, wilson_interval
from audit.targets.refusal_token_sim import SimConfig, simulate
from audit.tokens import Group, compare_groups, expected_rate, solve_threshold

CFG = SimConfig.from_dict({"seed": 0})
TRUTH = {c.name: c.p_refuse for c in CFG.categories.values()}


def _pooled(d):
    return Group(np.concatenate([v["q"] for v in d.values()]), np.concatenate([v["y"] for v in d.values()]))


def test_observed_rates_converge_to_truth():
    errors = {}
    for n in (100, 1_000, 10_000, 50_000):
        worst = []
        for seed in range(5):
            d = simulate(CFG, n, seed=seed)
            worst.append(max(abs(d[c]["y"].mean() - TRUTH[c]) for c in TRUTH))
        errors[n] = float(np.mean(worst))
    ns = sorted(errors)
    assert all(errors[a] > errors[b] for a, b in zip(ns, ns[1:])), errors
    assert errors[50_000] < 0.006, errors  # ~3 standard errors at p = 0.5
    # the reported probability of a calibrated simulator converges to the same truth
    d = simulate(CFG, 50_000, seed=99)
    for c in TRUTH:
        assert abs(d[c]["q"].mean() - TRUTH[c]) < 0.006


def test_wilson_intervals_cover_truth():
    trials, n = 600, 150
    for c, p in TRUTH.items():
        covered = 0
        for seed in range(trials):
            k = int(simulate(CFG, n, seed=seed, categories=[c])[c]["y"].sum())
            lo, hi = wilson_interval(k, n)
            covered += lo <= p <= hi
        assert covered / trials >= 0.93, (c, covered / trials)


def test_expected_rate_intervals_cover_truth():
    """Sampling mode: the expected rate is mean(q); its bootstrap interval covers E[q] = p_c.
    Threshold mode: mean(q >= t) covers P(q >= t) = 1 - BetaCDF(t) (Wilson interval: the bootstrap
    of a 0/1 share under-covers near 0 and 1). Intervals are the ones ``compare_groups`` reports."""
    trials, n = 300, 200
    k = CFG.concentration
    for c in ("Humanizing requests", "Requests with safety concerns"):
        p = TRUTH[c]
        t = 0.5
        truth_thr = float(st.beta(k * p, k * (1 - p)).sf(t))
        cov_s = cov_t = 0
        for seed in range(trials):
            q = simulate(CFG, n, seed=1000 + seed, categories=[c])[c]["q"]
            lo, hi = bootstrap_interval(q, n_resamples=1000, seed=seed)
            cov_s += lo <= p <= hi
            lo, hi = wilson_interval(int((q >= t).sum()), n)
            cov_t += lo <= truth_thr <= hi
        assert cov_s / trials >= 0.93, (c, "sampling", cov_s / trials)
        assert cov_t / trials >= 0.93, (c, "threshold", cov_t / trials)
    # the same intervals come out of compare_groups
    q = simulate(CFG, n, seed=5, categories=[c])[c]
    row = compare_groups({c: Group(q["q"], q["y"])}, n_boot=1000, n_sim=20, include_total=False, seed=0)[0]
    assert row["expected_ci"] == list(bootstrap_interval(q["q"], n_resamples=1000, seed=0))
    row = compare_groups({c: Group(q["q"], q["y"])}, {c: t}, n_sim=20, include_total=False)[0]
    assert row["expected_ci"] == list(wilson_interval(int((q["q"] >= t).sum()), n))
    assert row["expected_ci_method"] == "wilson"


def test_solved_thresholds_hit_wanted_rate_on_fresh_prompts():
    """Solve thresholds on one draw of prompts, then run the simulator in threshold mode with them on
    fresh prompts: the observed rate is within +-2 points of the wanted rate, for every seed."""
    want = {"Humanizing requests": 0.1, "Incomplete requests": 0.3, "Indeterminate requests": 0.05,
            "Requests with safety concerns": 0.9, "Unsupported requests": 0.5}
    misses = []
    for seed in range(40):
        fit = simulate(CFG, 20_000, seed=seed)
        thresholds = {c: solve_threshold(fit[c]["q"], w) for c, w in want.items()}
        assert all(abs(expected_rate(fit[c]["q"], thresholds[c]) - w) <= 1e-4 for c, w in want.items())
        vendor = SimConfig.from_dict({"decision": "threshold", "thresholds": thresholds})
        fresh = simulate(vendor, 20_000, seed=10_000 + seed)
        for c, w in want.items():
            if abs(fresh[c]["y"].mean() - w) > 0.02:
                misses.append((seed, c, fresh[c]["y"].mean()))
    assert not misses, misses


@pytest.mark.parametrize(
    ("temperature", "flag_share_ok"),
    [(1.0, lambda s: s <= 0.10), (2.5, lambda s: s >= 0.90), (0.5, lambda s: s >= 0.90)],
)
def test_miscalibrated_simulator_flagged_calibrated_not(temperature, flag_share_ok):
    cfg = SimConfig.from_dict({"temperature": temperature})
    seeds = range(50)
    flags = 0
    for seed in seeds:
        d = simulate(cfg, 100, seed=seed)
        row = compare_groups({"pooled": _pooled(d)}, n_sim=200, n_boot=300, include_total=False,
                             metrics=("ece",), seed=seed)[0]
        flags += row["flagged"]
    assert flag_share_ok(flags / len(seeds)), (temperature, flags)


def test_compare_rows_against_simulator_truth():
    """Per-category rows of a calibrated simulator: observed and expected intervals cover the truth
    and each ECE is near its noise floor; a miscalibrated one has ECE far above the floor."""
    d = simulate(CFG, 400, seed=7)
    rows = compare_groups({c: Group(v["q"], v["y"]) for c, v in d.items()}, n_sim=300)
    assert [r["category"] for r in rows] == sorted(TRUTH) + ["(all)"]
    for r in rows[:-1]:
        p = TRUTH[r["category"]]
        assert r["observed_ci"][0] <= p <= r["observed_ci"][1]
        assert r["expected_ci"][0] <= p <= r["expected_ci"][1]
        for m in ("ece", "ece_mass", "mce", "brier", "nll"):
            assert r[f"{m}_floor"] <= r[f"{m}_floor_q95"]
    assert not rows[-1]["flagged"]
    hot = SimConfig.from_dict({"temperature": 3.0})
    d = simulate(hot, 400, seed=7)
    rows = compare_groups({c: Group(v["q"], v["y"]) for c, v in d.items()}, n_sim=300)
    assert rows[-1]["flagged"] and rows[-1]["ece"] > 2 * rows[-1]["ece_floor_q95"]


def test_recalibration_fit_on_one_split_fixes_the_other():
    from classifiers.recalibration import RECALIBRATORS, evaluate_recalibrators

    hot = SimConfig.from_dict({"temperature": 2.5})
    fit, ev = _pooled(simulate(hot, 600, seed=1)), _pooled(simulate(hot, 600, seed=2))
    rows = {r["method"]: r for r in evaluate_recalibrators(fit.p, fit.y, ev.p, ev.y)}
    assert set(rows) == {"none", *RECALIBRATORS}
    for m in RECALIBRATORS:
        assert rows[m]["ece"] < rows["none"]["ece"] / 2, (m, rows[m]["ece"], rows["none"]["ece"])
        assert rows[m]["brier"] < rows["none"]["brier"]
    assert rows["temperature"]["n_fit"] == 3000 and rows["temperature"]["n_eval"] == 3000
    # on a calibrated model, recalibration costs little
    fit, ev = _pooled(simulate(CFG, 600, seed=1)), _pooled(simulate(CFG, 600, seed=2))
    rows = {r["method"]: r for r in evaluate_recalibrators(fit.p, fit.y, ev.p, ev.y)}
    for m in RECALIBRATORS:
        assert rows[m]["brier"] < rows["none"]["brier"] + 0.005, m


def test_temperature_scaling_recovers_simulator_temperature():
    from classifiers.recalibration import TemperatureScaling

    for t in (0.5, 2.5):
        d = _pooled(simulate(SimConfig.from_dict({"temperature": t}), 2000, seed=3))
        est = TemperatureScaling().fit(d.p, d.y)
        # reported = sigmoid(logit(p) / t): the fitted temperature undoes it (1/t)
        assert est.temperature_ == pytest.approx(1 / t, rel=0.15)
        assert est.predict_proba(d.p).shape == (d.p.size, 2)
