"""Leave-one-style-set-out for the response classifier (issue 4): how well do the heads generalise to
a model style whose set they never saw?

The style sets (``data/other-model-styles``, 30 sets, 3,519 responses in over forty chat-model
styles) train the heads of the shipped model. For each set in turn, the heads and the fusion are
refitted, exactly as ``train response --encoder-from`` does, on the paper + silver rows and the other
sets, around the shipped fine-tuned encoder, then scored on the left-out set. The same is done
without any style row, so the two columns differ only in whether other sets' styles were learned.

Caveats: the guards (rules in :mod:`classifiers.lf`) were written against these sets' misses, which
flatters both columns alike; the kinds were never tuned on them. The v1.4.0 encoder was fine-tuned on
80% of sets 1–24 (``encoder_saw`` counts a set's rows it saw), so only the sets written after it (25–29,
which share at most a few one-line refusals with its data) are out of sample for the whole model; they
are totalled apart. The v1.3.0 encoder saw no style row.

    .venv/bin/python -m bench.response_styles_loso [--model DIR] [--sets blind17,blind18] [--card]

``--card`` writes the result into the model's card as ``leave_one_style_set_out``.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


class _ScoredEncoder:
    """The encoder's logits computed once for every text it may be asked about; same ``trained_on_``."""

    def __init__(self, encoder, texts: list[str]):
        self.trained_on_ = list(encoder.trained_on_)
        unique = sorted(set(texts))
        self._z = dict(zip(unique, encoder.decision_function(unique).tolist()))

    def decision_function(self, texts):
        return np.array([self._z[t] for t in texts])


def _score(clf, rows: list[dict], use_cascade: bool) -> dict:
    from classifiers.evaluation import starts_at_labelled_sentence

    d = clf.predict_details([r["prompt"] for r in rows], [r["response"] for r in rows], use_cascade=use_cascade)
    kinds = [(x["kind"], r["kind"]) for x, r in zip(d, rows) if r["kind"]]
    found = [(x["refusal_start"], r) for x, r in zip(d, rows) if r["refusal"] and x["refusal"] and r.get("refusal_sentence")]
    return {
        "p_refusal": [x["p_refusal"] for x in d],
        "n": len(rows),
        "correct": sum(x["refusal"] == bool(r["refusal"]) for x, r in zip(d, rows)),
        "kinds_labelled": len(kinds),
        "kind_correct": sum(a == b for a, b in kinds),
        "partial_refusals_caught": f"{sum(x['refusal'] for x, r in zip(d, rows) if r['kind'] == 'partial_refusal')}"
        f"/{sum(r['kind'] == 'partial_refusal' for r in rows)}",
        "start_at_labelled_sentence": f"{sum(starts_at_labelled_sentence(a, r) for a, r in found)}/{len(found)}",
    }


