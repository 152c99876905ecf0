"""Fewer queries for the same certainty: choose which prompts to query, then estimate each category's
refusal rate by prediction-powered inference (PPI; Angelopoulos et al. 2023, with the power tuning
of PPI++ and the cross-prediction of Zrnic & Candès 2024).

Design. :func:`choose_prompts` picks ``budget`` prompts of a set:

* ``random`` — simple random sampling;
* ``stratified`` — proportional allocation over categories, random within each;
* ``ppi`` — stratified, with at least ``max(5, budget / (10K))`` prompts per category (so every
  category gets an estimate) and the rest allocated in proportion to ``N_c · s_c`` (Neyman allocation;
  ``s_c`` is the residual sd the prompt classifier expects, ``sqrt(mean p(1-p))``, 0.5 without a
  model); inside each category the sample is spread proportionally over k-means clusters of the
  MiniLM embeddings (prompts alike in meaning tend to be refused alike, so this removes variance);
* ``uncertainty`` — probability-proportional-to-size sampling with size ``sqrt(p(1-p))`` (floored,
  so every prompt can be drawn): uncertain prompts are queried more often and weighted by 1/π.

Estimate. Predictions ``f`` for every prompt of the set come from a classifier *cross-fitted* on the
queried prompts (K folds: a queried prompt is predicted only by models that never saw it; the other
prompts get the mean of the K models). The features are the MiniLM embedding, the category and — when
a pre-trained prompt model is given — its logit. (If that model was trained on prompts of this set, its
logit is dropped: it would predict prompts it was trained on.) For a category with ``N`` prompts of
which ``n`` were queried (uniformly within the category):

    θ̂ = λ·mean_N(f) + mean_n(Y − λ f),   Var ≈ (1 − n/N) · var_n(Y − λ f) / n,

with ``λ = cov(Y, f) / var(f)`` clipped to [0, 1] (λ = 0 is the classical estimate, so PPI++ is never
much worse than it). Under ``uncertainty`` sampling the correction is inverse-probability weighted.
The estimand is the refusal rate of the whole prompt set (a finite population: hence ``1 − n/N``).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
from sqlalchemy import select

from audit.rates import ALL, effective_labels, run_by_name
from audit.store import Prompt, Response, Store

STRATEGIES = ("random", "stratified", "uncertainty", "ppi")
NONE = "(none)"
_MIN_WEIGHT = 0.15


class PPIError(ValueError):
    pass


# ------------------------------------------------------------------------------------------ design


def _largest_remainder(quota: np.ndarray, total: int, cap: np.ndarray) -> np.ndarray:
    """Integers ≤ cap summing to ``min(total, cap.sum())``, close to ``quota``."""
    total = int(min(total, cap.sum()))
    n = np.minimum(np.floor(quota).astype(int), cap)
    while n.sum() < total:
        room = n < cap
        frac = np.where(room, quota - n, -np.inf)
        n[int(np.argmax(frac))] += 1
    while n.sum() > total:
        n[int(np.argmax(n))] -= 1
    return n


def allocate(sizes: dict[str, int], budget: int, sds: dict[str, float] | None = None, floor: bool = True) -> dict[str, int]:
    """Sample size per category: at least ``budget/(2K)`` each (``floor``), the rest ∝ N_c·s_c."""
    cats = sorted(sizes)
    N = np.array([sizes[c] for c in cats])
    s = np.array([(sds or {}).get(c, 0.5) for c in cats], dtype=float)
    budget = int(min(budget, N.sum()))
    base = np.zeros(len(cats), dtype=int)
    if floor and len(cats) > 1:
        base = np.minimum(N, max(5, budget // (10 * len(cats))))
        if base.sum() > budget:
            base = _largest_remainder(budget * N / N.sum(), budget, N)
    rest = budget - int(base.sum())
    w = N * np.maximum(s, 1e-3)
    extra = _largest_remainder(rest * w / w.sum(), rest, N - base)
    # the capped categories' leftover goes to the others
    n = base + extra
    while n.sum() < budget:
        room = n < N
        n[np.flatnonzero(room)[np.argmax(w[room])]] += 1
    return {c: int(k) for c, k in zip(cats, n)}


def inclusion_probabilities(p: np.ndarray, budget: int) -> np.ndarray:
    """π_i ∝ max(sqrt(p(1−p)), 0.15) with Σπ = budget and π ≤ 1 (capped iteratively)."""
    w = np.maximum(np.sqrt(np.clip(p, 0, 1) * (1 - np.clip(p, 0, 1))), _MIN_WEIGHT)
    n = min(int(budget), len(w))
    pi = np.zeros(len(w))
    fixed = np.zeros(len(w), dtype=bool)
    for _ in range(len(w) + 1):
        free = ~fixed
        k = n - fixed.sum()
        pi[free] = k * w[free] / w[free].sum() if k > 0 else 0
        pi[fixed] = 1.0
        over = free & (pi > 1)
        if not over.any():
            break
        fixed |= over
    return np.clip(pi, 0, 1)


def _systematic(pi: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Systematic πps sampling in a random order: a fixed-size sample with inclusion probabilities π."""
    order = rng.permutation(len(pi))
    cum = np.cumsum(pi[order])
    u = rng.uniform(0, 1)
    points = u + np.arange(int(round(cum[-1])))
    return np.sort(order[np.searchsorted(cum, points, side="right")])


