"""API keys come only from environment variables and appear nowhere: DB files, logs, exports, errors."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from audit.collect import collect
from audit.export import export_run
from audit.prompts import import_prompts
from audit.store import open_store
from audit.targets import add_target
from audit.targets.loopback import LoopbackServer

from _collect_util import cli


def _keyed_server(key: str, seen: list):
    async def chat(request: Request):
        auth = request.headers.get("authorization", "")
        hdr = request.headers.get("x-extra-key", "")
        seen.append(auth)
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        if auth != f"Bearer {key}" or (hdr and hdr != key):
            return JSONResponse({"error": {"message": f"invalid key {auth!r}"}}, 401)
        if "leak" in prompt:  # a careless server that echoes the credentials in its error
            return JSONResponse({"error": {"message": f"upstream failed for {auth} / {hdr}"}}, 500)
        return JSONResponse(
            {"choices": [{"message": {"content": f"ok: {prompt}"}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 2, "completion_tokens": 2}}
        )

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


def _files_under(path: Path):
    return [p for p in path.rglob("*") if p.is_file()]


def test_api_key_appears_nowhere(tmp_path, monkeypatch, caplog):
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("AUDIT_TEST_SECRET", key)
    db_path = tmp_path / "db" / "audit.db"
    db_path.parent.mkdir()
    db_url = f"sqlite:///{db_path}"
    store = open_store(db_url)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hello", "world", "please leak", "bye"]))
    import_prompts(store, prompts, "s")
    seen: list = []
    caplog.set_level(logging.DEBUG)
    with LoopbackServer(_keyed_server(key, seen)) as srv:
        add_target(store, "keyed", "openai", srv.base_url + "/v1", "m", api_key_env="AUDIT_TEST_SECRET",
                   params={"headers": {"X-Extra-Key": "${AUDIT_TEST_SECRET}"}})
        add_target(store, "keyed-http", "http", srv.base_url + "/v1/chat/completions", "m",
                   api_key_env="AUDIT_TEST_SECRET", params={"response_path": "choices.0.message.content"})
        summary = collect(store, run_name="in-process", set_name="s", target_name="keyed", progress=True,
                          max_attempts=2, backoff_base=0.01)
        assert summary.answered == 3 and summary.errors == 1
        r1 = cli(["collect", "--set", "s", "--target", "keyed-http", "--run", "cli", "--retries", "1"], db_url)
        assert r1.returncode == 0, r1.stderr
        r2 = cli(["target", "list"], db_url)
        r3 = cli(["export", "run", "cli", "--out", str(tmp_path / "out" / "cli.jsonl")], db_url)
        assert r3.returncode == 0
    export_run(store, "in-process", tmp_path / "out" / "in-process.jsonl")
    store.dispose()
    # the key really was sent (so it was in memory and on the wire) ...
    assert f"Bearer {key}" in seen
    # ... and the leaking server's error was recorded, redacted
    exported = (tmp_path / "out" / "in-process.jsonl").read_text()
    assert "***" in exported and "upstream failed" in exported
    # ... but it is nowhere on disk, in the CLI's output or in the logs
    haystacks = {str(p): p.read_bytes() for p in _files_under(tmp_path / "db") + _files_under(tmp_path / "out")}
    assert any(name.endswith("audit.db") for name in haystacks)
    for proc in (r1, r2, r3):
        haystacks[f"cli {proc.args[-3:]}"] = (proc.stdout + proc.stderr).encode()
    haystacks["logs"] = caplog.text.encode()
    assert caplog.text  # httpx logged the requests
    for name, data in haystacks.items():
        assert key.encode() not in data, f"API key found in {name}"
        assert key[8:].encode() not in data, f"part of the API key found in {name}"
    assert b"AUDIT_TEST_SECRET" in haystacks[str(db_path)] or any(
        b"AUDIT_TEST_SECRET" in v for k, v in haystacks.items() if "audit.db" in k
    )  # only the variable's name is stored
