"""N-gram statistics: Monroe et al. log-odds with informative Dirichlet prior, LR coefficients, counts, filter."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classifiers.ngrams import log_odds_dirichlet, ngram_statistics, top_ngrams

REFUSALS = ["I'm sorry, but I can't help with that.", "I’m sorry, I cannot assist with this request.",
            "Sorry, but I can't do that.", "As an AI, I cannot help with that request."] * 3
COMPLIANCE = ["Sure, here is a recipe for bread.", "Here is a short poem about the sea.",
              "Sure! The capital of France is Paris.", "Here is the code you asked for."] * 3


def test_log_odds_matches_formula():
    ya, yb = np.array([10.0, 2, 5]), np.array([1.0, 8, 5])
    prior = np.array([1.0, 1, 1])
    d, se, z = log_odds_dirichlet(ya, yb, prior)
    na, nb, a0 = ya.sum(), yb.sum(), prior.sum()
    want = math.log((10 + 1) / (na + a0 - 11)) - math.log((1 + 1) / (nb + a0 - 2))
    assert d[0] == pytest.approx(want)
    assert se[0] == pytest.approx(math.sqrt(1 / 11 + 1 / 2))
    assert z[0] == pytest.approx(want / math.sqrt(1 / 11 + 1 / 2))
    assert d[0] > 0 > d[1]
    with pytest.raises(ValueError):
        log_odds_dirichlet(ya, yb, np.zeros(3))


def test_statistics_directions_counts_and_filter():
    texts = REFUSALS + COMPLIANCE
    labels = [1] * len(REFUSALS) + [0] * len(COMPLIANCE)
    stats = ngram_statistics(texts, labels, min_count=3)
    by = {s.ngram: s for s in stats}
    assert by["sorry"].z > 2 and by["sorry"].lr_coef > 0 and by["sorry"].direction == "refusal"
    assert by["here is"].z < -2 and by["here is"].lr_coef < 0 and by["here is"].direction == "compliance"
    assert by["i'm sorry"].docs_refusal == 6  # typographic apostrophe folded into "'"
    assert by["sorry"].docs_refusal == 9 and by["sorry"].docs_compliance == 0
    assert by["sure"].count_compliance == 6
    assert all(s.docs >= 3 for s in stats)
    assert [s.z for s in stats] == sorted((s.z for s in stats), reverse=True)
    fewer = ngram_statistics(texts, labels, min_count=7)
    assert {s.ngram for s in fewer} < {s.ngram for s in stats}
    ref, com = top_ngrams(stats, 3)
    assert all(s.z > 0 for s in ref) and all(s.z < 0 for s in com) and len(ref) == 3


def test_shrinkage_rare_ngrams_have_smaller_z():
    texts = ["alpha beta"] * 30 + ["gamma"] * 30 + ["rare"] + ["gamma"]
    labels = [1] * 30 + [0] * 30 + [1] + [0]
    by = {s.ngram: s for s in ngram_statistics(texts, labels, min_count=1, with_lr=False)}
    assert by["alpha"].z > by["rare"].z > 0


def test_errors():
    with pytest.raises(ValueError, match="both classes"):
        ngram_statistics(["a b", "c d"], [1, 1])
    with pytest.raises(ValueError):
        ngram_statistics([], [])
    with pytest.raises(ValueError):
        ngram_statistics(["a"], [1, 0])
