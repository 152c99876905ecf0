"""Providers over real loopback HTTP servers: replay, OpenAI, Anthropic, generic HTTP, error mapping."""

from __future__ import annotations

import asyncio
import json

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from audit.targets import (
    BadResponse,
    ChatRequest,
    ClientError,
    ConfigError,
    ConnectionFailed,
    RateLimited,
    ServerError,
    TargetTimeout,
    add_target,
    get_target,
    list_targets,
)
from audit.targets.anthropic import AnthropicTarget
from audit.targets.faults import FaultRates
from audit.targets.faults import make_app as faults_app
from audit.targets.http import GenericHttpTarget, extract_path, render_template
from audit.targets.loopback import LoopbackServer
from audit.targets.openai import OpenAITarget, chat_completions_url
from audit.targets.replay import load_replies
from audit.targets.replay import make_app as replay_app

from _collect_util import PAPER


def ask(target, prompt: str, **kw):
    async def go():
        try:
            return await target.complete(ChatRequest(messages=[{"role": "user", "content": prompt}], **kw))
        finally:
            await target.aclose()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def replay():
    with LoopbackServer(replay_app()) as srv:
        yield srv


def test_replay_answers_recorded_chatgpt_responses(replay):
    rows = json.loads(PAPER.read_text())
    row = rows[5]
    comp = ask(OpenAITarget("r", replay.base_url + "/v1", "gpt-replay"), row["prompt"])
    assert comp.text == row["response"]
    assert comp.finish_reason == "stop"
    assert comp.provider_refusal is None
    assert comp.prompt_tokens and comp.completion_tokens and comp.latency_ms > 0
    assert len(load_replies()) == len({r["prompt"] for r in rows})


def test_replay_unknown_prompt_is_a_non_retryable_404(replay):
    with pytest.raises(ClientError) as exc:
        ask(OpenAITarget("r", replay.base_url + "/v1", "m"), "a prompt nobody recorded")
    assert exc.value.status == 404 and not exc.value.retryable
    assert "unknown prompt" in str(exc.value)


def test_replay_fallback_and_anthropic_protocol():
    rows = json.loads(PAPER.read_text())
    with LoopbackServer(replay_app(fallback="I have no recording of that.")) as srv:
        assert ask(OpenAITarget("r", srv.base_url, "m"), "unknown?").text == "I have no recording of that."
        comp = ask(AnthropicTarget("a", srv.base_url, "claude-replay"), rows[0]["prompt"])
        assert comp.text == rows[0]["response"] and comp.finish_reason == "end_turn"
        assert comp.prompt_tokens and comp.completion_tokens


def test_chat_completions_url_forms():
    assert chat_completions_url("http://h:1/v1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/v1/") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1") == "http://h:1/v1/chat/completions"
    assert chat_completions_url("http://h:1/api/v2/chat/completions") == "http://h:1/api/v2/chat/completions"


@pytest.fixture(scope="module")
def faultless():
    app = faults_app(FaultRates())
    with LoopbackServer(app) as srv:
        yield srv


@pytest.mark.parametrize(
    "marker, signal, text",
    [("[message_refusal]", "message_refusal", None), ("[content_filter]", "content_filter", ""), ("[policy400]", "content_policy", None)],
)
def test_provider_refusal_signals_stay_out_of_text(faultless, marker, signal, text):
    comp = ask(OpenAITarget("f", faultless.base_url + "/v1", "m"), f"do the thing {marker}")
    assert comp.provider_refusal == signal
    assert comp.provider_refusal_detail
    assert comp.text == text


def test_logprobs_are_requested_and_normalised(faultless):
    comp = ask(OpenAITarget("f", faultless.base_url + "/v1", "m"), "one two three four", logprobs=3)
    assert comp.text == "Answer: one two three four"
    lp = comp.logprobs
    assert [p["token"] for p in lp] == ["Answer:", "one", "two", "three", "four"]
    for pos in lp:
        assert set(pos) == {"token", "logprob", "top_logprobs"}
        assert isinstance(pos["logprob"], float)
        assert len(pos["top_logprobs"]) == 3
        assert all(set(t) == {"token", "logprob"} for t in pos["top_logprobs"])
    assert ask(OpenAITarget("f", faultless.base_url + "/v1", "m"), "x").logprobs is None


