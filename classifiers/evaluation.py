"""Evaluation of refusal predictions: accuracy, F1 per class, ECE and confusion matrix, per group."""

from __future__ import annotations

import re
from collections import defaultdict

import numpy as np

from classifiers.calibration import brier_score, expected_calibration_error


def binary_metrics(y_true, y_pred, p=None) -> dict:
    """``n, accuracy, f1_refusal, f1_compliance, ece, brier, confusion`` (rows true, cols predicted,
    order compliance, refusal)."""
    y = np.asarray(y_true, dtype=int)
    yp = np.asarray(y_pred, dtype=int)
    n = int(len(y))
    tp = int(np.sum((y == 1) & (yp == 1)))
    tn = int(np.sum((y == 0) & (yp == 0)))
    fp = int(np.sum((y == 0) & (yp == 1)))
    fn = int(np.sum((y == 1) & (yp == 0)))

    def f1(tp_, fp_, fn_):
        d = 2 * tp_ + fp_ + fn_
        return float(2 * tp_ / d) if d else float("nan")

    out = {
        "n": n,
        "accuracy": float((tp + tn) / n) if n else float("nan"),
        "f1_refusal": f1(tp, fp, fn),
        "f1_compliance": f1(tn, fn, fp),
        "confusion": [[tn, fp], [fn, tp]],
    }
    if p is not None and n:
        p = np.asarray(p, dtype=float)
        out["ece"] = expected_calibration_error(y, p, 15)
        out["brier"] = brier_score(y, p)
    return out


def kind_confusion(true_kinds, pred_kinds, kinds=("full_compliance", "partial_refusal", "full_refusal")) -> list[list[int]]:
    idx = {k: i for i, k in enumerate(kinds)}
    m = [[0] * len(kinds) for _ in kinds]
    for t, pr in zip(true_kinds, pred_kinds):
        if t in idx and pr in idx:
            m[idx[t]][idx[pr]] += 1
    return m


def evaluate(y_true, y_pred, p=None, groups=None, true_kinds=None, pred_kinds=None) -> dict:
    """Metrics overall and, if ``groups`` is given, per group: ``{"overall": {...}, "groups": {g: {...}}}``."""
    res: dict = {"overall": binary_metrics(y_true, y_pred, p)}
    if true_kinds is not None and pred_kinds is not None:
        tk = [t for t in true_kinds]
        known = [i for i, t in enumerate(tk) if t]
        if known:
            res["overall"]["kind_accuracy"] = float(np.mean([tk[i] == pred_kinds[i] for i in known]))
            res["overall"]["kind_confusion"] = kind_confusion([tk[i] for i in known], [pred_kinds[i] for i in known])
    if groups is not None:
        by: dict = defaultdict(list)
        for i, g in enumerate(groups):
            by[str(g)].append(i)
        y = np.asarray(y_true)
        yp = np.asarray(y_pred)
        pp = None if p is None else np.asarray(p, dtype=float)
        res["groups"] = {
            g: binary_metrics(y[ix], yp[ix], None if pp is None else pp[ix]) for g, ix in sorted(by.items())
        }
    return res


_CONNECTIVE = re.compile(r"(?:however|but|though|unfortunately|no|sorry|that said)[,.!:]?", re.IGNORECASE)


def starts_at_labelled_sentence(start: int, row: dict) -> bool:
    """``start`` is within 3 characters of the labelled refusing sentence, or only a connective
    ("However, ", "No. ") lies between them."""
    label = row["response"].index(row["refusal_sentence"])
    if abs(start - label) <= 3:
        return True
    return start < label and _CONNECTIVE.fullmatch(row["response"][start:label].strip()) is not None
