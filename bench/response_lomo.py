"""Leave-one-model-out and leave-one-source-out for the fine-tuned-encoder response classifier (issue 4).

Each held-out part costs one full fine-tune (~10–28 min on 2 cores), so parts are named on the
command line: a silver model name (``yi-6b-chat``) or ``source=NAME`` (``source=quora``,
``source=political_figures``, ``source=silver``). The classifier is trained exactly as shipped
(``train_finetuned``'s parameters) on everything else, then scored on the held-out part: the cleaned
rows (those the training protocol keeps) and, for silver parts, all rows against silver labels.

    .venv/bin/python -m bench.response_lomo llama-2-7b-chat-hf source=quora [--card classifiers/models/response-default]

``--card`` appends the results to that model's card as ``leave_one_model_out`` /
``leave_one_source_out``, each row with the classifier version measured; ``--from-json FILE`` adds
the JSON lines an earlier run printed instead of running.
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
    if held.startswith("source="):
        source = held.removeprefix("source=")
        is_held = lambda r: r["source"] == source  # noqa: E731
        everything = [dict(r, kind=None) for r in load_silver()] if source == "silver" else []
    else:
        is_held = lambda r: r["source"] == "silver" and r["model"] == held  # noqa: E731
        everything = [dict(r, kind=None) for r in load_silver() if r["model"] == held]
    train = [r for r in rows if not is_held(r)]
    cleaned = [r for r in rows if is_held(r)]
    if not cleaned:
        raise SystemExit(f"no training rows match {held!r}")
    t = time.time()
    clf = fit_rows(train, None, default_params(encoder="finetuned"), progress=True)
    out: dict = {"held_out": held, "version": clf.version, "train_rows": len(train), "fit_seconds": round(time.time() - t)}
    for name, part in (("cleaned", cleaned), ("all", everything)):
        if not part:
            continue
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
    for r in results:
        key = "leave_one_source_out" if r["held_out"].startswith("source=") else "leave_one_model_out"
        table = [t for t in card.setdefault("metrics", {}).get(key, []) if t["held_out"] != r["held_out"]]
        for part in ("cleaned", "all"):
            if f"{part}/full" not in r:
                continue
            m = r[f"{part}/full"]
            table.append({"held_out": r["held_out"], "rows": part, "n": m["n"], "accuracy": m["accuracy"], "ece": m["ece"],
                          "cascade_accuracy": r[f"{part}/cascade"]["accuracy"], "version": r.get("version", "1.1.0")})  # fmt: skip
        card["metrics"][key] = table
    card.pop("written_at", None)
    write_model_card(model_dir, card)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", help="silver model names or source=NAME to hold out, one fine-tune each")
    ap.add_argument("--card", default=None, help="model directory whose card gets the results")
    ap.add_argument("--from-json", default=None, help="add results printed by an earlier run (JSON lines) instead of running")
    a = ap.parse_args(argv)
    results = []
    if a.from_json:
        with open(a.from_json, encoding="utf-8") as fh:
            results = [json.loads(line) for line in fh if line.strip()]
    for m in a.models:
        results.append(run(m))
        print(json.dumps(results[-1]), flush=True)
    if a.card:
        add_to_card(a.card, results)


if __name__ == "__main__":
    main()
