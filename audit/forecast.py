"""Pre-query forecasts: the expected refusal rate of a prompt set per category, before any query.

The prompt classifier gives each prompt a calibrated P(refusal) (within its category when the model
knows the category). The expected rate of a category is the mean of these probabilities; its 95%
interval is the normal interval of a Poisson-binomial count, ``mean ± z·sqrt(Σ p(1−p))/n`` — where the
observed rate should fall if the model is calibrated for the target. (It does not include the
classifier's own error; the cross-fitted forecast of a run shows how large that is.)

Forecasts are stored as :class:`audit.store.PromptPrediction` rows (newest wins).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from sqlalchemy import select

from audit.prompts import InputError, read_jsonl_objects
from audit.rates import ALL
from audit.store import Prompt, PromptPrediction, PromptSet, Store

MODEL_NAME = "prompt-classifier"
CROSSFIT_MODEL_NAME = "prompt-classifier-crossfit"
NONE = "(none)"


class ForecastError(ValueError):
    pass


def expected_rate(p: np.ndarray, confidence: float = 0.95) -> dict:
    """``n, rate, sd, ci_low, ci_high`` of the refusal rate expected from probabilities ``p``."""
    from scipy.stats import norm

    p = np.asarray(p, dtype=float)
    n = len(p)
    if n == 0:
        return {"n": 0, "rate": math.nan, "sd": math.nan, "ci_low": 0.0, "ci_high": 1.0}
    rate = float(p.mean())
    sd = float(math.sqrt(float(np.sum(p * (1 - p)))) / n)
    z = float(norm.ppf(0.5 + confidence / 2))
    return {"n": n, "rate": rate, "sd": sd, "ci_low": max(0.0, rate - z * sd), "ci_high": min(1.0, rate + z * sd)}


def _rows_by_category(cats: list[str | None], p: np.ndarray, confidence: float) -> list[dict]:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cats):
        groups[c or NONE].append(i)
    rows = [{"category": c, **expected_rate(p[idx], confidence)} for c, idx in sorted(groups.items())]
    rows.append({"category": ALL, **expected_rate(p, confidence)})
    return rows


def set_prompts(session, set_name: str) -> list[Prompt]:
    pset = session.scalar(select(PromptSet).where(PromptSet.name == set_name))
    if pset is None:
        raise ForecastError(f"no prompt set named {set_name!r}")
    return list(session.scalars(select(Prompt).where(Prompt.set_id == pset.id).order_by(Prompt.id)))


def predict_set(store: Store, set_name: str, model_dir: str | Path, *, store_predictions: bool = True):
    """``(prompt_ids, categories, details)`` of every prompt of the set; stores PromptPrediction rows."""
    from classifiers.prompt import PromptClassifier

    clf = PromptClassifier.load(model_dir)
    with store.session() as session:
        prompts = [(p.id, p.text, p.category) for p in set_prompts(session, set_name)]
    if not prompts:
        raise ForecastError(f"prompt set {set_name!r} is empty")
    ids, texts, cats = zip(*prompts)
    details = clf.predict_details(list(texts), list(cats))
    if store_predictions:
        version = clf.version
        with store.session() as session:
            session.add_all(
                PromptPrediction(
                    prompt_id=pid, model=MODEL_NAME, model_version=version, p_refusal=d["p_refusal"],
                    category_probs=d.get("category_probs"),
                )
                for pid, d in zip(ids, details)
            )
    return list(ids), list(cats), details


def forecast(
    store: Store, set_name: str, model_dir: str | Path, *, store_predictions: bool = True, confidence: float = 0.95
) -> list[dict]:
    """Expected refusal rate per category of ``set_name`` (``(all)`` last), with a confidence interval.

    Each row: ``category, n, rate, sd, ci_low, ci_high``; also stores one PromptPrediction per prompt.
    """
    _, cats, details = predict_set(store, set_name, model_dir, store_predictions=store_predictions)
    p = np.array([d["p_refusal"] for d in details])
    return _rows_by_category(cats, p, confidence)


def crossfit_forecast(
    store: Store,
    run_name: str,
    *,
    folds: int = 5,
    model: str = "minilm_lr",
    store_predictions: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """Honest forecast of a labelled run: each prompt is predicted by a classifier trained on the other folds.

    Rows: ``category, n, rate, sd, ci_low, ci_high, observed_rate``. Stored as PromptPrediction rows
    named ``prompt-classifier-crossfit``.
    """
    from sklearn.model_selection import StratifiedKFold

    from audit.bootstrap import BootstrapError, run_training_rows
    from classifiers.prompt import PromptClassifier

    rows = run_training_rows(store, run_name)
    y = np.array([int(r["refusal"]) for r in rows])
    if len(rows) < 2 * folds or y.min() == y.max() or min(y.sum(), len(y) - y.sum()) < folds:
        raise BootstrapError(f"run {run_name!r}: too few labelled prompts of each class for {folds}-fold cross-fitting")
    texts = [r["prompt"] for r in rows]
    cats = [r["category"] for r in rows]
    has_cats = any(cats)
    p = np.zeros(len(rows))
    for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, y):
        clf = PromptClassifier(model=model, cv=3).fit(
            [texts[i] for i in tr], y[tr], [cats[i] for i in tr] if has_cats else None
        )
        p[te] = clf.predict_proba([texts[i] for i in te], [cats[i] for i in te] if has_cats else None)[:, 1]
    if store_predictions:
        with store.session() as session:
            session.add_all(
                PromptPrediction(prompt_id=r["prompt_id"], model=CROSSFIT_MODEL_NAME, model_version=f"{model}/{folds}-fold",
                                 p_refusal=float(pi))
                for r, pi in zip(rows, p)
            )
    out = _rows_by_category(cats, p, confidence)
    obs: dict[str, list[int]] = defaultdict(list)
    for c, yi in zip(cats, y):
        obs[c or NONE].append(yi)
        obs[ALL].append(yi)
    for row in out:
        row["observed_rate"] = float(np.mean(obs[row["category"]]))
    return out


def classify_prompt_file(model_dir: str | Path, in_path: str | Path, out_path: str | Path) -> int:
    """Classify a JSONL file of prompts: each output line keeps every input field and adds
    ``p_refusal``, ``refusal``, ``p_refusal_global`` and (for a model trained with categories)
    ``category_probs``. Bad input raises :class:`InputError` (file:line:field); nothing is written."""
    from classifiers.prompt import PromptClassifier

    in_path = Path(in_path)
    if in_path.suffix.lower() != ".jsonl":
        raise InputError(in_path, None, None, "classify prompts reads JSONL (one JSON object per line)")
    items: list[dict] = []
    for n, obj in read_jsonl_objects(in_path):
        if not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise InputError(in_path, n, "prompt", "missing or empty; a non-empty string is required")
        cat = obj.get("category")
        if cat is not None and not isinstance(cat, str):
            raise InputError(in_path, n, "category", f"expected a string, got {type(cat).__name__}")
        items.append(obj)
    clf = PromptClassifier.load(model_dir)
    details = clf.predict_details([o["prompt"] for o in items], [o.get("category") for o in items]) if items else []
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for obj, d in zip(items, details):
            fh.write(json.dumps({**obj, **d}, ensure_ascii=False) + "\n")
    tmp.replace(out_path)
    return len(items)
