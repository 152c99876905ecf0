"""Train the prompt classifier from a labelled file or, as in the paper, from a run (bootstrap).

Bootstrap: the responses of a run are labelled (by the response classifier, or by reviewers), and
the prompt classifier learns from each prompt's *effective* label — the human label when there is
one, else the newest machine label (:func:`audit.rates.effective_labels`). With several samples per
prompt the prompt counts as refused when at least half of its labelled samples were refusals.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sqlalchemy import select

from audit.prompts import InputError, read_records
from audit.rates import effective_labels, run_by_name
from audit.store import Prompt, Response, Store


class BootstrapError(ValueError):
    """The run cannot train a prompt classifier (missing, unlabelled, one class only)."""


def run_training_rows(store: Store, run_name: str) -> list[dict]:
    """One row per labelled prompt of the run: ``prompt_id, prompt, category, refusal, n, refusals, human``."""
    with store.session() as session:
        run = run_by_name(session, run_name)
        if run is None:
            raise BootstrapError(f"no run named {run_name!r}")
        eff = effective_labels(run.id).subquery()
        q = (
            select(Prompt.id, Prompt.text, Prompt.category, eff.c.refusal, eff.c.source)
            .select_from(Response)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .join(eff, eff.c.response_id == Response.id)
            .where(Response.run_id == run.id)
            .order_by(Prompt.id, Response.sample)
        )
        rows = session.execute(q).all()
    agg: dict[int, dict] = {}
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0])
    for pid, text, category, refusal, source in rows:
        agg.setdefault(pid, {"prompt_id": pid, "prompt": text, "category": category})
        c = counts[pid]
        c[0] += 1
        c[1] += int(bool(refusal))
        c[2] += int(source == "human")
    out = []
    for pid, d in agg.items():
        n, k, h = counts[pid]
        out.append({**d, "refusal": k * 2 >= n, "n": n, "refusals": k, "human": h})
    return out


def _fit_and_save(prompts, labels, categories, out_dir, model, card, progress):
    from classifiers.prompt import PromptClassifier

    if len(set(bool(v) for v in labels)) < 2:
        raise BootstrapError("training needs prompts of both classes (some refused, some answered)")
    cats = categories if any(c for c in categories) else None
    clf = PromptClassifier(model=model, progress=progress).fit(prompts, labels, cats)
    clf.save(out_dir, card=card)
    return clf


def train_prompt_from_run(
    store: Store, run_name: str, out_dir: str | Path, *, model: str = "auto", progress: bool = False
):
    """Train a :class:`classifiers.prompt.PromptClassifier` on a run's effective labels; save it to ``out_dir``."""
    rows = run_training_rows(store, run_name)
    if not rows:
        raise BootstrapError(f"run {run_name!r} has no labelled responses: label it first (refusal-audit label --run)")
    card = {
        "training_data": f"run {run_name} (bootstrap: effective labels, human over machine)",
        "human_labelled_prompts": sum(1 for r in rows if r["human"]),
    }
    return _fit_and_save(
        [r["prompt"] for r in rows], [r["refusal"] for r in rows], [r["category"] for r in rows],
        out_dir, model, card, progress,
    )


def read_labelled_file(path: str | Path) -> list[dict]:
    """Rows ``prompt, refusal, category`` of a labelled CSV/JSON/JSONL file; every row needs a label."""
    records = read_records(path)
    rows = []
    for rec in records:
        if rec.label is None:
            raise InputError(path, rec.line, "refusal", "missing: every training line needs a refusal label")
        rows.append({"prompt": rec.prompt, "refusal": rec.label, "category": rec.category})
    return rows


def train_prompt_from_file(
    path: str | Path, out_dir: str | Path, *, model: str = "auto", progress: bool = False
):
    """Train on a labelled file (lines with ``prompt``, ``refusal``, optional ``category``); save to ``out_dir``."""
    rows = read_labelled_file(path)
    if len({r["refusal"] for r in rows}) < 2:
        raise InputError(path, None, "refusal", "all labels are the same: training needs both classes")
    card = {"training_data": f"file {Path(path).name} ({len(rows)} rows)"}
    return _fit_and_save(
        [r["prompt"] for r in rows], [r["refusal"] for r in rows], [r["category"] for r in rows],
        out_dir, model, card, progress,
    )
