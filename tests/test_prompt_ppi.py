"""Prompt choice for a budget and the prediction-powered estimate (unbiased, covers, cross-fitted)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from audit.ppi import (
    ALL,
    PPIError,
    allocate,
    choose_prompts,
    classical_mean,
    crossfit_predictions,
    estimate_by_category,
    inclusion_probabilities,
    ppi_mean,
    ppi_rates,
    select_indices,
)
from tests.prompt_helpers import build_run, synthetic_prompts


def test_select_indices_strategies():
    cats = ["a"] * 80 + ["b"] * 20
    for strategy in ("random", "stratified", "ppi"):
        idx = select_indices(cats, 30, strategy, seed=1)
        assert len(idx) == len(set(idx)) == 30
    strat = Counter(cats[i] for i in select_indices(cats, 30, "stratified"))
    assert strat == {"a": 24, "b": 6}
    p = np.r_[np.full(50, 0.5), np.full(50, 0.01)]
    idx = select_indices(cats, 20, "uncertainty", p=p, seed=0)
    assert len(idx) == 20 and np.sum(idx < 50) > np.sum(idx >= 50)
    assert list(select_indices(cats, 500, "random")) == list(range(100))
    with pytest.raises(PPIError):
        select_indices(cats, 10, "uncertainty")
    with pytest.raises(PPIError):
        select_indices(cats, 10, "bogus")


def test_allocation_floor_and_neyman():
    alloc = allocate({"big": 900, "small": 10}, 100, {"big": 0.5, "small": 0.5})
    assert sum(alloc.values()) == 100 and alloc["small"] >= 5
    alloc = allocate({"x": 100, "y": 100}, 40, {"x": 0.5, "y": 0.05})
    assert alloc["x"] > alloc["y"]


def test_inclusion_probabilities_sum_and_cap():
    p = np.r_[np.full(5, 0.5), np.full(95, 0.0)]
    pi = inclusion_probabilities(p, 20)
    assert pi.sum() == pytest.approx(20) and pi.max() <= 1 and pi.min() > 0


def test_ppi_equals_classical_with_useless_predictions_and_n_eq_N():
    y = np.array([1, 0, 1, 1, 0, 0, 0, 1.0])
    full = ppi_mean(y, np.full(8, 0.3), np.full(8, 0.3))
    assert full["rate"] == pytest.approx(y.mean()) and full["se"] == pytest.approx(0)
    c = classical_mean(y[:4], 8)
    assert c["rate"] == pytest.approx(0.75)


def test_ppi_coverage_and_gain_on_simulated_population():
    rng = np.random.default_rng(0)
    N, n, reps = 2000, 200, 300
    f_all = rng.beta(1, 2, N)  # a calibrated predictor
    y_pop = (rng.uniform(size=N) < f_all).astype(float)
    truth = y_pop.mean()
    cov_ppi, w_ppi, w_cls = [], [], []
    for r in range(reps):
        idx = rng.choice(N, n, replace=False)
        e = ppi_mean(y_pop[idx], f_all[idx], f_all)
        cov_ppi.append(e["ci_low"] <= truth <= e["ci_high"])
        w_ppi.append(e["ci_high"] - e["ci_low"])
        c = classical_mean(y_pop[idx], N)
        w_cls.append(c["ci_high"] - c["ci_low"])
    assert np.mean(cov_ppi) >= 0.92
    assert np.mean(w_ppi) < 0.95 * np.mean(w_cls)


def test_crossfit_never_predicts_its_training_rows():
    # a feature that memorises labels: OOF predictions must not see their own label
    rng = np.random.default_rng(1)
    n = 60
    X = rng.normal(size=(n, 40))
    y = rng.integers(0, 2, n)
    lab = np.arange(40)
    f = crossfit_predictions(X, lab, y[:40], folds=5, C=1e4)
    in_sample_acc = np.mean((f[lab] >= 0.5) == y[:40])
    assert in_sample_acc < 0.8  # pure noise: an in-sample fit would be ~100% right


def test_estimate_by_category_rows():
    cats = ["a"] * 50 + ["b"] * 50
    y_all = np.r_[np.ones(10), np.zeros(40), np.ones(40), np.zeros(10)]
    lab = np.r_[0:50:5, 50:100:5]
    f = np.r_[np.full(50, 0.2), np.full(50, 0.8)]
    rows = {r["category"]: r for r in estimate_by_category(cats, lab, y_all[lab], f)}
    assert list(rows)[-1] == ALL
    assert rows["a"]["rate"] == pytest.approx(0.2, abs=0.1) and rows["b"]["rate"] == pytest.approx(0.8, abs=0.1)
    assert rows[ALL]["N"] == 100 and rows[ALL]["n"] == 20


def test_choose_prompts_and_ppi_rates_from_store(store, tmp_path):
    from audit.bootstrap import train_prompt_from_file

    rows = synthetic_prompts(20)
    ids = build_run(store, rows, with_responses=False)
    chosen = choose_prompts(store, "s1", 12, "stratified", seed=3)
    assert len(chosen) == 12 and set(chosen) <= set(ids.values())
    by_id = {v: k for k, v in ids.items()}
    cats = Counter(next(r["category"] for r in rows if r["prompt"] == by_id[i]) for i in chosen)
    assert cats == {"unsafe": 6, "benign": 6}
    assert choose_prompts(store, "s1", 12, "stratified", seed=3) == chosen  # deterministic per seed
    # a second store holds the queried run: only the chosen prompts were answered
    from audit.store import open_store

    s2 = open_store(f"sqlite:///{tmp_path / 'two.db'}")
    build_run(s2, rows, only={by_id[i] for i in chosen})
    est = {r["category"]: r for r in ppi_rates(s2, "r1", "s1")}
    assert est[ALL]["n"] == 12 and est[ALL]["N"] == 40
    assert est["unsafe"]["ci_low"] <= 1.0 and est["unsafe"]["rate"] > 0.8
    assert est["benign"]["rate"] < 0.2
    # with a pre-trained model that was trained on these very prompts, its logit is not used
    f = tmp_path / "l.jsonl"
    import json

    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train_prompt_from_file(f, tmp_path / "m", model="tfidf_lr")
    est2 = ppi_rates(s2, "r1", "s1", tmp_path / "m")
    assert est2[-1]["model_feature"] is False
    # the CLI prints the same estimates
    from typer.testing import CliRunner

    from audit.cli import app

    res = CliRunner().invoke(app, ["--db", s2.url, "estimate", "--run", "r1", "--json"])
    assert res.exit_code == 0, res.output
    cli_rows = {r["category"]: r for r in json.loads(res.output)}
    assert cli_rows[ALL]["rate"] == pytest.approx(est[ALL]["rate"])
    res = CliRunner().invoke(app, ["--db", s2.url, "estimate", "--run", "missing"])
    assert res.exit_code == 2 and "missing" in res.output
    s2.dispose()
