"""Helpers shared by the collector/target tests: small prompt sets, stored targets, response counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "data" / "chatgpt-refusals" / "all_hand_labeled.json"


def write_prompts(path: Path, n: int, prefix: str = "prompt") -> Path:
    cats = ["alpha", "beta", "gamma"]
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"prompt": f"{prefix} number {i}: tell me something", "category": cats[i % 3]}) + "\n")
    return path


def paper_subset(path: Path, n: int) -> Path:
    rows = json.loads(PAPER.read_text())[:n]
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps({"prompt": r["prompt"], "category": r["tone"]}) + "\n")
    return path


def setup_set(store, tmp_path: Path, n: int, set_name: str = "s", prefix: str = "prompt") -> list[int]:
    from audit.prompts import import_prompts
    from audit.store import Prompt, PromptSet

    import_prompts(store, write_prompts(tmp_path / f"{set_name}.jsonl", n, prefix), set_name)
    with store.session() as s:
        return list(
            s.scalars(select(Prompt.id).join(PromptSet).where(PromptSet.name == set_name).order_by(Prompt.id))
        )


def response_keys(store, run_name: str) -> list[tuple[int, int]]:
    from audit.store import Response, Run

    with store.session() as s:
        return [
            (p, k)
            for p, k in s.execute(
                select(Response.prompt_id, Response.sample).join(Run).where(Run.name == run_name)
            )
        ]


def count_responses(store, run_name: str) -> int:
    from audit.store import Response, Run

    with store.session() as s:
        return s.scalar(select(func.count(Response.id)).join(Run).where(Run.name == run_name)) or 0


def cli(args: list[str], db_url: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess."""
    e = dict(os.environ)
    e["REFUSAL_AUDIT_DB"] = db_url
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", "from audit.cli import main; main()", *args],
        env=e, capture_output=True, text=True, cwd=str(ROOT), timeout=kw.pop("timeout", 300), **kw,
    )


def _default_sigint() -> None:
    # A shell without job control starts background jobs with SIGINT ignored, and Python keeps an
    # ignored SIGINT; restore the default so that Ctrl-C tests behave the same in every CI launcher.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_popen(args: list[str], db_url: str, env: dict | None = None, **kw) -> subprocess.Popen:
    """Start the real CLI in a subprocess (stdout and stderr merged), with SIGINT at its default."""
    kw.setdefault("preexec_fn", _default_sigint)
    e = dict(os.environ)
    e["REFUSAL_AUDIT_DB"] = db_url
    e.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-c", "from audit.cli import main; main()", *args],
        env=e, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw,
    )


def wait_until(pred, timeout: float = 120.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return False
