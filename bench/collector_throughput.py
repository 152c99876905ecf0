"""Collector throughput: responses persisted per second vs a bare asyncio + httpx loop.

Both clients talk to the same loopback server (the built-in ``faults`` target with no faults, a
fixed reply latency, run in its own process) at the same concurrency, in the same run of this script,
alternating, several rounds; the medians are compared. The collector does everything it does in
production (rate-limiter bookkeeping, request hashing, cache lookup, one-row-per-key upserts into
SQLite in group-commit batches); the bare loop only sends, waits and parses.

    .venv/bin/python -m bench.collector_throughput [--n 500] [--concurrency 32] [--latency-ms 20] [--rounds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from audit.cli import main; main()", "serve-target", "faults",
         "--port", str(port), "--latency-ms", str(latency_ms)],
        cwd=str(ROOT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def prompts(n: int, tag: str) -> list[str]:
    return [f"{tag} benchmark prompt {i}: how do I bake bread?" for i in range(n)]


async def bare_loop(url: str, texts: list[str], concurrency: int) -> float:
    """The baseline: a semaphore, an httpx client, parse the reply. Returns responses/s."""
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    got = []
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one(text: str) -> None:
            async with sem:
                r = await client.post(url + "/v1/chat/completions",
                                      json={"model": "m", "messages": [{"role": "user", "content": text}]})
                got.append(r.json()["choices"][0]["message"]["content"])

        t0 = time.perf_counter()
        await asyncio.gather(*(one(t) for t in texts))
        elapsed = time.perf_counter() - t0
    assert len(got) == len(texts)
    return len(texts) / elapsed


def collector_run(url: str, texts: list[str], concurrency: int, workdir: Path, tag: str) -> float:
    from audit.collect import collect
    from audit.prompts import import_prompts
    from audit.store import open_store
    from audit.targets import add_target

    store = open_store(f"sqlite:///{workdir / f'{tag}.db'}")
    path = workdir / f"{tag}.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    import_prompts(store, path, "bench")
    add_target(store, "bench", "openai", url + "/v1", "m")
    t0 = time.perf_counter()
    summary = collect(store, run_name="bench", set_name="bench", target_name="bench",
                      concurrency=concurrency, use_cache=False, progress=False)
    elapsed = time.perf_counter() - t0
    assert summary.answered == len(texts) and summary.remaining == 0, summary
    store.dispose()
    return len(texts) / elapsed


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args(argv)
    proc, url = start_server(args.latency_ms)
    bare, coll = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            # warm up the server and both clients (imports, the TLS context cache) outside the timings
            asyncio.run(bare_loop(url, prompts(50, "warmup"), args.concurrency))
            collector_run(url, prompts(50, "warmup-c"), args.concurrency, Path(tmp), "warmup")
            for r in range(args.rounds):  # alternate which one goes first, so load drifts hit both
                def run_bare():
                    bare.append(asyncio.run(bare_loop(url, prompts(args.n, f"bare{r}"), args.concurrency)))

                def run_coll():
                    coll.append(collector_run(url, prompts(args.n, f"coll{r}"), args.concurrency, Path(tmp), f"r{r}"))

                for step in ((run_bare, run_coll) if r % 2 == 0 else (run_coll, run_bare)):
                    step()
                print(f"round {r + 1}: bare {bare[-1]:.1f}/s  collector {coll[-1]:.1f}/s", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    result = {
        "n": args.n,
        "concurrency": args.concurrency,
        "latency_ms": args.latency_ms,
        "bare_rps_median": round(statistics.median(bare), 1),
        "collector_rps_median": round(statistics.median(coll), 1),
        "ratio": round(statistics.median(coll) / statistics.median(bare), 3),
        "ratio_per_round": [round(c / b, 3) for c, b in zip(coll, bare)],
        "cpus": os.cpu_count(),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
