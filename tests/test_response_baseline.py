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
