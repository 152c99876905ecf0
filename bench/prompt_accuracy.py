"""Prompt-classifier accuracy and calibration on the paper's 985 hand-labelled Quora questions.

Protocols (the paper's 10k bootstrap file is not available):

(a) stratified 10-fold cross-validation within the 985 Quora rows (every fold refits the whole
    ``PromptClassifier`` — candidate selection and calibration use the training folds only);
(b) train on every non-Quora row of the paper data (nyp + political figures, 721 rows), test on the 985;
(c) as (b) plus the 2,500 silver-labelled prompts of five open models (refusal-direction completions).

For each: accuracy at 0.5, ECE (15 uniform bins), Brier score, log loss, and a reliability diagram PNG
(``--out``). The paper's v1 baseline (TF-IDF 1–3-grams + LR, C=10) is measured the same way.
Run: ``.venv/bin/python -m bench.prompt_accuracy [--out bench-out/prompt]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _metrics(y, p) -> dict:
    from classifiers.calibration import brier_score, expected_calibration_error, negative_log_likelihood

    return {
        "accuracy": float(np.mean((p >= 0.5) == y)),
        "ece": float(expected_calibration_error(y, p, n_bins=15)),
        "brier": float(brier_score(y, p)),
        "log_loss": float(negative_log_likelihood(y, p)),
        "n": int(len(y)),
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench-out/prompt")
    ap.add_argument("--folds", type=int, default=10)
    ap.add_argument("--protocols", default="a,b,c")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)

    from sklearn.model_selection import StratifiedKFold

    from classifiers.calibration import plot_reliability_diagram
    from classifiers.data import load_paper, load_silver
    from classifiers.prompt import PromptClassifier, embed

    rows = load_paper()
    quora = [r for r in rows if r["source"] == "quora"]
    other = [r for r in rows if r["source"] != "quora"]
    Xq = [r["prompt"] for r in quora]
    yq = np.array([int(r["refusal"]) for r in quora])
    t0 = time.time()
    embed([r["prompt"] for r in rows])
    results: dict = {"embed_seconds": time.time() - t0, "paper": {"bert": 0.7594, "lr": 0.7391}}
    protocols = a.protocols.split(",")

    if "a" in protocols:
        for name, kw in (("baseline", {"model": "baseline"}), ("auto", {"model": "auto"})):
            t = time.time()
            p = np.zeros(len(yq))
            chosen = []
            for tr, te in StratifiedKFold(a.folds, shuffle=True, random_state=0).split(Xq, yq):
                clf = PromptClassifier(**kw).fit([Xq[i] for i in tr], yq[tr])
                p[te] = clf.predict_proba([Xq[i] for i in te])[:, 1]
                chosen.append(f"{clf.kind_}/{clf.calibrator_.method}")
            m = _metrics(yq, p)
            m.update(seconds=time.time() - t, chosen=chosen)
            results[f"a_cv10_{name}"] = m
            plot_reliability_diagram(yq, p, out / f"reliability_a_{name}.png", title=f"Quora 10-fold CV, {name}")
            print(name, "(a)", json.dumps({k: v for k, v in m.items() if k != "chosen"}), flush=True)

    train_sets = {}
    if "b" in protocols:
        train_sets["b_nonquora"] = other
    if "c" in protocols:
        silver = load_silver()
        train_sets["c_nonquora_silver"] = other + [{"prompt": r["prompt"], "refusal": r["refusal"]} for r in silver]
    for key, train in train_sets.items():
        for name, kw in (("baseline", {"model": "baseline"}), ("auto", {"model": "auto"})):
            t = time.time()
            clf = PromptClassifier(**kw).fit([r["prompt"] for r in train], [r["refusal"] for r in train])
            p = clf.predict_proba(Xq)[:, 1]
            m = _metrics(yq, p)
            m.update(seconds=time.time() - t, chosen=f"{clf.kind_}/{clf.calibrator_.method}", n_train=len(train))
            results[f"{key}_{name}"] = m
            plot_reliability_diagram(yq, p, out / f"reliability_{key}_{name}.png", title=f"Quora, {key}, {name}")
            print(name, key, json.dumps(m), flush=True)
    (out / "prompt_accuracy.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
