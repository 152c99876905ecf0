"""Calibration metrics: known values, edge cases, and the reliability diagram PNG."""

from __future__ import annotations

import numpy as np
import pytest

from classifiers.calibration import (
    brier_score,
    expected_calibration_error,
    max_calibration_error,
    negative_log_likelihood,
    plot_reliability_diagram,
    reliability_curve,
)


def test_perfectly_calibrated_constant_has_zero_ece():
    y = np.array([1] * 30 + [0] * 70)
    p = np.full(100, 0.3)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)
    assert max_calibration_error(y, p) == pytest.approx(0.0)


def test_ece_hand_computed():
    # bin [0.0667,0.1333): p=0.1 twice, both positive -> gap 0.9; bin of 0.9: two negatives -> gap 0.9
    y = [1, 1, 0, 0, 1]
    p = [0.1, 0.1, 0.9, 0.9, 0.5]
    # weights 2/5, 2/5, 1/5; gaps 0.9, 0.9, 0.5
    assert expected_calibration_error(y, p) == pytest.approx((2 * 0.9 + 2 * 0.9 + 0.5) / 5)
    assert max_calibration_error(y, p) == pytest.approx(0.9)


def test_p_equal_one_lands_in_last_bin_and_quantile_strategy():
    y = [1, 1, 0, 1]
    p = [1.0, 1.0, 0.0, 0.97]
    mean_p, frac, counts = reliability_curve(y, p, 15)
    assert counts.sum() == 4 and len(counts) == 2
    assert expected_calibration_error(y, p, 15) == pytest.approx((0.0 + 3 * (1 - (2 + 0.97) / 3)) / 4)
    # quantile bins hold equal counts; a step outcome against a linear p is miscalibrated by ~0.25
    _, _, qcounts = reliability_curve(np.r_[np.zeros(50), np.ones(50)], np.linspace(0, 1, 100), 10, "quantile")
    assert list(qcounts) == [10] * 10
    ece_q = expected_calibration_error(np.r_[np.zeros(50), np.ones(50)], np.linspace(0, 1, 100), 10, "quantile")
    assert ece_q == pytest.approx(0.2475, abs=1e-3)


def test_ece_of_well_calibrated_sample_is_small_and_overconfident_is_large():
    rng = np.random.default_rng(0)
    p = rng.uniform(size=20000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    over = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    assert expected_calibration_error(y, over) > 0.1


def test_brier_and_nll():
    assert brier_score([1, 0], [1.0, 0.0]) == 0.0
    assert brier_score([1, 0], [0.5, 0.5]) == pytest.approx(0.25)
    assert negative_log_likelihood([1, 0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert np.isfinite(negative_log_likelihood([1], [0.0]))


@pytest.mark.parametrize(
    "y,p",
    [([1, 0], [0.5]), ([], []), ([2, 0], [0.5, 0.5]), ([1, 0], [1.5, 0.2]), ([1, 0], [np.nan, 0.2])],
)
def test_bad_input_raises(y, p):
    with pytest.raises(ValueError):
        expected_calibration_error(y, p)


def test_bad_strategy_raises():
    with pytest.raises(ValueError):
        expected_calibration_error([1, 0], [0.2, 0.3], strategy="nope")


def test_reliability_diagram_png(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.uniform(size=500)
    y = (rng.uniform(size=500) < p).astype(int)
    out = plot_reliability_diagram(y, p, tmp_path / "sub" / "rel.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
