"""The collector: query a target with every prompt of a set and store each response as it arrives.

Guarantees:

- **Exactly one stored response per (run, prompt, sample)** (a unique key; writes are upserts that
  only ever replace an *error* row). Responses are committed in small group-commit batches as they
  arrive, so ``kill -9`` at any moment loses nothing that was stored; re-running the same run skips
  what is answered (and, by default, retries what ended in an error).
- **Nothing dropped**: a request that still fails after the last try is stored with its ``error``.
- **Paced**: bounded concurrency, requests/tokens-per-minute buckets, adaptive backoff on 429 with
  ``Retry-After``, exponential backoff with jitter on 429/5xx/timeouts/connection errors, a timeout.
- **Cache**: an identical request (target, model, params, messages, sample) answered in any run is
  copied instead of sent, unless ``use_cache=False``.
- **Budget**: ``max_requests`` / ``max_tokens_total`` stop a run cleanly; it resumes later.

The same engine serves :mod:`audit.worker` (PostgreSQL scale-out), which feeds it leased task batches.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from audit.ratelimit import RateLimiter, backoff_delay
from audit.store import Prompt, PromptSet, Response, Run, Store, Target, Task
from audit.targets import ChatRequest, Completion, RateLimited, TargetError, make_target

log = logging.getLogger("audit.collect")

#: Parameters that shape the requests; a resumed run keeps the values it was started with.
REQUEST_KEYS = ("temperature", "max_tokens", "logprobs")
WRITE_BATCH = 500
#: Seconds the writer waits for more answers before committing a batch (an answer received in that
#: window and not yet committed is asked again on resume, like one still in flight).
WRITE_LINGER = 0.2


@dataclass
class CollectOptions:
    samples: int = 1
    temperature: float | None = None
    max_tokens: int | None = None
    logprobs: int | None = None
    concurrency: int = 8
    rpm: float | None = None
    tpm: float | None = None
    max_requests: int | None = None
    max_tokens_total: int | None = None
    use_cache: bool = True
    retry_errors: bool = True
    timeout: float = 60.0
    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0


@dataclass
class CollectSummary:
    run_name: str
    run_id: int
    status: str
    total: int  # (prompt, sample) keys in scope of this invocation
    already_done: int  # answered before this invocation
    answered: int  # answered by the target now
    cached: int  # copied from identical earlier requests
    errors: int  # terminal errors recorded now
    remaining: int  # keys in scope still without a stored response
    requests: int  # HTTP requests sent, retries included
    retries: int
    rate_limited: int
    tokens: int
    elapsed_s: float
    stopped_reason: str | None = None
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return (self.answered + self.errors) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["rate"] = round(self.rate, 2)
        return d


@dataclass
class WorkItem:
    prompt_id: int
    sample: int
    text: str
    request: ChatRequest
    request_hash: str
    task_id: int | None = None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# --------------------------------------------------------------------------------------------- runs


def target_config(row: Target) -> dict[str, Any]:
    """What identifies a target's requests (never a key: only the name of its env variable)."""
    return {
        "name": row.name,
        "provider": row.provider,
        "base_url": row.base_url,
        "model": row.model,
        "params": row.params or {},
        "api_key_env": row.api_key_env,
    }


def _target_key(target: Target) -> str:
    # the target by name (its URL may move, e.g. a loopback port), provider, model and params
    cfg = {k: v for k, v in target_config(target).items() if k not in ("api_key_env", "base_url")}
    return json.dumps(cfg, sort_keys=True, ensure_ascii=False)


