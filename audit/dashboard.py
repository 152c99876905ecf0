"""The one query module of the dashboard: every aggregate the pages show, computed in SQL and cached.

Pages never load rows into pandas to aggregate them. Each public query here runs a few grouped SQL
statements and returns plain lists of dicts. :func:`cached` memoises a result under a key that
includes :func:`data_version` (the largest ids and the row counts of the tables the pages read), so
any insert or delete — a new response, a machine label, a reviewer's label — makes the next render
recompute, while re-renders of an unchanged store cost a handful of index look-ups.

The effective label of a response follows :func:`audit.rates.effective_labels` (the newest human
label if any, else the newest machine label); :func:`category_table` computes the same numbers as
:func:`audit.rates.category_rates` with one aggregate over ``labels`` that needs no sort
(``max(id * 2 + refusal)`` keeps the newest label's verdict in the low bit), which is what keeps the
first render fast on a million responses.

Provider refusal signals (``Response.provider_refusal``) and transport errors are counted apart from
the text labels and never mixed into the rates.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sqlalchemy import Integer, case, cast, func, literal, or_, select
from sqlalchemy.orm import aliased

from audit.stats import holm_adjust, two_proportion_test, wilson_interval
from audit.store import JobRun, Label, Prompt, PromptPrediction, PromptSet, Response, Run, Store, Target

ALL = "(all)"
NONE_CATEGORY = "(none)"
KINDS = ("full_refusal", "partial_refusal", "full_compliance")
FINE_BINS = 300  # threshold / reliability resolution (divisible by 10, 15, 20)

# --------------------------------------------------------------------------------------------------
# cache


_CACHE: OrderedDict[tuple, Any] = OrderedDict()
_CACHE_MAX = 256
_LOCK = threading.Lock()
_VERSION: dict[str, tuple[float, tuple]] = {}
VERSION_TTL = 0.5  # seconds a data version is trusted before it is read again


def clear_cache() -> None:
    """Forget every cached result and data version."""
    with _LOCK:
        _CACHE.clear()
        _VERSION.clear()


def data_version(store: Store, *, fresh: bool = False) -> tuple:
    """A key that changes whenever rows are added to or removed from the tables the pages read.

    Largest ids and row counts of responses and labels, largest ids of the small tables and the
    status of runs and jobs. Re-read at most every :data:`VERSION_TTL` seconds (writes made through
    this module invalidate it at once).
    """
    now = time.monotonic()
    with _LOCK:
        hit = _VERSION.get(store.url)
    if hit and not fresh and now - hit[0] < VERSION_TTL:
        return hit[1]
    with store.session() as s:
        row = s.execute(
            select(
                select(func.max(Response.id)).scalar_subquery(),
                select(func.count()).select_from(Response).scalar_subquery(),
                select(func.max(Label.id)).scalar_subquery(),
                select(func.count()).select_from(Label).scalar_subquery(),
                select(func.max(PromptPrediction.id)).scalar_subquery(),
                select(func.max(Prompt.id)).scalar_subquery(),
                select(func.max(Run.id)).scalar_subquery(),
                select(func.max(Target.id)).scalar_subquery(),
                select(func.count()).select_from(Run).where(Run.status == "done").scalar_subquery(),
                select(func.max(JobRun.id)).scalar_subquery(),
                select(func.count()).select_from(JobRun).where(JobRun.finished_at.is_not(None)).scalar_subquery(),
            )
        ).one()
    version = tuple(row)
    with _LOCK:
        _VERSION[store.url] = (now, version)
    return version


def cached(store: Store, name: str, compute: Callable[..., Any], *args: Any) -> Any:
    """``compute(store, *args)``, memoised under ``(store url, name, data version, args)``."""
    key = (store.url, name, data_version(store), args)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = compute(store, *args)
    with _LOCK:
        _CACHE[key] = value
        while len(_CACHE) > _CACHE_MAX:
            _CACHE.popitem(last=False)
    return value


def _invalidate(store: Store) -> None:
    with _LOCK:
        _VERSION.pop(store.url, None)


# --------------------------------------------------------------------------------------------------
# secrets never reach a page

_SECRET_KEY = re.compile(r"(api[_-]?key|secret|token|password|passwd|authorization|auth|bearer|cookie)", re.I)
_SECRET_VALUE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|sk-ant-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+)")


def redact(obj: Any) -> Any:
    """A copy of ``obj`` with secret-looking keys' values and key-shaped strings replaced by ``***``."""
    if isinstance(obj, dict):
        return {
            k: ("***" if _SECRET_KEY.search(str(k)) and not isinstance(v, (dict, list)) and v else redact(v))
            for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v) for v in obj)
    if isinstance(obj, str):
        return _SECRET_VALUE.sub("***", obj)
    return obj


# --------------------------------------------------------------------------------------------------
# effective labels, as aggregates


def _ref_int(col=Label.refusal):
    return cast(col, Integer)


def effective_label_agg(run_ids: Sequence[int] | None = None, *, response_ids=None, max_label_id: int | None = None):
    """Subquery: one row per labelled response — ``response_id, refusal (0/1), human (0/1)``.

    The newest human label wins, else the newest machine label; computed by grouping ``labels`` on
    the ``(response_id, source)`` index without a window function. ``response_ids`` (a select of ids)
    and ``max_label_id`` restrict the responses and the labels considered.
    """
    human = Label.source == "human"
    code = Label.id * 2 + _ref_int()
    h = func.max(case((human, code)))
    m = func.max(case((~human, code)))
    q = select(
        Label.response_id.label("response_id"),
        (func.coalesce(h, m) % 2).label("refusal"),
        func.max(case((human, 1), else_=0)).label("human"),
    ).group_by(Label.response_id)
    if run_ids is not None:
        q = q.where(Label.response_id.in_(select(Response.id).where(Response.run_id.in_(list(run_ids)))))
    if response_ids is not None:
        q = q.where(Label.response_id.in_(response_ids))
    if max_label_id is not None:
        q = q.where(Label.id <= max_label_id)
    return q.subquery("eff")


