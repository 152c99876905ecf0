"""End to end over HTTP: the simulator on a loopback port, the collector with logprobs=20, labels,
the comparison, the thresholds, the CLI and ``serve-target refusal-token-sim``.

Labels here come from the simulator's exact rule (``label_with_sim_rule``: its refusal and compliance
texts are known), so the observed side is exact and the test checks the audit, not a classifier.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from audit.targets.loopback import LoopbackServer, free_port
from audit.targets.refusal_token_sim import SimConfig, make_app, make_prompts, prompt_p, sim_label
from audit.tokens import COMPARE_KEYS, compare, label_with_sim_rule, solve_thresholds

ROOT = Path(__file__).resolve().parents[1]


def _setup(store, tmp_path, cfg: SimConfig, n_per_category: int, set_name="simset"):
    from audit.prompts import import_prompts

    rows = make_prompts(cfg, n_per_category, seed=1)
    path = tmp_path / f"{set_name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["text"], "category": r["category"]}) + "\n" for r in rows))
    import_prompts(store, path, set_name)
    return rows


def _collect(store, cfg: SimConfig, run_name: str, set_name="simset", logprobs=20, target=None):
    from audit.collect import collect
    from audit.targets import add_target

    target = target or f"sim-{run_name}"
    with LoopbackServer(make_app(cfg)) as server:
        add_target(store, target, "openai", f"{server.base_url}/v1", cfg.model, refusal_tokens=cfg.refusal_tokens())
        summary = collect(store, run_name=run_name, set_name=set_name, target_name=target, logprobs=logprobs,
                          max_tokens=64, progress=False, concurrency=4)
    return summary


def test_compare_over_http_matches_simulator_truth(store, tmp_path):
    cfg = SimConfig.from_dict({"seed": 4, "use_category_tokens": True, "split_tokens": True})
    prompts = _setup(store, tmp_path, cfg, 16)
    _collect(store, cfg, "r1")
    assert label_with_sim_rule(store, "r1") == len(prompts)
    assert label_with_sim_rule(store, "r1") == 0  # idempotent

    rows = compare(store, "r1", plot_dir=tmp_path / "plots", n_sim=200)
    assert [r["category"] for r in rows] == sorted({p["category"] for p in prompts}) + ["(all)"]
    for r in rows:
        assert set(COMPARE_KEYS) <= set(r)
        assert r["source"] == "logprobs" and r["signal"] == "refusal-token"
        assert r["mode"] == "sampling"
        assert r["n_split_token"] == r["n"] and any("sub-token" in n for n in r["notes"])
        assert Path(r["reliability_diagram"]).stat().st_size > 0
    # expected = mean of the simulator's reported q for exactly these prompts (read back from logprobs)
    for r in rows[:-1]:
        qs = [prompt_p(cfg, p["text"])[2] for p in prompts if p["category"] == r["category"]]
        assert r["n"] == len(qs) == 16
        assert r["expected_rate"] == pytest.approx(np.mean(qs), abs=1e-9)
    # observed = the simulator's own answers
    from audit.store import Response

    with store.session() as s:
        texts = list(s.scalars(select(Response.text)))
    assert rows[-1]["observed_rate"] == pytest.approx(np.mean([sim_label(t) for t in texts]))
    assert (tmp_path / "plots" / "threshold_curves.png").exists()


def test_threshold_mode_round_trip_and_cli(store, db_url, tmp_path):
    from audit.cli import app

    cfg = SimConfig.from_dict({"seed": 2})
    _setup(store, tmp_path, cfg, 20)
    _collect(store, cfg, "r2")
    label_with_sim_rule(store, "r2")
    runner = CliRunner()

    out = tmp_path / "thr.json"
    res = runner.invoke(app, ["--db", db_url, "tokens", "thresholds", "--run", "r2", "--want", "*=0.3,Requests with safety concerns=0.8",
                              "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    solved = json.loads(res.output)
    assert {r["category"]: r["want"] for r in solved}["Requests with safety concerns"] == 0.8
    for r in solved:
        assert abs(r["achieved_rate"] - r["want"]) <= 1 / r["n"] + 1e-9
        assert r["achieved_ci"][0] <= r["achieved_rate"] <= r["achieved_ci"][1]

    res = runner.invoke(app, ["--db", db_url, "tokens", "compare", "--run", "r2", "--thresholds", str(out), "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)
    for r in rows:
        assert list(r)[: len(COMPARE_KEYS)] == list(COMPARE_KEYS)
        assert len(r["observed_ci"]) == 2 and len(r["expected_ci"]) == 2
        assert r["mode"] == "threshold"
    want = {r["category"]: r["want"] for r in solved}
    for r in rows[:-1]:
        assert abs(r["expected_rate"] - want[r["category"]]) <= 1 / r["n"] + 1e-9

    # a vendor that really uses these thresholds shows exactly the expected rates
    vendor = SimConfig.from_dict({"seed": 2, "decision": "threshold",
                                  "thresholds": json.loads(out.read_text())["thresholds"]})
    _collect(store, vendor, "r3")
    label_with_sim_rule(store, "r3")
    rows = compare(store, "r3", thresholds=out, n_sim=100)
    for r in rows:
        assert r["observed_rate"] == pytest.approx(r["expected_rate"]) and r["p_value"] == 1.0

    # the human-readable table and bad input
    res = runner.invoke(app, ["--db", db_url, "tokens", "compare", "--run", "r2"])
    assert res.exit_code == 0 and "expected" in res.output
    res = runner.invoke(app, ["--db", db_url, "tokens", "compare", "--run", "nope"])
    assert res.exit_code == 2 and "no run named" in res.output
    res = runner.invoke(app, ["--db", db_url, "tokens", "thresholds", "--run", "r2", "--want", "Nope=0.2"])
    assert res.exit_code == 2 and "unknown categories" in res.output
    res = runner.invoke(app, ["--db", db_url, "tokens", "recalibrate", "--run", "r2", "--json"])
    assert res.exit_code == 0, res.output
    assert [r["method"] for r in json.loads(res.output)][0] == "none"


def test_top_k_absent_tokens_are_upper_bounds_over_http(store, tmp_path):
    cfg = SimConfig.from_dict({"seed": 8, "filler_mass": 0.1})
    prompts = _setup(store, tmp_path, cfg, 6)
    _collect(store, cfg, "r4", logprobs=1)
    label_with_sim_rule(store, "r4")
    rows = compare(store, "r4", n_sim=50)
    total = rows[-1]
    assert 0 < total["n_upper_bound"] < total["n"]
    true_mean = np.mean([prompt_p(cfg, p["text"])[2] * 0.9 for p in prompts])
    assert total["expected_rate"] >= true_mean - 1e-9  # bounds only ever overstate


def test_no_logprobs_falls_back_to_prompt_classifier(store, tmp_path):
    from audit.store import Prompt, PromptPrediction
    from audit.tokens import TokenAuditError

    cfg = SimConfig.from_dict({"seed": 3, "supports_logprobs": False})
    _setup(store, tmp_path, cfg, 12)
    _collect(store, cfg, "r5")
    label_with_sim_rule(store, "r5")
    # without logprobs and without any forecast: a default prompt classifier stands in if there is
    # one, else the audit says what is missing
    if _has_default_prompt_model():
        assert all(r["source"] == "prompt-classifier" for r in compare(store, "r5", n_sim=50))
    else:
        with pytest.raises(TokenAuditError, match="no logprobs"):
            compare(store, "r5", n_sim=50)

    # a real (small) calibrated prompt classifier, trained on other prompts of the simulator
    from classifiers.prompt import PromptClassifier

    train = make_prompts(SimConfig.from_dict({"seed": 3}), 20, seed=77)
    y = [prompt_p(cfg, r["text"])[1] >= 0.5 for r in train]
    clf = PromptClassifier(model="tfidf_lr", calibration="platt", cv=3, per_category=False)
    clf.fit([r["text"] for r in train], y)
    clf.save(tmp_path / "pc")
    rows = compare(store, "r5", prompt_model_dir=tmp_path / "pc", n_sim=50)
    assert all(r["source"] == "prompt-classifier" and r["signal"] == "prompt-classifier" for r in rows)
    assert all(any("stand-in" in n for n in r["notes"]) for r in rows)
    assert rows[-1]["n"] == 60 and 0 < rows[-1]["expected_rate"] < 1
    thr = solve_thresholds(store, "r5", "*=0.5", prompt_model_dir=tmp_path / "pc")
    assert all(r["source"] == "prompt-classifier" for r in thr)

    # stored prompt-classifier forecasts are used as the stand-in when no model is given
    with store.session() as s:
        for pr in s.scalars(select(Prompt)):
            s.add(PromptPrediction(prompt_id=pr.id, model="test-forecast", model_version="1",
                                   p_refusal=prompt_p(cfg, pr.text)[1]))
    rows = compare(store, "r5", n_sim=50)
    assert all(r["source"] == "prompt-classifier" for r in rows)
    with store.session() as s:
        truth = {pr.category: [] for pr in s.scalars(select(Prompt))}
        for pr in s.scalars(select(Prompt)):
            truth[pr.category].append(prompt_p(cfg, pr.text)[1])
    for r in rows[:-1]:
        assert r["expected_rate"] == pytest.approx(np.mean(truth[r["category"]]))


def _has_default_prompt_model() -> bool:
    from audit.tokens import _load_prompt_classifier

    try:
        return _load_prompt_classifier(None) is not None
    except Exception:
        return False


def test_serve_target_cli(tmp_path):
    cfg_path = tmp_path / "sim.json"
    cfg_path.write_text(json.dumps({"seed": 1, "categories": {"x": {"p_refuse": 1.0, "keywords": ["x"]}}, "default_p_refuse": 0.0}))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from audit.cli import main; main()", "serve-target", "refusal-token-sim",
         "--port", str(port), "--config", str(cfg_path)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        body = {"model": "m", "messages": [{"role": "user", "content": "x marks it"}], "logprobs": True, "top_logprobs": 2}
        r = httpx.post(f"{base}/v1/chat/completions", json=body, timeout=5).json()
        assert r["choices"][0]["message"]["content"].startswith("[refuse] ")
        first = r["choices"][0]["logprobs"]["content"][0]
        assert first["token"] == "[refuse]" and first["logprob"] == 0.0
        r = httpx.post(f"{base}/v1/chat/completions", json={**body, "messages": [{"role": "user", "content": "hello"}]}, timeout=5).json()
        assert r["choices"][0]["message"]["content"].startswith("[respond] ")
        bad = httpx.post(f"{base}/v1/chat/completions", json={"messages": []}, timeout=5)
        assert bad.status_code == 400 and "messages" in bad.json()["error"]["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_demo_audit_runs_both_simulators(store, tmp_path):
    from audit.tokens import demo_audit

    rows = demo_audit(store, tmp_path, n_per_category=12, temperatures=(1.0, 3.0), labeller="exact")
    runs = sorted({r["run"] for r in rows})
    assert runs == ["tokens-demo-calibrated", "tokens-demo-t3"]
    for run in runs:
        mine = [r for r in rows if r["run"] == run]
        assert mine[-1]["category"] == "(all)" and mine[-1]["n"] == 60
        assert all(r["labeller"] == "simulator-exact-rule" and r["source"] == "logprobs" for r in mine)
        assert (tmp_path / "tokens" / run / "reliability_all.png").exists()
    hot = [r for r in rows if r["run"] == "tokens-demo-t3"][-1]
    cold = [r for r in rows if r["run"] == "tokens-demo-calibrated"][-1]
    # same prompts and same behaviour, only the stated probabilities differ
    assert hot["observed_rate"] == cold["observed_rate"]
    assert hot["ece"] > cold["ece"]


@pytest.mark.postgres
def test_compare_on_postgres(pg_url, tmp_path):
    from audit.store import open_store

    store = open_store(pg_url)
    try:
        cfg = SimConfig.from_dict({"seed": 6})
        _setup(store, tmp_path, cfg, 8)
        _collect(store, cfg, "pg1")
        assert label_with_sim_rule(store, "pg1") == 40
        rows = compare(store, "pg1", n_sim=50)
        assert rows[-1]["n"] == 40 and rows[-1]["source"] == "logprobs"
        qs = [prompt_p(cfg, p["text"])[2] for p in make_prompts(cfg, 8, seed=1)]
        assert rows[-1]["expected_rate"] == pytest.approx(np.mean(qs))
    finally:
        store.dispose()


def _response_classifier():
    """The shipped default response classifier, else any saved one under classifiers/models."""
    from classifiers import load_default_response_classifier, load_response_classifier

    try:
        return load_default_response_classifier()
    except FileNotFoundError:
        saved = sorted(p.parent for p in (ROOT / "classifiers" / "models").glob("*/model.json"))
        if not saved:
            pytest.fail("no saved response classifier under classifiers/models")
        return load_response_classifier(saved[0])


def test_response_classifier_labels_agree_with_simulator_truth(store, tmp_path):
    """The observed side as in the demo: machine labels from the real response classifier
    (``label_run``) agree with the simulator's exact rule on its own answers."""
    from audit.labeling import label_run
    from audit.rates import effective_labels, run_by_name
    from audit.store import Response

    cfg = SimConfig.from_dict({"seed": 9, "use_category_tokens": True})
    _setup(store, tmp_path, cfg, 8)
    _collect(store, cfg, "r6")
    assert label_run(store, "r6", classifier=_response_classifier()) == 40
    with store.session() as s:
        run = run_by_name(s, "r6")
        eff = effective_labels(run.id).subquery()
        pairs = s.execute(select(Response.text, eff.c.refusal).join(eff, eff.c.response_id == Response.id)).all()
    assert len(pairs) == 40
    assert all(bool(refusal) == sim_label(text) for text, refusal in pairs)
    rows = compare(store, "r6", n_sim=50)
    assert rows[-1]["n"] == 40
