"""`smsgw processor` as a real subprocess: SIGKILL mid-batch, live rule changes, periodic jobs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ..harness import SMSGW, DaemonProcess, Spawner, clean_env
from .conftest import add_mo, mo

WAIT_S = 30.0


@pytest.fixture
async def processor(db_url: str, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start `smsgw processor` subprocesses on this test's database (killed at teardown)."""
    spawner = Spawner(tmp_path, stderr="devnull", wait_s=WAIT_S)

    async def start(app_name: str = "proc_under_test", **env_extra: str) -> DaemonProcess:
        env = clean_env(**{
            "SMSGW_DATABASE_URL": f"{db_url}?application_name={app_name}",
            "SMSGW_PROCESSOR__METRICS_PORT": "0", "SMSGW_PROCESSOR__POLL_S": "0.5",
            "SMSGW_SECURITY__SERVER_SECRET_ENV": "TEST_SERVER_SECRET",
            "TEST_SERVER_SECRET": "test-server-secret",
            "SMSGW_WEBHOOKS__ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]', **env_extra})
        return await (await spawner.start("processor", env=env)).ready()

    try:
        yield start
    finally:
        await spawner.close()


async def wait_for(pool: asyncpg.Pool, sql: str, timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not await pool.fetchval(sql):  # noqa: ASYNC110 - polls the database
            await asyncio.sleep(0.05)


async def import_rules(db_url: str, tmp_path: Path, rules: list[dict[str, Any]]) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    proc = await asyncio.create_subprocess_exec(
        SMSGW, "rules", "--database-url", db_url, "import", "--replace", str(path), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()


PROMO = [{"name": "promo", "actions": [
    {"type": "campaign_entry", "campaign": "c"},
    {"type": "reply", "template": "entered {text}"}]}]


async def test_sigkill_mid_batch_leaves_no_half_applied_batch(pool, db_url, tmp_path,
                                                             processor) -> None:
    """1. a test trigger makes every batch sleep 0.3 s after advancing its inbound rows (so
    replies and entries are written, uncommitted); 2. 3,000 MOs; 3. once some batches have
    committed and one is asleep mid-transaction, SIGKILL the processor; 4. no reply or entry
    exists without its inbound row done, and no done row lacks them; 5. a new processor
    finishes the queue with exactly one reply and one entry per message."""
    await import_rules(db_url, tmp_path, PROMO)
    await pool.execute("""
        CREATE FUNCTION slow_batch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$;
        CREATE TRIGGER slow_batch AFTER UPDATE ON inbound FOR EACH STATEMENT
          EXECUTE FUNCTION slow_batch();
    """)
    await add_mo(pool, [mo(f"+4477009{i:05d}", str(i)) for i in range(3000)])
    proc = await processor(SMSGW_PROCESSOR__BATCH="100")
    await wait_for(pool, "SELECT count(*) >= 200 FROM outbound")
    await wait_for(pool, "SELECT count(*) > 0 FROM pg_stat_activity "
                         "WHERE application_name = 'proc_under_test' AND wait_event = 'PgSleep'")
    assert await proc.stop(signal.SIGKILL) == -signal.SIGKILL
    # the killed backend rolls back once it notices its client is gone (after its sleep)
    await wait_for(pool, "SELECT count(*) = 0 FROM pg_stat_activity "
                         "WHERE application_name = 'proc_under_test'")
    done = await pool.fetchval("SELECT count(*) FROM inbound WHERE status = 'done'")
    assert 200 <= done < 3000
    assert done % 100 == 0  # whole batches only
    assert await pool.fetchval("""
        SELECT count(*) FROM outbound o JOIN inbound i ON i.id = o.inbound_id
         WHERE i.status <> 'done'""") == 0
    assert await pool.fetchval("""
        SELECT count(*) FROM campaign_entries e JOIN inbound i ON i.id = e.inbound_id
         WHERE i.status <> 'done'""") == 0
    assert await pool.fetchval("""
        SELECT count(*) FROM inbound i WHERE i.status = 'done'
           AND NOT EXISTS (SELECT 1 FROM outbound o WHERE o.inbound_id = i.id)""") == 0
    await pool.execute("DROP TRIGGER slow_batch ON inbound")
    again = await processor()
    await wait_for(pool, "SELECT count(*) = 3000 FROM inbound WHERE status = 'done'")
    assert await again.stop() == 0
    assert await pool.fetchval("SELECT count(DISTINCT inbound_id) = 3000 AND count(*) = 3000 "
                               "FROM outbound")
    assert await pool.fetchval("SELECT count(*) FROM campaign_entries") == 3000


async def test_cli_rule_change_applies_without_restart(pool, db_url, tmp_path,
                                                       processor) -> None:
    """1. a running processor with rule v1 answers an MO; 2. `smsgw rules import` writes v2;
    3. the next MO is answered with v2 by the same process; 4. SIGHUP reloads (READY again)
    and the daemon still works; 5. SIGTERM drains and exits 0."""
    await import_rules(db_url, tmp_path, [{"name": "r", "actions": [
        {"type": "reply", "template": "v1"}]}])
    proc = await processor()
    await add_mo(pool, [mo("+447700900001", "hi")])
    await wait_for(pool, "SELECT count(*) = 1 FROM outbound")
    await import_rules(db_url, tmp_path, [{"name": "r", "actions": [
        {"type": "reply", "template": "v2"}]}])
    await add_mo(pool, [mo("+447700900002", "hi")])
    await wait_for(pool, "SELECT count(*) = 2 FROM outbound")
    proc.proc.send_signal(signal.SIGHUP)
    await proc.named("config_reloaded")
    await add_mo(pool, [mo("+447700900003", "hi")])
    await wait_for(pool, "SELECT count(*) = 3 FROM outbound")
    assert await proc.stop() == 0
    bodies = [r["body"] for r in await pool.fetch("SELECT body FROM outbound ORDER BY id")]
    assert bodies == ["v1", "v2", "v2"]


async def test_two_processors_run_each_job_once_per_period(pool, processor) -> None:
    """1. two processor daemons with every job on a 0.5 s period; 2. a test trigger logs each
    recorded run; 3. per job, runs are never closer than 0.8 x the period (one instance per
    period, not one per instance), and every job ran repeatedly."""
    await pool.execute("""
        CREATE TABLE run_log (job text, at timestamptz, owner text);
        CREATE FUNCTION log_run() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO run_log VALUES (NEW.job, NEW.last_run_at, NEW.last_owner);
        RETURN NULL; END $$;
        CREATE TRIGGER log_run AFTER INSERT OR UPDATE ON periodic_runs FOR EACH ROW
          EXECUTE FUNCTION log_run();
    """)
    env = {"SMSGW_RETENTION__INTERVAL_S": "0.5",
           "SMSGW_PROCESSOR__JOBS__MO_FRAGMENT_INTERVAL_S": "0.5",
           "SMSGW_PROCESSOR__JOBS__RECEIPT_ORPHAN_INTERVAL_S": "0.5",
           "SMSGW_PROCESSOR__JOBS__FLOOD_CLEANUP_INTERVAL_S": "0.5"}
    procs = [await processor(f"proc_{i}", **env) for i in range(2)]
    await wait_for(pool, "SELECT count(*) = 4 FROM (SELECT job FROM run_log GROUP BY job "
                         "HAVING count(*) >= 5) x")
    for p in procs:
        assert await p.stop() == 0
    rows = await pool.fetch("""
        SELECT job, count(*) AS runs, count(DISTINCT owner) AS owners, min(gap) AS min_gap
          FROM (SELECT job, owner, extract(epoch FROM at - lag(at) OVER (
                       PARTITION BY job ORDER BY at)) AS gap FROM run_log) x
         GROUP BY job""")
    assert {r["job"] for r in rows} == {"retention", "mo_fragment_timeout",
                                        "receipt_orphaning", "flood_cleanup"}
    for r in rows:
        assert r["min_gap"] >= 0.8 * 0.5 - 0.01, dict(r)
