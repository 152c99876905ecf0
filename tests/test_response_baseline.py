"""The paper's baseline (TF-IDF 1–3-grams + LR C=10 liblinear) reproduces 90.62% on the 256-row test split."""

from __future__ import annotations

import json

import pytest

from classifiers.data import load_paper, paper_split
from classifiers.response import BaselineResponseClassifier, load_response_classifier


@pytest.fixture(scope="module")
def split():
    return paper_split(load_paper())


def test_paper_split_sizes(split):
    train, val, test = split
    assert len(test) == 256 and len(train) + len(val) + len(test) == 1706


def test_baseline_reproduces_paper_accuracy(split, tmp_path):
    train, _, test = split
    clf = BaselineResponseClassifier().fit([r["response"] for r in train], [r["refusal"] for r in train])
    acc = clf.score([r["response"] for r in test], [r["refusal"] for r in test])
    assert acc == pytest.approx(0.9062, abs=0.005)
    # saved without pickles and reloaded to identical predictions
    from classifiers.persist import save_response_classifier

    d = save_response_classifier(clf, tmp_path / "baseline")
    assert json.loads((d / "model.json").read_text())["class"] == "BaselineResponseClassifier"
    again = load_response_classifier(d)
    assert again.score([r["response"] for r in test], [r["refusal"] for r in test]) == pytest.approx(acc)
    det = again.predict_details([r["prompt"] for r in test[:20]], [r["response"] for r in test[:20]])
    assert {"refusal", "p_refusal", "kind", "refusal_start"} <= set(det[0])


def test_style_sets_are_consistent_training_data():
    """The other-model-style sets: every row has a response, a model style and a set; a labelled kind
    agrees with the binary label (partial refusals count as refusals); the labelled refusing sentence
    is in the response."""
    from collections import Counter

    from classifiers.data import load_style_sets

    rows = load_style_sets()
    assert len(rows) == 3519
    assert len(Counter(r["set"] for r in rows)) == 30 and len({r["model"] for r in rows}) > 40
    for r in rows:
        assert r["response"].strip() and r["source"] == "styles"
        if r["kind"] is not None:
            assert r["kind"] in ("full_compliance", "partial_refusal", "full_refusal")
            assert r["refusal"] == (r["kind"] != "full_compliance"), r
        if r["refusal_sentence"]:
            assert r["refusal_sentence"][:40] in r["response"] or r["refusal_sentence"][:40].replace("'", "’") in r["response"], r