def request_hash(target: Target | str, request: ChatRequest, sample: int) -> str:
    """The cache key of a request: target, model, params, messages, sampling parameters, sample."""
    tkey = target if isinstance(target, str) else _target_key(target)
    payload = json.dumps(
        [request.messages, request.temperature, request.max_tokens, request.logprobs, request.params, sample],
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(f"{tkey}\n{payload}".encode()).hexdigest()


def resolve_run(
    store: Store,
    run_name: str,
    set_name: str | None,
    target_name: str | None,
    opts: CollectOptions,
    explicit: set[str],
    prompt_ids: list[int] | None = None,
) -> tuple[int, int, Target, CollectOptions]:
    """Create run ``run_name`` or load it; return (run id, set id, target row, effective options).

    A resumed run keeps the request parameters it was started with; asking for different ones is an
    error. Its sample count can grow.
    """
    for attempt in range(2):
        with store.session() as s:
            run = s.scalar(select(Run).where(Run.name == run_name))
            if run is not None:
                pset, target = s.get(PromptSet, run.set_id), s.get(Target, run.target_id)
                if set_name and pset.name != set_name:
                    raise ValueError(f"run {run_name!r} collects set {pset.name!r}, not {set_name!r}")
                if target_name and target.name != target_name:
                    raise ValueError(f"run {run_name!r} queries target {target.name!r}, not {target_name!r}")
                cfg = dict(run.config or {})
                for key in REQUEST_KEYS:
                    if key in cfg:
                        if key in explicit and getattr(opts, key) != cfg[key]:
                            raise ValueError(
                                f"run {run_name!r} was started with {key}={cfg[key]!r}; "
                                f"start a new run to use {key}={getattr(opts, key)!r}"
                            )
                        setattr(opts, key, cfg[key])
                opts.samples = max(opts.samples, int(cfg.get("samples", 1))) if "samples" in explicit else int(
                    cfg.get("samples", opts.samples)
                )
                if opts.samples > 1 and (opts.temperature is None or opts.temperature <= 0):
                    raise ValueError(
                        f"run {run_name!r} was started with temperature={opts.temperature!r}: several samples "
                        f"per prompt need a temperature > 0, so start a new run"
                    )
                cfg.pop("prompt_ids", None)  # the scope of the latest invocation
                cfg.update(_config_record(opts, target, prompt_ids))
                run.config = cfg
                s.expunge(target)
                return run.id, pset.id, target, opts
            if not set_name or not target_name:
                raise ValueError(f"run {run_name!r} does not exist: give --set and --target to start it")
            pset = s.scalar(select(PromptSet).where(PromptSet.name == set_name))
            if pset is None:
                raise ValueError(f"no prompt set named {set_name!r} (import one with `refusal-audit import`)")
            target = s.scalar(select(Target).where(Target.name == target_name))
            if target is None:
                raise ValueError(f"no target named {target_name!r} (add one with `refusal-audit target add`)")
            _check_samples(opts)
        try:
            with store.session() as s:
                run = Run(
                    name=run_name,
                    set_id=pset.id,
                    target_id=target.id,
                    config=_config_record(opts, target, prompt_ids),
                    status="pending",
                )
                s.add(run)
                s.flush()
                return run.id, pset.id, target, opts
        except IntegrityError:  # another process created it first: load theirs
            if attempt:
                raise
    raise RuntimeError("unreachable")


def _check_samples(opts: CollectOptions) -> None:
    if opts.samples < 1:
        raise ValueError("samples must be >= 1")
    if opts.samples > 1:
        if opts.temperature is None:
            opts.temperature = 1.0
        elif opts.temperature <= 0:
            raise ValueError("several samples per prompt need a temperature > 0")


def _config_record(opts: CollectOptions, target: Target, prompt_ids) -> dict[str, Any]:
    cfg = {k: v for k, v in asdict(opts).items()}
    cfg["target"] = target_config(target)
    if prompt_ids is not None:
        cfg["prompt_ids"] = sorted(int(p) for p in prompt_ids)
    return cfg


def set_status(store: Store, run_id: int, status: str, *, started: bool = False, finished: bool = False) -> None:
    with store.session() as s:
        run = s.get(Run, run_id)
        run.status = status
        if started and run.started_at is None:
            run.started_at = utcnow()
        if finished:
            run.finished_at = utcnow()


def final_status(store: Store, run_id: int, set_id: int, samples: int, stopped: str | None) -> str:
    """complete | with_errors | stopped (budget) | partial (keys still unanswered)."""
    with store.session() as s:
        n_prompts = s.scalar(select(func.count(Prompt.id)).where(Prompt.set_id == set_id)) or 0
        rows = s.execute(
            select(func.count(Response.id), func.count(Response.error))
            .join(Prompt, Prompt.id == Response.prompt_id)
            .where(Response.run_id == run_id, Response.sample < samples, Prompt.set_id == set_id)
        ).one()
    n_rows, n_err = rows
    if n_rows >= n_prompts * samples:
        return "complete" if n_err == 0 else "with_errors"
    return "stopped" if stopped else "partial"


# -------------------------------------------------------------------------------------------- writes


def _insert_fn(session):
    name = session.get_bind().dialect.name
    if name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - other backends are not supported for writes
        raise RuntimeError(f"the collector supports SQLite and PostgreSQL stores, not {name}")
    return insert


_RESPONSE_FIELDS = (
    "text",
    "finish_reason",
    "provider_refusal",
    "provider_refusal_detail",
    "latency_ms",
    "prompt_tokens",
    "completion_tokens",
    "logprobs",
    "error",
    "request_hash",
    "worker",
    "created_at",
)


def upsert_responses(session, rows: list[dict[str, Any]]) -> None:
    """Insert responses; on the (run, prompt, sample) key, replace only a stored *error* row."""
    if not rows:
        return
    insert = _insert_fn(session)
    table = Response.__table__
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["run_id", "prompt_id", "sample"],
        set_={f: stmt.excluded[f] for f in _RESPONSE_FIELDS},
        where=table.c.error.isnot(None),
    )
    session.execute(stmt, rows)  # executemany of one cached statement


