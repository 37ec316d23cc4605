"""Periodic jobs: once per period across instances, and each job does its work."""

from __future__ import annotations

import asyncio

from smsgw.services.processor.jobs import processor_jobs
from smsgw.services.processor.options import JobSettings, ProcessorKeys
from smsgw.shared.runtime.config import RetentionSettings
from smsgw.shared.runtime.periodic import run_periodic

INTERVAL = 0.3


async def test_two_instances_run_each_job_once_per_period(pool) -> None:
    """1. two 'instances' (separate job loops with their own owners) run every processor job
    each INTERVAL (±10 % jitter) until each job ran 4 times; 2. a test trigger logs every run;
    3. per job, consecutive runs are at least 0.8 x INTERVAL apart (never one per instance),
    and each job ran several times."""
    await pool.execute("""
        CREATE TABLE run_log (job text, at timestamptz, owner text);
        CREATE FUNCTION log_run() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO run_log VALUES (NEW.job, NEW.last_run_at, NEW.last_owner);
        RETURN NULL; END $$;
        CREATE TRIGGER log_run AFTER INSERT OR UPDATE ON periodic_runs FOR EACH ROW
          EXECUTE FUNCTION log_run();
    """)
    settings = ProcessorKeys(jobs=JobSettings(
        mo_fragment_interval_s=INTERVAL, receipt_orphan_interval_s=INTERVAL,
        flood_cleanup_interval_s=INTERVAL))
    retention = RetentionSettings(interval_s=INTERVAL)
    stop = asyncio.Event()
    loops = []
    for owner in ("p1", "p2"):
        for spec in processor_jobs(lambda: settings, lambda: retention, owner=owner):
            loops.append(asyncio.create_task(run_periodic(
                spec.name, spec.interval_s, spec.job, pool=pool, stop=stop, mode="session")))
    # Run until every job has run at least 4 times (waited for in the log, not slept for).
    async with asyncio.timeout(60):
        while await pool.fetchval(  # noqa: ASYNC110 - polling the database's state
                "SELECT count(*) FROM (SELECT job FROM run_log GROUP BY job "
                "HAVING count(*) >= 4) x") < 4:
            await asyncio.sleep(INTERVAL / 4)
    stop.set()
    await asyncio.gather(*loops)
    rows = await pool.fetch("""
        SELECT job, count(*) AS runs, min(gap) AS min_gap FROM (
          SELECT job, at,
                 extract(epoch FROM at - lag(at) OVER (PARTITION BY job ORDER BY at)) AS gap
            FROM run_log) x GROUP BY job""")
    by_job = {r["job"]: r for r in rows}
    assert set(by_job) == {"retention", "mo_fragment_timeout", "receipt_orphaning",
                           "flood_cleanup"}
    for job, r in by_job.items():
        assert r["runs"] >= 4, (job, r["runs"])
        # two instances without the gate would run it about twice as often: the smallest gap
        # between runs (database timestamps) bounds the count over any span, whatever the load
        assert r["min_gap"] >= 0.8 * INTERVAL - 0.01, (job, r["min_gap"])


async def test_jobs_do_their_work(pool) -> None:
    """One pass of each job: an old unmatched receipt ends orphan, an old incomplete MO
    becomes a failed inbound row, a finished inbound row moves to history."""
    settings = ProcessorKeys(jobs=JobSettings(receipt_orphan_after_s=1, mo_fragment_timeout_s=1))
    retention = RetentionSettings(finished_after_s=0)
    await pool.execute("""
        INSERT INTO receipts (connector, smsc_id, created_at)
             VALUES ('c', 'x1', now() - interval '1 hour');
        INSERT INTO mo_parts (connector, from_addr, to_addr, ref, total, seq, body, created_at)
             VALUES ('c', '+447700900001', '80080', 7, 2, 1, 'part one', now() - interval '1 hour');
        INSERT INTO inbound (channel, provider, from_addr, to_addr, body, status, updated_at)
             VALUES ('http', 'g', '+447700900002', '80080', 'x', 'done', now() - interval '1 hour');
    """)
    async with pool.acquire() as conn:
        for spec in processor_jobs(lambda: settings, lambda: retention, owner="p1"):
            await spec.job(conn)
    assert await pool.fetchval("SELECT status FROM receipts") == "orphan"
    failed = await pool.fetchrow("SELECT status, from_addr FROM inbound WHERE status = 'failed'")
    assert failed is not None and failed["from_addr"] == "+447700900001"
    assert await pool.fetchval("SELECT count(*) FROM inbound_history") == 1
