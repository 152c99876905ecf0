"""The collector against real loopback servers: storage, resume, cache, samples, budget, pacing, CLI."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from audit.collect import collect
from audit.export import export_run
from audit.prompts import import_prompts
from audit.ratelimit import TokenBucket, backoff_delay
from audit.store import Response, Run
from audit.targets import add_target
from audit.targets.faults import FaultRates
from audit.targets.faults import make_app as faults_app
from audit.targets.loopback import LoopbackServer
from audit.targets.replay import make_app as replay_app

from _collect_util import PAPER, cli, count_responses, paper_subset, response_keys, setup_set

FAST = dict(progress=False, backoff_base=0.01, backoff_max=0.2)


@pytest.fixture(scope="module")
def replay():
    with LoopbackServer(replay_app()) as srv:
        yield srv


@pytest.fixture(scope="module")
def echo():
    app = faults_app(FaultRates())
    with LoopbackServer(app) as srv:
        srv.app = app
        yield srv


def test_collect_replay_stores_real_chatgpt_responses(store, tmp_path, replay):
    import_prompts(store, paper_subset(tmp_path / "p.jsonl", 40), "paper")
    add_target(store, "replay", "openai", replay.base_url + "/v1", "gpt-replay")
    summary = collect(store, run_name="r", set_name="paper", target_name="replay", concurrency=4, **FAST)
    assert summary.status == "complete"
    assert (summary.answered, summary.errors, summary.remaining, summary.total) == (40, 0, 0, 40)
    recorded = {r["prompt"]: r["response"] for r in json.loads(PAPER.read_text())}
    with store.session() as s:
        run = s.scalar(select(Run).where(Run.name == "r"))
        assert run.status == "complete" and run.started_at and run.finished_at
        assert run.config["target"]["name"] == "replay" and run.config["concurrency"] == 4
        rows = s.scalars(select(Response).where(Response.run_id == run.id)).all()
        assert len(rows) == 40
        for r in rows:
            assert r.text == recorded[r.prompt.text]
            assert r.finish_reason == "stop" and r.error is None and r.latency_ms > 0 and r.request_hash
    # re-running a complete run sends nothing
    again = collect(store, run_name="r", concurrency=4, **FAST)
    assert (again.already_done, again.requests, again.answered) == (40, 0, 0)


def test_resume_cache_and_no_cache(store, tmp_path, echo):
    ids = setup_set(store, tmp_path, 30)
    add_target(store, "echo", "openai", echo.base_url + "/v1", "m")
    first = collect(store, run_name="a", set_name="s", target_name="echo", prompt_ids=ids[:10], **FAST)
    assert first.answered == 10 and first.status == "partial"
    rest = collect(store, run_name="a", set_name="s", target_name="echo", **FAST)
    assert (rest.already_done, rest.answered) == (10, 20) and rest.status == "complete"
    assert sorted(response_keys(store, "a")) == [(i, 0) for i in ids]
    # an identical request in another run is copied from the cache, not sent
    before = echo.app.counts["requests"]
    cached = collect(store, run_name="b", set_name="s", target_name="echo", **FAST)
    assert (cached.cached, cached.answered, cached.requests) == (30, 0, 0)
    assert echo.app.counts["requests"] == before
    with store.session() as s:
        texts = dict(s.execute(select(Response.prompt_id, Response.text).join(Run).where(Run.name == "b")).all())
    assert all(texts[i].startswith("Answer: ") for i in ids)
    fresh = collect(store, run_name="c", set_name="s", target_name="echo", use_cache=False, **FAST)
    assert (fresh.cached, fresh.answered) == (0, 30)
    # different request parameters are a different request: no cache hit
    other = collect(store, run_name="d", set_name="s", target_name="echo", max_tokens=50, **FAST)
    assert other.cached == 0 and other.answered == 30


def test_samples_need_temperature_and_are_keyed(store, tmp_path, echo):
    ids = setup_set(store, tmp_path, 5)
    add_target(store, "echo", "openai", echo.base_url + "/v1", "m")
    with pytest.raises(ValueError, match="temperature"):
        collect(store, run_name="z", set_name="s", target_name="echo", samples=3, temperature=0.0, **FAST)
    summary = collect(store, run_name="x", set_name="s", target_name="echo", samples=3, temperature=0.8, **FAST)
    assert summary.answered == 15
    assert sorted(response_keys(store, "x")) == sorted((i, k) for i in ids for k in range(3))
    with store.session() as s:
        assert s.scalar(select(Run).where(Run.name == "x")).config["temperature"] == 0.8
    with pytest.raises(ValueError, match="temperature"):
        collect(store, run_name="x", temperature=0.2, **FAST)
    # the run resumes with its own parameters
    assert collect(store, run_name="x", **FAST).already_done == 15


def test_budget_stops_cleanly_and_resumes(store, tmp_path, echo):
    setup_set(store, tmp_path, 25)
    add_target(store, "echo", "openai", echo.base_url + "/v1", "m")
    s1 = collect(store, run_name="b", set_name="s", target_name="echo", max_requests=10, concurrency=4, **FAST)
    assert s1.status == "stopped" and "max_requests" in s1.stopped_reason
    assert s1.requests == 10 and count_responses(store, "b") == 10 and s1.remaining == 15
    s2 = collect(store, run_name="b", max_tokens_total=60, concurrency=1, **FAST)
    assert s2.status == "stopped" and "max_tokens_total" in s2.stopped_reason
    assert s2.tokens >= 60 and 0 < s2.answered < 15
    s3 = collect(store, run_name="b", **FAST)
    assert s3.status == "complete" and count_responses(store, "b") == 25


def test_terminal_errors_are_recorded_and_retried_on_resume(store, tmp_path):
    setup_set(store, tmp_path, 6, prefix="not recorded")
    with LoopbackServer(replay_app()) as srv:
        add_target(store, "replay", "openai", srv.base_url + "/v1", "m")
        s1 = collect(store, run_name="e", set_name="s", target_name="replay", **FAST)
    assert s1.errors == 6 and s1.status == "with_errors" and s1.requests == 6  # 404 is not retried
    with store.session() as s:
        errors = list(s.scalars(select(Response.error).join(Run).where(Run.name == "e")))
    assert all(e.startswith("client_error: HTTP 404") for e in errors)
    with LoopbackServer(replay_app(fallback="ok now")) as srv:
        from audit.targets import add_target as add

        add(store, "replay", "openai", srv.base_url + "/v1", "m", replace=True)
        s2 = collect(store, run_name="e", **FAST)
    assert s2.answered == 6 and s2.status == "complete" and count_responses(store, "e") == 6


def test_429_retry_after_is_honoured(store, tmp_path):
    setup_set(store, tmp_path, 4)
    app = faults_app(FaultRates(rate_429=0.5), retry_after=0.3, seed=3)
    with LoopbackServer(app) as srv:
        add_target(store, "f", "openai", srv.base_url + "/v1", "m")
        t0 = time.monotonic()
        summary = collect(store, run_name="r", set_name="s", target_name="f", concurrency=1, max_attempts=20, **FAST)
        elapsed = time.monotonic() - t0
    assert summary.answered == 4 and summary.errors == 0
    assert summary.rate_limited == app.counts["rate_429"] > 0
    assert elapsed >= 0.3 * summary.rate_limited  # every 429 paused at least Retry-After


def test_token_bucket_and_backoff_units():
    import asyncio

    async def timed(n: int, rpm: float) -> float:
        b = TokenBucket(rpm)
        t0 = time.monotonic()
        for _ in range(n):
            await b.acquire(1)
        return time.monotonic() - t0

    # lower bounds only (never upper ones): the bucket may not let more through than its rate
    assert asyncio.run(timed(15, 600)) >= 0.45  # 10/s, burst 10: the last 5 wait 0.1 s each
    assert asyncio.run(timed(3, 60)) >= 1.9  # 1/s, burst 1: the 2nd and 3rd wait a second each
    assert backoff_delay(1, base=1, cap=10, retry_after=5) >= 5
    assert all(0 <= backoff_delay(a, base=1, cap=4) <= 4 for a in range(1, 10))


def test_cli_target_collect_export(db_url, tmp_path, echo):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i} [message_refusal]" if i == 0 else f"q{i}", "category": "c"}) + "\n" for i in range(8)))
    from audit.store import open_store

    st = open_store(db_url)
    import_prompts(st, path, "s")
    r = cli(["target", "add", "echo", "--provider", "openai", "--base-url", echo.base_url + "/v1", "--model", "m",
             "--param", "top_p=0.9", "--refuse-token", "[refuse]", "--respond-token", "[respond]",
             "--category-token", "harmful=[harm]", "--prefix-token", "<think>"], db_url)
    assert r.returncode == 0, r.stderr
    r = cli(["target", "list"], db_url)
    assert "echo" in r.stdout and "top_p" in r.stdout
    r = cli(["collect", "--set", "s", "--target", "echo", "--run", "r", "--concurrency", "3", "--logprobs", "2",
             "--no-progress"], db_url)
    assert r.returncode == 0, r.stderr
    assert "complete" in r.stdout
    out = tmp_path / "out.jsonl"
    r = cli(["export", "run", "r", "--out", str(out)], db_url)
    assert r.returncode == 0 and "8 responses" in r.stdout
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(lines) == 8
    for key in ("prompt_id", "prompt", "category", "sample", "response", "finish_reason", "provider_refusal", "error", "latency_ms", "logprobs"):
        assert all(key in l for l in lines)
    refused = [l for l in lines if l["provider_refusal"]]
    assert len(refused) == 1 and refused[0]["response"] is None and refused[0]["provider_refusal"] == "message_refusal"
    ok = [l for l in lines if not l["provider_refusal"]]
    assert all(l["logprobs"] and len(l["logprobs"][0]["top_logprobs"]) == 2 for l in ok)
    from audit.targets import get_target

    t = get_target(st, "echo")
    assert t.refusal_tokens == {"refuse": "[refuse]", "respond": "[respond]", "categories": {"harmful": "[harm]"}, "prefix_tokens": ["<think>"]}
    assert t.params == {"top_p": 0.9}
    st.dispose()
    r = cli(["collect", "--run", "nope", "--no-progress"], db_url)
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_export_unknown_run(store, tmp_path):
    with pytest.raises(ValueError, match="no run"):
        export_run(store, "missing", tmp_path / "x.jsonl")


def test_rpm_and_tpm_buckets_pace_the_collector(store, tmp_path, echo):
    setup_set(store, tmp_path, 6)
    add_target(store, "echo", "openai", echo.base_url + "/v1", "m")
    t0 = time.monotonic()
    s1 = collect(store, run_name="rpm", set_name="s", target_name="echo", rpm=120, concurrency=6, **FAST)
    # 2 requests/s with a burst of 2: the other 4 wait 0.5 s each (a lower bound; never an upper one)
    assert s1.answered == 6 and time.monotonic() - t0 >= 1.9
    t0 = time.monotonic()
    s2 = collect(store, run_name="tpm", set_name="s", target_name="echo", tpm=1200, max_tokens=20,
                 concurrency=6, use_cache=False, **FAST)
    # 20 tokens/s, burst 20, each request really uses >= 17 tokens: the 6th starts after >= 85 tokens refilled (4.25 s)
    assert s2.answered == 6 and time.monotonic() - t0 >= 4.0