def write_batch(store: Store, rows: list[dict[str, Any]], task_ids: list[int]) -> None:
    """One short transaction: the responses, and the tasks they finish (worker mode)."""
    for attempt in range(8):
        try:
            with store.session() as s:
                upsert_responses(s, rows)
                if task_ids:
                    s.execute(
                        update(Task).where(Task.id.in_(task_ids)).values(status="done", lease_expires_at=None)
                    )
            return
        except OperationalError:
            if attempt == 7:
                raise
            time.sleep(0.05 * 2**attempt)


def response_row(run_id: int, item: WorkItem, comp: Completion | None, error: str | None, worker: str) -> dict:
    row = {
        "run_id": run_id,
        "prompt_id": item.prompt_id,
        "sample": item.sample,
        "request_hash": item.request_hash,
        "worker": worker,
        "created_at": utcnow(),
        "text": None,
        "finish_reason": None,
        "provider_refusal": None,
        "provider_refusal_detail": None,
        "latency_ms": None,
        "prompt_tokens": None,
        "completion_tokens": None,
        "logprobs": None,
        "error": error,
    }
    if comp is not None:
        row.update(
            text=_clean(comp.text),
            finish_reason=comp.finish_reason,
            provider_refusal=comp.provider_refusal,
            provider_refusal_detail=comp.provider_refusal_detail,
            latency_ms=comp.latency_ms,
            prompt_tokens=comp.prompt_tokens,
            completion_tokens=comp.completion_tokens,
            logprobs=_clean_logprobs(comp.logprobs),
        )
    return row


def _clean(text: str | None) -> str | None:
    """Text as every store accepts it (PostgreSQL rejects NUL characters)."""
    return text.replace("\x00", "\ufffd") if text and "\x00" in text else text


def _clean_logprobs(lp):
    if not lp:
        return lp
    for pos in lp:
        pos["token"] = _clean(pos["token"])
        for alt in pos.get("top_logprobs") or []:
            alt["token"] = _clean(alt["token"])
    return lp


def lookup_cache(store: Store, run_id: int, hashes: list[str]) -> dict[str, dict[str, Any]]:
    """Stored successful responses of other runs with these request hashes (newest wins)."""
    out: dict[str, dict[str, Any]] = {}
    cols = [getattr(Response, f) for f in _RESPONSE_FIELDS if f not in ("worker", "created_at")]
    with store.session() as s:
        for i in range(0, len(hashes), 500):
            chunk = hashes[i : i + 500]
            q = (
                select(Response.id, *cols)
                .where(Response.request_hash.in_(chunk), Response.error.is_(None), Response.run_id != run_id)
                .order_by(Response.id)
            )
            for r in s.execute(q):
                out[r.request_hash] = {f: getattr(r, f) for f in _RESPONSE_FIELDS if f not in ("worker", "created_at")}
    return out


# -------------------------------------------------------------------------------------------- engine


