"""Export a run's responses as JSONL: one line per stored response (errors included)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from sqlalchemy import select

from audit.store import Prompt, Response, Run, Store

EXPORT_FIELDS = (
    "prompt_id",
    "prompt",
    "category",
    "sample",
    "response",
    "finish_reason",
    "provider_refusal",
    "provider_refusal_detail",
    "error",
    "latency_ms",
    "logprobs",
)


def export_run(store: Store, run_name: str, out: str | Path) -> int:
    """Write every response of ``run_name`` to ``out`` (JSONL, atomically); return the line count."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with store.session() as s:
        run = s.scalar(select(Run).where(Run.name == run_name))
        if run is None:
            raise ValueError(f"no run named {run_name!r}")
        q = (
            select(Response, Prompt.text, Prompt.category)
            .join(Prompt, Prompt.id == Response.prompt_id)
            .where(Response.run_id == run.id)
            .order_by(Response.prompt_id, Response.sample)
            .execution_options(yield_per=500)
        )
        fd, tmp = tempfile.mkstemp(prefix=out.name, suffix=".tmp", dir=out.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                for resp, text, category in s.execute(q):
                    line = {
                        "prompt_id": resp.prompt_id,
                        "prompt": text,
                        "category": category,
                        "sample": resp.sample,
                        "response": resp.text,
                        "finish_reason": resp.finish_reason,
                        "provider_refusal": resp.provider_refusal,
                        "provider_refusal_detail": resp.provider_refusal_detail,
                        "error": resp.error,
                        "latency_ms": resp.latency_ms,
                        "logprobs": resp.logprobs,
                    }
                    fh.write(json.dumps(line, ensure_ascii=False) + "\n")
                    n += 1
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return n
