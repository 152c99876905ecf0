"""The human review queue: list uncertain machine labels, record reviewers' labels.

An item enters the queue when its newest machine label has ``needs_review`` (low confidence or
labelling functions that disagree) and no human label exists for the response yet. A human label is
stored as a :class:`~audit.store.Label` with ``source="human"``, the reviewer and the time; it
overrides machine labels in every rate (:func:`audit.rates.effective_labels`) and feeds retraining
(:func:`human_training_rows`, ``refusal-audit train response --include-human``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import aliased

from audit.store import Label, Prompt, Response, Run, Store

KINDS = ("full_compliance", "partial_refusal", "full_refusal")
HUMAN_CLASSIFIER = "human"
HUMAN_VERSION = "review"


@dataclass(frozen=True)
class ReviewItem:
    response_id: int
    run: str
    prompt: str
    response: str
    p_refusal: float
    kind: str
    refusal: bool
    refusal_start: int | None
    reason: str | None

    def as_dict(self) -> dict:
        return asdict(self)


def default_reviewer(reviewer: str | None = None) -> str:
    """The reviewer name: the argument, else ``$USER``; an empty name is refused."""
    name = (reviewer or os.environ.get("USER") or "").strip()
    if not name:
        raise ValueError("a reviewer name is required (--reviewer NAME or $USER)")
    return name


def review_queue(store: Store, run_name: str | None = None, limit: int | None = 50) -> list[ReviewItem]:
    """Responses without a human label whose newest machine label needs review, least confident first."""
    newest = (
        select(Label.response_id, func.max(Label.id).label("label_id"))
        .where(Label.source == "machine")
        .group_by(Label.response_id)
        .subquery()
    )
    human = aliased(Label)
    has_human = exists().where(and_(human.response_id == Response.id, human.source == "human"))
    q = (
        select(Label, Response, Prompt.text, Run.name)
        .join(newest, newest.c.label_id == Label.id)
        .join(Response, Response.id == Label.response_id)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .join(Run, Run.id == Response.run_id)
        .where(Label.needs_review.is_(True), ~has_human)
        .order_by(func.abs(Label.p_refusal - 0.5), Response.id)
    )
    if run_name is not None:
        q = q.where(Run.name == run_name)
    if limit is not None:
        q = q.limit(limit)
    with store.session() as s:
        rows = s.execute(q).all()
        return [
            ReviewItem(
                response_id=resp.id,
                run=run,
                prompt=prompt,
                response=resp.text or "",
                p_refusal=lab.p_refusal,
                kind=lab.kind,
                refusal=lab.refusal,
                refusal_start=lab.refusal_start,
                reason=lab.review_reason,
            )
            for lab, resp, prompt, run in rows
        ]


def add_human_label(
    store: Store,
    response_id: int,
    refusal: bool,
    reviewer: str | None = None,
    kind: str | None = None,
    refusal_start: int | None = None,
) -> int:
    """Store a reviewer's label for a response (with reviewer and time); returns the label id."""
    reviewer = default_reviewer(reviewer)
    kind = kind or ("full_refusal" if refusal else "full_compliance")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if bool(refusal) != (kind != "full_compliance"):
        raise ValueError(f"kind {kind!r} contradicts {'refusal' if refusal else 'compliance'}")
    with store.session() as s:
        if s.get(Response, response_id) is None:
            raise ValueError(f"no response with id {response_id}")
        lab = Label(
            response_id=response_id,
            classifier=HUMAN_CLASSIFIER,
            classifier_version=HUMAN_VERSION,
            source="human",
            refusal=bool(refusal),
            kind=kind,
            p_refusal=1.0 if refusal else 0.0,
            refusal_start=refusal_start if refusal else None,
            needs_review=False,
            reviewer=reviewer,
        )
        s.add(lab)
        s.flush()
        return lab.id


def human_training_rows(store: Store) -> list[dict]:
    """The newest human label of every reviewed response, as training rows
    (``prompt, response, refusal, kind, source="human", model``)."""
    newest = (
        select(Label.response_id, func.max(Label.id).label("label_id"))
        .where(Label.source == "human")
        .group_by(Label.response_id)
        .subquery()
    )
    from audit.store import Target

    q = (
        select(Label, Response.text, Prompt.text, Target.model)
        .join(newest, newest.c.label_id == Label.id)
        .join(Response, Response.id == Label.response_id)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .join(Run, Run.id == Response.run_id)
        .join(Target, Target.id == Run.target_id)
        .order_by(Label.id)
    )
    with store.session() as s:
        return [
            {
                "prompt": prompt,
                "response": text or "",
                "refusal": bool(lab.refusal),
                "kind": lab.kind,
                "source": "human",
                "model": model or "unknown",
            }
            for lab, text, prompt, model in s.execute(q).all()
        ]
