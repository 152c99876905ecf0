"""PPI vs simple random sampling on the paper's 1,706 hand-labelled ChatGPT prompts.

The prompt set is the paper data, with its source (nyp | political_figures | quora) as category; the
true refusal rates are known. For each budget n and each of R repetitions:

* SRS: n prompts at random, classical estimate, Wald interval with finite-population correction;
* PPI: ``choose_prompts`` strategy ``ppi`` (stratified by category and embedding cluster), predictions cross-fitted on
  the n queried prompts only (MiniLM embedding + category, K=5 folds: no prompt is predicted by a
  model trained on it), PPI++ estimate per category and overall.

Reported: mean 95% CI width of the overall rate, coverage of the true rate, and the number of SRS
queries that gives the same width (from the SRS variance formula with the true rate), hence the
share of queries saved. Run: ``.venv/bin/python -m bench.prompt_ppi [--reps 200] [--budgets 200,400]``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def srs_n_for_width(width: float, p: float, N: int, z: float = 1.959964) -> float:
    """SRS size whose Wald interval (with fpc) of a rate p in a population N has ``width``."""
    s2 = p * (1 - p) * N / (N - 1)
    h = width / (2 * z)
    # h^2 = (1 - n/N) s2 / n  ->  n = s2 / (h^2 + s2/N)
    return s2 / (h * h + s2 / N)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--budgets", default="200,400")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", default=None, help="write the results to this JSON file")
    a = ap.parse_args(argv)

    from rich.progress import track

    from audit.ppi import ALL, classical_mean, clusters, crossfit_predictions, estimate_by_category, n_strata, select_indices
    from classifiers.data import load_paper
    from classifiers.prompt import embed

    rows = load_paper()
    texts = [r["prompt"] for r in rows]
    cats = [r["source"] for r in rows]
    y = np.array([int(r["refusal"]) for r in rows])
    N = len(y)
    truth = {c: float(y[np.array(cats) == c].mean()) for c in set(cats)}
    truth[ALL] = float(y.mean())
    t0 = time.time()
    E = embed(texts)
    names = sorted(set(cats))
    X = np.hstack([E, np.array([[c == n for n in names] for c in cats], dtype=float)])
    t_embed = time.time() - t0

    results = {"N": N, "truth": truth, "reps": a.reps, "embed_seconds": t_embed, "budgets": {}}
    for n in [int(b) for b in a.budgets.split(",")]:
        srs_w, srs_cov, ppi_w, ppi_cov = [], [], [], []
        cat_cov = {c: [] for c in names}
        cat_w = {c: [] for c in names}
        t1 = time.time()
        strata = clusters(E, n_strata(n))  # what choose_prompts(strategy="ppi") does
        for rep in track(range(a.reps), description=f"budget {n}"):
            # simple random sampling
            s = select_indices(cats, n, "random", seed=10_000 + rep)
            est = classical_mean(y[s], N)
            srs_w.append(est["ci_high"] - est["ci_low"])
            srs_cov.append(est["ci_low"] <= truth[ALL] <= est["ci_high"])
            # PPI
            lab = select_indices(cats, n, "ppi", seed=rep, strata=strata)
            f = crossfit_predictions(X, lab, y[lab], folds=a.folds, seed=rep)
            out = {r["category"]: r for r in estimate_by_category(cats, lab, y[lab], f)}
            r = out[ALL]
            ppi_w.append(r["ci_high"] - r["ci_low"])
            ppi_cov.append(r["ci_low"] <= truth[ALL] <= r["ci_high"])
            for c in names:
                cat_w[c].append(out[c]["ci_high"] - out[c]["ci_low"])
                cat_cov[c].append(out[c]["ci_low"] <= truth[c] <= out[c]["ci_high"])
        w_ppi = float(np.mean(ppi_w))
        n_equiv = srs_n_for_width(w_ppi, truth[ALL], N)
        results["budgets"][n] = {
            "srs_width": float(np.mean(srs_w)),
            "srs_coverage": float(np.mean(srs_cov)),
            "ppi_width": w_ppi,
            "ppi_coverage": float(np.mean(ppi_cov)),
            "srs_queries_for_same_width": n_equiv,
            "queries_saved": 1 - n / n_equiv,
            "per_category": {c: {"width": float(np.mean(cat_w[c])), "coverage": float(np.mean(cat_cov[c]))} for c in names},
            "seconds": time.time() - t1,
        }
    print(json.dumps(results, indent=2))
    for n, r in results["budgets"].items():
        print(
            f"budget {n}: SRS width {r['srs_width']:.4f} (coverage {r['srs_coverage']:.1%}); "
            f"PPI width {r['ppi_width']:.4f} (coverage {r['ppi_coverage']:.1%}); SRS needs "
            f"{r['srs_queries_for_same_width']:.0f} queries for the PPI width -> {r['queries_saved']:.1%} fewer"
        )
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return results


if __name__ == "__main__":
    main()
