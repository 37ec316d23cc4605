"""Periodic jobs: one instance at a time (advisory lock), counted outcomes, prompt stop."""

from __future__ import annotations

import asyncio

import asyncpg
from prometheus_client import CollectorRegistry

from smsgw.shared.runtime.metrics import RuntimeMetrics
from smsgw.shared.runtime.periodic import lock_key_for, run_once, run_periodic


async def test_lock_held_elsewhere_skips_the_run(pool: asyncpg.Pool) -> None:
    """1. another session holds the job's advisory lock; 2. run_once skips (job not run) in
    both modes; 3. once released, the job runs."""
    ran: list[str] = []

    async def job(_conn: asyncpg.Connection) -> None:
        ran.append("x")

    key = lock_key_for("test_job")
    holder = await pool.acquire()
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", key)
        assert not await run_once("test_job", job, pool=pool, lock_key=key)
        assert not await run_once("test_job", job, pool=pool, lock_key=key, mode="session")
        assert ran == []
        await holder.execute("SELECT pg_advisory_unlock($1)", key)
    finally:
        await pool.release(holder)
    assert await run_once("test_job", job, pool=pool, lock_key=key)
    assert await run_once("test_job", job, pool=pool, lock_key=key, mode="session")
    assert ran == ["x", "x"]


async def test_concurrent_instances_never_overlap(pool: asyncpg.Pool) -> None:
    """Four runners of the same job at once (xact mode): the job body never runs twice at the
    same time, and the others count `skipped`."""
    active = 0
    overlaps = 0

    async def job(_conn: asyncpg.Connection) -> None:
        nonlocal active, overlaps
        active += 1
        overlaps += active > 1
        await asyncio.sleep(0.05)  # hold the lock while the others try
        active -= 1

    results = await asyncio.gather(*(run_once("overlap", job, pool=pool,
                                              lock_key=lock_key_for("overlap"))
                                      for _ in range(4)))
    assert overlaps == 0
    assert results.count(True) >= 1 and results.count(False) >= 1


async def test_run_periodic_counts_outcomes_and_stops_promptly(pool: asyncpg.Pool) -> None:
    """1. a job that fails on its second run; 2. the loop goes on (ok and failed counted);
    3. setting stop ends the loop at once although the interval is 0.05-60 s."""
    registry = CollectorRegistry()
    metrics = RuntimeMetrics.create(registry)
    stop = asyncio.Event()
    runs = 0
    third = asyncio.Event()

    async def job(conn: asyncpg.Connection) -> None:
        nonlocal runs
        runs += 1
        if runs == 2:
            await conn.execute("SELECT 1/0")
        if runs == 3:
            third.set()

    interval = [0.05]
    task = asyncio.create_task(run_periodic("flaky", lambda: interval[0], job, pool=pool,
                                            stop=stop, metrics=metrics))
    await asyncio.wait_for(third.wait(), 10)
    interval[0] = 60.0  # the next wait would be a minute: stop must cut it short
    stop.set()
    await asyncio.wait_for(task, 2)

    def count(outcome: str) -> float:
        return registry.get_sample_value("smsgw_periodic_job_runs_total",
                                         {"job": "flaky", "outcome": outcome}) or 0.0

    assert count("failed") == 1
    assert count("ok") >= 2
