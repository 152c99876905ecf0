"""The human review queue: list uncertain machine labels, record reviewers' labels.

:func:`review_queue` is the one queue of both front ends (``refusal-audit review`` and the
dashboard's review page): responses without a human label whose newest machine label has
``needs_review`` (low confidence or labelling functions that disagree), whose classifiers disagree,
or — with a ``margin`` — whose newest machine label has ``|p_refusal - 0.5| < margin``. A human label is
stored as a :class:`~audit.store.Label` with ``source="human"``, the reviewer and the time; it
overrides machine labels in every rate (:func:`audit.rates.effective_labels`) and feeds retraining
(:func:`human_training_rows`, ``refusal-audit train response --include-human``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from sqlalchemy import Integer, and_, case, cast, exists, func, or_, select
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
    reason: str | None  # the stored review_reason of the newest machine label
    reasons: list[str] = field(default_factory=list)  # why the item is in the queue

    @property
    def closeness(self) -> float:
        """``|p_refusal - 0.5|`` of the newest machine label (smaller = less confident)."""
        return abs(self.p_refusal - 0.5)

    def as_dict(self) -> dict:
        return asdict(self)


def default_reviewer(reviewer: str | None = None) -> str:
    """The reviewer name: the argument, else ``$USER``; an empty name is refused."""
    name = (reviewer or os.environ.get("USER") or "").strip()
    if not name:
        raise ValueError("a reviewer name is required (--reviewer NAME or $USER)")
    return name


def review_queue(
    store: Store,
    run_name: str | None = None,
    *,
    run_id: int | None = None,
    margin: float | None = None,
    limit: int | None = 50,
) -> list[ReviewItem]:
    """The review queue: responses without a human label that need a reviewer's eye.

    A response is listed when (a) its newest machine label is flagged ``needs_review`` (the stored
    ``review_reason`` is kept), (b) the machine labels of different classifiers — the newest label of
    each ``(classifier, classifier_version)`` — disagree on ``refusal``, or (c) ``margin`` is given and
    its newest machine label has ``|p_refusal - 0.5| < margin``. Disagreements come first, then the
    least confident (newest machine label), then the response id. ``run_name`` and ``run_id`` restrict
    the queue to one run; ``limit=None`` lists everything. One SQL statement (SQLite and PostgreSQL);
    this is the queue of both the terminal (``refusal-audit review``) and the dashboard.
    """
    if margin is not None and not 0 <= margin <= 0.5:
        raise ValueError(f"margin must be between 0 and 0.5, not {margin}")
    machine = Label.source == "machine"
    # newest label of every (response, classifier, version)
    per_clf = select(Label.response_id, func.max(Label.id).label("label_id")).where(machine)
    if run_id is not None or run_name is not None:
        in_run = select(Response.id).join(Run, Run.id == Response.run_id)
        if run_id is not None:
            in_run = in_run.where(Run.id == run_id)
        if run_name is not None:
            in_run = in_run.where(Run.name == run_name)
        per_clf = per_clf.where(Label.response_id.in_(in_run))
    per_clf = per_clf.group_by(Label.response_id, Label.classifier, Label.classifier_version).subquery()
    verdict = aliased(Label)
    refusal = cast(verdict.refusal, Integer)
    per_resp = (
        select(
            per_clf.c.response_id,
            func.max(per_clf.c.label_id).label("newest_id"),  # the newest machine label overall
            case((func.min(refusal) != func.max(refusal), 1), else_=0).label("disagree"),
        )
        .join(verdict, verdict.id == per_clf.c.label_id)
        .group_by(per_clf.c.response_id)
        .subquery()
    )
    human = aliased(Label)
    has_human = exists().where(and_(human.response_id == per_resp.c.response_id, human.source == "human"))
    closeness = func.abs(Label.p_refusal - 0.5)
    wanted = [Label.needs_review.is_(True), per_resp.c.disagree == 1]
    if margin is not None:
        wanted.append(closeness < margin)
    q = (
        select(Label, per_resp.c.disagree, Response, Prompt.text, Run.name)
        .select_from(per_resp)
        .join(Label, Label.id == per_resp.c.newest_id)
        .join(Response, Response.id == per_resp.c.response_id)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .join(Run, Run.id == Response.run_id)
        .where(~has_human, or_(*wanted))
        .order_by(per_resp.c.disagree.desc(), closeness, per_resp.c.response_id)
    )
    if limit is not None:
        q = q.limit(limit)
    with store.session() as s:
        rows = s.execute(q).all()
        items = []
        for lab, disagree, resp, prompt, run in rows:
            reasons = []
            if disagree:
                reasons.append("classifiers disagree")
            if margin is not None and abs(lab.p_refusal - 0.5) < margin:
                reasons.append(f"low confidence (p={lab.p_refusal:.2f})")
            if lab.needs_review:
                reasons.append(lab.review_reason or "flagged for review")
            items.append(
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
                    reasons=reasons,
                )
            )
        return items


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
