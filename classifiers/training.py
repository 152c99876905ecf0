"""Training data, evaluation protocols and the training of the default response classifier.

Training data: the paper's 1,706 hand-labelled ChatGPT responses (with kinds), the 2,500 silver
responses of five open chat models and the 3,519 responses written in other chat models' styles
(``data/other-model-styles``, with kinds). Silver labels are substring heuristics; rows where the
labelling functions confidently contradict them are dropped (``clean_silver``) rather than learned.

Protocols (all on the same precomputed embeddings):

- ``paper_split``: the paper's 70/15/15 split; train on train (+ silver), test on the 256 rows;
- ``grouped``: GroupKFold where each templated political prompt family stays on one side;
- ``leave_one_source_out``: nyp | political_figures | quora | silver held out in turn;
- ``leave_one_model_out``: each silver model held out in turn (scored against its silver labels);
- ``cross_validated``: stratified 5-fold out-of-fold predictions, reported per source and used for
  the reliability diagram and the held-out ECE.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from classifiers.calibration import expected_calibration_error
from classifiers.data import SILVER_MODELS, load_paper, load_silver, load_style_sets, paper_split
from classifiers.lf import COMPLIANCE, REFUSAL, lf_label
from classifiers.response import VERSION, ResponseClassifier

_TEMPLATE_RX = [
    (re.compile(r"^Should we build a statue of .+\?$"), "statue-build"),
    (re.compile(r"^Should we tear down a statue of .+\?$"), "statue-tear-down"),
    (re.compile(r"^Write me a poem in praise of .+"), "poem-praise"),
    (re.compile(r"^Write me a poem about learning .+"), "poem-learning"),
    (re.compile(r"^Write me a poem about murdering .+"), "poem-murdering"),
    (re.compile(r"^Please write me a poem about .+"), "poem-please"),
    (re.compile(r"^Write me a poem criticizing .+"), "poem-criticizing"),
    (re.compile(r"^Write me a poem about .+"), "poem-about"),
]


def prompt_group(row: dict) -> str:
    """The group of a row for grouped splits: the template of a political-figures prompt (so each
    template stays on one side), else the source and prompt."""
    if row.get("source") == "political_figures":
        for rx, name in _TEMPLATE_RX:
            if rx.match(row["prompt"].strip()):
                return f"pf:{name}"
        return "pf:other"
    return f"{row.get('source')}:{row['prompt']}"


PAPER_SOURCES = ("nyp", "political_figures", "quora")


def paper_split_indices(rows: list[dict]) -> tuple[list[int], list[int]]:
    """``(train, test)`` indices into ``rows`` for the paper split: train is the paper's train part
    plus every non-paper row (silver, extra); test is the paper's 256 test rows. The paper's
    validation rows are in neither."""
    paper = [i for i, r in enumerate(rows) if r["source"] in PAPER_SOURCES]
    pos = {id(rows[i]): i for i in paper}
    tr, _va, te = paper_split([rows[i] for i in paper])
    train = [pos[id(r)] for r in tr] + [i for i, r in enumerate(rows) if r["source"] not in PAPER_SOURCES]
    return train, [pos[id(r)] for r in te]


def training_rows(
    include_silver: bool = True, clean_silver: bool = True, include_styles: bool = True, extra_rows=()
) -> list[dict]:
    """Paper rows (all), silver rows (optionally cleaned), other-model-style rows and extra rows
    (e.g. human labels)."""
    rows = [dict(r, kind=r["kind"]) for r in load_paper()]
    if include_silver:
        for r in load_silver():
            if clean_silver:
                v = lf_label(r["response"])
                if (v == REFUSAL and not r["refusal"]) or (v == COMPLIANCE and r["refusal"]):
                    continue
            rows.append(dict(r, kind=None))
    if include_styles:
        rows.extend(load_style_sets())
    for r in extra_rows:
        rows.append(
            {
                "prompt": r.get("prompt") or "",
                "response": r["response"],
                "refusal": bool(r["refusal"]),
                "kind": r.get("kind"),
                "source": r.get("source", "extra"),
                "model": r.get("model", "unknown"),
            }
        )
    return rows


def default_params(**overrides) -> dict:
    params = dict(ResponseClassifier().get_params())
    params.update(overrides)
    return params


def fit_rows(
    rows: list[dict], emb: np.ndarray | None, params: dict | None = None, finetuned=None, progress: bool = False
) -> ResponseClassifier:
    clf = ResponseClassifier(**(params or default_params()))
    X = [(r["prompt"], r["response"]) for r in rows]
    clf.fit(
        X,
        [int(r["refusal"]) for r in rows],
        kinds=[r.get("kind") for r in rows],
        embeddings=emb,
        finetuned=finetuned,
        progress=progress,
    )
    return clf


def predict_rows(clf: ResponseClassifier, rows: list[dict], emb: np.ndarray | None, use_cascade: bool = False):
    """(p_refusal, predicted refusal) under the classifier's binary mapping."""
    d = clf.predict_details([r["prompt"] for r in rows], [r["response"] for r in rows], embeddings=emb, use_cascade=use_cascade)
    return np.array([x["p_refusal"] for x in d]), np.array([x["refusal"] for x in d], dtype=int)


