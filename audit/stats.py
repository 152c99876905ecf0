"""Interval estimates and tests for refusal rates (numpy/scipy only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as _st


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; ``(0, 1)`` when ``n == 0``."""
    if n <= 0:
        return (0.0, 1.0)
    z = _st.norm.ppf(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    values: Sequence[float] | np.ndarray,
    statistic=np.mean,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int | None = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, x.size, size=(n_resamples, x.size))
    stats_ = np.apply_along_axis(statistic, 1, x[idx]) if statistic is not np.mean else x[idx].mean(axis=1)
    alpha = (1 - confidence) / 2
    return (float(np.quantile(stats_, alpha)), float(np.quantile(stats_, 1 - alpha)))


def two_proportion_test(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """Two-sided pooled z-test of ``k1/n1 == k2/n2``; returns ``(difference, p_value)``."""
    if n1 == 0 or n2 == 0:
        return (float("nan"), 1.0)
    p1, p2 = k1 / n1, k2 / n2
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return (p1 - p2, 1.0 if p1 == p2 else 0.0)
    z = (p1 - p2) / se
    return (p1 - p2, float(2 * _st.norm.sf(abs(z))))


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def calibration_noise_floor(
    p: Sequence[float] | np.ndarray,
    metrics: dict,
    observed: dict | None = None,
    n_sim: int = 500,
    confidence: float = 0.95,
    seed: int | None = 0,
) -> dict[str, dict[str, float]]:
    """Noise floor of calibration metrics: their distribution for a *perfectly calibrated* model that
    predicts ``p`` on this many samples, found by simulating outcomes ``y* ~ Bernoulli(p)``.

    ``metrics`` maps a name to ``fn(y, p) -> float`` (if ``fn`` has a ``batch(ys, p)`` attribute, it
    is used to score all simulations at once). Per metric: ``mean`` and ``q{confidence}`` (the
    upper quantile) of the simulated values and, when ``observed[name]`` is given, ``p_value``: the
    Monte-Carlo share of simulations at least as bad, ``(1 + #{sim >= observed}) / (1 + n_sim)``.
    """
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    ys = (rng.random((n_sim, p.size)) < p).astype(float)
    out: dict[str, dict[str, float]] = {}
    for name, fn in metrics.items():
        batch = getattr(fn, "batch", None)  # optional vectorised form: batch(ys, p) -> (n_sim,)
        if batch is not None:
            vals = np.asarray(batch(ys, p), dtype=float)
        else:
            vals = np.array([fn(ys[j], p) for j in range(n_sim)], dtype=float)
        row = {"mean": float(vals.mean()), "q": float(np.quantile(vals, confidence))}
        if observed is not None and name in observed and observed[name] is not None:
            row["p_value"] = float((1 + np.sum(vals >= observed[name] - 1e-12)) / (1 + n_sim))
        out[name] = row
    return out
