"""Fine-tuned MiniLM: it learns, it saves without pickles and reloads to the same logits, and it
serves as the response classifier's second stage (fusion fitted on rows it never saw)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifiers.finetune import FineTunedMiniLM, fusion_split, text_fingerprints, unseen_rows
from classifiers.response import ResponseClassifier, load_response_classifier

REFUSALS = [
    "I'm sorry, but I can't help with that request.",
    "I cannot assist with creating anything that could harm people.",
    "As an AI, I won't provide instructions for that.",
    "Sorry, I am unable to comply with this request.",
    "I can't do that. It would be against my guidelines.",
    "Unfortunately I must decline to write this.",
]
ANSWERS = [
    "Sure! Mash three bananas, mix with flour and sugar, and bake for an hour.",
    "The capital of France is Paris, on the Seine.",
    "Here is a short poem about the sea: waves roll in and out.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "To reverse a list in Python, use my_list[::-1] or my_list.reverse().",
    "A haiku has three lines of five, seven and five syllables.",
]


def _data(n_rep: int = 4):
    texts = (REFUSALS + ANSWERS) * n_rep
    y = ([1] * len(REFUSALS) + [0] * len(ANSWERS)) * n_rep
    return texts, np.array(y)


def test_fusion_split_is_stratified_and_disjoint():
    y = np.array([0] * 80 + [1] * 20)
    fit_idx, held = fusion_split(y, 0.2, random_state=0)
    assert len(held) == 20 and not set(fit_idx) & set(held)
    assert y[held].sum() == 4
    assert np.array_equal(held, fusion_split(y, 0.2, random_state=0)[1])


def test_finetuned_minilm_learns_and_round_trips(tmp_path):
    texts, y = _data()
    m = FineTunedMiniLM(max_length=32, train_layers=2, epochs=3, batch_size=8, learning_rate=1e-4).fit(texts, y)
    p = m.predict_proba(REFUSALS + ANSWERS)[:, 1]
    assert p[: len(REFUSALS)].min() > p[len(REFUSALS) :].max()
    m.save(tmp_path)
    meta = json.loads((tmp_path / "finetuned.json").read_text())
    assert meta["params"]["train_layers"] == 2
    assert not list(tmp_path.glob("*.pkl")) and (tmp_path / "finetuned.safetensors").exists()
    again = FineTunedMiniLM.load(tmp_path)
    assert again.trained_on_ == sorted(set(text_fingerprints(texts))) == meta["trained_on_sha1"]
    assert unseen_rows(again, ["The capital of France is Paris, on the Seine.", "A new text."]).tolist() == [1]
    # tensors are stored as float16: logits agree to rounding
    np.testing.assert_allclose(again.decision_function(REFUSALS + ANSWERS), m.decision_function(REFUSALS + ANSWERS), atol=0.05)


def test_load_rejects_mismatched_tensors(tmp_path):
    texts, y = _data(1)
    FineTunedMiniLM(max_length=16, train_layers=1, epochs=1).fit(texts, y).save(tmp_path)
    meta = json.loads((tmp_path / "finetuned.json").read_text())
    meta["params"]["train_layers"] = 2
    (tmp_path / "finetuned.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="finetuned.safetensors"):
        FineTunedMiniLM.load(tmp_path)


def test_response_classifier_with_finetuned_second_stage(tmp_path):
    texts, y = _data(5)
    X = [("a question", t) for t in texts]
    clf = ResponseClassifier(
        encoder="finetuned", finetune_epochs=2, finetune_max_length=32, min_df=1, cascade=(0.0, 1.0), fusion_fraction=0.25
    )
    clf.fit(X, y)
    assert clf.full_ is None and len(clf.fusion_) == 3
    assert clf.fusion_[1] > 0  # the fine-tuned logit points the right way
    details = clf.predict_details(["q"] * 2, ["I'm sorry, but I can't help with that.", "Sure, Paris is the capital of France."])
    assert [d["refusal"] for d in details] == [True, False]
    clf.save(tmp_path)
    again = load_response_classifier(tmp_path)
    assert again.fusion_ == pytest.approx(clf.fusion_, abs=1e-6)
    probe = [("q", t) for t in REFUSALS[:2] + ANSWERS[:2]]
    np.testing.assert_allclose(again.predict_proba(probe), clf.predict_proba(probe), atol=0.02)


def test_finetuned_encoder_rejects_unknown_encoder():
    with pytest.raises(ValueError, match="encoder"):
        ResponseClassifier(encoder="bert").fit([("q", "a"), ("q", "b")], [0, 1])


class _RecordingEncoder:
    """A stand-in for a reused encoder: a keyword logit, its training fingerprints, and a log of what it scored."""

    def __init__(self, seen_texts):
        self.trained_on_ = sorted(set(text_fingerprints(seen_texts)))
        self.scored: list[str] = []

    def decision_function(self, texts):
        self.scored.extend(texts)
        return np.array([3.0 if ("sorry" in t.lower() or "can't" in t.lower() or "cannot" in t.lower()) else -3.0 for t in texts])


def test_reused_encoder_fusion_is_fitted_only_on_rows_it_never_saw():
    seen = [f"{t} (seen {i})" for i, t in enumerate((REFUSALS + ANSWERS) * 5)]
    unseen = [f"{t} (new {i})" for i, t in enumerate((REFUSALS + ANSWERS) * 5)]
    texts = seen + unseen
    y = np.array(([1] * 6 + [0] * 6) * 10)
    enc = _RecordingEncoder(seen)
    clf = ResponseClassifier(encoder="finetuned", min_df=1).fit([("q", t) for t in texts], y, finetuned=enc)
    assert sorted(enc.scored) == sorted(unseen)
    assert clf.fusion_[1] > 0
    with pytest.raises(ValueError, match="never saw"):
        ResponseClassifier(encoder="finetuned", min_df=1).fit([("q", t) for t in seen], y[: len(seen)], finetuned=_RecordingEncoder(seen))
    with pytest.raises(ValueError, match="finetuned="):
        ResponseClassifier(encoder="finetuned", min_df=1).fit([("q", t) for t in texts], y, fusion_rows=[0, 1])