def _metrics(y, yp, p) -> dict:
    y = np.asarray(y, dtype=int)
    return {
        "n": int(len(y)),
        "accuracy": float(np.mean(y == yp)) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p, 15) if len(y) else float("nan"),
    }


def _sub(emb, idx):
    return None if emb is None else emb[idx]


def _out_of_fold(rows: list[dict], emb: np.ndarray | None, params: dict, splits) -> tuple[np.ndarray, np.ndarray]:
    """``(p_refusal, predicted label)`` of every row, each predicted by the model fit without its fold."""
    p_all = np.zeros(len(rows))
    yp_all = np.zeros(len(rows), dtype=int)
    for tr, te in splits:
        clf = fit_rows([rows[i] for i in tr], _sub(emb, tr), params)
        p_all[te], yp_all[te] = predict_rows(clf, [rows[i] for i in te], _sub(emb, te))
    return p_all, yp_all


def _per_source(y: np.ndarray, yp: np.ndarray, p: np.ndarray, src: np.ndarray) -> list[dict]:
    """Metrics over all rows (``(all)``) and per source."""
    res = [{"source": "(all)", **_metrics(y, yp, p)}]
    for s in sorted(set(src)):
        m = src == s
        res.append({"source": s, **_metrics(y[m], yp[m], p[m])})
    return res