def _top_label_id():
    """Correlated scalar subquery: the id of the effective label of ``Response``."""
    return (
        select(Label.id)
        .where(Label.response_id == Response.id)
        .order_by(case((Label.source == "human", 0), else_=1), Label.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def _category():
    return func.coalesce(Prompt.category, NONE_CATEGORY)


def _rate_row(category: str, n: int, k: int, **extra) -> dict:
    lo, hi = wilson_interval(k, n)
    return {"category": category, "n": n, "refusals": k, "rate": (k / n) if n else float("nan"),
            "ci_low": lo, "ci_high": hi, **extra}  # fmt: skip


# --------------------------------------------------------------------------------------------------
# runs and the overview


def _runs(store: Store) -> list[dict]:
    with store.session() as s:
        rows = s.execute(
            select(
                Run.id, Run.name, Run.status, Run.created_at, Target.name.label("target"), Target.provider,
                Target.model, PromptSet.name.label("prompt_set"),
                Target.refusal_tokens,
            )  # fmt: skip
            .join(Target, Target.id == Run.target_id)
            .join(PromptSet, PromptSet.id == Run.set_id)
            .order_by(Run.id)
        ).all()
    out = []
    for r in rows:
        d = dict(r._mapping)
        d["has_refusal_tokens"] = bool(d.pop("refusal_tokens"))
        out.append(d)
    return out


def runs(store: Store) -> list[dict]:
    """Every run with its target (name, provider, model — never the key) and prompt set."""
    return cached(store, "runs", _runs)


def _labelled_counts(s, eff) -> dict[tuple[int, str], tuple[int, int, int]]:
    cat = _category().label("category")
    q = (
        select(Response.run_id, cat, func.count().label("n"), func.sum(eff.c.refusal).label("k"),
               func.sum(eff.c.human).label("human"))  # fmt: skip
        .select_from(eff)
        .join(Response, Response.id == eff.c.response_id)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .group_by(Response.run_id, cat)
    )
    return {(r.run_id, r.category): (int(r.n), int(r.k or 0), int(r.human or 0)) for r in s.execute(q)}


def _response_counts(s, lo: int | None, hi: int | None) -> dict[tuple[int, str], tuple[int, int, int]]:
    cat = _category().label("category")
    q = (
        select(Response.run_id, cat, func.count().label("responses"),
               func.count(Response.provider_refusal).label("provider"), func.count(Response.error).label("errors"))  # fmt: skip
        .join(Prompt, Prompt.id == Response.prompt_id)
        .group_by(Response.run_id, cat)
    )
    if lo is not None:
        q = q.where(Response.id > lo)
    if hi is not None:
        q = q.where(Response.id <= hi)
    return {(r.run_id, r.category): (int(r.responses), int(r.provider), int(r.errors)) for r in s.execute(q)}


class _Conflict(Exception):
    pass


def refresh_rollup(store: Store, *, full: bool = False) -> str:
    """Bring the ``dash_rollup`` table up to date; returns ``fresh``, ``incremental``, ``full`` or ``busy``.

    Appended responses and labels are folded in incrementally (a new human label moves its response
    from its old effective verdict to the new one); a deletion, a first build or ``full=True``
    recompute everything. Concurrent refreshes are safe: the watermark row is updated only if it is
    unchanged since it was read, else the transaction rolls back.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    from audit.store.models import DashRollup, DashRollupState

    try:
        with store.session() as s:
            now = s.execute(
                select(
                    select(func.coalesce(func.max(Response.id), 0)).scalar_subquery(),
                    select(func.count()).select_from(Response).scalar_subquery(),
                    select(func.coalesce(func.max(Label.id), 0)).scalar_subquery(),
                    select(func.count()).select_from(Label).scalar_subquery(),
                    select(func.coalesce(func.max(Prompt.id), 0)).scalar_subquery(),
                )
            ).one()
            r_max, r_cnt, l_max, l_cnt, p_max = (int(x) for x in now)
            st = s.get(DashRollupState, 1)
            old = (st.response_max_id, st.response_count, st.label_max_id, st.label_count) if st else None
            if not full and old == (r_max, r_cnt, l_max, l_cnt):
                return "fresh"
            mode = "full" if (full or st is None) else "incremental"
            if mode == "incremental":
                new_r = s.scalar(select(func.count()).select_from(Response).where(Response.id > st.response_max_id))
                new_l = s.scalar(select(func.count()).select_from(Label).where(Label.id > st.label_max_id))
                if r_cnt != st.response_count + new_r or l_cnt != st.label_count + new_l or r_max < st.response_max_id:
                    mode = "full"  # rows were deleted (or committed out of id order): recount
            delta: dict[tuple[int, str], list[int]] = {}

            def add(counts, sign: int, offset: int) -> None:
                for key, vals in counts.items():
                    d = delta.setdefault(key, [0] * 6)
                    for i, v in enumerate(vals):
                        d[offset + i] += sign * v

            if mode == "full":
                s.execute(DashRollup.__table__.delete())
                add(_labelled_counts(s, effective_label_agg(max_label_id=l_max)), 1, 0)
                add(_response_counts(s, None, r_max), 1, 3)
            else:
                touched = select(Label.response_id).where(Label.id > st.label_max_id, Label.id <= l_max).distinct()
                if l_max > st.label_max_id:
                    add(_labelled_counts(s, effective_label_agg(response_ids=touched, max_label_id=l_max)), 1, 0)
                    add(_labelled_counts(s, effective_label_agg(response_ids=touched, max_label_id=st.label_max_id)), -1, 0)
                if r_max > st.response_max_id:
                    add(_response_counts(s, st.response_max_id, r_max), 1, 3)
            existing = {
                (r.run_id, r.category): r
                for r in s.scalars(select(DashRollup)).all()
            } if mode == "incremental" else {}
            for (run_id, cat), d in delta.items():
                if not any(d):
                    continue
                row = existing.get((run_id, cat))
                if row is None:
                    row = DashRollup(run_id=run_id, category=cat, n=0, k=0, human=0, responses=0, provider=0, errors=0)
                    s.add(row)
                row.n += d[0]
                row.k += d[1]
                row.human += d[2]
                row.responses += d[3]
                row.provider += d[4]
                row.errors += d[5]
            values = dict(response_max_id=r_max, response_count=r_cnt, label_max_id=l_max, label_count=l_cnt,
                          prompt_max_id=p_max, built_at=_utcnow())  # fmt: skip
            if st is None:
                s.add(DashRollupState(id=1, **values))
            else:
                from sqlalchemy import update

                res = s.execute(
                    update(DashRollupState)
                    .where(DashRollupState.id == 1, DashRollupState.response_max_id == old[0],
                           DashRollupState.response_count == old[1], DashRollupState.label_max_id == old[2],
                           DashRollupState.label_count == old[3])  # fmt: skip
                    .values(**values)
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount != 1:
                    raise _Conflict
            s.flush()
    except (_Conflict, IntegrityError):
        return "busy"  # another process refreshed it at the same time
    except OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc).lower() or "snapshot" in str(exc).lower():
            return "busy"
        raise
    _invalidate(store)
    return mode


def _utcnow():
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc)


def _direct_category_table(store: Store, run_ids: tuple[int, ...] | None) -> list[dict]:
    """The same counts straight from the rows (no rollup): for a store the dashboard cannot write."""
    with store.session() as s:
        lab = _labelled_counts(s, effective_label_agg(run_ids))
        resp = _response_counts(s, None, None)
    keys = sorted(k for k in set(lab) | set(resp) if run_ids is None or k[0] in run_ids)
    out = []
    for key in keys:
        n, k, h = lab.get(key, (0, 0, 0))
        r, p, e = resp.get(key, (0, 0, 0))
        out.append(_rate_row(key[1], n, k, run_id=key[0], responses=r, provider_refusals=p, errors=e, human_labels=h))
    return out


def _category_table(store: Store, run_ids: tuple[int, ...] | None) -> list[dict]:
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from audit.store.models import DashRollup

    try:
        refresh_rollup(store)
    except SQLAlchemyError as exc:  # e.g. a read-only database user
        logging.getLogger("audit.dashboard").warning("cannot update the rollup table (%s); counting rows directly", exc)
        return _direct_category_table(store, run_ids)
    q = select(DashRollup).order_by(DashRollup.run_id, DashRollup.category)
    if run_ids is not None:
        q = q.where(DashRollup.run_id.in_(run_ids))
    with store.session() as s:
        rows = s.scalars(q).all()
        out = [
            _rate_row(r.category, r.n, r.k, run_id=r.run_id, responses=r.responses, provider_refusals=r.provider,
                      errors=r.errors, human_labels=r.human)  # fmt: skip
            for r in rows
            if r.responses or r.n
        ]
    return out


def category_table(store: Store, run_ids: Sequence[int] | None = None, *, include_total: bool = True) -> list[dict]:
    """Per run × category: labelled ``n``, ``refusals``, ``rate`` with a 95% Wilson interval,
    ``responses``, ``provider_refusals``, ``errors``, ``human_labels``; plus an ``(all)`` row per run.

    Same numbers as :func:`audit.rates.category_rates` for each run.
    """
    key = tuple(sorted(run_ids)) if run_ids is not None else None
    rows = cached(store, "category_table", _category_table, key)
    if not include_total:
        return rows
    out: list[dict] = []
    by_run: dict[int, list[dict]] = {}
    for r in rows:
        by_run.setdefault(r["run_id"], []).append(r)
    for run_id in sorted(by_run):
        rs = by_run[run_id]
        out.extend(rs)
        out.append(
            _rate_row(
                ALL, sum(r["n"] for r in rs), sum(r["refusals"] for r in rs), run_id=run_id,
                responses=sum(r["responses"] for r in rs), provider_refusals=sum(r["provider_refusals"] for r in rs),
                errors=sum(r["errors"] for r in rs), human_labels=sum(r["human_labels"] for r in rs),
            )  # fmt: skip
        )
    return out


def run_summary(store: Store) -> list[dict]:
    """Targets × runs: one row per run with its totals (the ``(all)`` rows of :func:`category_table`)."""
    totals = {r["run_id"]: r for r in category_table(store) if r["category"] == ALL}
    out = []
    for run in runs(store):
        t = totals.get(run["id"]) or _rate_row(ALL, 0, 0, responses=0, provider_refusals=0, errors=0, human_labels=0)
        out.append({**run, **{k: v for k, v in t.items() if k not in ("category", "run_id")}})
    return out


def _provider_signals(store: Store, run_ids: tuple[int, ...] | None) -> list[dict]:
    with store.session() as s:
        q = (
            select(Response.run_id, Response.provider_refusal.label("signal"), func.count().label("count"))
            .where(Response.provider_refusal.is_not(None))
            .group_by(Response.run_id, Response.provider_refusal)
            .order_by(Response.run_id, Response.provider_refusal)
        )
        if run_ids is not None:
            q = q.where(Response.run_id.in_(run_ids))
        sig = [dict(r._mapping) for r in s.execute(q)]
    return sig


def provider_signals(store: Store, run_ids: Sequence[int] | None = None) -> list[dict]:
    """Counts of provider refusal signals (``content_filter``, ``refusal``, policy errors…) per run."""
    return cached(store, "provider_signals", _provider_signals, tuple(sorted(run_ids)) if run_ids is not None else None)


def _error_samples(store: Store, run_id: int, limit: int) -> list[dict]:
    with store.session() as s:
        q = (
            select(Response.error, func.count().label("count"))
            .where(Response.run_id == run_id, Response.error.is_not(None))
            .group_by(Response.error)
            .order_by(func.count().desc())
            .limit(limit)
        )
        return [{"error": redact(r.error), "count": r.count} for r in s.execute(q)]


def error_summary(store: Store, run_id: int, limit: int = 20) -> list[dict]:
    """The most frequent error messages of a run (redacted), with counts."""
    return cached(store, "error_summary", _error_samples, run_id, limit)


def categories(store: Store) -> list[str]:
    def _q(st: Store) -> list[str]:
        with st.session() as s:
            c = _category().label("category")
            return [v for (v,) in s.execute(select(c).distinct().order_by(c))]

    return cached(store, "categories", _q)


def prediction_models(store: Store) -> list[str]:
    """Names of prompt classifiers that stored predictions."""

    def _q(st: Store) -> list[str]:
        with st.session() as s:
            return [m for (m,) in s.execute(select(PromptPrediction.model).distinct().order_by(PromptPrediction.model))]

    return cached(store, "prediction_models", _q)


# --------------------------------------------------------------------------------------------------
# explorer


def _explore_query(
    run_ids, cats, label, kinds, p_min, p_max, provider, search, review_only=False
):  # noqa: ANN001 - internal
    L = aliased(Label)
    q = (
        select(
            Response.id.label("response_id"), Run.name.label("run"), _category().label("category"),
            Prompt.text.label("prompt"), Response.text.label("response"), Response.provider_refusal,
            Response.error, L.refusal, L.kind, L.p_refusal, L.source, L.refusal_start, L.classifier,
            Response.prompt_id,
        )  # fmt: skip
        .join(Prompt, Prompt.id == Response.prompt_id)
        .join(Run, Run.id == Response.run_id)
        .outerjoin(L, L.id == _top_label_id())
    )
    if run_ids:
        q = q.where(Response.run_id.in_(list(run_ids)))
    if cats:
        q = q.where(_category().in_(list(cats)))
    if label == "refusal":
        q = q.where(L.refusal.is_(True))
    elif label == "compliance":
        q = q.where(L.refusal.is_(False))
    elif label == "unlabelled":
        q = q.where(L.id.is_(None))
    elif label == "human":
        q = q.where(L.source == "human")
    if kinds:
        q = q.where(L.kind.in_(list(kinds)))
    if p_min is not None and p_min > 0:
        q = q.where(L.p_refusal >= p_min)
    if p_max is not None and p_max < 1:
        q = q.where(L.p_refusal <= p_max)
    if provider == "none":
        q = q.where(Response.provider_refusal.is_(None), Response.error.is_(None))
    elif provider == "any signal":
        q = q.where(Response.provider_refusal.is_not(None))
    elif provider == "error":
        q = q.where(Response.error.is_not(None))
    elif provider not in (None, "", "any"):
        q = q.where(Response.provider_refusal == provider)
    if search:
        pat = f"%{search}%"
        q = q.where(or_(Response.text.ilike(pat), Prompt.text.ilike(pat)))
    return q


def explore(
    store: Store,
    *,
    run_ids: Sequence[int] | None = None,
    categories: Sequence[str] | None = None,
    label: str = "any",
    kinds: Sequence[str] | None = None,
    p_min: float | None = None,
    p_max: float | None = None,
    provider: str = "any",
    search: str = "",
    limit: int = 25,
    offset: int = 0,
    count_cap: int = 10_000,
) -> tuple[list[dict], int, bool]:
    """Responses matching the filters, newest first, with their effective label.

    ``label``: any | refusal | compliance | unlabelled | human. ``provider``: any | none | any signal |
    error | a signal value. ``search`` matches prompt or response text (case-insensitive).
    Returns ``(rows, matches, capped)``; counting stops at ``count_cap``.
    """
    args = (tuple(run_ids or ()), tuple(categories or ()), label, tuple(kinds or ()), p_min, p_max, provider,
            search.strip(), limit, offset, count_cap)  # fmt: skip
    return cached(store, "explore", _explore, *args)


def _explore(store, run_ids, cats, label, kinds, p_min, p_max, provider, search, limit, offset, count_cap):
    q = _explore_query(run_ids, cats, label, kinds, p_min, p_max, provider, search)
    with store.session() as s:
        rows = [dict(r._mapping) for r in s.execute(q.order_by(Response.id.desc()).limit(limit).offset(offset))]
        capped_q = q.with_only_columns(literal(1)).limit(count_cap + 1).subquery()
        n = s.scalar(select(func.count()).select_from(capped_q))
    for r in rows:
        r["response"] = redact(r["response"]) if r["response"] else r["response"]
        r["error"] = redact(r["error"]) if r["error"] else r["error"]
    return rows, min(n, count_cap), n > count_cap


def item_details(store: Store, response_id: int) -> dict | None:
    """One response in full: prompt, response, every label (oldest first) and every prompt prediction."""

    def _q(st: Store, rid: int) -> dict | None:
        with st.session() as s:
            r = s.get(Response, rid)
            if r is None:
                return None
            p = s.get(Prompt, r.prompt_id)
            run = s.get(Run, r.run_id)
            labels = s.scalars(select(Label).where(Label.response_id == rid).order_by(Label.id)).all()
            preds = s.scalars(
                select(PromptPrediction).where(PromptPrediction.prompt_id == r.prompt_id).order_by(PromptPrediction.id)
            ).all()
            return {
                "response_id": r.id, "run": run.name, "category": p.category or NONE_CATEGORY, "prompt": p.text,
                "response": redact(r.text) if r.text else r.text, "finish_reason": r.finish_reason,
                "provider_refusal": r.provider_refusal,
                "provider_refusal_detail": redact(r.provider_refusal_detail) if r.provider_refusal_detail else None,
                "error": redact(r.error) if r.error else None, "latency_ms": r.latency_ms,
                "labels": [
                    {"id": lab.id, "source": lab.source, "classifier": lab.classifier,
                     "version": lab.classifier_version, "refusal": lab.refusal, "kind": lab.kind,
                     "p_refusal": lab.p_refusal, "refusal_start": lab.refusal_start,
                     "needs_review": lab.needs_review, "review_reason": lab.review_reason,
                     "reviewer": lab.reviewer, "created_at": lab.created_at}
                    for lab in labels
                ],
                "predictions": [
                    {"model": pr.model, "version": pr.model_version, "p_refusal": pr.p_refusal,
                     "created_at": pr.created_at}
                    for pr in preds
                ],
            }  # fmt: skip

    return cached(store, "item_details", _q, response_id)


def effective_of(details: dict) -> dict | None:
    """The effective label among ``details['labels']`` (newest human, else newest machine)."""
    labels = details.get("labels") or []
    human = [lab for lab in labels if lab["source"] == "human"]
    pool = human or labels
    return max(pool, key=lambda lab: lab["id"]) if pool else None


_SENTENCE_END = re.compile(r"[.!?](\s|$)")


def refusal_span(text: str, start: int | None) -> tuple[int, int] | None:
    """The span to highlight: from ``start`` to the end of that sentence (``None`` if no start)."""
    if text is None or start is None or start < 0 or start >= len(text):
        return None
    m = _SENTENCE_END.search(text, start)
    end = m.end() if m else len(text)
    return (start, end if end > start else len(text))


def highlight_html(text: str, start: int | None) -> str:
    """HTML-escaped ``text`` with the refusal sentence from ``start`` wrapped in ``<mark>``."""
    import html

    if text is None:
        return "<em>(no text)</em>"
    span = refusal_span(text, start)
    if span is None:
        return html.escape(text).replace("\n", "<br>")
    a, b = span
    parts = [html.escape(text[:a]), '<mark class="refusal-start">', html.escape(text[a:b]), "</mark>", html.escape(text[b:])]
    return "".join(parts).replace("\n", "<br>")


# --------------------------------------------------------------------------------------------------
# review queue and human labels


def review_queue(store: Store, run_id: int | None = None, *, margin: float = 0.15, limit: int = 200) -> list[dict]:
    """The review queue of :func:`audit.review.review_queue` (the same one ``refusal-audit review``
    lists), cached: responses without a human label whose classifiers disagree, whose newest machine
    label is low-confidence (``|p - 0.5| < margin``) or flagged ``needs_review``; disagreements first,
    then the least confident. Dicts ``{response_id, reasons, closeness}``."""
    from audit import review

    def _q(st: Store, rid: int | None, m: float, n: int) -> list[dict]:
        return [
            {"response_id": it.response_id, "reasons": list(it.reasons), "closeness": it.closeness}
            for it in review.review_queue(st, run_id=rid, margin=m, limit=n)
        ]

    return cached(store, "review_queue", _q, run_id, margin, limit)


def review_progress(store: Store, run_id: int | None = None) -> dict:
    """Counts of human labels (overall / in a run) and reviewers."""

    def _q(st: Store, rid: int | None) -> dict:
        with st.session() as s:
            q = select(func.count(), func.count(func.distinct(Label.reviewer))).where(Label.source == "human")
            if rid is not None:
                q = q.join(Response, Response.id == Label.response_id).where(Response.run_id == rid)
            n, reviewers = s.execute(q).one()
        return {"human_labels": n, "reviewers": reviewers}

    return cached(store, "review_progress", _q, run_id)


def add_human_label(
    store: Store,
    response_id: int,
    *,
    refusal: bool,
    reviewer: str,
    kind: str | None = None,
    refusal_start: int | None = None,
) -> int:
    """Store a reviewer's label (``source="human"``, with reviewer and time) through
    :func:`audit.review.add_human_label`; it overrides every machine label of the response in all
    rates. An explicit, non-empty reviewer name is required. Returns the new label id."""
    from audit import review

    reviewer = (reviewer or "").strip()
    if not reviewer:
        raise ValueError("a reviewer name is required for a human label")
    new_id = review.add_human_label(store, response_id, bool(refusal), reviewer=reviewer, kind=kind,
                                    refusal_start=refusal_start)  # fmt: skip
    _invalidate(store)
    return new_id


# --------------------------------------------------------------------------------------------------
# compare runs


def compare_runs(store: Store, run_a: int, run_b: int, *, alpha: float = 0.05) -> list[dict]:
    """Per category: rates of two runs, their difference (b − a), a two-proportion z-test and the
    Holm-adjusted p-value over the categories; ``significant`` when the adjusted p < ``alpha``.
    The ``(all)`` row (last) is tested but not part of the Holm family."""
    rows = category_table(store, [run_a, run_b])
    a = {r["category"]: r for r in rows if r["run_id"] == run_a}
    b = {r["category"]: r for r in rows if r["run_id"] == run_b}
    cats = sorted((set(a) | set(b)) - {ALL}) + ([ALL] if ALL in a or ALL in b else [])
    out = []
    for c in cats:
        ra, rb = a.get(c), b.get(c)
        na, ka = (ra["n"], ra["refusals"]) if ra else (0, 0)
        nb, kb = (rb["n"], rb["refusals"]) if rb else (0, 0)
        diff, p = two_proportion_test(kb, nb, ka, na)
        la, ha = wilson_interval(ka, na)
        lb, hb = wilson_interval(kb, nb)
        out.append({
            "category": c, "n_a": na, "rate_a": ka / na if na else float("nan"), "ci_a": (la, ha),
            "n_b": nb, "rate_b": kb / nb if nb else float("nan"), "ci_b": (lb, hb),
            "diff": diff, "p_value": p,
        })  # fmt: skip
    fam = [i for i, r in enumerate(out) if r["category"] != ALL]
    adj = holm_adjust([out[i]["p_value"] for i in fam]) if fam else []
    for i, pa in zip(fam, adj):
        out[i]["p_holm"] = pa
    for r in out:
        r.setdefault("p_holm", r["p_value"])
        r["significant"] = bool(r["p_holm"] < alpha and not math.isnan(r["diff"]))
    return out


def latest_run_of_target(store: Store, target: str) -> int | None:
    ids = [r["id"] for r in runs(store) if r["target"] == target]
    return max(ids) if ids else None


# --------------------------------------------------------------------------------------------------
# observed vs calibrated (prompt-classifier forecast; the refusal-token audit when present)


def _calibration_bins(store: Store, run_id: int, model: str) -> dict:
    human = Label.source == "human"
    code = Label.id * 2 + _ref_int()
    eff = (
        select(
            Label.response_id,
            Response.prompt_id,
            (func.coalesce(func.max(case((human, code))), func.max(case((~human, code)))) % 2).label("refusal"),
        )
        .join(Response, Response.id == Label.response_id)
        .where(Response.run_id == run_id)
        .group_by(Label.response_id, Response.prompt_id)
        .subquery("eff")
    )
    X = aliased(PromptPrediction)
    newest = (
        select(func.max(X.id)).where(X.prompt_id == eff.c.prompt_id, X.model == model).correlate(eff).scalar_subquery()
    )
    cat = _category().label("category")
    p = PromptPrediction.p_refusal
    b = func.min(cast(p * FINE_BINS, Integer), FINE_BINS - 1) if store.is_sqlite else func.least(
        cast(func.floor(p * FINE_BINS), Integer), FINE_BINS - 1
    )
    q = (
        select(cat, b.label("bin"), func.count().label("n"), func.sum(p).label("sp"), func.sum(p * p).label("spp"),
               func.sum(eff.c.refusal).label("k"))  # fmt: skip
        .select_from(eff)
        .join(Prompt, Prompt.id == eff.c.prompt_id)
        .join(PromptPrediction, PromptPrediction.id == newest)
        .group_by(cat, b)
    )
    with store.session() as s:
        rows = s.execute(q).all()
    out: dict[str, dict[str, np.ndarray]] = {}
    for r in rows:
        d = out.setdefault(r.category, {k: np.zeros(FINE_BINS) for k in ("n", "sp", "spp", "k")})
        i = int(r.bin)
        d["n"][i] += r.n
        d["sp"][i] += r.sp
        d["spp"][i] += r.spp
        d["k"][i] += int(r.k or 0)
    if out:
        out[ALL] = {k: sum(d[k] for d in out.values()) for k in ("n", "sp", "spp", "k")}
    return out


def calibration_bins(store: Store, run_id: int, model: str) -> dict[str, dict[str, np.ndarray]]:
    """Per category (and ``(all)``): fine histograms (:data:`FINE_BINS` bins of the forecast p) of
    ``n``, ``sum p``, ``sum p²`` and observed refusals ``k``, over labelled responses of the run."""
    return cached(store, "calibration_bins", _calibration_bins, run_id, model)


def forecast_vs_observed(bins: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """Per category: observed rate (Wilson CI) beside the forecast expected rate (normal CI of a
    Poisson-binomial: var = Σp(1−p)/n²) and a z-test p-value of their difference."""
    from scipy import stats as st

    out = []
    for c, d in bins.items():
        n, k, sp, spp = int(d["n"].sum()), int(d["k"].sum()), float(d["sp"].sum()), float(d["spp"].sum())
        if n == 0:
            continue
        exp = sp / n
        sd = math.sqrt(max(sp - spp, 0.0)) / n
        lo, hi = wilson_interval(k, n)
        z = (k / n - exp) / sd if sd > 0 else 0.0
        out.append({
            "category": c, "n": n, "observed_rate": k / n, "observed_ci": (lo, hi), "expected_rate": exp,
            "expected_ci": (max(0.0, exp - 1.96 * sd), min(1.0, exp + 1.96 * sd)),
            "p_value": float(2 * st.norm.sf(abs(z))), "ece": ece_from_bins(d), "source": "prompt forecast",
        })  # fmt: skip
    out.sort(key=lambda r: (r["category"] == ALL, r["category"]))
    return out


def reliability_from_bins(d: dict[str, np.ndarray], n_bins: int = 15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean_p, frac_pos, counts)`` per uniform bin (merging fine bins; empty bins are NaN)."""
    if FINE_BINS % n_bins:
        raise ValueError(f"n_bins must divide {FINE_BINS}")
    g = FINE_BINS // n_bins
    n = d["n"].reshape(n_bins, g).sum(1)
    sp = d["sp"].reshape(n_bins, g).sum(1)
    k = d["k"].reshape(n_bins, g).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, sp / n, np.nan), np.where(n > 0, k / n, np.nan), n


def ece_from_bins(d: dict[str, np.ndarray], n_bins: int = 15) -> float:
    mp, fp, n = reliability_from_bins(d, n_bins)
    tot = n.sum()
    if tot == 0:
        return float("nan")
    m = n > 0
    return float(np.sum(n[m] / tot * np.abs(mp[m] - fp[m])))


def ece_noise_floor(d: dict[str, np.ndarray], n_bins: int = 15, n_sim: int = 300, seed: int = 0) -> tuple[float, float]:
    """ECE a perfectly calibrated forecaster would show on this sample: ``(mean, 95th percentile)``
    over simulations that draw each fine bin's refusals from Binomial(n, mean p)."""
    rng = np.random.default_rng(seed)
    n = d["n"].astype(int)
    with np.errstate(invalid="ignore", divide="ignore"):
        pbar = np.where(n > 0, d["sp"] / np.maximum(n, 1), 0.0)
    sims = rng.binomial(n[None, :].repeat(n_sim, 0), np.clip(pbar, 0, 1)[None, :].repeat(n_sim, 0))
    g = FINE_BINS // n_bins
    nb = n.reshape(n_bins, g).sum(1)
    spb = d["sp"].reshape(n_bins, g).sum(1)
    kb = sims.reshape(n_sim, n_bins, g).sum(2)
    tot = nb.sum()
    if tot == 0:
        return (float("nan"), float("nan"))
    m = nb > 0
    eces = np.sum(nb[m] / tot * np.abs(spb[m] / nb[m] - kb[:, m] / nb[m]), axis=1)
    return float(eces.mean()), float(np.quantile(eces, 0.95))


def threshold_curve(d: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(thresholds, rates)``: the share of responses whose forecast p ≥ threshold, on the fine grid."""
    n = d["n"]
    tot = n.sum()
    t = np.arange(FINE_BINS + 1) / FINE_BINS
    ge = np.concatenate([np.cumsum(n[::-1])[::-1], [0.0]])
    return t, (ge / tot if tot else np.full_like(t, np.nan))


def solve_threshold(d: dict[str, np.ndarray], rate: float) -> float:
    """The threshold whose predicted rate (share with p ≥ t) is closest to ``rate``."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], not {rate}")
    t, r = threshold_curve(d)
    return float(t[int(np.nanargmin(np.abs(r - rate)))])


def _tokens_module():
    try:
        from audit import tokens  # noqa: PLC0415 - optional area
    except ImportError:
        return None
    return tokens if hasattr(tokens, "load_groups") else None


def token_groups(store: Store, run_name: str) -> tuple[dict | None, str | None]:
    """The refusal-token audit's per-category ``(p, y)`` groups of a run (``audit.tokens.load_groups``)
    when that module is present and the run has refusal-token probabilities; else ``(None, why)``."""
    tokens = _tokens_module()
    if tokens is None:
        return None, "the refusal-token module (audit.tokens) is not available yet"
    run = next((r for r in runs(store) if r["name"] == run_name), None)
    if run is None:
        return None, f"no run named {run_name!r}"
    if not run["has_refusal_tokens"]:
        return None, "the run's target has no refusal-token configuration"

    def _q(st: Store, name: str):
        try:
            groups = tokens.load_groups(st, name)
        except ValueError as exc:  # TokenAuditError: no responses / no probabilities
            return None, str(exc)
        if not any(len(g.p) and "logprobs" in (g.sources or []) for g in groups.values()):
            return None, "the run has no refusal-token probabilities (collect with logprobs)"
        return groups, None

    return cached(store, "token_groups", _q, run_name)


def token_rows(store: Store, run_name: str) -> list[dict]:
    """``audit.tokens.compare_groups`` rows (observed vs calibrated, ECE and its noise floor) for a run."""
    tokens = _tokens_module()
    groups, why = token_groups(store, run_name)
    if tokens is None or groups is None:
        raise ValueError(why or "no refusal-token groups")

    def _q(st: Store, name: str):
        return tokens.compare_groups(groups, None, n_boot=500, n_sim=200, metrics=("ece",))

    return cached(store, "token_rows", _q, run_name)


# --------------------------------------------------------------------------------------------------
# probes (results written by the batch-jobs area into JobRun.summary)


def _tense_entry(t: dict) -> dict:
    rows = [r for r in (t.get("by_category") or []) if isinstance(r, dict)]
    chart = []
    for r in rows:
        for measure, rate, ci in (("original refusal rate", "original_refusal_rate", "original_ci"),
                                  ("attack success (ASR)", "asr", "asr_ci")):  # fmt: skip
            if isinstance(r.get(rate), (int, float)) and isinstance(r.get(ci), (list, tuple)) and len(r[ci]) == 2:
                chart.append({"category": r.get("category", ALL), "measure": measure, "rate": float(r[rate]),
                              "ci_low": float(r[ci][0]), "ci_high": float(r[ci][1]), "n": r.get("n_prompts")})  # fmt: skip
    return {**{k: v for k, v in t.items() if k != "by_category"}, "rows": [_flat(r) for r in rows], "chart": chart}


def _contrast_entry(c: dict) -> dict:
    rows = [r for r in (c.get("by_category") or []) if isinstance(r, dict)]
    chart = [
        {"category": r.get("category", ALL), "measure": "over-refusal rate", "rate": float(r["rate"]),
         "ci_low": float(r["ci_low"]), "ci_high": float(r["ci_high"]), "n": r.get("n")}
        for r in rows
        if all(isinstance(r.get(k), (int, float)) for k in ("rate", "ci_low", "ci_high"))
    ]  # fmt: skip
    return {**{k: v for k, v in c.items() if k != "by_category"}, "rows": [_flat(r) for r in rows], "chart": chart}


def probe_results(store: Store) -> list[dict]:
    """Batch-job runs whose summary (``JobRun.summary``, see docs/jobs.md) holds probe results,
    newest first: ``job, date, status, runs, tense, contrast, other`` — ``tense``/``contrast`` entries
    carry their fields plus table ``rows`` and ``chart`` rows (rate with its 95% interval)."""

    def _q(st: Store) -> list[dict]:
        with st.session() as s:
            jobs = s.scalars(select(JobRun).order_by(JobRun.id.desc())).all()
            out = []
            for j in jobs:
                summ = j.summary if isinstance(j.summary, dict) else {}
                probes = summ.get("probes") if isinstance(summ.get("probes"), dict) else {}
                tense = [_tense_entry(t) for t in (probes.get("tense") or []) if isinstance(t, dict)]
                contrast = [_contrast_entry(c) for c in (probes.get("contrast") or []) if isinstance(c, dict)]
                other = [(f"probes.{k}", v) for k, v in probes.items() if k not in ("tense", "contrast") and v]
                if tense or contrast or other:
                    out.append(redact({"job": j.job_name, "date": j.run_date, "status": j.status,
                                       "runs": list(j.run_names or []), "tense": tense, "contrast": contrast,
                                       "other": other}))  # fmt: skip
            return out

    return cached(store, "probe_results", _q)


def job_count(store: Store) -> int:
    def _q(st: Store) -> int:
        with st.session() as s:
            return int(s.scalar(select(func.count()).select_from(JobRun)) or 0)

    return cached(store, "job_count", _q)




__all__ = [
    "ALL", "FINE_BINS", "KINDS", "NGRAM_MAX_DOCS", "add_human_label", "cached", "calibration_bins",
    "categories", "category_table", "clear_cache", "compare_runs", "data_version", "ece_from_bins",
    "ece_noise_floor", "effective_label_agg", "effective_of", "error_summary", "explore",
    "forecast_vs_observed", "highlight_html", "item_details", "job_count", "latest_run_of_target",
    "ngram_table", "prediction_models", "probe_results", "provider_signals", "redact", "refresh_rollup",
    "refusal_span", "reliability_from_bins", "review_progress", "review_queue", "run_summary", "runs",
    "solve_threshold", "threshold_curve", "token_groups", "token_rows",
]  # fmt: skip



# --------------------------------------------------------------------------------------------------
# n-grams (classifiers.ngrams: log-odds with an informative Dirichlet prior, + LR coefficients)

NGRAM_MAX_DOCS = 5_000


def _ngram_rows(store: Store, run_id: int, field: str, min_count: int, category: str) -> dict:
    from classifiers.ngrams import ngram_statistics

    eff = effective_label_agg([run_id])
    text_col = Prompt.text if field == "prompts" else Response.text
    q = (
        select(text_col.label("text"), eff.c.refusal)
        .select_from(eff)
        .join(Response, Response.id == eff.c.response_id)
        .join(Prompt, Prompt.id == Response.prompt_id)
        .where(text_col.is_not(None))
    )
    if category != ALL:
        q = q.where(_category() == category)
    with store.session() as s:
        n_all = s.scalar(select(func.count()).select_from(q.subquery()))
        step = max(1, -(-n_all // NGRAM_MAX_DOCS))
        if step > 1:  # a deterministic sample of at most NGRAM_MAX_DOCS documents
            q = q.where(Response.id % step == 0)
        docs = s.execute(q).all()
    out = {"rows": [], "documents": len(docs), "of": n_all, "category": category}
    ys = [int(r) for _, r in docs]
    if len(set(ys)) < 2:
        return out
    stats = ngram_statistics([t for t, _ in docs], ys, min_count=min_count, with_lr=len(docs) <= 2000)
    for st in stats:
        d = st.as_dict()
        out["rows"].append({"category": category, "direction": d.pop("direction"), "ngram": d.pop("ngram"), **d,
                            "score": abs(d["z"])})  # fmt: skip
    return out


def ngram_table(
    store: Store, run_id: int, field: str = "prompts", min_count: int = 5, category: str = ALL
) -> tuple[dict | None, str | None]:
    """N-gram statistics of a run's ``prompts`` or ``responses`` in one category (or ``(all)``),
    refusal vs compliance by effective label: ``({"rows", "documents", "of", "category"}, None)``,
    or ``(None, why)`` when ``classifiers.ngrams`` is missing. ``rows`` is empty when the documents
    are all of one class. At most :data:`NGRAM_MAX_DOCS` documents (a deterministic sample by
    response id) are analysed."""
    if field not in ("prompts", "responses"):
        raise ValueError("field must be 'prompts' or 'responses'")
    try:
        import classifiers.ngrams  # noqa: F401
    except ImportError:
        return None, "the n-gram module (classifiers.ngrams) is not available yet"
    return cached(store, "ngram_table", _ngram_rows, run_id, field, min_count, category), None


def _flat(d: dict, prefix: str = "") -> dict:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        elif isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
            out[key] = f"{v[0]:.3f} – {v[1]:.3f}"
            out[key + "_low"], out[key + "_high"] = v
        elif isinstance(v, list):
            out[key] = json.dumps(v, default=str)[:200]
        else:
            out[key] = v
    return redact(out)
