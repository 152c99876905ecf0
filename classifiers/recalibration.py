"""Recalibration of binary probabilities: temperature scaling, Platt scaling, isotonic regression,
histogram binning and h-calibration.

Every estimator follows the scikit-learn contract: parameters only in ``__init__``, learned state in
attributes ending in ``_``, ``fit(p, y)`` returns ``self``, ``predict_proba(p)`` returns an ``(n, 2)``
array (column 1 = P(refusal)). The input ``p`` is a vector of probabilities (shape ``(n,)`` or
``(n, 1)``), e.g. a model's probability of its refusal token. Fit on one split, report on another
(:func:`evaluate_recalibrators` does both).

This module never imports ``audit``; scikit-learn is imported only by the isotonic estimator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import optimize

__all__ = [
    "HCalibration",
    "HistogramBinning",
    "IsotonicCalibration",
    "PlattScaling",
    "TemperatureScaling",
    "RECALIBRATORS",
    "evaluate_recalibrators",
]

_EPS = 1e-6


def _as_p(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    if p.ndim == 2:
        if p.shape[1] == 2:
            p = p[:, 1]
        elif p.shape[1] == 1:
            p = p[:, 0]
        else:
            raise ValueError(f"expected probabilities of shape (n,), (n, 1) or (n, 2), got {p.shape}")
    p = p.ravel()
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p must be probabilities in [0, 1]")
    return p


def _as_y(y, n: int) -> np.ndarray:
    y = np.asarray(y, dtype=float).ravel()
    if y.size != n:
        raise ValueError(f"p and y differ in length: {n} != {y.size}")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("y must be binary (0/1)")
    return y


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _two_cols(q: np.ndarray) -> np.ndarray:
    q = np.clip(q, 0.0, 1.0)
    return np.column_stack([1.0 - q, q])


def _nll(y: np.ndarray, q: np.ndarray) -> float:
    q = np.clip(q, 1e-12, 1 - 1e-12)
    return float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))


class _Base:
    """Shared scikit-learn plumbing (``get_params``/``set_params``) and ``predict``."""

    _params: tuple[str, ...] = ()

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._params}

    def set_params(self, **params) -> _Base:
        for k, v in params.items():
            if k not in self._params:
                raise ValueError(f"unknown parameter {k!r}")
            setattr(self, k, v)
        return self

    def predict(self, p) -> np.ndarray:
        return (self.predict_proba(p)[:, 1] >= 0.5).astype(int)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._params)
        return f"{type(self).__name__}({args})"


class TemperatureScaling(_Base):
    """``q = sigmoid(logit(p) / T)`` with ``T`` fitted by maximum likelihood (Guo et al., 2017)."""

    _params = ("bounds",)

    def __init__(self, bounds: tuple[float, float] = (0.05, 20.0)):
        self.bounds = bounds

    def fit(self, p, y) -> TemperatureScaling:
        p = _as_p(p)
        y = _as_y(y, p.size)
        z = _logit(p)
        lo, hi = np.log(self.bounds[0]), np.log(self.bounds[1])
        res = optimize.minimize_scalar(lambda lt: _nll(y, _sigmoid(z / np.exp(lt))), bounds=(lo, hi), method="bounded")
        self.temperature_ = float(np.exp(res.x))
        return self

    def predict_proba(self, p) -> np.ndarray:
        return _two_cols(_sigmoid(_logit(_as_p(p)) / self.temperature_))


class PlattScaling(_Base):
    """``q = sigmoid(a * logit(p) + b)`` fitted by (lightly L2-regularised) logistic regression (Platt, 1999)."""

    _params = ("l2",)

    def __init__(self, l2: float = 1e-4):
        self.l2 = l2

    def fit(self, p, y) -> PlattScaling:
        p = _as_p(p)
        y = _as_y(y, p.size)
        z = _logit(p)

        def loss(w):
            q = _sigmoid(w[0] * z + w[1])
            grad_z = q - y
            value = _nll(y, q) + self.l2 * (w[0] - 1) ** 2
            grad = np.array([np.mean(grad_z * z) + 2 * self.l2 * (w[0] - 1), np.mean(grad_z)])
            return value, grad

        res = optimize.minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
        self.a_, self.b_ = float(res.x[0]), float(res.x[1])
        return self

    def predict_proba(self, p) -> np.ndarray:
        return _two_cols(_sigmoid(self.a_ * _logit(_as_p(p)) + self.b_))


class IsotonicCalibration(_Base):
    """A non-decreasing step map fitted by isotonic regression (Zadrozny & Elkan, 2002)."""

    _params = ()

    def fit(self, p, y) -> IsotonicCalibration:
        from sklearn.isotonic import IsotonicRegression

        p = _as_p(p)
        y = _as_y(y, p.size)
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        self.x_thresholds_ = np.asarray(iso.X_thresholds_, dtype=float)
        self.y_thresholds_ = np.asarray(iso.y_thresholds_, dtype=float)
        return self

    def predict_proba(self, p) -> np.ndarray:
        p = _as_p(p)
        return _two_cols(np.interp(p, self.x_thresholds_, self.y_thresholds_))


class HistogramBinning(_Base):
    """Each of ``n_bins`` bins (equal-mass by default) maps to its observed refusal frequency
    (Zadrozny & Elkan, 2001); a bin with no fit data keeps its mean score."""

    _params = ("n_bins", "strategy")

    def __init__(self, n_bins: int = 10, strategy: str = "quantile"):
        self.n_bins = n_bins
        self.strategy = strategy

    def fit(self, p, y) -> HistogramBinning:
        p = _as_p(p)
        y = _as_y(y, p.size)
        if self.strategy == "quantile":
            edges = np.unique(np.quantile(p, np.linspace(0, 1, self.n_bins + 1)))
        elif self.strategy == "uniform":
            edges = np.linspace(0, 1, self.n_bins + 1)
        else:
            raise ValueError("strategy must be 'quantile' or 'uniform'")
        inner = edges[1:-1]
        ids = np.searchsorted(inner, p, side="right")
        k = inner.size + 1
        counts = np.bincount(ids, minlength=k)
        sums = np.bincount(ids, weights=y, minlength=k)
        bounds = np.concatenate([[0.0], inner, [1.0]])
        centres = (bounds[:-1] + bounds[1:]) / 2
        self.edges_ = inner
        self.values_ = np.where(counts > 0, sums / np.maximum(counts, 1), centres)
        return self

    def predict_proba(self, p) -> np.ndarray:
        p = _as_p(p)
        return _two_cols(self.values_[np.searchsorted(self.edges_, p, side="right")])


class HCalibration(_Base):
    """h-calibration, after Huang et al. (2025, "h-calibration: rethinking classifier recalibration
    with a probabilistic error-bounded objective").

    A classifier is h-calibrated when, on every set of inputs with neighbouring scores, the mean
    predicted probability is within ``h`` of the observed frequency. We learn a monotone map ``g`` (a
    piecewise-linear, increasing function of ``logit(p)`` with ``n_knots`` knots at fit quantiles,
    followed by a sigmoid) that minimises the squared excess ``max(0, |mean_W(y - g(p))| - h)^2`` over
    all windows ``W`` of consecutive fit samples (sorted by score) at several scales (sizes ``n/2``,
    ``n/4``, ... down to ``min_window``, half-overlapping), plus a small NLL term that picks among
    maps with equal bounded error. This is our reading of the method, implemented from its
    definition; it is not the authors' code.
    """

    _params = ("h", "n_knots", "min_window", "nll_weight")

    def __init__(self, h: float = 0.01, n_knots: int = 8, min_window: int = 30, nll_weight: float = 0.05):
        self.h = h
        self.n_knots = n_knots
        self.min_window = min_window
        self.nll_weight = nll_weight

    @staticmethod
    def _design(z: np.ndarray, knots: np.ndarray) -> np.ndarray:
        """Per sample, the length of each linear piece it covers: left tail, segments, right tail,
        so that ``f(z) = intercept + design @ slopes``."""
        cols = [np.minimum(z - knots[0], 0.0)]
        for lo, hi in zip(knots[:-1], knots[1:]):
            cols.append(np.clip(z - lo, 0.0, hi - lo))
        cols.append(np.maximum(z - knots[-1], 0.0))
        return np.column_stack(cols)

    def _windows(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        wins = []
        size = n // 2
        while size >= max(2, self.min_window):
            starts = np.arange(0, n - size + 1, max(1, size // 2))
            wins.append((starts, starts + size))
            size //= 2
        if not wins:
            wins.append((np.array([0]), np.array([n])))
        return wins

    def fit(self, p, y) -> HCalibration:
        p = _as_p(p)
        y = _as_y(y, p.size)
        order = np.argsort(p, kind="stable")
        z = _logit(p[order])
        ys = y[order]
        n = z.size
        knots = np.unique(np.quantile(z, np.linspace(0, 1, self.n_knots)))
        if knots.size < 2:
            knots = np.array([z.min() - 1.0, z.max() + 1.0])
        design = self._design(z, knots)
        windows = self._windows(n)
        cy = np.concatenate([[0.0], np.cumsum(ys)])
        lam = self.nll_weight * 1e-2

        def objective(w):
            slopes = np.exp(w[1:])
            g = np.clip(_sigmoid(w[0] + design @ slopes), 1e-12, 1 - 1e-12)
            cg = np.concatenate([[0.0], np.cumsum(g)])
            total = 0.0
            dg = np.zeros(n + 1)  # difference array of d(total)/d(g_i)
            for s, e in windows:
                size = e - s
                err = ((cy[e] - cy[s]) - (cg[e] - cg[s])) / size
                excess = np.maximum(0.0, np.abs(err) - self.h)
                total += np.mean(excess**2)
                coef = 2 * excess * np.sign(err) * (-1.0 / size) / (len(s) * len(windows))
                dg += np.bincount(s, weights=coef, minlength=n + 1) - np.bincount(e, weights=coef, minlength=n + 1)
            grad_g = np.cumsum(dg)[:n]
            value = total / len(windows) + lam * _nll(ys, g)
            grad_g += lam * (g - ys) / (g * (1 - g)) / n
            grad_f = grad_g * g * (1 - g)
            grad = np.concatenate([[grad_f.sum()], (design.T @ grad_f) * slopes])
            return value, grad

        w0 = np.concatenate([[knots[0]], np.zeros(knots.size + 1)])
        res = optimize.minimize(objective, w0, jac=True, method="L-BFGS-B",
                                bounds=[(None, None)] + [(-5.0, 3.0)] * (knots.size + 1))
        self.knots_ = knots
        self.intercept_ = float(res.x[0])
        self.log_slopes_ = np.asarray(res.x[1:], dtype=float)
        self.objective_ = float(res.fun)
        return self

    def predict_proba(self, p) -> np.ndarray:
        z = _logit(_as_p(p))
        return _two_cols(_sigmoid(self.intercept_ + self._design(z, self.knots_) @ np.exp(self.log_slopes_)))


#: name -> factory of a fresh estimator.
RECALIBRATORS = {
    "temperature": TemperatureScaling,
    "platt": PlattScaling,
    "isotonic": IsotonicCalibration,
    "histogram": HistogramBinning,
    "h-calibration": HCalibration,
}


def evaluate_recalibrators(
    p_fit, y_fit, p_eval, y_eval, methods: list[str] | None = None, n_bins: int = 15
) -> list[dict[str, Any]]:
    """Fit each method on ``(p_fit, y_fit)`` and report calibration metrics on ``(p_eval, y_eval)``.

    The first row (``method = "none"``) is the raw probability on the evaluation split.
    """
    from classifiers.calibration import (
        brier_score,
        expected_calibration_error,
        max_calibration_error,
        negative_log_likelihood,
    )

    p_fit, p_eval = _as_p(p_fit), _as_p(p_eval)
    y_fit, y_eval = _as_y(y_fit, p_fit.size), _as_y(y_eval, p_eval.size)

    def metrics(q):
        return {
            "ece": expected_calibration_error(y_eval, q, n_bins, "uniform"),
            "ece_mass": expected_calibration_error(y_eval, q, n_bins, "quantile"),
            "mce": max_calibration_error(y_eval, q, n_bins, "uniform"),
            "brier": brier_score(y_eval, q),
            "nll": negative_log_likelihood(y_eval, q),
        }

    rows = [{"method": "none", "n_fit": int(p_fit.size), "n_eval": int(p_eval.size), **metrics(p_eval)}]
    for name in methods or list(RECALIBRATORS):
        if name not in RECALIBRATORS:
            raise ValueError(f"unknown recalibration method {name!r}; choose from {sorted(RECALIBRATORS)}")
        est = RECALIBRATORS[name]().fit(p_fit, y_fit)
        q = est.predict_proba(p_eval)[:, 1]
        rows.append({"method": name, "n_fit": int(p_fit.size), "n_eval": int(p_eval.size), **metrics(q)})
    return rows