def evaluate_protocols(
    rows: list[dict],
    emb: np.ndarray | None,
    params: dict | None = None,
    protocols=("paper_split", "grouped", "cross_validated", "leave_one_source_out", "leave_one_model_out"),
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the evaluation protocols; returns ``{protocol: list of metric rows}``."""
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    params = params or default_params()
    out: dict = {}
    y = np.array([int(r["refusal"]) for r in rows])
    src = np.array([r["source"] for r in rows])
    say = progress or (lambda s: None)

    if "paper_split" in protocols:
        say("paper split")
        tr_i, te_i = paper_split_indices(rows)
        res = []
        for name, train_idx in (("train+silver", tr_i),):
            clf = fit_rows([rows[i] for i in train_idx], _sub(emb, train_idx), params)
            for cascade in (False, True):
                p, yp = predict_rows(clf, [rows[i] for i in te_i], _sub(emb, te_i), use_cascade=cascade)
                res.append({"train": name, "cascade": cascade, **_metrics(y[te_i], yp, p)})
        out["paper_split"] = res

    if "grouped" in protocols:
        say("grouped split")
        groups = np.array([prompt_group(r) for r in rows])
        p_all, yp_all = _out_of_fold(rows, emb, params, GroupKFold(n_splits=5).split(np.zeros(len(rows)), y, groups))
        out["grouped"] = _per_source(y, yp_all, p_all, src)

    if "cross_validated" in protocols:
        say("5-fold cross-validation")
        splits = StratifiedKFold(5, shuffle=True, random_state=1).split(np.zeros(len(rows)), y)
        p_all, yp_all = _out_of_fold(rows, emb, params, splits)
        res = _per_source(y, yp_all, p_all, src)
        models = np.array([r.get("model") or "" for r in rows])
        for mname in sorted(set(models[src == "silver"])):
            m = (models == mname) & (src == "silver")
            res.append({"source": f"silver/{mname}", **_metrics(y[m], yp_all[m], p_all[m])})
        out["cross_validated"] = res
        out["_oof"] = {"y": y.tolist(), "p": p_all.tolist()}

    if "leave_one_source_out" in protocols:
        res = []
        for s in ("nyp", "political_figures", "quora", "silver"):
            say(f"leave out {s}")
            te = np.flatnonzero(src == s)
            tr = np.flatnonzero(src != s)
            if not len(te):
                continue
            clf = fit_rows([rows[i] for i in tr], _sub(emb, tr), params)
            p, yp = predict_rows(clf, [rows[i] for i in te], _sub(emb, te))
            res.append({"held_out": s, **_metrics(y[te], yp, p)})
        out["leave_one_source_out"] = res

    if "leave_one_model_out" in protocols:
        res = []
        models = np.array([r.get("model") or "" for r in rows])
        for mname in SILVER_MODELS:
            say(f"leave out {mname}")
            te = np.flatnonzero((models == mname) & (src == "silver"))
            tr = np.flatnonzero(~((models == mname) & (src == "silver")))
            if not len(te):
                continue
            clf = fit_rows([rows[i] for i in tr], _sub(emb, tr), params)
            p, yp = predict_rows(clf, [rows[i] for i in te], _sub(emb, te))
            res.append({"held_out": mname, **_metrics(y[te], yp, p)})
        out["leave_one_model_out"] = res
    return out


def train_default(
    out_dir,
    *,
    extra_rows=(),
    use_embeddings: bool = True,
    full_card: bool = False,
    embedding_cache: str | None = None,
    progress: bool = True,
    params: dict | None = None,
    include_styles: bool = True,
) -> dict:
    """Train on paper + cleaned silver + style sets (+ ``extra_rows``), evaluate, and save model +
    card to ``out_dir``."""
    from classifiers.features import embed_views
    from classifiers.persist import write_model_card

    say = _printer(progress)
    rows = training_rows(include_styles=include_styles, extra_rows=extra_rows)
    params = params or default_params(use_embeddings=use_embeddings)
    emb = None
    if params.get("use_embeddings", True):
        say(f"embedding {len(rows)} responses (MiniLM, 3 views)")
        emb = embed_views([r["response"] for r in rows], cache=embedding_cache, progress=progress)
    protocols = ["paper_split", "cross_validated"]
    if full_card:
        protocols += ["grouped", "leave_one_source_out", "leave_one_model_out"]
    metrics = evaluate_protocols(rows, emb, params, protocols, progress=say)
    say("fitting the final model on all rows")
    clf = fit_rows(rows, emb, params)
    out = Path(out_dir)
    clf.save(out)
    oof = metrics.pop("_oof", None)
    diagram = None
    if oof:
        from classifiers.calibration import plot_reliability_diagram

        plot_reliability_diagram(oof["y"], oof["p"], out / "reliability.png", title="Out-of-fold P(refusal), 5 folds")
        diagram = "reliability.png"
    card = build_card(clf, rows, metrics, diagram)
    write_model_card(out, card)
    return card


def train_finetuned(
    out_dir,
    *,
    extra_rows=(),
    paper_split_only: bool = False,
    finetuned=None,
    progress: bool = True,
    params: dict | None = None,
    include_styles: bool = True,
) -> dict:
    """Train the fine-tuned-encoder classifier (``encoder="finetuned"``) and save it with its card.

    Fine-tuning costs minutes per run on CPU, so the card reports what one run can measure honestly:
    the rows held out from fine-tuning (``fusion_fraction``; the fusion's three coefficients are
    fitted on them too) per source, and with ``paper_split_only`` — training on the paper's train
    part + silver + styles only — the paper's 256 test rows. ``finetuned``: an encoder already
    fine-tuned (e.g. a saved model's, :func:`load_encoder`); the heads are refitted and the fusion is
    fitted on the rows it never saw (its ``trained_on_`` fingerprints), or on the held part of
    :func:`classifiers.finetune.fusion_split` when it records none.
    """
    from classifiers.finetune import fusion_split, unseen_rows
    from classifiers.persist import write_model_card

    say = _printer(progress)
    rows = training_rows(include_styles=include_styles, extra_rows=extra_rows)
    test: list[dict] = []
    if paper_split_only:
        tr, te = paper_split_indices(rows)
        rows, test = [rows[i] for i in tr], [rows[i] for i in te]
    params = params or default_params(encoder="finetuned")
    say(f"{'fitting the heads around the given encoder' if finetuned is not None else 'fine-tuning MiniLM and fitting the heads'} on {len(rows)} rows")
    clf = fit_rows(rows, None, params, finetuned=finetuned, progress=progress)
    y = np.array([int(r["refusal"]) for r in rows])
    if hasattr(clf.finetuned_, "trained_on_"):
        from classifiers.response import strip_reasoning

        held = unseen_rows(clf.finetuned_, [strip_reasoning(r["response"])[0] for r in rows])
    else:
        _, held = fusion_split(y, clf.fusion_fraction, clf.random_state)
    metrics: dict = {}
    say(f"scoring the {len(held)} rows held out from fine-tuning")
    held_rows = [rows[i] for i in held]
    p, yp = predict_rows(clf, held_rows, None)
    metrics["held_out_from_finetuning"] = _per_source(y[held], yp, p, np.array([r["source"] for r in held_rows]))
    if test:
        say(f"scoring the paper's {len(test)} test rows")
        yt = np.array([int(r["refusal"]) for r in test])
        metrics["paper_split"] = []
        for cascade in (False, True):
            pt, ypt = predict_rows(clf, test, None, use_cascade=cascade)
            metrics["paper_split"].append({"train": "paper train + silver" + (" + styles" if include_styles else ""), "cascade": cascade, **_metrics(yt, ypt, pt)})
    out = Path(out_dir)
    clf.save(out)
    from classifiers.calibration import plot_reliability_diagram

    plot_reliability_diagram(y[held], p, out / "reliability.png", title="P(refusal) on rows held out from fine-tuning")
    card = build_card(clf, rows, metrics, "reliability.png")
    card["params"] = clf.get_params()
    card["limitations"].insert(
        0,
        "held_out_from_finetuning: the fine-tuned encoder never saw these rows, but the cheap head scored them "
        "out of fold and the fusion's three coefficients were fitted on them.",
    )
    write_model_card(out, card)
    return card


def load_encoder(model_dir):
    """The fine-tuned encoder of a saved response model, to refit the heads around it; it must record
    the fingerprints of its training texts."""
    from classifiers.finetune import FineTunedMiniLM

    path = Path(model_dir)
    if not (path / "finetuned.json").exists():
        raise ValueError(f"{path}: no fine-tuned encoder (finetuned.json) in this model directory")
    enc = FineTunedMiniLM.load(path)
    if not hasattr(enc, "trained_on_"):
        raise ValueError(f"{path / 'finetuned.json'}: trained_on_sha1: not recorded, so its unseen rows are unknown")
    return enc


def build_card(clf: ResponseClassifier, rows: list[dict], metrics: dict, diagram: str | None) -> dict:
    from collections import Counter

    counts = Counter(r["source"] for r in rows)
    models = Counter(r.get("model") for r in rows if r["source"] == "silver")
    data = [
        {"name": "paper (Reuter & Schulze 2023, gpt-3.5-turbo)", "rows": sum(counts[s] for s in ("nyp", "political_figures", "quora")),
         "note": "hand labels; tones redirected/disclaimed/contradicted/counseling are partial refusals; incoherent/dontknow dropped"},
        {"name": "refusal-direction completions (silver)", "rows": counts["silver"],
         "note": "substring-heuristic labels of " + ", ".join(f"{m} ({n})" for m, n in sorted(models.items()))
         + "; rows contradicted by the labelling functions dropped"},
    ]  # fmt: skip
    if counts["styles"]:
        styles = Counter(r["set"] for r in rows if r["source"] == "styles")
        data.append({"name": "other chat models' styles (data/other-model-styles)", "rows": counts["styles"],
                     "note": f"{len(styles)} sets written for this project in the styles of over forty chat models, with kinds "
                     "(XSTest definitions; partial refusals are refusals); the guards' rules were fixed against their misses"})  # fmt: skip
    other = {s: n for s, n in counts.items() if s not in ("nyp", "political_figures", "quora", "silver", "styles")}
    for s, n in other.items():
        data.append({"name": s, "rows": n, "note": "extra labelled rows (e.g. human review labels)"})
    return {
        "name": clf.name,
        "version": VERSION,
        "description": (
            "Response refusal classifier: sentence-level labelling functions (position- and context-aware) and "
            "TF-IDF word n-grams in a cheap logistic-regression head with Platt calibration on out-of-fold scores; "
            "inside the cascade band, MiniLM (all-MiniLM-L6-v2) fine-tuned on the first "
            f"{clf.finetune_max_length} tokens of the response, its logit fused with the cheap head's by a "
            "logistic regression fitted on rows held out from fine-tuning; a partial-vs-full head trained on the "
            "rows with a labelled kind."
        ) if clf.encoder == "finetuned" else (
            "Response refusal classifier: sentence-level labelling functions (position- and context-aware), "
            "TF-IDF word n-grams and MiniLM (all-MiniLM-L6-v2) embeddings of the first and the last sentences "
            "of the response, combined by a logistic-regression head with Platt calibration on out-of-fold "
            "scores; a partial-vs-full head trained on the paper's tones; a cheap TF-IDF+LF head answers first "
            "and the embedding head only inside the cascade band."
        ),
        "training_data": data,
        "metrics": {k: v for k, v in metrics.items()},
        "reliability_diagram": diagram,
        "limitations": [
            "Silver labels are substring heuristics: leave-one-model-out accuracy is measured against them.",
            "The hand-labelled data is one model (gpt-3.5-turbo, 2023); other chat models' styles are covered by silver "
            "data and by sets written in their styles (a proxy, not real outputs), whose labels follow XSTest: an opinion "
            "or capability disclaimer before a substitute is a partial refusal, where the paper often labels ChatGPT's "
            "'As an AI language model, I don't have opinions. However, ...' as compliance.",
            "English only.",
        ],
    }


def _printer(progress: bool):
    if not progress:
        return lambda s: None
    import sys

    def say(s: str) -> None:
        print(f"[train] {s}", file=sys.stderr, flush=True)

    return say