class Engine:
    """Feeds work items through rate-limited request tasks into a group-commit writer."""

    def __init__(
        self,
        store: Store,
        run_id: int,
        target_row: Target,
        opts: CollectOptions,
        *,
        transport=None,
        worker: str | None = None,
        progress: bool = True,
        label: str = "collect",
    ):
        self.store, self.run_id, self.target_row, self.opts = store, run_id, target_row, opts
        self.worker = worker or default_worker_name()
        self.transport = transport
        self.show_progress = progress
        self.label = label
        self._target_key = _target_key(target_row)
        self.limiter = RateLimiter(concurrency=opts.concurrency, rpm=opts.rpm, tpm=opts.tpm)
        self.work_q: asyncio.Queue = asyncio.Queue(maxsize=max(2 * opts.concurrency, 16))
        self.write_q: asyncio.Queue = asyncio.Queue()
        self.stop_reason: str | None = None
        self.unprocessed: list[WorkItem] = []
        self.counts = Counter()
        self.error_kinds: Counter = Counter()
        self.tokens = 0
        self.requests = 0
        self._progress = None
        self._task_id = None
        self._t0 = time.monotonic()

    # -- requests
    def make_request(self, text: str) -> ChatRequest:
        o = self.opts
        return ChatRequest(
            messages=[{"role": "user", "content": text}],
            temperature=o.temperature,
            max_tokens=o.max_tokens,
            logprobs=o.logprobs,
        )

    def make_item(self, prompt_id: int, sample: int, text: str, task_id: int | None = None) -> WorkItem:
        req = self.make_request(text)
        return WorkItem(prompt_id, sample, text, req, request_hash(self._target_key, req, sample), task_id)

    def _budget_ok(self) -> bool:
        o = self.opts
        if self.stop_reason:
            return False
        if o.max_requests is not None and self.requests >= o.max_requests:
            self.stop_reason = f"max_requests={o.max_requests} reached"
        elif o.max_tokens_total is not None and self.tokens >= o.max_tokens_total:
            self.stop_reason = f"max_tokens_total={o.max_tokens_total} reached"
        return self.stop_reason is None

    async def _execute(self, target, item: WorkItem) -> dict | None:
        o = self.opts
        est = len(item.text) / 4 + (o.max_tokens or 256)
        for attempt in range(1, o.max_attempts + 1):
            comp: Completion | None = None
            err: BaseException | None = None
            await self.limiter.acquire(est)
            try:
                if not self._budget_ok():
                    return None
                self.requests += 1
                if attempt > 1:
                    self.counts["retries"] += 1
                try:
                    comp = await target.complete(item.request)
                except TargetError as exc:
                    err = exc
                except Exception as exc:  # a bug or an unexpected reply shape: record it, never drop
                    log.exception("unexpected error querying %s", self.target_row.name)
                    err = exc
                if comp is not None:
                    used = (comp.prompt_tokens or 0) + (comp.completion_tokens or 0)
                    if not used:
                        used = int(len(item.text) / 4 + len(comp.text or "") / 4)
                    self.tokens += used
                    self.limiter.charge_tokens(est, used)
            finally:
                await self.limiter.release()
            if comp is not None:
                await self.limiter.on_success()
                return response_row(self.run_id, item, comp, None, self.worker)
            retryable = isinstance(err, TargetError) and err.retryable
            retry_after = getattr(err, "retry_after", None)
            delay = backoff_delay(attempt, base=o.backoff_base, cap=o.backoff_max, retry_after=retry_after)
            if isinstance(err, RateLimited):
                self.limiter.on_rate_limited(retry_after, delay)
            if not retryable or attempt == o.max_attempts:
                kind = err.kind if isinstance(err, TargetError) else "internal"
                self.error_kinds[kind] += 1
                msg = str(err)
                redact = getattr(target, "redact", None)
                if redact:
                    msg = redact(msg)
                text = _clean(f"{kind}: {msg} (after {attempt} attempt{'s' if attempt > 1 else ''})")
                return response_row(self.run_id, item, None, text, self.worker)
            await asyncio.sleep(delay)
        return None  # unreachable

    async def _request_loop(self, target) -> None:
        while True:
            item = await self.work_q.get()
            if item is None:
                return
            if self.stop_reason:
                self.unprocessed.append(item)
                continue
            row = await self._execute(target, item)
            if row is None:
                self.unprocessed.append(item)
            else:
                await self.write_q.put((row, item.task_id))

    # -- writes
    async def _writer(self) -> None:
        finished = False
        while not finished:
            first = await self.write_q.get()
            if first is None:
                return
            batch = [first]
            if first is not None and self.write_q.qsize() < WRITE_BATCH:
                # Group commit: let a few more answers arrive, so one transaction stores many.
                await asyncio.sleep(WRITE_LINGER)
            while len(batch) < WRITE_BATCH and not self.write_q.empty():
                nxt = self.write_q.get_nowait()
                if nxt is None:
                    finished = True
                    break
                batch.append(nxt)
            rows = [r for r, _ in batch]
            task_ids = [t for _, t in batch if t is not None]
            await asyncio.to_thread(write_batch, self.store, rows, task_ids)
            for r in rows:
                key = "errors" if r["error"] else ("cached" if r["worker"] == "cache" else "answered")
                self.counts[key] += 1
            self._advance(len(rows))

    async def put_cached(self, items: list[WorkItem]) -> list[WorkItem]:
        """Write cache hits for ``items`` (if the cache is on); return the items still to request."""
        if not self.opts.use_cache or not items:
            return items
        hits = await asyncio.to_thread(lookup_cache, self.store, self.run_id, [i.request_hash for i in items])
        rest = []
        for it in items:
            hit = hits.get(it.request_hash)
            if hit is None:
                rest.append(it)
            else:
                row = response_row(self.run_id, it, None, None, "cache")
                row.update(hit)
                row["worker"] = "cache"
                await self.write_q.put((row, it.task_id))
        return rest

    # -- progress
    def _advance(self, n: int) -> None:
        if self._progress is not None:
            elapsed = max(1e-6, time.monotonic() - self._t0)
            done = self.counts["answered"] + self.counts["errors"] + self.counts["cached"]
            self._progress.update(
                self._task_id, advance=n, errors=self.counts["errors"], rate=f"{done / elapsed:.1f}"
            )

    def set_total(self, total: int | None) -> None:
        if self._progress is not None:
            self._progress.update(self._task_id, total=total)

    async def run(self, feeder: Callable[[Engine], Awaitable[None]], total: int | None) -> None:
        """Run ``feeder`` (which puts WorkItems on ``work_q``) through the request tasks and writer."""
        progress_cm = _make_progress() if self.show_progress else None
        target = make_target(
            self.target_row,
            timeout=self.opts.timeout,
            transport=self.transport,
            max_connections=max(1, self.opts.concurrency),
        )
        writer = asyncio.create_task(self._writer())
        requesters = [asyncio.create_task(self._request_loop(target)) for _ in range(max(1, self.opts.concurrency))]
        try:
            if progress_cm is not None:
                progress_cm.__enter__()
                self._progress = progress_cm
                self._task_id = progress_cm.add_task(self.label, total=total, errors=0, rate="0.0")
            try:
                await feeder(self)
            except (asyncio.CancelledError, KeyboardInterrupt):
                self.stop_reason = self.stop_reason or "interrupted"  # queued items are skipped
                raise
            finally:
                for _ in requesters:
                    await self.work_q.put(None)
                await asyncio.gather(*requesters, return_exceptions=True)
                await self.write_q.put(None)
                await writer  # flush every finished response, even when interrupted
        finally:
            for t in requesters:
                t.cancel()
            await target.aclose()
            if progress_cm is not None:
                progress_cm.__exit__(None, None, None)


