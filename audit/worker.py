"""Scale-out: several worker processes (one machine or many) share one run through the ``tasks`` table.

Each (prompt, sample) of a run is a task. A worker claims a batch with
``SELECT … FOR UPDATE SKIP LOCKED`` (PostgreSQL; one atomic ``UPDATE … RETURNING`` on SQLite) and
holds it under a lease that a heartbeat extends while it works. A killed worker's lease runs out
and the batch is claimed again by another worker. A response and the task it finishes are written
in one transaction, and responses are unique per (run, prompt, sample): a task taken over from a
slow (not dead) worker may be *requested* twice, but it is *stored* exactly once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, update

from audit.collect import (
    CollectOptions,
    CollectSummary,
    Engine,
    default_worker_name,
    final_status,
    resolve_run,
    run_sync,
    set_status,
    utcnow,
)
from audit.store import Prompt, Response, Store, Task


def _insert_fn(session):
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


def prepare_tasks(store: Store, run_id: int, set_id: int, samples: int, *, retry_errors: bool = False) -> int:
    """Create the run's missing tasks (idempotent, safe between concurrent workers); mark answered
    keys done. Return the number of tasks not done."""
    with store.session() as s:
        pids = list(s.scalars(select(Prompt.id).where(Prompt.set_id == set_id).order_by(Prompt.id)))
        insert = _insert_fn(s)
        rows = [
            {"run_id": run_id, "prompt_id": p, "sample": k, "status": "pending", "attempts": 0}
            for p in pids
            for k in range(samples)
        ]
        for i in range(0, len(rows), 1000):
            s.execute(
                insert(Task.__table__).values(rows[i : i + 1000]).on_conflict_do_nothing(
                    index_elements=["run_id", "prompt_id", "sample"]
                )
            )
        answered = exists().where(
            Response.run_id == Task.run_id,
            Response.prompt_id == Task.prompt_id,
            Response.sample == Task.sample,
            *([Response.error.is_(None)] if retry_errors else []),
        )
        s.execute(
            update(Task)
            .where(Task.run_id == run_id, Task.status != "done", answered)
            .values(status="done", lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )
        if retry_errors:
            errored = exists().where(
                Response.run_id == Task.run_id,
                Response.prompt_id == Task.prompt_id,
                Response.sample == Task.sample,
                Response.error.isnot(None),
            )
            s.execute(
                update(Task)
                .where(Task.run_id == run_id, Task.status == "done", errored)
                .values(status="pending", lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )
        return s.scalar(select(func.count(Task.id)).where(Task.run_id == run_id, Task.status != "done")) or 0


def claim_tasks(store: Store, run_id: int, worker: str, n: int, lease_seconds: float) -> list[tuple[int, int, int, str]]:
    """Claim up to ``n`` pending or lease-expired tasks: [(task id, prompt id, sample, prompt text)]."""
    now = utcnow()
    expires = now + dt.timedelta(seconds=lease_seconds)
    claimable = and_(
        Task.run_id == run_id,
        or_(Task.status == "pending", and_(Task.status == "claimed", Task.lease_expires_at < now)),
    )
    with store.session() as s:
        if s.get_bind().dialect.name == "postgresql":
            ids = list(
                s.scalars(select(Task.id).where(claimable).order_by(Task.id).limit(n).with_for_update(skip_locked=True))
            )
            if not ids:
                return []
            s.execute(
                update(Task)
                .where(Task.id.in_(ids))
                .values(status="claimed", lease_owner=worker, lease_expires_at=expires, attempts=Task.attempts + 1)
                .execution_options(synchronize_session=False)
            )
        else:  # SQLite: one atomic statement (writers are serialised)
            sub = select(Task.id).where(claimable).order_by(Task.id).limit(n).scalar_subquery()
            ids = list(
                s.scalars(
                    update(Task)
                    .where(Task.id.in_(sub))
                    .values(status="claimed", lease_owner=worker, lease_expires_at=expires, attempts=Task.attempts + 1)
                    .returning(Task.id)
                    .execution_options(synchronize_session=False)
                )
            )
            if not ids:
                return []
        rows = s.execute(
            select(Task.id, Task.prompt_id, Task.sample, Prompt.text)
            .join(Prompt, Prompt.id == Task.prompt_id)
            .where(Task.id.in_(ids))
            .order_by(Task.id)
        ).all()
    return [tuple(r) for r in rows]


def renew_leases(store: Store, run_id: int, worker: str, lease_seconds: float) -> int:
    with store.session() as s:
        res = s.execute(
            update(Task)
            .where(Task.run_id == run_id, Task.status == "claimed", Task.lease_owner == worker)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return res.rowcount or 0


def release_tasks(store: Store, task_ids: list[int], worker: str) -> None:
    """Give back claimed tasks this worker did not finish (budget stop, shutdown)."""
    if not task_ids:
        return
    with store.session() as s:
        s.execute(
            update(Task)
            .where(Task.id.in_(task_ids), Task.status == "claimed", Task.lease_owner == worker)
            .values(status="pending", lease_owner=None, lease_expires_at=None)
            .execution_options(synchronize_session=False)
        )


def unfinished(store: Store, run_id: int) -> int:
    with store.session() as s:
        return s.scalar(select(func.count(Task.id)).where(Task.run_id == run_id, Task.status != "done")) or 0


async def worker_async(
    store: Store,
    *,
    run_name: str,
    set_name: str | None = None,
    target_name: str | None = None,
    lease_seconds: float = 60.0,
    batch: int = 16,
    worker_name: str | None = None,
    progress: bool = True,
    transport=None,
    explicit: set[str] | None = None,
    poll_seconds: float | None = None,
    **options: Any,
) -> CollectSummary:
    opts = CollectOptions(**options)
    explicit = set(explicit if explicit is not None else options)
    run_id, set_id, target_row, opts = resolve_run(store, run_name, set_name, target_name, opts, explicit)
    worker = worker_name or default_worker_name()
    t0 = time.monotonic()
    todo = await asyncio.to_thread(
        prepare_tasks, store, run_id, set_id, opts.samples, retry_errors=opts.retry_errors
    )
    set_status(store, run_id, "running", started=True)
    engine = Engine(store, run_id, target_row, opts, transport=transport, worker=worker, progress=progress,
                    label=f"{run_name} [{worker}]")
    poll = poll_seconds if poll_seconds is not None else min(1.0, max(0.05, lease_seconds / 10))

    async def heartbeat() -> None:
        while True:
            await asyncio.sleep(max(0.05, lease_seconds / 3))
            await asyncio.to_thread(renew_leases, store, run_id, worker, lease_seconds)

    async def feeder(eng: Engine) -> None:
        while not eng.stop_reason:
            if eng.work_q.qsize() >= opts.concurrency:
                await asyncio.sleep(0.005)
                continue
            claimed = await asyncio.to_thread(claim_tasks, store, run_id, worker, batch, lease_seconds)
            if claimed:
                items = [eng.make_item(pid, smp, text, tid) for tid, pid, smp, text in claimed]
                for it in await eng.put_cached(items):
                    await eng.work_q.put(it)
                continue
            if await asyncio.to_thread(unfinished, store, run_id) == 0:
                return
            await asyncio.sleep(poll)  # the rest is claimed (by us, in flight, or by others until their lease ends)

    hb = asyncio.create_task(heartbeat())
    status = "interrupted"
    try:
        await engine.run(feeder, total=todo)
        if unfinished(store, run_id) == 0:
            status = final_status(store, run_id, set_id, opts.samples, None)
        else:
            status = "stopped" if engine.stop_reason else "running"
    finally:
        hb.cancel()
        await asyncio.to_thread(release_tasks, store, [i.task_id for i in engine.unprocessed if i.task_id], worker)
        if status != "running":
            set_status(store, run_id, status, finished=status in ("complete", "with_errors"))
    c = engine.counts
    return CollectSummary(
        run_name=run_name,
        run_id=run_id,
        status=status,
        total=todo,
        already_done=0,
        answered=c["answered"],
        cached=c["cached"],
        errors=c["errors"],
        remaining=unfinished(store, run_id),
        requests=engine.requests,
        retries=c["retries"],
        rate_limited=engine.limiter.rate_limited,
        tokens=engine.tokens,
        elapsed_s=time.monotonic() - t0,
        stopped_reason=engine.stop_reason,
        error_kinds=dict(engine.error_kinds),
    )


def run_worker(
    store: Store,
    *,
    run_name: str,
    set_name: str | None = None,
    target_name: str | None = None,
    samples: int = 1,
    temperature: float | None = None,
    lease_seconds: float = 60.0,
    batch: int = 16,
    concurrency: int = 8,
    rpm: float | None = None,
    tpm: float | None = None,
    timeout: float = 60.0,
    max_attempts: int = 6,
    backoff_base: float = 0.5,
    retry_errors: bool = False,
    worker_name: str | None = None,
    progress: bool = True,
    transport=None,
) -> CollectSummary:
    """Work on run ``run_name`` until none of its tasks is left (see the module doc)."""
    explicit = ({"samples"} if samples != 1 else set()) | ({"temperature"} if temperature is not None else set())
    return run_sync(
        worker_async(
            store,
            run_name=run_name,
            set_name=set_name,
            target_name=target_name,
            lease_seconds=lease_seconds,
            batch=batch,
            worker_name=worker_name,
            progress=progress,
            transport=transport,
            explicit=explicit,
            samples=samples,
            temperature=temperature,
            concurrency=concurrency,
            rpm=rpm,
            tpm=tpm,
            timeout=timeout,
            max_attempts=max_attempts,
            backoff_base=backoff_base,
            retry_errors=retry_errors,
        )
    )
