"""Calibration metrics for binary probabilities, and a reliability diagram.

All functions take ``y`` (0/1 or bool labels, the positive class being "refusal") and ``p`` (the
predicted probability of the positive class). Pure NumPy; matplotlib is imported only to plot.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "brier_score",
    "expected_calibration_error",
    "max_calibration_error",
    "negative_log_likelihood",
    "plot_reliability_diagram",
    "reliability_curve",
]

_EPS = 1e-12


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=float).ravel()
    p = np.asarray(p, dtype=float).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y and p differ in length: {y.size} != {p.size}")
    if y.size == 0:
        raise ValueError("empty input")
    if np.any((y != 0) & (y != 1)):
        raise ValueError("y must be binary (0/1)")
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError("p must be probabilities in [0, 1]")
    return y, p


def _bin_ids(p: np.ndarray, n_bins: int, strategy: str) -> np.ndarray:
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if strategy == "uniform":
        # Equal-width bins on [0, 1]; p == 1.0 goes into the last bin.
        return np.minimum((p * n_bins).astype(int), n_bins - 1)
    if strategy == "quantile":
        # Equal-mass bins: edges at the quantiles of p (ties may merge bins).
        edges = np.quantile(p, np.linspace(0, 1, n_bins + 1))
        return np.clip(np.searchsorted(edges[1:-1], p, side="right"), 0, n_bins - 1)
    raise ValueError(f"strategy must be 'uniform' or 'quantile', not {strategy!r}")


def reliability_curve(y, p, n_bins: int = 15, strategy: str = "uniform"):
    """Per non-empty bin: ``(mean_p, frac_pos, counts)`` as three NumPy arrays of equal length."""
    y, p = _check(y, p)
    ids = _bin_ids(p, n_bins, strategy)
    counts = np.bincount(ids, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    keep = counts > 0
    return sum_p[keep] / counts[keep], sum_y[keep] / counts[keep], counts[keep]


def expected_calibration_error(y, p, n_bins: int = 15, strategy: str = "uniform") -> float:
    """ECE: the count-weighted mean of |frac_pos - mean_p| over bins (15 equal-width bins by default)."""
    mean_p, frac, counts = reliability_curve(y, p, n_bins, strategy)
    return float(np.sum(counts * np.abs(frac - mean_p)) / np.sum(counts))


def max_calibration_error(y, p, n_bins: int = 15, strategy: str = "uniform") -> float:
    """MCE: the largest |frac_pos - mean_p| over non-empty bins."""
    mean_p, frac, _ = reliability_curve(y, p, n_bins, strategy)
    return float(np.max(np.abs(frac - mean_p)))


def brier_score(y, p) -> float:
    """Mean squared error between ``p`` and the 0/1 outcome."""
    y, p = _check(y, p)
    return float(np.mean((p - y) ** 2))


def negative_log_likelihood(y, p) -> float:
    """Mean binary cross-entropy (natural log), with ``p`` clipped away from 0 and 1."""
    y, p = _check(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def plot_reliability_diagram(
    y,
    p,
    path: str | Path,
    title: str = "Reliability diagram",
    n_bins: int = 15,
    strategy: str = "uniform",
) -> Path:
    """Write a reliability diagram (PNG) with the ECE in the legend and a histogram of ``p`` below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    y, p = _check(y, p)
    mean_p, frac, counts = reliability_curve(y, p, n_bins, strategy)
    ece = expected_calibration_error(y, p, n_bins, strategy)
    fig, (ax, axh) = plt.subplots(
        2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.plot(mean_p, frac, "o-", color="C0", label=f"model (ECE={ece:.3f}, n={y.size})")
    ax.set_ylabel("observed fraction of refusals")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left")
    axh.hist(p, bins=np.linspace(0, 1, n_bins + 1), color="C0", alpha=0.7)
    axh.set_yscale("log")
    axh.set_xlabel("predicted P(refusal)")
    axh.set_ylabel("count")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