def _set_prompts(store: Store, set_name: str) -> list[tuple[int, str, str]]:
    from audit.forecast import set_prompts

    with store.session() as session:
        return [(p.id, p.text, p.category or NONE) for p in set_prompts(session, set_name)]


def _predict(model_dir, texts: list[str], cats: list[str]) -> np.ndarray:
    from classifiers.prompt import PromptClassifier

    clf = PromptClassifier.load(model_dir)
    return clf.predict_proba(texts, [None if c == NONE else c for c in cats])[:, 1]


def clusters(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """k-means cluster of each row (the strata of the ``ppi`` design inside each category)."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(X)))
    if k == 1:
        return np.zeros(len(X), dtype=int)
    return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(np.asarray(X, dtype=np.float64))


def select_indices(
    cats: list[str],
    budget: int,
    strategy: str,
    p: np.ndarray | None = None,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> np.ndarray:
    """Indices (into ``cats``) of the prompts to query; see the module docstring.

    ``strata`` (``ppi`` only): a sub-stratum per prompt (e.g. :func:`clusters` of the embeddings);
    each category's sample is then spread over its sub-strata in proportion to their sizes, which
    keeps every prompt of a category equally likely to be drawn.
    """
    if strategy not in STRATEGIES:
        raise PPIError(f"unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    if budget < 1:
        raise PPIError("budget must be at least 1")
    N = len(cats)
    rng = np.random.default_rng(seed)
    if budget >= N:
        return np.arange(N)
    if strategy == "random":
        return np.sort(rng.choice(N, size=budget, replace=False))
    if strategy == "uncertainty":
        if p is None:
            raise PPIError("the uncertainty strategy needs a prompt model (--model DIR)")
        return _systematic(inclusion_probabilities(p, budget), rng)
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(cats):
        by_cat[c].append(i)
    sizes = {c: len(v) for c, v in by_cat.items()}
    if strategy == "stratified":
        cs = sorted(sizes)
        N_ = np.array([sizes[c] for c in cs])
        n = _largest_remainder(budget * N_ / N_.sum(), budget, N_)
        alloc = dict(zip(cs, n))
    else:  # ppi
        sds = None
        if p is not None:
            sds = {c: float(math.sqrt(np.mean(p[idx] * (1 - p[idx])))) for c, idx in by_cat.items()}
        alloc = allocate(sizes, budget, sds)
    chosen = []
    for c in sorted(by_cat):
        idx = np.array(by_cat[c])
        if not alloc[c]:
            continue
        if strategy == "ppi" and strata is not None:
            sub = np.asarray(strata)[idx]
            hs = np.unique(sub)
            sizes_h = np.array([np.sum(sub == h) for h in hs])
            n_h = _largest_remainder(alloc[c] * sizes_h / sizes_h.sum(), alloc[c], sizes_h)
            for h, k in zip(hs, n_h):
                if k:
                    chosen.extend(rng.choice(idx[sub == h], size=int(k), replace=False).tolist())
        else:
            chosen.extend(rng.choice(idx, size=alloc[c], replace=False).tolist())
    return np.sort(np.array(chosen, dtype=int))


def n_strata(budget: int) -> int:
    """Number of embedding clusters for a budget: about 40 queries per cluster, 2 to 12."""
    return int(np.clip(budget // 40, 2, 12))


def choose_prompts(
    store: Store, set_name: str, budget: int, strategy: str, model_dir: str | Path | None = None, seed: int = 0
) -> list[int]:
    """Prompt ids of ``set_name`` to query with ``budget`` queries (strategy random|stratified|uncertainty|ppi)."""
    prompts = _set_prompts(store, set_name)
    if not prompts:
        raise PPIError(f"prompt set {set_name!r} is empty")
    ids, texts, cats = zip(*prompts)
    p = _predict(model_dir, list(texts), list(cats)) if model_dir is not None else None
    strata = None
    if strategy == "ppi":
        from classifiers.prompt import embed

        strata = clusters(embed(list(texts)), n_strata(budget))
    idx = select_indices(list(cats), budget, strategy, p, seed, strata)
    return [int(ids[i]) for i in idx]


# --------------------------------------------------------------------------------------- estimator


def crossfit_predictions(
    X: np.ndarray, labelled: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, C: float = 3.0
) -> np.ndarray:
    """Cross-prediction: P(refusal) for every row of ``X`` from LR models fitted on the labelled rows.

    A labelled row gets the prediction of the model of the fold that left it out; an unlabelled row
    the mean of the K models. ``labelled`` are row indices; ``y`` their labels (same order).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold, StratifiedKFold

    labelled = np.asarray(labelled, dtype=int)
    y = np.asarray(y, dtype=int)
    f = np.full(len(X), float(y.mean()) if len(y) else 0.5)
    if len(y) < 4 or y.min() == y.max():
        return f  # nothing to learn: a constant prediction (PPI reduces to the classical estimate)
    n_min = int(min(y.sum(), len(y) - y.sum()))
    k = max(2, min(folds, len(y) // 2))
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if n_min >= k else KFold(k, shuffle=True, random_state=seed)
    unl = np.setdiff1d(np.arange(len(X)), labelled)
    acc = np.zeros(len(unl))
    for tr, te in splitter.split(labelled, y):
        if y[tr].min() == y[tr].max():
            f[labelled[te]] = float(y[tr].mean())
            acc += float(y[tr].mean())
            continue
        lr = LogisticRegression(C=C, max_iter=2000).fit(X[labelled[tr]], y[tr])
        f[labelled[te]] = lr.predict_proba(X[labelled[te]])[:, 1]
        if len(unl):
            acc += lr.predict_proba(X[unl])[:, 1]
    if len(unl):
        f[unl] = acc / k
    return f


def ppi_mean(
    y_lab: np.ndarray,
    f_lab: np.ndarray,
    f_all: np.ndarray,
    *,
    pi: np.ndarray | None = None,
    lam: float | None = None,
    fpc: bool = True,
    confidence: float = 0.95,
) -> dict:
    """PPI++ estimate of the mean of Y over a finite population with predictions ``f_all``.

    ``y_lab``/``f_lab``: labels and (cross-fitted) predictions of the queried rows; ``pi``: their
    inclusion probabilities (None = uniform). ``lam`` None = power-tuned. Returns ``rate, se,
    ci_low, ci_high, n, N, lam, classical``.
    """
    from scipy.stats import norm

    y = np.asarray(y_lab, dtype=float)
    f = np.asarray(f_lab, dtype=float)
    fa = np.asarray(f_all, dtype=float)
    n, N = len(y), len(fa)
    z = float(norm.ppf(0.5 + confidence / 2))
    if n == 0:
        return {"rate": math.nan, "se": math.nan, "ci_low": 0.0, "ci_high": 1.0, "n": 0, "N": N, "lam": 0.0,
                "classical": math.nan}
    if lam is None:
        vf = float(np.var(f, ddof=1)) if n > 1 else 0.0
        lam = float(np.clip(np.cov(y, f, ddof=1)[0, 1] / vf, 0.0, 1.0)) if vf > 1e-12 and n > 2 else 0.0
    r = y - lam * f
    if pi is None:
        rate = lam * float(fa.mean()) + float(r.mean())
        var = (float(np.var(r, ddof=1)) / n if n > 1 else math.inf) * ((1 - n / N) if fpc else 1.0)
    else:
        pi = np.asarray(pi, dtype=float)
        rate = (lam * float(fa.sum()) + float(np.sum(r / pi))) / N
        var = float(np.sum((1 - pi) * (r / pi) ** 2)) / N**2 if fpc else float(np.sum((r / pi) ** 2)) / N**2
        if n < 2:
            var = math.inf
    se = math.sqrt(max(var, 0.0))
    return {
        "rate": float(np.clip(rate, 0, 1)), "se": se, "ci_low": float(max(0.0, rate - z * se)),
        "ci_high": float(min(1.0, rate + z * se)), "n": n, "N": N, "lam": lam, "classical": float(y.mean()),
    }


def classical_mean(y_lab: np.ndarray, N: int, *, fpc: bool = True, confidence: float = 0.95) -> dict:
    """The classical (labels only) estimate under simple random sampling, Wald interval with fpc."""
    return ppi_mean(y_lab, np.zeros(len(y_lab)), np.zeros(N), lam=0.0, fpc=fpc, confidence=confidence)


def _features(texts: list[str], cats: list[str], prior_logit: np.ndarray | None) -> np.ndarray:
    from classifiers.prompt import embed

    E = embed(texts)
    names = sorted(set(cats))
    onehot = np.array([[c == n for n in names] for c in cats], dtype=float) if len(names) > 1 else np.zeros((len(cats), 0))
    parts = [E, onehot]
    if prior_logit is not None:
        parts.append(np.asarray(prior_logit, dtype=float)[:, None] / 4.0)
    return np.hstack(parts)


def estimate_by_category(
    cats: list[str],
    labelled: np.ndarray,
    y: np.ndarray,
    f: np.ndarray,
    *,
    pi: np.ndarray | None = None,
    confidence: float = 0.95,
) -> list[dict]:
    """Per-category PPI rows (``(all)`` last: the N-weighted combination of the categories)."""
    from scipy.stats import norm

    cats_arr = np.asarray(cats, dtype=object)
    labelled = np.asarray(labelled, dtype=int)
    y = np.asarray(y, dtype=float)
    pos = {int(i): j for j, i in enumerate(labelled)}
    # one λ for all categories, from within-category deviations (stable when a category has few labels)
    lab_c = cats_arr[labelled]
    yc = y.copy()
    fc = f[labelled].copy()
    for c in set(lab_c):
        m = lab_c == c
        yc[m] -= yc[m].mean()
        fc[m] -= fc[m].mean()
    lam = float(np.clip(np.dot(yc, fc) / np.dot(fc, fc), 0, 1)) if np.dot(fc, fc) > 1e-12 and len(y) > 2 else 0.0
    rows = []
    N_total = len(cats)
    tot_rate = tot_var = tot_cls = 0.0
    tot_n = 0
    for c in sorted(set(cats)):
        idx = np.flatnonzero(cats_arr == c)
        lab = [i for i in idx if int(i) in pos]
        j = [pos[int(i)] for i in lab]
        est = ppi_mean(
            y[j], f[lab], f[idx], pi=None if pi is None else pi[j], lam=lam, confidence=confidence
        ) if lab else ppi_mean(np.array([]), np.array([]), f[idx], confidence=confidence)
        rows.append({"category": c, **est})
        w = len(idx) / N_total
        if lab:
            tot_rate += w * est["rate"]
            tot_var += (w * est["se"]) ** 2
            tot_cls += w * est["classical"]
            tot_n += len(lab)
        else:
            tot_var = math.inf
    z = float(norm.ppf(0.5 + confidence / 2))
    se = math.sqrt(tot_var) if math.isfinite(tot_var) else math.inf
    rows.append({"category": ALL, "rate": tot_rate, "se": se, "ci_low": max(0.0, tot_rate - z * se),
                 "ci_high": min(1.0, tot_rate + z * se), "n": tot_n, "N": N_total, "lam": lam, "classical": tot_cls})
    return rows


def ppi_rates(
    store: Store,
    run_name: str,
    set_name: str | None = None,
    model_dir: str | Path | None = None,
    *,
    strategy: str | None = None,
    folds: int = 5,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[dict]:
    """PPI estimates per category (``(all)`` last) for a run that queried only some prompts of a set.

    Each row: ``category, rate, se, ci_low, ci_high, n (queried), N (prompts), lam, classical``.
    ``strategy`` (default: the run's ``config["strategy"]``) matters only for ``uncertainty``, whose
    inclusion probabilities are recomputed from ``model_dir``.
    """
    with store.session() as session:
        run = run_by_name(session, run_name)
        if run is None:
            raise PPIError(f"no run named {run_name!r}")
        if set_name is None:
            set_name = run.prompt_set.name
        strategy = strategy or (run.config or {}).get("strategy") or "stratified"
        eff = effective_labels(run.id).subquery()
        q = (
            select(Response.prompt_id, eff.c.refusal)
            .join(eff, eff.c.response_id == Response.id)
            .where(Response.run_id == run.id)
        )
        labels: dict[int, list[int]] = defaultdict(list)
        for pid, refusal in session.execute(q):
            labels[pid].append(int(bool(refusal)))
    prompts = _set_prompts(store, set_name)
    if not prompts:
        raise PPIError(f"prompt set {set_name!r} is empty")
    ids, texts, cats = (list(v) for v in zip(*prompts))
    index = {pid: i for i, pid in enumerate(ids)}
    lab = np.array([index[pid] for pid in labels if pid in index], dtype=int)
    if len(lab) == 0:
        raise PPIError(f"run {run_name!r} has no labelled responses to prompts of {set_name!r}")
    order = np.argsort(lab)
    lab = lab[order]
    y = np.array([np.mean(labels[ids[i]]) for i in lab])  # fraction refused over samples
    prior = None
    if model_dir is not None:
        from classifiers.prompt import PromptClassifier, _logit

        clf = PromptClassifier.load(model_dir)
        trained_on = _training_hashes(model_dir)
        overlap = trained_on & {hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts}
        p_model = clf.predict_proba(texts, [None if c == NONE else c for c in cats])[:, 1]
        if not overlap:
            prior = _logit(p_model)
    X = _features(texts, cats, prior)
    f = crossfit_predictions(X, lab, (y >= 0.5).astype(int), folds=folds, seed=seed)
    pi = None
    if strategy == "uncertainty":
        if model_dir is None:
            raise PPIError("the uncertainty strategy's inclusion probabilities need the prompt model (--model)")
        pi = inclusion_probabilities(p_model, len(lab))[lab]
    rows = estimate_by_category(cats, lab, y, f, pi=pi, confidence=confidence)
    for r in rows:
        r["strategy"] = strategy
        r["model_feature"] = prior is not None
    return rows


def _training_hashes(model_dir) -> set[str]:
    """SHA-256 of the prompts a saved model was trained on (``train_hashes.txt``, when present)."""
    f = Path(model_dir) / "train_hashes.txt"
    if not f.is_file():
        return set()
    return {line.strip() for line in f.read_text(encoding="utf-8").splitlines() if line.strip()}
