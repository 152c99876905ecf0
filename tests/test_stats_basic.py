"""Wilson, two-proportion and Holm against known values and by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from audit.stats import bootstrap_interval, holm_adjust, two_proportion_test, wilson_interval


def test_wilson_known_values():
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 20)
    assert low == 0.0 and 0.1 < high < 0.2


def test_wilson_coverage_by_simulation():
    rng = np.random.default_rng(1)
    p, n, trials = 0.3, 80, 2000
    ks = rng.binomial(n, p, size=trials)
    covered = sum(lo <= p <= hi for lo, hi in (wilson_interval(int(k), n) for k in ks))
    assert covered / trials >= 0.93


def test_two_proportion_test():
    diff, p = two_proportion_test(50, 100, 50, 100)
    assert diff == 0 and p == pytest.approx(1.0)
    diff, p = two_proportion_test(70, 100, 40, 100)
    assert diff == pytest.approx(0.3) and p < 1e-4


def test_holm_adjust_matches_definition():
    adj = holm_adjust([0.01, 0.04, 0.03, 0.5])
    assert adj == pytest.approx([0.04, 0.09, 0.09, 0.5])


def test_bootstrap_interval_contains_mean():
    x = np.random.default_rng(0).random(200)
    lo, hi = bootstrap_interval(x)
    assert lo < x.mean() < hi and hi - lo < 0.2
