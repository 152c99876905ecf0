"""Accuracy protocols of the response classifier: paper split, grouped split (each templated
political prompt family on one side), leave-one-source-out, leave-one-model-out (silver models),
and 5-fold out-of-fold calibration (ECE, 15 equal-width bins).

    .venv/bin/python -m bench.response_eval [--protocols grouped,leave_one_source_out,...]
        [--embedding-cache /tmp/resp_emb.npz] [--no-embeddings] [--out results.json]

Embeddings of the ~4.2k training responses are computed once (cache them with --embedding-cache).
"""

from __future__ import annotations

import argparse
import json
import time

ALL = ("paper_split", "grouped", "cross_validated", "leave_one_source_out", "leave_one_model_out")


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore")
    from classifiers.features import embed_views
    from classifiers.training import default_params, evaluate_protocols, training_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocols", default=",".join(ALL))
    ap.add_argument("--embedding-cache", default=None)
    ap.add_argument("--no-embeddings", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = training_rows()
    params = default_params(use_embeddings=not a.no_embeddings)
    emb = None if a.no_embeddings else embed_views([r["response"] for r in rows], cache=a.embedding_cache, progress=True)
    res = evaluate_protocols(rows, emb, params, tuple(a.protocols.split(",")), progress=lambda s: print(f"[{time.perf_counter() - t0:.0f}s] {s}", flush=True))
    res.pop("_oof", None)
    for name, table in res.items():
        print(f"\n{name}")
        for r in table:
            print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    if a.out:
        with open(a.out, "w") as fh:
            json.dump(res, fh, indent=1)


if __name__ == "__main__":
    main()
