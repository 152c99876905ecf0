"""N-gram statistics of refusal vs compliance texts.

For each n-gram (1–3 words by default) this computes, over two classes of documents (refusal = 1,
compliance = 0):

* counts: occurrences and documents in each class;
* the log-odds ratio with an informative Dirichlet prior and its z-score (Monroe, Colaresi & Quinn
  2008, "Fightin' Words", eq. 16–22). The prior is the pooled corpus: ``alpha_w = prior_weight * y_w``
  where ``y_w`` is the n-gram's count over both classes, so rare n-grams are shrunk towards zero and
  the z-score accounts for their variance (``prior_weight`` 0.1 by default: a prior worth a tenth
  of the corpus);
* the coefficient of a TF-IDF + logistic-regression model (C=10, liblinear), as in Reuter & Schulze
  (2023), fitted on all n-grams of the documents.

Positive values point to refusal, negative to compliance. A minimum-count filter drops n-grams seen
in fewer than ``min_count`` documents. Only numpy and scikit-learn are used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

TOKEN_PATTERN = r"(?u)\b\w[\w']*\b"
_APOSTROPHES = re.compile("[\u2018\u2019\u02bc`]")


def normalise(text: str) -> str:
    """Lower-case and fold typographic apostrophes, so ``I’m`` and ``I'm`` are one token."""
    return _APOSTROPHES.sub("'", text.lower())


@dataclass(frozen=True)
class NgramStat:
    """Statistics of one n-gram: positive ``log_odds``/``z``/``lr_coef`` point to refusal."""

    ngram: str
    n: int  # number of words
    docs: int
    docs_refusal: int
    docs_compliance: int
    count_refusal: int
    count_compliance: int
    log_odds: float
    se: float
    z: float
    lr_coef: float

    @property
    def direction(self) -> str:
        return "refusal" if self.z > 0 else "compliance"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["direction"] = self.direction
        return d


def log_odds_dirichlet(
    counts_a: np.ndarray, counts_b: np.ndarray, prior: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Monroe et al. (2008) log-odds ratio of class a vs b with Dirichlet prior ``prior`` (per word).

    Returns ``(delta, se, z)``: the difference of the two smoothed log-odds, its approximate standard
    error ``sqrt(1/(y_a + alpha) + 1/(y_b + alpha))`` and ``z = delta / se``.
    """
    counts_a = np.asarray(counts_a, dtype=float)
    counts_b = np.asarray(counts_b, dtype=float)
    prior = np.asarray(prior, dtype=float)
    if np.any(prior <= 0):
        raise ValueError("every prior count must be positive")
    n_a, n_b, a0 = counts_a.sum(), counts_b.sum(), prior.sum()
    # the "rest" term is 0 only when one n-gram is the whole vocabulary of a class: floor it at 0.5
    la = np.log(counts_a + prior) - np.log(np.maximum(n_a + a0 - counts_a - prior, 0.5))
    lb = np.log(counts_b + prior) - np.log(np.maximum(n_b + a0 - counts_b - prior, 0.5))
    delta = la - lb
    se = np.sqrt(1.0 / (counts_a + prior) + 1.0 / (counts_b + prior))
    return delta, se, delta / se


def ngram_statistics(
    texts: Sequence[str],
    labels: Sequence[bool | int],
    *,
    ngram_range: tuple[int, int] = (1, 3),
    min_count: int = 5,
    prior_weight: float = 0.1,
    lr_C: float = 10.0,
    with_lr: bool = True,
) -> list[NgramStat]:
    """N-gram statistics of ``texts`` labelled refusal (1) / compliance (0), sorted by z (refusal first).

    ``min_count`` is the minimum number of documents an n-gram must occur in. Raises ``ValueError``
    when there are no texts or only one class.
    """
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    texts = [t if isinstance(t, str) else "" for t in texts]
    y = np.asarray([bool(v) for v in labels], dtype=int)
    if len(texts) != len(y):
        raise ValueError(f"{len(texts)} texts but {len(y)} labels")
    if len(texts) == 0:
        raise ValueError("no texts")
    if y.min() == y.max():
        raise ValueError("n-gram statistics need texts of both classes (refusal and compliance)")
    if min_count < 1:
        raise ValueError("min_count must be >= 1")

    cv = CountVectorizer(
        ngram_range=ngram_range, token_pattern=TOKEN_PATTERN, preprocessor=normalise, dtype=np.int64
    )
    try:
        X = cv.fit_transform(texts).tocsc()
    except ValueError:  # empty vocabulary: no words at all
        return []
    vocab = cv.get_feature_names_out()
    ref, com = y == 1, y == 0
    count_ref = np.asarray(X[ref].sum(axis=0)).ravel()
    count_com = np.asarray(X[com].sum(axis=0)).ravel()
    Xb = X.copy()
    Xb.data = np.ones_like(Xb.data)
    docs_ref = np.asarray(Xb[ref].sum(axis=0)).ravel()
    docs_com = np.asarray(Xb[com].sum(axis=0)).ravel()
    docs = docs_ref + docs_com

    # Log-odds are computed within each n-gram order, on the full vocabulary of that order, so the
    # class totals are token totals; the filter is applied afterwards.
    order = np.array([v.count(" ") + 1 for v in vocab])
    delta = np.zeros(len(vocab))
    se = np.zeros(len(vocab))
    z = np.zeros(len(vocab))
    for n in np.unique(order):
        m = order == n
        prior = prior_weight * (count_ref[m] + count_com[m]).astype(float)
        delta[m], se[m], z[m] = log_odds_dirichlet(count_ref[m], count_com[m], prior)

    coef = np.full(len(vocab), math.nan)
    if with_lr:
        from sklearn.linear_model import LogisticRegression

        tf = TfidfVectorizer(
            ngram_range=ngram_range, token_pattern=TOKEN_PATTERN, preprocessor=normalise, vocabulary=cv.vocabulary_
        )
        lr = LogisticRegression(C=lr_C, solver="liblinear")
        lr.fit(tf.fit_transform(texts), y)
        coef = lr.coef_.ravel()

    keep = np.flatnonzero(docs >= min_count)
    stats = [
        NgramStat(
            ngram=str(vocab[i]),
            n=int(order[i]),
            docs=int(docs[i]),
            docs_refusal=int(docs_ref[i]),
            docs_compliance=int(docs_com[i]),
            count_refusal=int(count_ref[i]),
            count_compliance=int(count_com[i]),
            log_odds=float(delta[i]),
            se=float(se[i]),
            z=float(z[i]),
            lr_coef=float(coef[i]),
        )
        for i in keep
    ]
    stats.sort(key=lambda s: (-s.z, s.ngram))
    return stats


def top_ngrams(stats: Sequence[NgramStat], k: int = 20, by: str = "z") -> tuple[list[NgramStat], list[NgramStat]]:
    """The ``k`` n-grams most indicative of refusal and of compliance (by ``z`` or ``lr_coef``)."""
    key = (lambda s: s.z) if by == "z" else (lambda s: s.lr_coef)
    ranked = sorted(stats, key=key, reverse=True)
    refusal = [s for s in ranked if key(s) > 0][:k]
    compliance = [s for s in reversed(ranked) if key(s) < 0][:k]
    return refusal, compliance
