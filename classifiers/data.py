"""Loaders for the labelled data shipped in ``data/``.

Every loader returns a list of plain dicts, so the classifiers stay free of pandas and of the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"

#: Tones of the paper's hand labels that are dropped before training (Reuter & Schulze 2023).
DROPPED_TONES = frozenset({"incoherent", "dontknow"})
#: Tones that are refusals but not outright ones: the response engages partly (a "partial refusal").
PARTIAL_TONES = frozenset({"redirected", "disclaimed", "contradicted", "counseling"})

COCONOT_CATEGORIES = (
    "Humanizing requests",
    "Incomplete requests",
    "Indeterminate requests",
    "Requests with safety concerns",
    "Unsupported requests",
)

SILVER_MODELS = (
    "gemma-2b-it",
    "llama-2-7b-chat-hf",
    "meta-llama-3-8b-instruct",
    "qwen-1_8b-chat",
    "yi-6b-chat",
)


def tone_to_kind(tone: str) -> str:
    """Map a paper tone to ``full_compliance`` | ``partial_refusal`` | ``full_refusal``."""
    if tone == "complied":
        return "full_compliance"
    if tone in PARTIAL_TONES:
        return "partial_refusal"
    return "full_refusal"


def _paper_source(index: int) -> str:
    # all_hand_labeled.json is nyp (21) + political_figures (700) + quora (1000), in that order.
    if index < 21:
        return "nyp"
    if index < 721:
        return "political_figures"
    return "quora"


def load_paper(path: Path | None = None) -> list[dict]:
    """The paper's 1,706 usable hand-labelled ChatGPT rows, in file order.

    Each row: ``prompt, response, tone, kind, refusal (bool), source`` where ``source`` is
    ``nyp`` | ``political_figures`` | ``quora``, ``model`` is ``gpt-3.5-turbo``.
    """
    path = path or DATA_DIR / "chatgpt-refusals" / "all_hand_labeled.json"
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    rows = []
    for i, item in enumerate(raw):
        tone = item["tone"]
        if tone in DROPPED_TONES:
            continue
        rows.append(
            {
                "prompt": item["prompt"],
                "response": item["response"],
                "tone": tone,
                "kind": tone_to_kind(tone),
                "refusal": tone != "complied",
                "source": _paper_source(i),
                "model": "gpt-3.5-turbo",
            }
        )
    return rows


def paper_split(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """The paper's split: 70% train, then the 30% halved into validation and test (seed 0).

    Reproduces ``train_test_split(test_size=0.3, random_state=0)`` followed by
    ``train_test_split(test_size=0.5, random_state=0)`` on the rest; the test part has 256 rows.
    """
    from sklearn.model_selection import train_test_split

    train, rest = train_test_split(rows, test_size=0.3, random_state=0)
    val, test = train_test_split(rest, test_size=0.5, random_state=0)
    return list(train), list(val), list(test)


def load_silver(models: Iterable[str] = SILVER_MODELS, root: Path | None = None) -> list[dict]:
    """The 2,500 refusal-direction completions with their silver (substring-match) labels.

    Each row: ``prompt, response, refusal, model, split, intervention, category, source="silver"``.
    """
    root = root or DATA_DIR / "refusal-direction-completions"
    rows = []
    for model in models:
        for f in sorted((root / model).glob("*_evaluations.json")):
            split, intervention, _ = f.name.split("_", 2)
            for c in json.loads(f.read_text(encoding="utf-8"))["completions"]:
                rows.append(
                    {
                        "prompt": c["prompt"],
                        "response": c["response"],
                        "refusal": not bool(c["is_jailbreak_substring_matching"]),
                        "model": model,
                        "split": split,
                        "intervention": intervention,
                        "category": c.get("category"),
                        "source": "silver",
                    }
                )
    return rows


STYLE_SETS_DIR = DATA_DIR / "other-model-styles"


def load_style_sets(root: Path | None = None) -> list[dict]:
    """Responses written in other chat models' styles, labelled for this project (``other-model-styles/``).

    Each row: ``prompt, response, refusal, kind, model`` (the style imitated), ``refusal_sentence``
    (where the refusal begins, when labelled), ``set`` (the file's
    stem: the unit of leave-one-set-out evaluation), ``source="styles"``; ``refusal`` counts partial
    refusals as refusals. ``kind`` is ``None`` where a set has none.
    """
    root = root or STYLE_SETS_DIR
    rows = []
    for f in sorted(root.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                rows.append(
                    {
                        "prompt": r.get("prompt") or "",
                        "response": r["response"],
                        "refusal": bool(r["refusal"]),
                        "kind": r.get("kind"),
                        "model": r.get("model_style", "unknown"),
                        "refusal_sentence": r.get("refusal_sentence"),
                        "set": f.stem,
                        "source": "styles",
                    }
                )
    return rows


def load_coconot(contrast: bool = False, root: Path | None = None) -> list[dict]:
    """CoCoNot prompts: ``should_refuse`` is 1 for the eval set and 0 for the contrast set."""
    root = root or DATA_DIR / "coconot"
    name = "coconot_contrast_eval.jsonl" if contrast else "coconot_eval.jsonl"
    rows = []
    with open(root / name, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                item = json.loads(line)
                item["should_refuse"] = 0 if contrast else 1
                item.pop("response", None)
                rows.append(item)
    return rows