def _make_progress():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("errors [red]{task.fields[errors]}"),
        TextColumn("{task.fields[rate]}/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


# ------------------------------------------------------------------------------------------- collect


def pending_keys(
    store: Store, run_id: int, set_id: int, samples: int, prompt_ids, retry_errors: bool
) -> tuple[list[tuple[int, int, str]], int]:
    """(prompt id, sample, text) still to answer in scope, and how many in scope are already done."""
    with store.session() as s:
        prompts = s.execute(select(Prompt.id, Prompt.text).where(Prompt.set_id == set_id).order_by(Prompt.id)).all()
        done = {
            (p, smp): err is None
            for p, smp, err in s.execute(
                select(Response.prompt_id, Response.sample, Response.error).where(Response.run_id == run_id)
            )
        }
    if prompt_ids is not None:
        wanted = {int(p) for p in prompt_ids}
        unknown = wanted - {p for p, _ in prompts}
        if unknown:
            raise ValueError(f"prompt ids not in the run's set: {sorted(unknown)[:10]}")
        prompts = [(p, t) for p, t in prompts if p in wanted]
    todo, already = [], 0
    for pid, text in prompts:
        for smp in range(samples):
            ok = done.get((pid, smp))
            if ok or (ok is False and not retry_errors):
                already += 1
            else:
                todo.append((pid, smp, text))
    return todo, already


async def collect_async(
    store: Store,
    *,
    run_name: str,
    set_name: str | None = None,
    target_name: str | None = None,
    prompt_ids: list[int] | None = None,
    progress: bool = True,
    transport=None,
    explicit: set[str] | None = None,
    **options: Any,
) -> CollectSummary:
    opts = CollectOptions(**options)
    explicit = set(explicit if explicit is not None else options)
    run_id, set_id, target_row, opts = resolve_run(
        store, run_name, set_name, target_name, opts, explicit, prompt_ids
    )
    t0 = time.monotonic()
    todo, already = pending_keys(store, run_id, set_id, opts.samples, prompt_ids, opts.retry_errors)
    set_status(store, run_id, "running", started=True)
    engine = Engine(store, run_id, target_row, opts, transport=transport, progress=progress, label=run_name)

    async def feeder(eng: Engine) -> None:
        for i in range(0, len(todo), 64):
            if eng.stop_reason:
                return
            items = [eng.make_item(p, smp, text) for p, smp, text in todo[i : i + 64]]
            for it in await eng.put_cached(items):
                if eng.stop_reason:
                    return
                await eng.work_q.put(it)

    status = "interrupted"
    try:
        await engine.run(feeder, total=len(todo))
        status = final_status(store, run_id, set_id, opts.samples, engine.stop_reason)
    finally:
        set_status(store, run_id, status, finished=status in ("complete", "with_errors"))
    c = engine.counts
    stored = c["answered"] + c["errors"] + c["cached"]
    return CollectSummary(
        run_name=run_name,
        run_id=run_id,
        status=status,
        total=len(todo) + already,
        already_done=already,
        answered=c["answered"],
        cached=c["cached"],
        errors=c["errors"],
        remaining=len(todo) - stored,
        requests=engine.requests,
        retries=c["retries"],
        rate_limited=engine.limiter.rate_limited,
        tokens=engine.tokens,
        elapsed_s=time.monotonic() - t0,
        stopped_reason=engine.stop_reason,
        error_kinds=dict(engine.error_kinds),
    )


def run_sync(coro):
    """Run a coroutine to completion, also from code that already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target():
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def collect(
    store: Store,
    *,
    run_name: str,
    set_name: str | None = None,
    target_name: str | None = None,
    samples: int = 1,
    temperature: float | None = None,
    concurrency: int = 8,
    rpm: float | None = None,
    tpm: float | None = None,
    max_requests: int | None = None,
    max_tokens_total: int | None = None,
    use_cache: bool = True,
    logprobs: int | None = None,
    max_tokens: int | None = None,
    prompt_ids: list[int] | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    max_attempts: int = 6,
    backoff_base: float = 0.5,
    backoff_max: float = 30.0,
    retry_errors: bool = True,
    transport=None,
) -> CollectSummary:
    """Collect responses of target ``target_name`` to set ``set_name`` into run ``run_name``.

    Creates the run if missing, resumes it otherwise (skipping what is answered). See the module doc.
    """
    explicit = {"samples"} if samples != 1 else set()
    explicit |= {k for k, v in (("temperature", temperature), ("max_tokens", max_tokens), ("logprobs", logprobs)) if v is not None}
    return run_sync(
        collect_async(
            store,
            run_name=run_name,
            set_name=set_name,
            target_name=target_name,
            prompt_ids=prompt_ids,
            progress=progress,
            transport=transport,
            explicit=explicit,
            samples=samples,
            temperature=temperature,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            max_requests=max_requests,
            max_tokens_total=max_tokens_total,
            use_cache=use_cache,
            logprobs=logprobs,
            max_tokens=max_tokens,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            retry_errors=retry_errors,
        )
    )
