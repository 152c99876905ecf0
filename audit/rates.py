"""Refusal rates per category, computed in SQL from the effective label of each response.

The effective label of a response is its newest human label if it has one, else its newest machine
label. Responses with an error and no text have no label and do not count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import Integer, Select, case, cast, func, select
from sqlalchemy.orm import Session

from audit.stats import wilson_interval
from audit.store import Label, Prompt, Response, Run

ALL = "(all)"


def effective_labels(run_id: int | None = None) -> Select:
    """A query of ``response_id, refusal, kind, p_refusal, source, refusal_start`` with one row per
    labelled response: human labels override machine labels, the newest wins."""
    rank = func.row_number().over(
        partition_by=Label.response_id,
        order_by=[case((Label.source == "human", 0), else_=1), Label.id.desc()],
    )
    q = select(
        Label.response_id,
        Label.refusal,
        Label.kind,
        Label.p_refusal,
        Label.source,
        Label.refusal_start,
        rank.label("rn"),
    )
    if run_id is not None:
        q = q.join(Response, Response.id == Label.response_id).where(Response.run_id == run_id)
    ranked = q.subquery()
    return select(
        ranked.c.response_id,
        ranked.c.refusal,
        ranked.c.kind,
        ranked.c.p_refusal,
        ranked.c.source,
        ranked.c.refusal_start,
    ).where(ranked.c.rn == 1)


@dataclass(frozen=True)
class CategoryRate:
    """Observed refusal rate of one category of a run, with a 95% Wilson interval."""

    category: str
    n: int
    refusals: int
    rate: float
    ci_low: float
    ci_high: float
    provider_refusals: int = 0
    errors: int = 0
    human_labels: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def _rate(category: str, n: int, k: int, provider: int = 0, errors: int = 0, human: int = 0) -> CategoryRate:
    low, high = wilson_interval(k, n)
    return CategoryRate(category, n, k, (k / n) if n else float("nan"), low, high, provider, errors, human)


def category_rates(session: Session, run_id: int, *, include_total: bool = True) -> list[CategoryRate]:
    """Per-category observed refusal rates of ``run_id``, sorted by category, plus ``(all)``."""
    eff = effective_labels(run_id).subquery()
    category = func.coalesce(Prompt.category, "(none)")
    q = (
        select(
            category.label("category"),
            func.count(eff.c.response_id).label("n"),
            func.coalesce(func.sum(cast(eff.c.refusal, Integer)), 0).label("k"),
            func.count(Response.provider_refusal).label("provider"),
            func.count(Response.error).label("errors"),
            func.coalesce(func.sum(case((eff.c.source == "human", 1), else_=0)), 0).label("human"),
        )
        .select_from(Response)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .outerjoin(eff, eff.c.response_id == Response.id)
        .where(Response.run_id == run_id)
        .group_by(category)
        .order_by(category)
    )
    rows = session.execute(q).all()
    rates = [_rate(r.category, r.n, int(r.k), r.provider, r.errors, int(r.human)) for r in rows]
    if include_total and rates:
        rates.append(
            _rate(
                ALL,
                sum(r.n for r in rates),
                sum(r.refusals for r in rates),
                sum(r.provider_refusals for r in rates),
                sum(r.errors for r in rates),
                sum(r.human_labels for r in rates),
            )
        )
    return rates


def run_by_name(session: Session, name: str) -> Run | None:
    return session.scalar(select(Run).where(Run.name == name))


@dataclass(frozen=True)
class PromptRate:
    """Empirical refusal probability of one prompt over its N samples (temperature > 0)."""

    prompt_id: int
    category: str | None
    samples: int
    refusals: int
    p_refusal: float


def prompt_refusal_rates(session: Session, run_id: int) -> list[PromptRate]:
    """Per prompt of ``run_id``: labelled samples, refusals among them and their share."""
    eff = effective_labels(run_id).subquery()
    q = (
        select(
            Response.prompt_id,
            Prompt.category,
            func.count(eff.c.response_id).label("n"),
            func.coalesce(func.sum(cast(eff.c.refusal, Integer)), 0).label("k"),
        )
        .join(eff, eff.c.response_id == Response.id)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .where(Response.run_id == run_id)
        .group_by(Response.prompt_id, Prompt.category)
        .order_by(Response.prompt_id)
    )
    return [PromptRate(r.prompt_id, r.category, r.n, int(r.k), int(r.k) / r.n) for r in session.execute(q)]
