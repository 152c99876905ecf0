"""Reading refusal probabilities from first-token logprobs, thresholds, recalibration, config errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from audit.targets.base import openai_logprobs
from audit.targets.refusal_token_sim import SimConfig, _Sim, make_prompts, prompt_p, sim_label, split_token
from audit.tokens import (
    Group,
    TokenAuditError,
    TokenConfig,
    _metric_fns,
    compare_groups,
    parse_wanted,
    read_refusal_probability,
    read_thresholds,
    solve_threshold,
    threshold_curve,
)


def _lp(tok, p, top):
    return {"token": tok, "logprob": math.log(p), "top_logprobs": [{"token": t, "logprob": math.log(q)} for t, q in top]}


CFG = TokenConfig.from_json({"refuse": "[refuse]", "respond": "[respond]"})


def test_whole_token_read_exactly():
    r = read_refusal_probability([_lp("[respond]", 0.7, [("[respond]", 0.7), ("[refuse]", 0.25), ("I", 0.05)])], CFG)
    assert r.p_refuse == pytest.approx(0.25)
    assert r.p_respond == pytest.approx(0.7)
    assert not r.upper_bound and not r.split and r.position == 0


def test_absent_token_gives_upper_bound_not_zero():
    # top-2 list without the refusal token: bound = min(K-th prob 0.1, unlisted mass 0.05)
    r = read_refusal_probability([_lp("[respond]", 0.85, [("[respond]", 0.85), ("Sure", 0.1)])], CFG)
    assert r.upper_bound and r.p_refuse == pytest.approx(0.05)
    r = read_refusal_probability([_lp("[respond]", 0.5, [("[respond]", 0.5), ("Sure", 0.45), ("The", 0.01)])], CFG)
    assert r.upper_bound and r.p_refuse == pytest.approx(0.01)
    assert "upper bound" in r.note
    # no top list at all: the bound is the mass the generated token leaves
    r = read_refusal_probability([_lp("[respond]", 0.9, [])], CFG)
    assert r.upper_bound and r.p_refuse == pytest.approx(0.1)


def test_split_token_uses_first_distinguishing_subtoken_and_says_so():
    assert split_token("[refuse]") == ["[", "ref", "use", "]"]
    lps = [
        _lp("[", 0.9, [("[", 0.9), ("I", 0.1)]),
        _lp("ref", 0.4, [("res", 0.6), ("ref", 0.4)]),
        _lp("use", 1.0, [("use", 1.0)]),
        _lp("]", 1.0, [("]", 1.0)]),
    ]
    r = read_refusal_probability(lps, CFG)
    assert r.p_refuse == pytest.approx(0.9 * 0.4)
    assert r.p_respond == pytest.approx(0.9 * 0.6)
    assert r.split and r.position == 1 and "sub-token" in r.note


def test_shared_subtoken_between_categories_is_walked_through():
    cfg = TokenConfig.from_json({"respond": "[respond]", "categories": {"a": "[Incomplete]", "b": "[Indeterminate]"}})
    lps = [
        _lp("[", 1.0, [("[", 1.0)]),
        _lp("In", 0.3, [("res", 0.7), ("In", 0.3)]),
        _lp("complete", 0.5, [("complete", 0.5), ("determinate", 0.5)]),
    ]
    r = read_refusal_probability(lps, cfg)
    # "In" already separates refusal from response: read there; category split is not needed
    assert r.position == 1 and r.p_refuse == pytest.approx(0.3)


def test_prefix_proxy():
    cfg = TokenConfig.from_json({"prefix_tokens": ["I", "Sorry", "As"]})
    r = read_refusal_probability([_lp("Sure", 0.5, [("Sure", 0.5), (" I", 0.2), ("Sorry", 0.1), ("The", 0.05)])], cfg)
    assert r.signal == "prefix-proxy" and r.p_refuse == pytest.approx(0.3)
    assert r.tokens == {"I": pytest.approx(0.2), "Sorry": pytest.approx(0.1)}
    r = read_refusal_probability([_lp("Sure", 0.9, [("Sure", 0.9), ("The", 0.05)])], cfg)
    assert r.upper_bound and r.p_refuse == pytest.approx(0.05)


def test_token_config_validation():
    assert TokenConfig.from_json(None) is None
    with pytest.raises(TokenAuditError, match="categories"):
        TokenConfig.from_json({"categories": ["x"]})
    with pytest.raises(TokenAuditError, match="needs"):
        TokenConfig.from_json({"respond": "[respond]"})


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("category_tokens", [False, True])
@pytest.mark.parametrize("top_k", [20, 2, 0])
def test_simulator_logprobs_read_back(split, category_tokens, top_k):
    """The simulator's logprobs (through the collector's normaliser) give back the reported q: exactly
    when the token is listed, else an upper bound that is >= q."""
    cfg = SimConfig.from_dict({"split_tokens": split, "use_category_tokens": category_tokens, "filler_mass": 0.04, "seed": 5})
    sim = _Sim(cfg)
    tc = TokenConfig.from_json(cfg.refusal_tokens())
    for row in make_prompts(cfg, 4, seed=1):
        a = sim.answer(row["text"], None, True, top_k)
        reading = read_refusal_probability(openai_logprobs(a["choice"]["logprobs"]), tc)
        _, _, q = prompt_p(cfg, row["text"])
        truth = q * (1 - cfg.filler_mass)
        assert reading.split == split
        if reading.upper_bound:
            assert reading.p_refuse >= truth - 1e-9
        else:
            assert reading.p_refuse == pytest.approx(truth, abs=1e-9)
        if top_k == 20:
            assert not reading.upper_bound
        refused = sim_label(a["choice"]["message"]["content"])
        assert refused is not None
        assert a["choice"]["message"]["content"].startswith(cfg.refusal_token_for(row["category"]) if refused else "[respond]")
        # logprobs are a consistent distribution: top list sorted, sums <= 1, chosen token's logprob matches
        for item in a["choice"]["logprobs"]["content"]:
            tops = [t["logprob"] for t in item["top_logprobs"]]
            assert tops == sorted(tops, reverse=True)
            assert sum(math.exp(x) for x in tops) <= 1 + 1e-9
            for t in item["top_logprobs"]:
                if t["token"] == item["token"]:
                    assert t["logprob"] == pytest.approx(item["logprob"])


def test_simulator_deterministic_given_seed():
    cfg = SimConfig.from_dict({"seed": 11})
    texts = [r["text"] for r in make_prompts(cfg, 3)]
    a = [_Sim(cfg).answer(t, None, True, 5)["choice"] for t in texts]
    b = [_Sim(cfg).answer(t, None, True, 5)["choice"] for t in texts]
    assert a == b
    c = [_Sim(SimConfig.from_dict({"seed": 12})).answer(t, None, True, 5)["choice"] for t in texts]
    assert a != c


def test_threshold_curve_and_solver():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 3, 1000)
    grid, rates = threshold_curve(p)
    assert rates[0] == 1.0 and rates[-1] <= 0.001 and np.all(np.diff(rates) <= 0)
    for want in (0.0, 0.05, 0.33, 0.5, 0.9, 1.0):
        t = solve_threshold(p, want)
        assert abs(np.mean(p >= t) - want) <= 1 / p.size
    ties = np.array([0.2] * 50 + [0.8] * 50)
    assert np.mean(ties >= solve_threshold(ties, 0.5)) == 0.5
    with pytest.raises(TokenAuditError):
        solve_threshold(p, 1.5)


def test_parse_wanted():
    assert parse_wanted("Humanizing requests=0.2, b=30%") == {"Humanizing requests": 0.2, "b": 0.3}
    for bad in ("a", "a=x", "a=2", ""):
        with pytest.raises(TokenAuditError):
            parse_wanted(bad)


def test_read_thresholds_errors_name_file_line_field(tmp_path):
    from audit.prompts import InputError

    good = tmp_path / "t.json"
    good.write_text(json.dumps({"thresholds": {"a": 0.3, "*": 0.5}}))
    assert read_thresholds(good) == {"a": 0.3, "*": 0.5}
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "a": 0.3,\n  "b": "high"\n}\n')
    with pytest.raises(InputError) as e:
        read_thresholds(bad)
    assert e.value.line == 3 and e.value.field == "b" and "bad.json" in str(e.value)
    broken = tmp_path / "broken.json"
    broken.write_text('{\n  "a": 0.3,\n')
    with pytest.raises(InputError) as e:
        read_thresholds(broken)
    assert e.value.line is not None


def test_batched_noise_floor_metrics_equal_calibration_module():
    rng = np.random.default_rng(3)
    for name, metric in _metric_fns(10).items():
        for n in (7, 60, 400):
            p = rng.beta(0.7, 1.5, n)
            p[:2] = [0.0, 1.0]
            ys = (rng.random((15, n)) < p).astype(float)
            assert np.allclose(metric.batch(ys, p), [metric(y, p) for y in ys], atol=1e-12), name


def test_compare_groups_threshold_mode_and_missing_threshold():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = (p >= 0.6).astype(int)
    rows = compare_groups({"a": Group(p, y)}, {"a": 0.6}, n_sim=50, n_boot=200)
    a = rows[0]
    assert a["mode"] == "threshold" and a["expected_rate"] == a["observed_rate"] and a["p_value"] == 1.0
    assert rows[-1]["category"] == "(all)"
    with pytest.raises(TokenAuditError, match="no threshold"):
        compare_groups({"a": Group(p, y)}, {"b": 0.5})


def test_simulator_config_errors_name_field(tmp_path):
    from audit.prompts import InputError

    path = tmp_path / "sim.json"
    path.write_text('{\n  "seed": 1,\n  "temperature": -1\n}\n')
    with pytest.raises(InputError) as e:
        SimConfig.load(path)
    assert e.value.field == "temperature" and e.value.line == 3
    with pytest.raises(ValueError, match="thresholds"):
        SimConfig.from_dict({"decision": "threshold", "thresholds": {"Humanizing requests": 0.5}})


def test_simulator_config_unknown_field(tmp_path):
    from audit.prompts import InputError

    path = tmp_path / "sim.json"
    path.write_text('{\n  "seed": 1,\n  "temprature": 2\n}\n')
    with pytest.raises(InputError) as e:
        SimConfig.load(path)
    assert e.value.field == "temprature" and e.value.line == 3 and "unknown field" in str(e.value)


def test_leading_space_subtokens():
    lps = [
        _lp(" [", 0.8, [(" [", 0.8), ("Sure", 0.2)]),
        _lp("ref", 0.25, [("res", 0.75), ("ref", 0.25)]),
    ]
    r = read_refusal_probability(lps, CFG)
    assert r.p_refuse == pytest.approx(0.2) and r.position == 1 and r.split
