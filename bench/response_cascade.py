"""Cascade benchmark: responses labelled per second and accuracy, cascade vs the full model.

The cheap head (TF-IDF + labelling functions) answers first; the MiniLM embedding head is consulted
only inside the cascade band. Both are measured in the same run on the same responses, over the
paper's validation and test parts (512 responses not used to train the paper-split model), repeated
to ``--n`` responses, in ``--workers`` processes (2 cores).

    .venv/bin/python -m bench.response_cascade [--n 4096] [--workers 2] [--model DIR] [--band LO HI]...
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

_MODEL = None


def _init(model_dir: str, threads: int, band=None) -> None:
    global _MODEL
    import torch

    torch.set_num_threads(threads)
    from classifiers.response import load_response_classifier

    _MODEL = load_response_classifier(model_dir)
    if band is not None:
        _MODEL.cascade = tuple(band)
    # warm up: load the encoder and run every path once
    _MODEL.predict_details(["x"], ["I can't help with that. Here is a list:\n1. a"], use_cascade=False)


def _work(args):
    prompts, responses, cascade, band = args
    if band is not None:
        _MODEL.cascade = tuple(band)
    t = time.process_time()
    d = _MODEL.predict_details(prompts, responses, use_cascade=cascade)
    return [x["refusal"] for x in d], time.process_time() - t


def run(model_dir: str, n: int, workers: int, chunk: int = 128, band=None, bands=None) -> dict:
    """``bands``: several cascade bands measured in the same run (each reported as ``cascade@lo-hi``);
    the first one is also reported as ``cascade``."""
    from classifiers.data import load_paper, paper_split

    _, val, test = paper_split(load_paper())
    rows = val + test
    reps = int(np.ceil(n / len(rows)))
    corpus = (rows * reps)[:n]
    prompts = [r["prompt"] for r in corpus]
    responses = [r["response"] for r in corpus]
    y = np.array([r["refusal"] for r in corpus])
    res = {}
    threads = max(1, (os.cpu_count() or 2) // workers)
    from classifiers.response import load_response_classifier

    m = load_response_classifier(model_dir)
    bands = [tuple(b) for b in bands] if bands else [tuple(band) if band is not None else tuple(m.cascade)]
    runs = [("full", False, None)] + [(f"cascade@{b[0]:g}-{b[1]:g}", True, b) for b in bands]
    with ProcessPoolExecutor(workers, initializer=_init, initargs=(model_dir, threads, None)) as ex:
        list(ex.map(_work, [(["x"], ["warm"], False, None)] * workers))
        for name, cascade, b in runs:
            jobs = [(prompts[i : i + chunk], responses[i : i + chunk], cascade, b) for i in range(0, n, chunk)]
            t0 = time.perf_counter()
            out = list(ex.map(_work, jobs))
            wall = time.perf_counter() - t0
            pred = np.array([p for o in out for p in o[0]])
            res[name] = {
                "responses": n,
                "seconds": round(wall, 3),
                "responses_per_s": round(n / wall, 1),
                "cpu_seconds": round(sum(o[1] for o in out), 3),
                "cpu_ms_per_response": round(1000 * sum(o[1] for o in out) / n, 3),
                "accuracy": round(float(np.mean(pred == y)), 4),
                "distinct_responses": len(rows),
            }
    # fraction routed to the embedding head, measured once in-process
    for name, _, b in runs[1:]:
        m.cascade = b
        _, _, used = m._scores([r["prompt"] for r in rows], [r["response"] for r in rows], use_cascade=True)
        res[name]["band"] = list(b)
        res[name]["routed_to_embeddings"] = round(float(used.mean()), 4)
        res[name]["speedup"] = round(res[name]["responses_per_s"] / res["full"]["responses_per_s"], 2)
        res[name]["cpu_speedup"] = round(res["full"]["cpu_seconds"] / max(res[name]["cpu_seconds"], 1e-9), 2)
        res[name]["accuracy_gap_points"] = round(100 * (res["full"]["accuracy"] - res[name]["accuracy"]), 2)
    first = runs[1][0]
    res["cascade"] = res[first]
    res["cascade_band"] = list(bands[0])
    res["speedup"] = res[first]["speedup"]
    res["accuracy_gap_points"] = res[first]["accuracy_gap_points"]
    res["workers"] = workers
    return res


def main() -> None:
    from classifiers.response import MODELS_DIR

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(MODELS_DIR / "response-paper-split"))
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument(
        "--band", type=float, nargs=2, action="append", default=None,
        help="cascade band (low high), repeatable: each is measured in the same run; default: the model's",
    )
    a = ap.parse_args()
    res = run(a.model, a.n, a.workers, bands=a.band)
    print(json.dumps(res, indent=1))
    f = res["full"]
    print(f"full: {f['responses_per_s']:.0f} responses/s, {f['cpu_ms_per_response']:.1f} CPU-ms/response, accuracy {f['accuracy']:.4f}")
    for k, c in res.items():
        if k.startswith("cascade@"):
            print(
                f"{k}: {c['responses_per_s']:.0f} responses/s (x{c['speedup']} wall), {c['cpu_ms_per_response']:.2f} "
                f"CPU-ms/response (x{c['cpu_speedup']} CPU), accuracy {c['accuracy']:.4f} (gap {c['accuracy_gap_points']} pt), "
                f"routed to embeddings: {c['routed_to_embeddings']:.1%}"
            )


if __name__ == "__main__":
    main()