def main(argv=None) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    from tqdm import tqdm

    from classifiers.calibration import expected_calibration_error
    from classifiers.data import load_style_sets
    from classifiers.response import DEFAULT_MODEL_DIR, ResponseClassifier, strip_reasoning
    from classifiers.training import load_encoder, training_rows

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model whose encoder and parameters are used")
    ap.add_argument("--sets", default="", help="comma-separated set names (default: all)")
    ap.add_argument("--card", action="store_true", help="write the result into the model's card")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    base = training_rows(include_styles=False)
    styles = load_style_sets()
    shipped = ResponseClassifier.load(args.model)
    encoder = load_encoder(args.model)
    params = shipped.get_params()
    texts = [strip_reasoning(r["response"])[0] for r in base + styles]
    from classifiers.finetune import unseen_rows

    unseen = set(unseen_rows(encoder, texts))
    print(f"scoring {len(texts)} texts with the encoder ({len(unseen)} it never saw)", flush=True)
    scored = _ScoredEncoder(encoder, texts)
    probe = ResponseClassifier(**params)
    lf_all = probe._lf([r["prompt"] for r in base + styles], [r["response"] for r in base + styles])

    def fit(rows_idx: list[int]) -> ResponseClassifier:
        rows = [(base + styles)[i] for i in rows_idx]
        clf = ResponseClassifier(**params)
        clf.fit(
            [(r["prompt"], r["response"]) for r in rows],
            [int(r["refusal"]) for r in rows],
            kinds=[r.get("kind") for r in rows],
            finetuned=scored,
            lf=lf_all[rows_idx],
        )
        return clf

    n_base = len(base)
    without_styles = fit(list(range(n_base)))
    names = sorted({r["set"] for r in styles}, key=lambda s: (len(s), s))
    if args.sets:
        names = [s for s in names if s in args.sets.split(",")]
    result: dict = {"sets": [], "model": args.model}
    pooled: dict[str, tuple[list, list]] = {}
    for name in tqdm(names, desc="leave one style set out", unit="set"):
        test = [r for r in styles if r["set"] == name]
        train_idx = list(range(n_base)) + [n_base + i for i, r in enumerate(styles) if r["set"] != name]
        clf = fit(train_idx)
        seen = sum(n_base + i not in unseen for i, r in enumerate(styles) if r["set"] == name)
        row = {"set": name, "n": len(test), "encoder_saw": seen}
        for label, model in (("with_other_sets", clf), ("without_style_rows", without_styles)):
            row[label] = _score(model, test, use_cascade=False)
            row[label + "_cascade"] = _score(model, test, use_cascade=True)["correct"]
        for label in ("with_other_sets", "without_style_rows"):
            pooled.setdefault(label, ([], []))
            pooled[label][0].extend(row[label].pop("p_refusal"))
            pooled[label][1].extend(int(r["refusal"]) for r in test)
        result["sets"].append(row)
        print(json.dumps(row), flush=True)
    # a set written after the fine-tune shares at most a few one-line refusals with the encoder's data
    never_seen = [r["set"] for r in result["sets"] if r["encoder_saw"] <= 0.05 * r["n"]]
    for label in ("with_other_sets", "without_style_rows"):
        fresh = [r for r in result["sets"] if r["set"] in never_seen]
        if fresh and len(fresh) < len(result["sets"]):
            ok, n = sum(r[label]["correct"] for r in fresh), sum(r["n"] for r in fresh)
            kok = sum(r[label]["kind_correct"] for r in fresh)
            result[label + "_sets_the_encoder_never_saw"] = {"sets": never_seen, "n": n, "correct": ok, "accuracy": ok / n, "kind_correct": kok}
            print(f"{label}, sets the encoder never saw ({', '.join(never_seen)}): {ok}/{n} = {ok / n:.4f}, kind {kok}/{n}")
        tot = {k: sum(r[label][k] for r in result["sets"]) for k in ("n", "correct", "kinds_labelled", "kind_correct")}
        tot["cascade_correct"] = sum(r[label + "_cascade"] for r in result["sets"])
        tot["accuracy"] = tot["correct"] / tot["n"]
        tot["kind_accuracy"] = tot["kind_correct"] / max(1, tot["kinds_labelled"])
        tot["ece"] = expected_calibration_error(np.array(pooled[label][1]), np.array(pooled[label][0]))
        result[label] = tot
        print(
            f"{label}: {tot['correct']}/{tot['n']} = {tot['accuracy']:.4f} (cascade {tot['cascade_correct']}); "
            f"kind {tot['kind_correct']}/{tot['kinds_labelled']} = {tot['kind_accuracy']:.4f}; ECE {tot['ece']:.4f}"
        )
    result["seconds"] = round(time.perf_counter() - t0)
    if args.card and not args.sets:
        from pathlib import Path

        from classifiers.persist import read_model_card, write_model_card

        card = read_model_card(Path(args.model))
        card.setdefault("metrics", {})["leave_one_style_set_out"] = result
        write_model_card(Path(args.model), card)
    return result


if __name__ == "__main__":
    main()
