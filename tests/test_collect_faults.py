"""Fault injection: with 20% faults of every kind, each prompt ends answered or with a recorded error."""

from __future__ import annotations

from sqlalchemy import select

from audit.collect import collect
from audit.store import Response, Run
from audit.targets import add_target
from audit.targets.faults import FaultRates
from audit.targets.faults import make_app as faults_app
from audit.targets.loopback import LoopbackServer

from _collect_util import setup_set


def _rows(store, run):
    with store.session() as s:
        return s.execute(
            select(Response.prompt_id, Response.sample, Response.text, Response.error).join(Run).where(Run.name == run)
        ).all()


def test_twenty_percent_faults_lose_nothing(store, tmp_path):
    ids = setup_set(store, tmp_path, 150)
    app = faults_app(FaultRates.uniform(0.20), retry_after=0.05, slow_seconds=1.5, seed=11)
    with LoopbackServer(app) as srv:
        add_target(store, "faulty", "openai", srv.base_url + "/v1", "m")
        summary = collect(
            store, run_name="f", set_name="s", target_name="faulty", concurrency=8, timeout=0.4,
            max_attempts=3, backoff_base=0.01, backoff_max=0.1, progress=False,
        )
    counts = app.counts
    # every kind of fault really happened
    for kind in ("rate_429", "rate_500", "rate_503", "slow", "reset", "malformed", "empty_choices"):
        assert counts[kind] > 0, kind
    rows = _rows(store, "f")
    assert sorted(p for p, _, _, _ in rows) == ids  # every prompt exactly once
    for _, _, text, error in rows:
        assert (text is not None) != (error is not None)  # answered, or a recorded terminal error
        if text is not None:
            assert text.startswith("Answer: prompt number")
    n_err = sum(1 for r in rows if r.error)
    assert summary.errors == n_err and summary.answered == len(ids) - n_err and summary.remaining == 0
    assert summary.retries > 0
    assert all("(after 3 attempts)" in r.error for r in rows if r.error)
    assert summary.status == ("with_errors" if n_err else "complete")


def test_all_faults_end_as_recorded_errors_then_resume_completes(store, tmp_path):
    ids = setup_set(store, tmp_path, 12)
    with LoopbackServer(faults_app(FaultRates(rate_500=0.5, rate_503=0.5))) as srv:
        add_target(store, "down", "openai", srv.base_url + "/v1", "m")
        s1 = collect(store, run_name="d", set_name="s", target_name="down", max_attempts=2,
                     backoff_base=0.01, progress=False)
    assert s1.errors == 12 and s1.status == "with_errors" and s1.requests == 24
    assert all(r.error.startswith("server_error: HTTP 50") for r in _rows(store, "d"))
    with LoopbackServer(faults_app(FaultRates())) as srv:
        add_target(store, "down", "openai", srv.base_url + "/v1", "m", replace=True)
        s2 = collect(store, run_name="d", progress=False)
    rows = _rows(store, "d")
    assert s2.answered == 12 and sorted(r.prompt_id for r in rows) == ids and all(r.error is None for r in rows)
