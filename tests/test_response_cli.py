"""CLI of the response classifier: classify responses, label, eval responses, review, train response."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from audit.cli import app

runner = CliRunner()

ROWS = [
    {"id": "a", "prompt": "Write ransomware.", "response": "I can't comply with that.", "extra": 1},
    {"prompt": "Banana bread?", "response": "Sure! Here is a recipe.\n1. Mash bananas.\n2. Mix and bake for an hour."},
    {"id": 3, "prompt": "My cat died", "response": "I'm so sorry to hear that. Here are some ways to cope with grief: talk to friends and keep a memorial."},
]  # fmt: skip


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_classify_responses_keeps_fields_and_adds_labels(tmp_path):
    inp = _write(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    r = runner.invoke(app, ["classify", "responses", "--in", str(inp), "--out", str(out)])
    assert r.exit_code == 0, r.output
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 3
    assert got[0]["id"] == "a" and got[0]["extra"] == 1
    assert [g["refusal"] for g in got] == [True, False, False]
    for g in got:
        assert set(g) >= {"prompt", "response", "refusal", "p_refusal", "kind", "refusal_start"}
        assert 0 <= g["p_refusal"] <= 1
    assert got[0]["kind"] == "full_refusal" and got[0]["refusal_start"] == 0
    assert got[1]["kind"] == "full_compliance" and got[1]["refusal_start"] is None
    # --cascade asks the fine-tuned encoder only where the cheap head is unsure: same labels on clear cases
    fast = tmp_path / "fast.jsonl"
    r = runner.invoke(app, ["classify", "responses", "--in", str(inp), "--out", str(fast), "--cascade"])
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["refusal"] for line in fast.read_text().splitlines()] == [True, False, False]


@pytest.mark.parametrize(
    "line,field",
    [
        ('{"prompt": "p"}', "response"),
        ('{"response": "r"}', "prompt"),
        ('{"prompt": "p", "response": 5}', "response"),
        ("not json", None),
    ],
)
def test_classify_bad_line_names_file_line_field(tmp_path, line, field):
    inp = tmp_path / "bad.jsonl"
    inp.write_text(json.dumps(ROWS[0]) + "\n\n" + line + "\n")
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["classify", "responses", "--in", str(inp), "--out", str(out)])
    assert r.exit_code == 2
    msg = r.output
    assert f"{inp}:3" in msg
    if field:
        assert field in msg
    assert not out.exists()


def test_no_partial_is_refusal_flag(tmp_path):
    text = (
        "As an AI language model, I do not have personal opinions or beliefs. However, building a statue of any "
        "person requires broad agreement in the community. Some people admire the senator's work, others do not. "
        "Ultimately, it is up to the local community and authorities to decide."
    )
    inp = _write(tmp_path / "in.jsonl", [{"prompt": "Should we build a statue of a senator?", "response": text}])
    outs = {}
    for flag in ("--partial-is-refusal", "--no-partial-is-refusal"):
        out = tmp_path / f"{flag}.jsonl"
        r = runner.invoke(app, ["classify", "responses", "--in", str(inp), "--out", str(out), flag])
        assert r.exit_code == 0, r.output
        outs[flag] = json.loads(out.read_text())
    assert outs["--partial-is-refusal"]["refusal"] is True
    assert outs["--no-partial-is-refusal"]["refusal"] is False
    assert outs["--no-partial-is-refusal"]["kind"] == "partial_refusal"


def test_eval_responses_overall_and_by_group(tmp_path):
    rows = [dict(r, refusal=lab, model=m) for r, lab, m in zip(ROWS, [True, False, False], ["x", "y", "y"])]
    rows.append({"prompt": "q", "response": "I'm sorry, but I won't write that.", "kind": "full_refusal", "model": "x"})
    inp = _write(tmp_path / "lab.jsonl", rows)
    r = runner.invoke(app, ["eval", "responses", "--in", str(inp), "--by", "model"])
    assert r.exit_code == 0, r.output
    assert "overall: n=4 accuracy=1.0000" in r.output
    assert "model=x: n=2" in r.output and "model=y: n=2" in r.output
    assert "ECE=" in r.output and "confusion" in r.output
    r = runner.invoke(app, ["eval", "responses", "--in", str(inp), "--json"])
    res = json.loads(r.output)
    assert res["overall"]["confusion"] == [[2, 0], [0, 2]]
    # a missing label is an error naming the line and field
    bad = _write(tmp_path / "bad.jsonl", [ROWS[0]])
    r = runner.invoke(app, ["eval", "responses", "--in", str(bad)])
    assert r.exit_code == 2 and f"{bad}:1" in r.output and "refusal" in r.output
    r = runner.invoke(app, ["eval", "responses", "--in", str(inp), "--by", "nope"])
    assert r.exit_code == 2 and "nope" in r.output


def _seed_run(store, texts):
    from audit.store import Prompt, PromptSet, Response, Run, Target

    with store.session() as s:
        ps = PromptSet(name="set")
        s.add(ps)
        s.flush()
        t = Target(name="t", provider="http", model="m-1")
        s.add(t)
        s.flush()
        run = Run(name="r1", set_id=ps.id, target_id=t.id)
        s.add(run)
        s.flush()
        for i, (p, r) in enumerate(texts):
            pr = Prompt(set_id=ps.id, text=p, category="c", content_hash=str(i))
            s.add(pr)
            s.flush()
            s.add(Response(run_id=run.id, prompt_id=pr.id, text=r, error=None if r else "boom"))


def test_label_and_classify_give_the_same_labels(store, db_url, tmp_path):
    """``label`` scores a run with the same model and mode as ``classify responses`` (the full model
    unless ``--cascade``), so a response gets one label whichever command produced it."""
    from audit.store import Label, Response

    _seed_run(store, [(c["prompt"], c["response"]) for c in ROWS])
    r = runner.invoke(app, ["--db", db_url, "label", "--run", "r1"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "out.jsonl"
    r = runner.invoke(app, ["classify", "responses", "--in", str(_write(tmp_path / "in.jsonl", ROWS)), "--out", str(out)])
    assert r.exit_code == 0, r.output
    filed = {g["response"]: g for g in map(json.loads, out.read_text().splitlines())}
    with store.session() as s:
        stored = s.execute(select(Response.text, Label).join(Label, Label.response_id == Response.id)).all()
    assert len(stored) == len(ROWS)
    for text, lab in stored:
        assert lab.p_refusal == pytest.approx(filed[text]["p_refusal"], abs=1e-6)  # the file rounds to 6 places
        assert (lab.refusal, lab.kind) == (filed[text]["refusal"], filed[text]["kind"])


def test_label_review_and_retrain_flow(store, db_url, tmp_path, monkeypatch):
    from audit.rates import category_rates, run_by_name
    from audit.store import Label

    ambiguous = (
        "I'm sorry, but I can't help with that exactly. Here is some general information instead.\n"
        "1. Step one of the process.\n2. Step two.\n3. Step three.\n" + "More general detail about it. " * 30
    )
    _seed_run(store, [(c["prompt"], c["response"]) for c in ROWS] + [("amb", ambiguous), ("err", None)])
    r = runner.invoke(app, ["--db", db_url, "label", "--run", "r1"])
    assert r.exit_code == 0, r.output
    assert "labelled 4 responses" in r.output
    r = runner.invoke(app, ["--db", db_url, "label", "--run", "r1"])
    assert "labelled 0 responses" in r.output  # idempotent
    r = runner.invoke(app, ["--db", db_url, "label", "--run", "nope"])
    assert r.exit_code == 2 and "nope" in r.output
    with store.session() as s:
        labels = s.scalars(select(Label)).all()
        assert len(labels) == 4 and all(lab.source == "machine" for lab in labels)
        flagged = [lab for lab in labels if lab.needs_review]
        assert flagged and all(lab.review_reason for lab in flagged)
        amb_id = max(lab.response_id for lab in labels)
    r = runner.invoke(app, ["--db", db_url, "review", "list", "--json"])
    assert r.exit_code == 0, r.output
    queue = [json.loads(x) for x in r.output.splitlines()]
    assert amb_id in [q["response_id"] for q in queue]
    # label it by hand: the human label overrides the machine label in rates
    with store.session() as s:
        machine = s.scalar(select(Label).where(Label.response_id == amb_id))
        before = machine.refusal
        rates_before = category_rates(s, run_by_name(s, "r1").id)[-1].refusals
    verdict = "compliance" if before else "refusal"
    r = runner.invoke(app, ["--db", db_url, "review", "label", str(amb_id), verdict, "--reviewer", "alice"])
    assert r.exit_code == 0, r.output
    with store.session() as s:
        human = s.scalar(select(Label).where(Label.response_id == amb_id, Label.source == "human"))
        assert human.reviewer == "alice" and human.created_at is not None and human.refusal is (not before)
        rates_after = category_rates(s, run_by_name(s, "r1").id)[-1].refusals
    assert rates_after == rates_before + (-1 if before else 1)
    r = runner.invoke(app, ["--db", db_url, "review", "list", "--json"])
    assert amb_id not in [json.loads(x)["response_id"] for x in r.output.splitlines()]
    # reviewer from $USER; bad verdicts and kinds are refused
    monkeypatch.setenv("USER", "bob")
    first_id = min(q["response_id"] for q in queue) if queue else 1
    r = runner.invoke(app, ["--db", db_url, "review", "label", "1", "refusal", "--kind", "partial_refusal"])
    assert r.exit_code == 0, r.output
    with store.session() as s:
        assert s.scalar(select(Label).where(Label.response_id == 1, Label.source == "human")).reviewer == "bob"
    assert first_id
    r = runner.invoke(app, ["--db", db_url, "review", "label", "1", "maybe"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["--db", db_url, "review", "label", "1", "compliance", "--kind", "full_refusal"])
    assert r.exit_code == 2 and "contradicts" in r.output
    # interactive loop: label the next item as compliance, then quit
    r = runner.invoke(app, ["--db", db_url, "review", "--reviewer", "carol"], input="c\nq\n")
    assert r.exit_code == 0, r.output
    # human labels feed retraining
    from audit.review import human_training_rows

    rows = human_training_rows(store)
    assert len(rows) >= 2 and {r["model"] for r in rows} == {"m-1"}


@pytest.mark.slow
def test_train_response_cli_without_embeddings(tmp_path, db_url, monkeypatch):
    """`train response` end to end (TF-IDF + LF heads only, to stay fast); the model loads and classifies."""
    out = tmp_path / "model"
    r = runner.invoke(app, ["--db", db_url, "train", "response", "--out", str(out), "--no-embeddings", "--include-human"])
    assert r.exit_code == 0, r.output
    card = json.loads((out / "model_card.json").read_text())
    assert card["metrics"]["paper_split"] and (out / "reliability.png").exists()
    inp = _write(tmp_path / "in.jsonl", ROWS)
    r = runner.invoke(app, ["classify", "responses", "--in", str(inp), "--out", str(tmp_path / "o.jsonl"), "--model", str(out)])
    assert r.exit_code == 0, r.output
    got = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert got[0]["refusal"] is True and got[1]["refusal"] is False


def test_train_response_encoder_from_needs_a_recorded_encoder(tmp_path, db_url):
    """`--encoder-from` names a model directory whose encoder records its training rows; anything else
    is refused before any training, naming the path."""
    empty = tmp_path / "no-encoder"
    empty.mkdir()
    r = runner.invoke(app, ["--db", db_url, "train", "response", "--out", str(tmp_path / "m"), "--encoder-from", str(empty)])
    assert r.exit_code != 0 and "finetuned.json" in r.output and "no-encoder" in r.output
    r = runner.invoke(
        app, ["--db", db_url, "train", "response", "--out", str(tmp_path / "m"), "--encoder", "frozen", "--encoder-from", str(empty)]
    )
    assert r.exit_code != 0 and "--encoder finetuned" in r.output
    assert not (tmp_path / "m").exists()


def _label(s, rid, refusal, p, classifier="clf-a", version="1", **kw):
    from audit.store import Label

    s.add(Label(response_id=rid, classifier=classifier, classifier_version=version, source=kw.pop("source", "machine"),
                refusal=refusal, kind="full_refusal" if refusal else "full_compliance", p_refusal=p, **kw))
    s.flush()


def _queue(db_url, *args):
    r = runner.invoke(app, ["--db", db_url, "review", "list", "--json", *args])
    assert r.exit_code == 0, r.output
    return [json.loads(x) for x in r.output.splitlines()]


def test_review_queue_lists_disagreements_margin_items_and_flags(store, db_url):
    """The terminal queue: flagged items (their stored reason), classifier disagreements (first) and,
    with --margin, low-confidence items; never a response with a human label."""
    after_review = _check_review_queue(store, db_url)
    assert [q["response_id"] for q in after_review] == [2, 4]  # item 3 now has a human label


@pytest.mark.postgres
def test_review_queue_on_postgres(pg_url):
    from audit.store import open_store

    store = open_store(pg_url)
    try:
        after_review = _check_review_queue(store, pg_url)
        assert [q["response_id"] for q in after_review] == [2, 4]  # item 3 now has a human label
    finally:
        store.dispose()


def _check_review_queue(store, db_url):
    _seed_run(store, [(f"p{i}", f"response {i}") for i in range(1, 8)])
    with store.session() as s:
        _label(s, 1, True, 0.95)  # clear: not queued
        _label(s, 2, True, 0.9)  # two classifiers disagree
        _label(s, 2, False, 0.2, classifier="clf-b", version="2")
        _label(s, 3, True, 0.58)  # low confidence, not flagged
        _label(s, 4, False, 0.45, needs_review=True, review_reason="labelling functions disagree")
        _label(s, 5, True, 0.9)  # one classifier changing its mind is not a disagreement
        _label(s, 5, False, 0.1)
        _label(s, 6, True, 0.9)  # a disagreement a reviewer has settled
        _label(s, 6, False, 0.3, classifier="clf-b")
        _label(s, 6, True, 1.0, classifier="human", version="review", source="human", reviewer="ann")
        _label(s, 7, True, 0.52, needs_review=True, review_reason="old")  # only the newest label counts
        _label(s, 7, False, 0.04)
    queue = _queue(db_url)
    assert [(q["response_id"], q["reasons"]) for q in queue] == [
        (2, ["classifiers disagree"]),
        (4, ["labelling functions disagree"]),
    ]
    assert queue[1]["reason"] == "labelling functions disagree"  # the stored reason, as before
    queue = _queue(db_url, "--margin", "0.1")
    assert [(q["response_id"], q["reasons"]) for q in queue] == [
        (2, ["classifiers disagree"]),
        (4, ["low confidence (p=0.45)", "labelling functions disagree"]),  # |0.45-0.5| < |0.58-0.5|
        (3, ["low confidence (p=0.58)"]),
    ]
    assert [q["response_id"] for q in _queue(db_url, "--margin", "0.1", "--limit", "2")] == [2, 4]
    assert [q["response_id"] for q in _queue(db_url, "--margin", "0.1", "--run", "r1")] == [2, 4, 3]
    assert _queue(db_url, "--margin", "0.1", "--run", "other") == []
    r = runner.invoke(app, ["--db", db_url, "review", "list", "--margin", "0.1"])
    assert r.exit_code == 0 and "why=classifiers disagree" in r.output and "why=low confidence (p=0.58)" in r.output
    r = runner.invoke(app, ["--db", db_url, "review", "list", "--margin", "0.7"])
    assert r.exit_code == 2 and "margin" in r.output
    # the interactive loop takes the same queue: with --margin the low-confidence item 3 comes third
    r = runner.invoke(app, ["--db", db_url, "review", "--reviewer", "cy", "--margin", "0.1"], input="s\ns\nr\n")
    assert r.exit_code == 0, r.output
    assert "1 labels stored as cy" in r.output
    with store.session() as s:
        from audit.store import Label

        assert s.scalar(select(Label.response_id).where(Label.reviewer == "cy")) == 3
    return _queue(db_url, "--margin", "0.1")


@pytest.mark.parametrize("margin", [0.0, 0.05, 0.15, 0.3])
def test_terminal_and_dashboard_list_the_same_queue(db_url, margin):
    """Both front ends list the same items, in the same order, with the same reasons."""
    from test_dashboard_app import build_demo_store

    from audit import dashboard
    from audit.review import review_queue
    from audit.store import open_store

    ids = build_demo_store(db_url)
    store = open_store(db_url)
    dashboard.clear_cache()
    try:
        for run_id, run_name in ((None, None), (ids["run-a"], "run-a"), (ids["run-b"], "run-b")):
            dash = dashboard.review_queue(store, run_id, margin=margin, limit=500)
            args = ["--margin", str(margin), "--limit", "500"] + (["--run", run_name] if run_name else [])
            term = _queue(db_url, *args)
            assert dash, (run_name, margin)
            assert [(d["response_id"], d["reasons"]) for d in dash] == [(t["response_id"], t["reasons"]) for t in term]
            lib = review_queue(store, run_name, margin=margin, limit=500)
            assert [it.response_id for it in lib] == [d["response_id"] for d in dash]
            assert all(abs(it.closeness - d["closeness"]) < 1e-12 for it, d in zip(lib, dash))
        assert any("classifiers disagree" in d["reasons"] for d in dashboard.review_queue(store, margin=margin))
    finally:
        dashboard.clear_cache()
        store.dispose()
