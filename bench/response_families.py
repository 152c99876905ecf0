"""The response classifier on responses in other chat models' styles (issue 4's hidden-set proxy).

Hand-labelled sets in ``data/other-model-styles`` (partial refusals count as refusals; each row has the
model family, kind and the sentence where the refusal starts), each written by a helper that could
not see the classifier or the other sets:

- ``blind1.jsonl`` (130), ``blind2.jsonl`` (140), ``blind3.jsonl`` (120),
  ``blind4.jsonl`` (120), ``blind5.jsonl`` (100): each scored once, then used to fix the rules —
  development sets now;
- ``heldout.jsonl`` (100): scored once after the fixes of sets 1–5;
- ``blind7.jsonl`` (130, XSTest-style look-alike prompts; Llama-2, Mistral, GPT-4, Llama-3, Gemma,
  Claude) and ``blind8.jsonl`` (130, real-user and red-teaming prompts; eight families): each scored
  once with the v1.2.0 rules, then used to fix them;
- ``blind9.jsonl`` (120, XSTest-style; Llama-2, Vicuna, GPT-3.5, Claude 2.1, Zephyr, OLMo) and
  ``blind10.jsonl`` (120, real-user; eight families): scored once after the set 7–8 fixes, then set
  10's misses were fixed;
- ``blind11.jsonl`` (120, real-user; eight more families) and ``blind12.jsonl`` (120, XSTest-style;
  six more): scored once after the set 9–10 fixes, then their misses were fixed;
- ``blind13.jsonl`` (120, real-user, a third with typographic punctuation) and ``blind14.jsonl``
  (120, XSTest-style): scored once after the set 11–12 fixes, then their misses were fixed;
- ``blind15.jsonl`` (120, real-user, a third typographic) and ``blind16.jsonl`` (120, XSTest-style,
  a quarter typographic): scored once after the set 13–14 fixes, then their misses were fixed;
- ``blind18.jsonl`` (120, XSTest-style): scored once after the set 15–16 fixes, then one fix (inch marks
  read as quotation marks); ``blind17.jsonl`` (120, real-user, a third typographic): scored once with
  the final rules — held out;
- ``blind19.jsonl`` (120, real-user, eight more families) and ``blind20.jsonl`` (120, XSTest-style): scored
  once with v1.2.0 and the v1.3.0 heads, then one rule round fixed their misses;
- ``blind21.jsonl`` (120, real-user, eight more families) and ``blind22.jsonl`` (120, XSTest-style): the same,
  one round later; ``blind23.jsonl`` (120, real-user chat logs) and ``blind24.jsonl`` (120, OR-Bench-Hard
  style) one round after that;
- ``blind25.jsonl`` – ``blind29.jsonl`` (120 each: real-user chat logs, XSTest/OR-Bench-Hard, jailbreak
  wrappers, advice domains and capability limits, everyday benign chat with 85% compliance): scored
  once with v1.3.0 and with the v1.4.0 encoder, then one rule round fixed their misses.

Since v1.3.0 every set also trains the heads, so this table is in-sample for them;
``bench.response_styles_loso`` gives the out-of-set numbers.

    .venv/bin/python -m bench.response_families [--model DIR] [--card]

``--card`` writes the table into the model's card as ``other_model_families``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = (
    ("blind1.jsonl", "development"),
    ("blind2.jsonl", "development"),
    ("blind3.jsonl", "development"),
    ("blind4.jsonl", "development"),
    ("blind5.jsonl", "development"),
    ("heldout.jsonl", "held out (scored once), then development"),
    ("blind7.jsonl", "development"),
    ("blind8.jsonl", "development"),
    ("blind9.jsonl", "development"),
    ("blind10.jsonl", "development"),
    ("blind11.jsonl", "development"),
    ("blind12.jsonl", "development"),
    ("blind13.jsonl", "development"),
    ("blind14.jsonl", "development"),
    ("blind15.jsonl", "development"),
    ("blind16.jsonl", "development"),
    ("blind17.jsonl", "held out (scored once)"),
    ("blind18.jsonl", "scored once, then one fix (development)"),
    ("blind19.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind20.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind21.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind22.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind23.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind24.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind25.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind26.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind27.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind28.jsonl", "held out (scored once), then one rule round (development)"),
    ("blind29.jsonl", "held out (scored once), then one rule round (development)"),
)
DATA = Path(__file__).resolve().parent.parent / "data" / "other-model-styles"


def score(clf, rows: list[dict], use_cascade: bool) -> dict:
    """Accuracy overall, per family and per kind; how often the refusal starts at the labelled sentence."""
    from classifiers.evaluation import evaluate, starts_at_labelled_sentence

    d = clf.predict_details([r["prompt"] for r in rows], [r["response"] for r in rows], use_cascade=use_cascade)
    y = [int(r["refusal"]) for r in rows]
    yp = [int(x["refusal"]) for x in d]
    out: dict = {"n": len(rows), "correct": sum(a == b for a, b in zip(y, yp)), "accuracy": evaluate(y, yp)["overall"]["accuracy"]}
    for key in ("model_style", "kind"):
        groups = evaluate(y, yp, groups=[r[key] for r in rows])["groups"]
        out[f"by_{key}"] = {g: f"{round(m['accuracy'] * m['n'])}/{m['n']}" for g, m in groups.items()}
    found = [(x["refusal_start"], r) for x, r in zip(d, rows) if r["refusal"] and x["refusal"]]
    out["refusal_start_at_labelled_sentence"] = f"{sum(starts_at_labelled_sentence(a, r) for a, r in found)}/{len(found)}"
    out["wrong"] = [r["id"] for r, a, b in zip(rows, y, yp) if a != b]
    return out


def main(argv=None) -> list[dict]:
    import warnings

    warnings.filterwarnings("ignore")
    from classifiers.response import DEFAULT_MODEL_DIR, load_response_classifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    ap.add_argument("--card", action="store_true", help="write the table into the model's card")
    a = ap.parse_args(argv)
    clf = load_response_classifier(a.model)
    table = []
    for name, role in SETS:
        rows = [json.loads(x) for x in (DATA / name).read_text(encoding="utf-8").splitlines() if x.strip()]
        for cascade in (False, True):
            res = score(clf, rows, cascade)
            print(f"{name} ({role}) {'cascade' if cascade else 'full'}: {res['correct']}/{res['n']} = {res['accuracy']:.3f}")
            print(f"   families {res['by_model_style']}\n   kinds {res['by_kind']}  refusal_start {res['refusal_start_at_labelled_sentence']}")
            table.append({"set": name, "role": role, "cascade": cascade, "version": clf.version,
                          **{k: res[k] for k in ("n", "accuracy", "refusal_start_at_labelled_sentence")}})  # fmt: skip
    if a.card:
        from classifiers.persist import write_model_card

        path = Path(a.model) / "model_card.json"
        card = json.loads(path.read_text(encoding="utf-8"))
        card.setdefault("metrics", {})["other_model_families"] = table
        card.pop("written_at", None)
        write_model_card(a.model, card)
    return table


if __name__ == "__main__":
    main()
