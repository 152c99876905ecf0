"""Leave-one-model-out for the fine-tuned-encoder response classifier (issue 4).

Each held-out silver model costs one full fine-tune (~25 min on 2 cores), so models are named on the
command line. The classifier is trained exactly as shipped (``train_finetuned``'s parameters) on the
paper data and the other four silver models, then scored on the held-out model's responses: the
cleaned rows (those the frozen-encoder protocol scored) and all 500 rows, against silver labels.

    .venv/bin/python -m bench.response_lomo llama-2-7b-chat-hf [--card classifiers/models/response-default]

``--card`` appends the result to that model's card as ``leave_one_model_out``.
"""

from __future__ import annotations

import argparse
import json
import time


def run(held: str) -> dict:
    import numpy as np

    from classifiers.data import load_silver
    from classifiers.training import _metrics, default_params, fit_rows, predict_rows, training_rows

    rows = training_rows()
    train = [r for r in rows if not (r["source"] == "silver" and r["model"] == held)]
    cleaned = [r for r in rows if r["source"] == "silver" and r["model"] == held]
    everything = [dict(r, kind=None) for r in load_silver() if r["model"] == held]
    if not everything:
        raise SystemExit(f"unknown silver model {held!r}")
    t = time.time()
    clf = fit_rows(train, None, default_params(encoder="finetuned"), progress=True)
    out: dict = {"held_out": held, "train_rows": len(train), "fit_seconds": round(time.time() - t)}
    for name, part in (("cleaned", cleaned), ("all", everything)):
        y = np.array([int(r["refusal"]) for r in part])
        for cascade in (False, True):
            p, yp = predict_rows(clf, part, None, use_cascade=cascade)
            out[f"{name}/{'cascade' if cascade else 'full'}"] = _metrics(y, yp, p)
    return out


def add_to_card(model_dir: str, results: list[dict]) -> None:
    from pathlib import Path

    from classifiers.persist import write_model_card

    path = Path(model_dir) / "model_card.json"
    card = json.loads(path.read_text())
    rows = []
    for r in results:
        for part in ("cleaned", "all"):
            m = r[f"{part}/full"]
            rows.append({"held_out": r["held_out"], "rows": part, "n": m["n"], "accuracy": m["accuracy"], "ece": m["ece"],
                         "cascade_accuracy": r[f"{part}/cascade"]["accuracy"]})  # fmt: skip
    card.setdefault("metrics", {})["leave_one_model_out"] = rows
    card.pop("written_at", None)
    write_model_card(model_dir, card)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="silver model names to hold out, one fine-tune each")
    ap.add_argument("--card", default=None, help="model directory whose card gets the results")
    a = ap.parse_args(argv)
    results = []
    for m in a.models:
        results.append(run(m))
        print(json.dumps(results[-1]), flush=True)
    if a.card:
        add_to_card(a.card, results)


if __name__ == "__main__":
    main()
