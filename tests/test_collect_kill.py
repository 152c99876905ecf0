"""kill -9 at any moment: a SQLite collect resumes to completion; PostgreSQL workers share a run."""

from __future__ import annotations

import os
import signal

import pytest
from sqlalchemy import func, select

from audit.collect import collect
from audit.store import Response, Run, Task, open_store
from audit.targets import add_target
from audit.targets.faults import FaultRates
from audit.targets.faults import make_app as faults_app
from audit.targets.loopback import LoopbackServer

from _collect_util import cli_popen, count_responses, setup_set, wait_until


def _snapshot(store, run):
    with store.session() as s:
        return {
            (r.prompt_id, r.sample): (r.id, r.text)
            for r in s.execute(select(Response.id, Response.prompt_id, Response.sample, Response.text).join(Run).where(Run.name == run))
        }


def test_sqlite_kill9_mid_run_then_resume(db_url, tmp_path):
    store = open_store(db_url)
    ids = setup_set(store, tmp_path, 300)
    app = faults_app(FaultRates(), latency_ms=30)
    with LoopbackServer(app) as srv:
        add_target(store, "slowish", "openai", srv.base_url + "/v1", "m")
        proc = cli_popen(["collect", "--set", "s", "--target", "slowish", "--run", "k", "--concurrency", "4",
                          "--no-progress"], db_url)
        try:
            assert wait_until(lambda: count_responses(store, "k") >= 40 or proc.poll() is not None, timeout=240)
            assert proc.poll() is None, proc.stdout.read()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        before = _snapshot(store, "k")
        assert 40 <= len(before) < 300
        summary = collect(store, run_name="k", concurrency=8, progress=False)
    after = _snapshot(store, "k")
    assert summary.already_done == len(before) and summary.answered == 300 - len(before)
    assert sorted(p for p, _ in after) == ids  # every prompt once: nothing lost, nothing doubled
    assert all(after[k] == v for k, v in before.items())  # what was stored before the kill is untouched
    with store.session() as s:
        n, distinct = s.execute(
            select(func.count(Response.id), func.count(func.distinct(Response.prompt_id))).join(Run).where(Run.name == "k")
        ).one()
        assert n == distinct == 300
        assert s.scalar(select(Run.status).where(Run.name == "k")) == "complete"
    store.dispose()


@pytest.mark.postgres
def test_postgres_four_workers_one_killed(pg_url, tmp_path):
    store = open_store(pg_url)
    ids = setup_set(store, tmp_path, 400)
    app = faults_app(FaultRates(), latency_ms=20)
    with LoopbackServer(app) as srv:
        add_target(store, "pg-target", "openai", srv.base_url + "/v1", "m")
        args = ["worker", "--run", "w", "--set", "s", "--target", "pg-target", "--lease-seconds", "3",
                "--batch", "8", "--concurrency", "4", "--no-progress"]
        procs = [cli_popen(args + [], pg_url) for _ in range(4)]
        try:
            victim = procs[0]

            def victim_has_claims():
                with store.session() as s:
                    owners = set(s.scalars(select(Task.lease_owner).where(Task.status == "claimed")))
                return any(o and o.endswith(f":{victim.pid}") for o in owners) and count_responses(store, "w") >= 30

            assert wait_until(victim_has_claims, timeout=240), victim.stdout.read() if victim.poll() is not None else ""
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
            for p in procs[1:]:
                out, _ = p.communicate(timeout=300)
                assert p.returncode == 0, out
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
    with store.session() as s:
        rows = s.execute(select(Response.prompt_id, Response.sample, Response.error, Response.worker).join(Run).where(Run.name == "w")).all()
        tasks = s.execute(select(Task.status, Task.attempts).join(Run, Run.id == Task.run_id).where(Run.name == "w")).all()
        status = s.scalar(select(Run.status).where(Run.name == "w"))
    assert sorted(r.prompt_id for r in rows) == ids  # every prompt answered exactly once
    assert all(r.error is None for r in rows)
    assert {t.status for t in tasks} == {"done"} and len(tasks) == 400
    assert any(t.attempts > 1 for t in tasks)  # the killed worker's leased batch was taken over
    assert len({r.worker for r in rows}) >= 3
    assert status == "complete"
    store.dispose()


def test_sqlite_workers_share_a_run(db_url, tmp_path):
    """The same lease protocol on SQLite (single machine): two workers, in-process and a subprocess."""
    from audit.worker import run_worker

    store = open_store(db_url)
    ids = setup_set(store, tmp_path, 60)
    with LoopbackServer(faults_app(FaultRates(), latency_ms=10)) as srv:
        add_target(store, "t", "openai", srv.base_url + "/v1", "m")
        proc = cli_popen(["worker", "--run", "sw", "--set", "s", "--target", "t", "--lease-seconds", "5",
                          "--batch", "4", "--no-progress"], db_url)
        try:
            summary = run_worker(store, run_name="sw", set_name="s", target_name="t", lease_seconds=5, batch=4,
                                 progress=False, worker_name="inproc")
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, out
        finally:
            if proc.poll() is None:
                proc.kill()
    assert sorted(p for p, _ in _snapshot(store, "sw")) == ids
    assert summary.remaining == 0
    store.dispose()


@pytest.mark.postgres
def test_postgres_local_collect_resume_cache_and_nul(pg_url, tmp_path):
    """The single-process collector on PostgreSQL: budget stop, resume, cache, NUL-safe text."""
    store = open_store(pg_url)
    ids = setup_set(store, tmp_path, 20)

    def responder(prompt: str) -> str:
        return f"Answer\x00 {prompt}"

    with LoopbackServer(faults_app(FaultRates(), responder=responder)) as srv:
        add_target(store, "pg", "openai", srv.base_url + "/v1", "m")
        s1 = collect(store, run_name="a", set_name="s", target_name="pg", max_requests=7, progress=False)
        assert s1.status == "stopped" and count_responses(store, "a") == 7
        s2 = collect(store, run_name="a", progress=False)
        assert s2.answered == 13 and s2.status == "complete"
        s3 = collect(store, run_name="b", set_name="s", target_name="pg", progress=False)
        assert s3.cached == 20 and s3.requests == 0
    snap = _snapshot(store, "b")
    assert sorted(p for p, _ in snap) == ids
    assert all(text.startswith("Answer\ufffd ") for _, text in snap.values())
    store.dispose()


def test_ctrl_c_stops_cleanly_and_resumes(db_url, tmp_path):
    store = open_store(db_url)
    ids = setup_set(store, tmp_path, 150)
    # 150 ms per answer at concurrency 2: the whole run needs >= 11 s, so a loaded machine still
    # delivers the SIGINT mid-run
    with LoopbackServer(faults_app(FaultRates(), latency_ms=150)) as srv:
        add_target(store, "t", "openai", srv.base_url + "/v1", "m")
        proc = cli_popen(["collect", "--set", "s", "--target", "t", "--run", "c", "--concurrency", "2",
                          "--no-progress"], db_url)
        try:
            assert wait_until(lambda: count_responses(store, "c") >= 10 or proc.poll() is not None, timeout=240)
            assert proc.poll() is None
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 130, out
        assert "resume" in out
        with store.session() as s:
            assert s.scalar(select(Run.status).where(Run.name == "c")) == "interrupted"
        n = count_responses(store, "c")
        assert 10 <= n < 150
        summary = collect(store, run_name="c", progress=False)
        assert summary.already_done == n and summary.status == "complete"
    assert sorted(p for p, _ in _snapshot(store, "c")) == ids
    store.dispose()