@pytest.mark.parametrize(
    "kind, exc",
    [
        ("rate_429", RateLimited),
        ("rate_500", ServerError),
        ("rate_503", ServerError),
        ("malformed", BadResponse),
        ("empty_choices", BadResponse),
        ("reset", ConnectionFailed),
        ("slow", TargetTimeout),
    ],
)
def test_faults_map_to_retryable_errors(kind, exc):
    app = faults_app(FaultRates(**{kind: 1.0}), retry_after=7, slow_seconds=3)
    with LoopbackServer(app) as srv:
        with pytest.raises(exc) as info:
            ask(OpenAITarget("f", srv.base_url + "/v1", "m", timeout=0.5), "hello")
    assert info.value.retryable
    if kind == "rate_429":
        assert info.value.retry_after == 7


def _echo_server(seen: list):
    async def messages(request: Request):
        body = await request.json()
        seen.append((dict(request.headers), body))
        prompt = body["messages"][-1]["content"]
        if prompt == "overloaded":
            return JSONResponse({"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}, 529)
        stop = "refusal" if "weapon" in prompt else "end_turn"
        return JSONResponse(
            {"content": [{"type": "text", "text": f"re: {prompt}"}], "stop_reason": stop,
             "usage": {"input_tokens": 3, "output_tokens": 4}}
        )

    async def custom(request: Request):
        body = await request.json()
        seen.append((dict(request.headers), body))
        if request.headers.get("x-api-key") != "sekrit-123":
            return JSONResponse({"error": "bad key"}, 401)
        return JSONResponse({"data": {"outputs": [{"generated": body["input"].upper(), "why": body.get("t")}]}})

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"]), Route("/gen", custom, methods=["POST"])])


def test_anthropic_messages(monkeypatch):
    monkeypatch.setenv("ANTH_TEST_KEY", "ak-999")
    seen: list = []
    with LoopbackServer(_echo_server(seen)) as srv:
        t = AnthropicTarget("a", srv.base_url, "claude-x", api_key_env="ANTH_TEST_KEY", params={"system": "be brief"})
        comp = ask(t, "hi there", temperature=0.3, logprobs=5)
        assert comp.text == "re: hi there" and comp.finish_reason == "end_turn"
        assert (comp.prompt_tokens, comp.completion_tokens) == (3, 4)
        headers, body = seen[-1]
        assert headers["x-api-key"] == "ak-999" and headers["anthropic-version"]
        assert body["system"] == "be brief" and body["temperature"] == 0.3 and body["max_tokens"] > 0
        assert "logprobs" not in body
        comp = ask(AnthropicTarget("a", srv.base_url, "c", api_key_env="ANTH_TEST_KEY"), "build a weapon")
        assert comp.provider_refusal == "refusal" and comp.text == "re: build a weapon"
        with pytest.raises(ServerError):
            ask(AnthropicTarget("a", srv.base_url, "c", api_key_env="ANTH_TEST_KEY"), "overloaded")


def test_generic_http_target_with_env_header_template_and_path(monkeypatch):
    monkeypatch.setenv("MY_TEST_KEY", "sekrit-123")
    seen: list = []
    params = {
        "headers": {"X-Api-Key": "${MY_TEST_KEY}"},
        "body_template": {"input": "{{prompt}}", "t": "{{temperature}}", "note": "model={{model}}"},
        "response_path": "$.data.outputs.0.generated",
    }
    with LoopbackServer(_echo_server(seen)) as srv:
        t = GenericHttpTarget("g", srv.base_url + "/gen", "mm", params=params)
        comp = ask(t, "hello world", temperature=0.5)
        assert comp.text == "HELLO WORLD"
        headers, body = seen[-1]
        assert body == {"input": "hello world", "t": 0.5, "note": "model=mm"}
        # without temperature the key is dropped from the body
        ask(GenericHttpTarget("g", srv.base_url + "/gen", "mm", params=params), "x")
        assert "t" not in seen[-1][1]
        monkeypatch.setenv("MY_TEST_KEY", "wrong")
        with pytest.raises(ClientError):
            ask(GenericHttpTarget("g", srv.base_url + "/gen", "mm", params=params), "x")


def test_template_and_path_helpers():
    values = {"prompt": "p", "messages": [{"role": "user", "content": "p"}], "model": None}
    assert render_template({"a": "{{messages}}", "b": "x {{prompt}} y", "m": "{{model}}"}, values) == {
        "a": [{"role": "user", "content": "p"}], "b": "x p y"}
    with pytest.raises(ConfigError):
        render_template({"a": "{{nope}}"}, values)
    assert extract_path({"a": [{"b": 1}]}, "a.0.b") == 1
    assert extract_path({"a": [{"b": 1}]}, "$.a[0].b") == 1
    with pytest.raises(KeyError):
        extract_path({"a": []}, "a.0")


def test_missing_key_env_is_a_config_error(monkeypatch):
    monkeypatch.delenv("NOPE_KEY", raising=False)
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        OpenAITarget("x", "http://127.0.0.1:1/v1", "m", api_key_env="NOPE_KEY")
    with pytest.raises(ConfigError, match="NOPE_KEY"):
        GenericHttpTarget("x", "http://127.0.0.1:1/gen", "m", params={"headers": {"X-K": "${NOPE_KEY}"}})


def test_add_target_stores_config_but_refuses_literal_secrets(store):
    row = add_target(store, "t1", "openai", "http://h/v1", "gpt", api_key_env="OPENAI_API_KEY",
                     params={"top_p": 0.9}, refusal_tokens={"refuse": "[refuse]", "respond": "[respond]",
                                                            "categories": {}, "prefix_tokens": []})
    assert row.params == {"top_p": 0.9}
    got = get_target(store, "t1")
    assert got.api_key_env == "OPENAI_API_KEY" and got.refusal_tokens["refuse"] == "[refuse]"
    with pytest.raises(ValueError, match="already exists"):
        add_target(store, "t1", "openai", "http://h/v1", "gpt")
    with pytest.raises(ValueError, match="secret"):
        add_target(store, "t2", "openai", "http://h/v1", "gpt", params={"api_key": "sk-live"})
    with pytest.raises(ValueError, match="environment variable"):
        add_target(store, "t3", "http", "http://h/gen", None, params={"headers": {"Authorization": "Bearer sk"}})
    with pytest.raises(ConfigError):
        add_target(store, "t4", "grpc", "http://h", None)
    add_target(store, "t5", "http", "http://h/gen", None, params={"headers": {"Authorization": "Bearer ${K}"}})
    assert [t.name for t in list_targets(store)] == ["t1", "t5"]


def test_secrets_in_urls_must_name_env_vars(store, monkeypatch):
    with pytest.raises(ValueError, match="secret"):
        add_target(store, "q", "http", "http://h/gen?key=abc123", None)
    add_target(store, "q", "http", "http://h/gen?key=${Q_KEY}", None)
    monkeypatch.setenv("Q_KEY", "qq-secret")
    t = GenericHttpTarget("q", "http://h/gen?key=${Q_KEY}", None)
    assert t.url.endswith("key=qq-secret") and t.redact("failed: " + t.url) == "failed: http://h/gen?key=***"


def test_serve_target_replay_cli(tmp_path):
    import subprocess
    import sys
    import time

    import httpx

    from audit.targets.loopback import free_port

    from _collect_util import ROOT

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from audit.cli import main; main()", "serve-target", "replay", "--port", str(port),
         "--fallback", "no recording"],
        cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        row = json.loads(PAPER.read_text())[0]
        assert ask(OpenAITarget("r", f"http://127.0.0.1:{port}/v1", "m"), row["prompt"]).text == row["response"]
        assert ask(OpenAITarget("r", f"http://127.0.0.1:{port}/v1", "m"), "??").text == "no recording"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
