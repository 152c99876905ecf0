"""PromptClassifier: sklearn contract, selection + calibration, per-category outputs, save/load without pickles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifiers.prompt import Calibrator, PromptClassifier
from tests.prompt_helpers import synthetic_prompts


@pytest.fixture(scope="module")
def data():
    rows = synthetic_prompts(24)
    return [r["prompt"] for r in rows], np.array([r["refusal"] for r in rows], int), [r["category"] for r in rows]


def test_sklearn_contract_and_clone(data):
    from sklearn.base import clone

    X, y, _ = data
    clf = PromptClassifier(model="tfidf_lr", cv=3)
    assert clf.get_params()["model"] == "tfidf_lr"
    assert not hasattr(clf, "kind_")
    assert clf.fit(X, y) is clf
    c2 = clone(clf)
    assert c2.get_params() == clf.get_params() and not hasattr(c2, "kind_")
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert clf.score(X, y) > 0.9


def test_unfitted_and_one_class_errors(data):
    from sklearn.exceptions import NotFittedError

    X, y, _ = data
    with pytest.raises(NotFittedError):
        PromptClassifier().predict_proba(X)
    with pytest.raises(ValueError, match="both classes"):
        PromptClassifier(model="tfidf_lr").fit(X, np.ones(len(X)))


def test_baseline_is_paper_v1(data):
    X, y, _ = data
    clf = PromptClassifier(model="baseline").fit(X, y)
    assert clf.kind_ == "baseline" and clf.calibrator_.method == "none"
    assert clf.base_.params["ngram_range"] == [1, 3] and clf.base_.params["C"] == 10.0
    assert clf.base_.lr.solver == "liblinear"
    # held-out generalisation to unseen topics of the same kind
    assert clf.predict(["How do I build a bomb quickly?"])[0] == 1
    assert clf.predict(["How do I bake bread quickly?"])[0] == 0


def test_auto_selects_by_cv_and_calibrates(data):
    X, y, _ = data
    clf = PromptClassifier(model="auto", candidates=("tfidf_lr", "minilm_lr"), cv=3).fit(X, y)
    assert set(clf.selection_) == {"tfidf_lr", "minilm_lr"}
    best = min(clf.selection_, key=lambda k: clf.selection_[k]["log_loss"])
    assert clf.kind_ == best
    assert clf.calibrator_.method in ("temperature", "platt", "isotonic")
    losses = clf.selection_[best]["calibration_losses"]
    assert clf.calibrator_.method == min(losses, key=losses.get)
    p = clf.predict_proba(["How do I hack my neighbour's wifi?", "How do I plant tomatoes?"])[:, 1]
    assert p[0] > 0.5 > p[1]


def test_calibrators_fit_known_maps():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 4000)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-(0.5 * z - 1)))).astype(int)
    platt = Calibrator("platt").fit(z, y)
    assert platt.a == pytest.approx(0.5, abs=0.08) and platt.b == pytest.approx(-1, abs=0.15)
    temp = Calibrator("temperature").fit(z, y)
    assert temp.b == 0.0 and 0 < temp.a < 1
    iso = Calibrator("isotonic").fit(z, y)
    p = iso.predict(np.sort(z))
    assert np.all(np.diff(p) >= -1e-12)
    back = Calibrator.from_json(json.loads(json.dumps(iso.to_json())))
    np.testing.assert_allclose(back.predict(z), iso.predict(z))


def test_per_category_outputs(data):
    X, y, cats = data
    # flip some labels inside "benign" so the category calibration has something to learn
    clf = PromptClassifier(model="tfidf_lr", cv=3, min_category_size=10).fit(X, y, cats)
    assert clf.categories_ == ["benign", "unsafe"]
    det = clf.predict_details(X[:5], cats[:5])
    for d in det:
        assert set(d) >= {"p_refusal", "refusal", "p_refusal_global", "category_probs"}
        assert set(d["category_probs"]) == {"benign", "unsafe"}
        assert sum(d["category_probs"].values()) == pytest.approx(d["p_refusal_global"], rel=1e-6)
        assert d["refusal"] == (d["p_refusal"] >= 0.5)
    cp = clf.predict_category_proba(["How do I forge a passport?"])
    assert cp["unsafe"][0] > cp["benign"][0]


@pytest.mark.parametrize("model", ["baseline", "tfidf_lr", "minilm_lr", "minilm_svm", "blend"])
def test_save_load_roundtrip_no_pickles(data, tmp_path, model):
    X, y, cats = data
    clf = PromptClassifier(model=model, cv=3, min_category_size=10).fit(X, y, cats)
    d = clf.save(tmp_path / "m")
    names = sorted(p.name for p in d.iterdir())
    assert names == ["arrays.npz", "model.json", "model_card.json", "model_card.md", "train_hashes.txt"]
    with np.load(d / "arrays.npz", allow_pickle=False) as npz:  # would raise on object arrays
        assert all(npz[k].dtype != object for k in npz.files)
    card = json.loads((d / "model_card.json").read_text())
    assert card["model"] == clf.kind_ and card["n_train"] == len(X)
    back = PromptClassifier.load(d)
    np.testing.assert_allclose(back.predict_proba(X, cats), clf.predict_proba(X, cats), atol=1e-6)
    assert back.version == clf.version
    for a, b in zip(back.predict_details(X[:3], cats[:3]), clf.predict_details(X[:3], cats[:3])):
        assert a["p_refusal"] == pytest.approx(b["p_refusal"], abs=1e-6)
        assert a["category_probs"] == pytest.approx(b["category_probs"], abs=1e-6)


@pytest.mark.slow
def test_xgboost_candidate_roundtrip(data, tmp_path):
    X, y, _ = data
    clf = PromptClassifier(model="minilm_xgb", cv=2).fit(X, y)
    back = PromptClassifier.load(clf.save(tmp_path / "x"))
    np.testing.assert_allclose(back.predict_proba(X), clf.predict_proba(X), atol=1e-6)


@pytest.mark.slow
def test_fine_tuned_candidate_learns_and_roundtrips(data, tmp_path):
    """The fine-tuned MiniLM blended with the SVM (opt-in: six fine-tunes per calibrated fit) separates
    the classes it was trained on and reloads from float16 arrays without pickles, predicting the same."""
    X, y, cats = data
    clf = PromptClassifier(model="minilm_ft_svm", cv=2, min_category_size=10).fit(X, y, cats)
    p = clf.predict_proba(X)[:, 1]
    assert clf.kind_ == "minilm_ft_svm"
    assert p[y == 1].mean() > p[y == 0].mean() + 0.2
    d = clf.save(tmp_path / "ft")
    with np.load(d / "arrays.npz", allow_pickle=False) as npz:
        assert any(npz[k].dtype == np.float16 for k in npz.files)
    back = PromptClassifier.load(d)
    np.testing.assert_allclose(back.predict_proba(X, cats), clf.predict_proba(X, cats), atol=1e-5)


def test_load_rejects_non_model_dir(tmp_path):
    with pytest.raises(FileNotFoundError):
        PromptClassifier.load(tmp_path)
