"""The processor's periodic jobs, each run once per period across every processor instance.

docs/ARCHITECTURE.md ("Periodic jobs") gives the processor the retention move, the MO-fragment
timeout and the orphaning of unmatched receipts (plus our own flood-counter cleanup).
`shared.runtime.periodic.run_periodic` takes
an advisory lock, so two instances never run a job at the same moment; but each instance's
timer fires every period, so with N instances the job would run N times per period. The gate
here adds the "once per period" part: under the lock, the job runs only when its row in
`periodic_runs` says the last run (by any instance) is at least 0.8 x the interval ago (the
slack absorbs the timers' ±10 % jitter). The gate is a single statement, so it holds whatever
transaction mode the job uses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
import structlog

from smsgw.services.processor.engine import flood_cleanup
from smsgw.services.processor.options import ProcessorKeys
from smsgw.shared.queue import receipts, store
from smsgw.shared.runtime.config import RetentionSettings as RetentionConfig
from smsgw.shared.runtime.periodic import Job

log = structlog.get_logger("smsgw.processor.jobs")
GATE_SLACK: Final = 0.8

CLAIM_PERIOD: Final = """
-- claim_period: record a run of job $1 by $3 now, unless one started less than $2 s ago
INSERT INTO periodic_runs AS p (job, last_run_at, last_owner, runs)
VALUES ($1, clock_timestamp(), $3, 1)
ON CONFLICT (job) DO UPDATE
   SET last_run_at = clock_timestamp(), last_owner = $3, runs = p.runs + 1
 WHERE p.last_run_at <= clock_timestamp() - make_interval(secs => $2)
RETURNING runs
"""
STATEMENTS: Final = {"claim_period": CLAIM_PERIOD}


async def claim_period(conn: asyncpg.Connection, job: str, period_s: float, owner: str) -> bool:
    """True when this caller may run `job` now (and it is recorded as run)."""
    return await conn.fetchval(CLAIM_PERIOD, job, float(period_s), owner) is not None


def once_per_period(name: str, interval_s: Callable[[], float], job: Job, *,
                    owner: str) -> Job:
    """Wrap `job` so it runs at most once per `interval_s` across all instances."""

    async def gated(conn: asyncpg.Connection) -> Any:
        if not await claim_period(conn, name, interval_s() * GATE_SLACK, owner):
            return None
        return await job(conn)

    return gated


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One periodic job: its name, its interval (a callable, so reloads apply) and its body."""

    name: str
    interval_s: Callable[[], float]
    job: Job


def processor_jobs(settings: Callable[[], ProcessorKeys],
                   retention: Callable[[], RetentionConfig], *, owner: str) -> list[JobSpec]:
    """The processor's jobs, gated once per period; settings are read at each run."""

    async def retention_move(conn: asyncpg.Connection) -> None:
        r = retention()
        counts = await store.run_retention(conn, r)
        if counts and any(counts.values()):
            log.info("retention_done", **counts)

    async def mo_fragment_timeout(conn: asyncpg.Connection) -> None:
        from smsgw.shared.domain.intake import expire_mo_fragments  # receiver engineer's module
        n = await expire_mo_fragments(conn, settings().jobs.mo_fragment_timeout_s)
        if n:
            log.info("mo_fragments_expired", messages=n)

    async def receipt_orphaning(conn: asyncpg.Connection) -> None:
        n = await receipts.orphan(conn, older_than_s=settings().jobs.receipt_orphan_after_s)
        if n:
            log.info("receipts_orphaned", receipts=n)

    async def flood_counters(conn: asyncpg.Connection) -> None:
        await flood_cleanup(conn, window_s=settings().flood_window_s)

    specs = [
        ("retention", lambda: retention().interval_s, retention_move),
        ("mo_fragment_timeout", lambda: settings().jobs.mo_fragment_interval_s,
         mo_fragment_timeout),
        ("receipt_orphaning", lambda: settings().jobs.receipt_orphan_interval_s,
         receipt_orphaning),
        ("flood_cleanup", lambda: settings().jobs.flood_cleanup_interval_s, flood_counters),
    ]
    return [JobSpec(name, interval, once_per_period(name, interval, job, owner=owner))
            for name, interval, job in specs]
