"""Saving and loading response classifiers without pickles, with a model card.

A model directory holds:

- ``model.json`` — format, class, version, parameters and every non-array piece of state
  (the TF-IDF vocabulary, Platt coefficients, feature names);
- ``arrays.npz`` — the numeric state (IDF weights, LR coefficients, LF scaling), loaded with
  ``allow_pickle=False``;
- ``model_card.json`` and ``model_card.md`` — training data, parameters, metrics per source, version;
- with a fine-tuned encoder, ``finetuned.safetensors`` and ``finetuned.json`` (its trained tensors);
- optionally ``reliability.png`` — the reliability diagram referenced by the card.

Loading rebuilds scikit-learn objects from these plain values; nothing executable is read.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np

from classifiers.features import tfidf_from_dict, tfidf_to_dict

FORMAT = "refusal-audit/response-classifier"
FORMAT_VERSION = 1


def _lr_to(prefix: str, lr, arrays: dict) -> dict:
    arrays[f"{prefix}.coef"] = lr.coef_.astype(np.float64)
    arrays[f"{prefix}.intercept"] = lr.intercept_.astype(np.float64)
    return {"classes": [int(c) for c in lr.classes_], "params": {k: _jsonable(v) for k, v in lr.get_params().items()}}


def _lr_from(prefix: str, meta: dict, arrays: dict):
    from sklearn.linear_model import LogisticRegression

    params = {k: v for k, v in meta["params"].items() if k in LogisticRegression().get_params()}
    lr = LogisticRegression(**params)
    lr.coef_ = np.asarray(arrays[f"{prefix}.coef"], dtype=np.float64)
    lr.intercept_ = np.asarray(arrays[f"{prefix}.intercept"], dtype=np.float64)
    lr.classes_ = np.asarray(meta["classes"])
    lr.n_features_in_ = lr.coef_.shape[1]
    return lr


def _jsonable(v):
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def save_response_classifier(model, directory, card: dict | None = None) -> Path:
    """Write ``model`` (a fitted :class:`~classifiers.response.ResponseClassifier` or baseline) to ``directory``."""
    from classifiers.response import VERSION, BaselineResponseClassifier

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    vec_meta, vec_arrays = tfidf_to_dict(model.vectorizer_)
    arrays.update({f"tfidf.{k}": v for k, v in vec_arrays.items()})
    state: dict = {"tfidf": vec_meta}
    if isinstance(model, BaselineResponseClassifier):
        cls = "BaselineResponseClassifier"
        state["clf"] = _lr_to("clf", model.clf_, arrays)
    else:
        cls = "ResponseClassifier"
        arrays["lf.mean"] = model.lf_mean_
        arrays["lf.scale"] = model.lf_scale_
        state["cheap"] = _lr_to("cheap", model.cheap_, arrays)
        state["cheap_platt"] = list(model.cheap_platt_)
        if model.full_ is not None:
            state["full"] = _lr_to("full", model.full_, arrays)
            state["full_platt"] = list(model.full_platt_)
        if model.kind_ is not None:
            state["kind"] = _lr_to("kind", model.kind_, arrays)
        if getattr(model, "fusion_", None) is not None:
            state["fusion"] = list(model.fusion_)
            model.finetuned_.save(d)
        state["n_features"] = model.n_features_
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": cls,
        "version": getattr(model, "version_", VERSION),
        "name": model.name,
        "params": {k: _jsonable(v) for k, v in model.get_params().items()},
        "state": state,
        "saved_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    (d / "model.json").write_text(json.dumps(doc, indent=1), encoding="utf-8")
    # float32 halves the size; coefficients do not need more precision
    np.savez_compressed(
        d / "arrays.npz",
        **{k: (v.astype(np.float32) if v.dtype.kind == "f" and k != "tfidf.idf" else v) for k, v in arrays.items()},
    )
    if card is not None:
        write_model_card(d, {**card, "name": model.name, "version": doc["version"], "class": cls, "params": doc["params"]})
    return d


def load_response_classifier(directory):
    """Rebuild a classifier saved by :func:`save_response_classifier` (no pickles involved)."""
    from classifiers.response import BaselineResponseClassifier, ResponseClassifier

    d = Path(directory)
    path = d / "model.json"
    if not path.exists():
        raise FileNotFoundError(f"{d}: not a saved response classifier (no model.json)")
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown format {doc.get('format')!r}")
    if doc.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path}: format version {doc['format_version']} is newer than this package supports")
    with np.load(d / "arrays.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    state = doc["state"]
    params = dict(doc["params"])
    for k in ("ngram_range", "cascade", "review_band"):
        if isinstance(params.get(k), list):
            params[k] = tuple(params[k])
    vec = tfidf_from_dict(state["tfidf"], {"idf": arrays["tfidf.idf"]})
    if doc["class"] == "BaselineResponseClassifier":
        m = BaselineResponseClassifier(**params)
        m.vectorizer_ = vec
        m.clf_ = _lr_from("clf", state["clf"], arrays)
    elif doc["class"] == "ResponseClassifier":
        m = ResponseClassifier(**params)
        m.vectorizer_ = vec
        m.lf_mean_ = arrays["lf.mean"].astype(np.float64)
        m.lf_scale_ = arrays["lf.scale"].astype(np.float64)
        m.cheap_ = _lr_from("cheap", state["cheap"], arrays)
        m.cheap_platt_ = tuple(state["cheap_platt"])
        m.full_ = _lr_from("full", state["full"], arrays) if "full" in state else None
        m.full_platt_ = tuple(state["full_platt"]) if "full_platt" in state else None
        m.kind_ = _lr_from("kind", state["kind"], arrays) if "kind" in state else None
        m.fusion_ = tuple(state["fusion"]) if "fusion" in state else None
        if m.fusion_ is not None:
            from classifiers.finetune import LazyFineTunedMiniLM

            m.finetuned_ = LazyFineTunedMiniLM(d)
        m.n_features_ = state.get("n_features")
    else:
        raise ValueError(f"{path}: unknown class {doc['class']!r}")
    m.classes_ = np.array([0, 1])
    m.version_ = doc.get("version")
    m.model_dir_ = str(d)
    return m


def write_model_card(directory, card: dict) -> None:
    """Write ``model_card.json`` and a readable ``model_card.md``."""
    d = Path(directory)
    card = {**card, "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (d / "model_card.json").write_text(json.dumps(_jsonable(card), indent=1, default=str), encoding="utf-8")
    lines = [f"# Model card: {card.get('name')} {card.get('version')}", ""]
    if card.get("description"):
        lines += [card["description"], ""]
    if card.get("training_data"):
        lines += ["## Training data", ""]
        for item in card["training_data"]:
            lines.append(f"- {item}" if isinstance(item, str) else f"- {item.get('name')}: {item.get('rows')} rows — {item.get('note', '')}")
        lines.append("")
    if card.get("params"):
        lines += ["## Parameters", "", "```json", json.dumps(_jsonable(card["params"]), indent=1), "```", ""]
    for section, rows in (card.get("metrics") or {}).items():
        lines += [f"## Metrics: {section}", ""]
        if isinstance(rows, list) and rows and isinstance(rows[0], dict):
            cols = list(rows[0].keys())
            lines.append("| " + " | ".join(cols) + " |")
            lines.append("|" + "---|" * len(cols))
            for r in rows:
                lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
        else:
            lines.append("```json\n" + json.dumps(_jsonable(rows), indent=1) + "\n```")
        lines.append("")
    if card.get("reliability_diagram"):
        lines += ["## Calibration", "", f"![reliability diagram]({card['reliability_diagram']})", ""]
    if card.get("limitations"):
        lines += ["## Limitations", ""] + [f"- {x}" for x in card["limitations"]] + [""]
    (d / "model_card.md").write_text("\n".join(lines), encoding="utf-8")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def read_model_card(directory) -> dict:
    p = Path(directory) / "model_card.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
