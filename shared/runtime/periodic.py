"""Periodic jobs inside the daemons, one instance at a time across every daemon and host.

Each run takes a Postgres advisory lock with `pg_try_*` (never waits for it): the instance that
gets it does the work, the others count the run as `skipped` and try again next interval. In
`xact` mode the lock is transaction-scoped and the job runs inside that transaction (short
jobs: a snapshot refresh); in `session` mode it is a session lock on a pooled connection,
released in `finally`, and the job manages its own transactions (long batched jobs such as the
retention move, which should commit batch by batch).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import asyncpg
import structlog

from smsgw.shared.core import db
from smsgw.shared.core.aio import sleep_or_stop
from smsgw.shared.runtime.metrics import RuntimeMetrics

Job = Callable[[asyncpg.Connection], Awaitable[Any]]
log = structlog.stdlib.get_logger("smsgw.periodic")


def lock_key_for(name: str) -> int:
    """A stable signed 64-bit advisory lock key derived from a job name."""
    digest = hashlib.blake2b(f"smsgw.periodic.{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def run_once(name: str, job: Job, *, pool: asyncpg.Pool, lock_key: int | None,
                   mode: Literal["xact", "session"] = "xact") -> bool:
    """Run `job(conn)` once if the advisory lock is free; return False when it was held.

    `lock_key=None` runs without a lock (jobs every instance must run, or that lock inside).
    """
    async with pool.acquire() as conn:
        if lock_key is None:
            await job(conn)
            return True
        if mode == "xact":
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", lock_key):
                    return False
                await job(conn)
                return True
        db.mark_session_state(conn)  # released with the full reset, whatever happens below
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_key):
            return False
        try:
            await job(conn)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", lock_key)
        return True


async def run_periodic(name: str, interval_s: float | Callable[[], float], job: Job, *,
                       pool: asyncpg.Pool, stop: asyncio.Event, lock_key: int | None = None,
                       metrics: RuntimeMetrics | None = None,
                       mode: Literal["xact", "session"] = "xact", jitter: float = 0.1,
                       locked: bool = True) -> None:
    """Run `job` every `interval_s` (±`jitter` fraction) until `stop` is set.

    The advisory lock key defaults to `lock_key_for(name)`; `locked=False` runs every time on
    every instance (e.g. reading a snapshot into this process's gauges).

    `interval_s` may be a callable so a SIGHUP reload changes it without a restart. A failed
    run is logged with its traceback and counted (`outcome="failed"`); the loop goes on, so a
    database outage pauses the job instead of killing the daemon. The wait is on `stop`, so
    shutdown never waits for a full interval.
    """
    key = None if not locked else lock_key_for(name) if lock_key is None else lock_key
    while not stop.is_set():
        outcome = await _one_run(name, job, pool=pool, lock_key=key, mode=mode)
        if metrics is not None:
            metrics.periodic_runs.labels(job=name, outcome=outcome).inc()
        period = interval_s() if callable(interval_s) else interval_s
        delay = period * random.uniform(1 - jitter, 1 + jitter)
        await sleep_or_stop(stop, delay)


async def _one_run(name: str, job: Job, *, pool: asyncpg.Pool, lock_key: int | None,
                   mode: Literal["xact", "session"]) -> str:
    try:
        ran = await run_once(name, job, pool=pool, lock_key=lock_key, mode=mode)
    except Exception:  # loop boundary: log, count, try again next interval
        log.exception("periodic_job_failed", job=name)
        return "failed"
    log.debug("periodic_job_done", job=name, ran=ran)
    return "ok" if ran else "skipped"
