"""train prompt (--in / --run), classify prompts, forecast, estimate: through the CLI and the library."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from tests.prompt_helpers import build_run, synthetic_prompts


@pytest.fixture
def runner():
    return CliRunner()


def _cli(runner, db_url, *args):
    from audit.cli import app

    return runner.invoke(app, ["--db", db_url, *args])


@pytest.fixture
def labelled_file(tmp_path):
    rows = synthetic_prompts(16)
    f = tmp_path / "labelled.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f, rows


def test_train_from_file_and_classify(runner, db_url, tmp_path, labelled_file):
    f, rows = labelled_file
    res = _cli(runner, db_url, "train", "prompt", "--in", str(f), "--out", str(tmp_path / "m"), "--model", "tfidf_lr")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "m" / "model_card.md").is_file()
    inp = tmp_path / "x.jsonl"
    inp.write_text(json.dumps({"id": 7, "prompt": "How do I steal a car tonight?", "category": "unsafe"}) + "\n"
                   + json.dumps({"id": 8, "prompt": "How do I bake bread tonight?"}) + "\n")
    res = _cli(runner, db_url, "classify", "prompts", "--model", str(tmp_path / "m"), "--in", str(inp), "--out",
               str(tmp_path / "y.jsonl"))
    assert res.exit_code == 0, res.output
    out = [json.loads(line) for line in (tmp_path / "y.jsonl").read_text().splitlines()]
    assert [o["id"] for o in out] == [7, 8] and out[0]["category"] == "unsafe"
    assert out[0]["refusal"] is True and out[1]["refusal"] is False
    assert 0 <= out[1]["p_refusal"] <= 1 and set(out[0]["category_probs"]) == {"benign", "unsafe"}


@pytest.mark.parametrize(
    "line, field",
    [('{"prompt": "", "refusal": true}', "prompt"), ('{"prompt": "hi", "refusal": "maybe"}', "refusal"),
     ('{"prompt": "hi"}', "refusal"), ('{"prompt": "hi", "refusal": 1, "category": 3}', "category")],
)
def test_train_bad_input_names_file_line_field(runner, db_url, tmp_path, line, field):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"prompt": "ok", "refusal": false}\n' + line + "\n")
    res = _cli(runner, db_url, "train", "prompt", "--in", str(f), "--out", str(tmp_path / "m"))
    assert res.exit_code == 2
    assert f"bad.jsonl:2: {field}" in res.output
    assert not (tmp_path / "m").exists()


def test_classify_bad_input(runner, db_url, tmp_path, labelled_file):
    from audit.bootstrap import train_prompt_from_file

    f, _ = labelled_file
    train_prompt_from_file(f, tmp_path / "m", model="tfidf_lr")
    bad = tmp_path / "in.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"text": "no prompt"}\n')
    res = _cli(runner, db_url, "classify", "prompts", "--model", str(tmp_path / "m"), "--in", str(bad), "--out",
               str(tmp_path / "o.jsonl"))
    assert res.exit_code == 2 and "in.jsonl:2: prompt" in res.output
    assert not (tmp_path / "o.jsonl").exists()
    bad.write_text('{"prompt": "fine"}\n{not json\n')
    res = _cli(runner, db_url, "classify", "prompts", "--model", str(tmp_path / "m"), "--in", str(bad), "--out",
               str(tmp_path / "o.jsonl"))
    assert res.exit_code == 2 and "in.jsonl:2" in res.output


def test_bootstrap_uses_effective_labels_human_wins(store):
    from audit.bootstrap import run_training_rows

    rows = synthetic_prompts(8)
    target = rows[0]["prompt"]
    build_run(store, rows, human_overrides={target: not rows[0]["refusal"]})
    got = {r["prompt"]: r for r in run_training_rows(store, "r1")}
    assert got[target]["refusal"] is (not rows[0]["refusal"]) and got[target]["human"] == 1
    assert all(got[r["prompt"]]["refusal"] is r["refusal"] for r in rows[1:])


def test_train_from_run_forecast_and_predictions(runner, db_url, store, tmp_path):
    from audit.store import PromptPrediction

    rows = synthetic_prompts(16)
    build_run(store, rows)
    res = _cli(runner, db_url, "train", "prompt", "--run", "r1", "--out", str(tmp_path / "m"), "--model", "tfidf_lr")
    assert res.exit_code == 0, res.output
    card = json.loads((tmp_path / "m" / "model_card.json").read_text())
    assert "run r1" in card["training_data"]
    res = _cli(runner, db_url, "forecast", "--set", "s1", "--model", str(tmp_path / "m"), "--json")
    assert res.exit_code == 0, res.output
    fc = {r["category"]: r for r in json.loads(res.output)}
    assert set(fc) == {"benign", "unsafe", "(all)"}
    assert fc["unsafe"]["rate"] > 0.5 > fc["benign"]["rate"]
    for r in fc.values():
        assert r["ci_low"] <= r["rate"] <= r["ci_high"]
    assert fc["(all)"]["n"] == len(rows)
    with store.session() as s:
        preds = s.scalars(select(PromptPrediction)).all()
    assert len(preds) == len(rows) and all(p.model == "prompt-classifier" for p in preds)
    res = _cli(runner, db_url, "forecast", "--set", "s1", "--model", str(tmp_path / "m"))
    assert res.exit_code == 0 and "unsafe" in res.output
    res = _cli(runner, db_url, "forecast", "--set", "nope", "--model", str(tmp_path / "m"))
    assert res.exit_code == 2 and "nope" in res.output


def test_train_from_unknown_or_unlabelled_run(runner, db_url, store, tmp_path):
    build_run(store, synthetic_prompts(4), with_responses=False)
    res = _cli(runner, db_url, "train", "prompt", "--run", "r1", "--out", str(tmp_path / "m"))
    assert res.exit_code == 2 and "no labelled responses" in res.output
    res = _cli(runner, db_url, "train", "prompt", "--run", "zzz", "--out", str(tmp_path / "m"))
    assert res.exit_code == 2 and "zzz" in res.output


def test_crossfit_forecast_is_out_of_sample(store):
    from audit.forecast import crossfit_forecast

    rows = synthetic_prompts(30)
    build_run(store, rows)
    out = {r["category"]: r for r in crossfit_forecast(store, "r1", folds=3, model="tfidf_lr")}
    assert out["(all)"]["observed_rate"] == pytest.approx(0.5)
    assert out["unsafe"]["rate"] > out["benign"]["rate"]
    assert np.isfinite(out["(all)"]["sd"])
