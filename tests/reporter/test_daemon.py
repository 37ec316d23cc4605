"""The reporter daemon as a real process, driven by the real CLI (one test, several daemons).

1. `smsgw reports create … --wait --json` against a running reporter: files in the reports
   area (folder 0750, files 0640), the same bytes stored in Postgres (`download`).
2. Cancel of a running report: it ends `cancelled`, no file is left behind.
3. SIGTERM while a long report runs: the drain releases it (queued again, no attempt counted),
   exit 0.
4. kill -9 of the reporter running it: another one takes it over once the lease expired and
   writes the complete report once (attempts 1).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from ..harness import CLI_MODULE, DaemonProcess, Spawner, clean_env
from .conftest import CAMPAIGN, END, START, ZONE, seed
from .test_kinds import read

BIG = "big"
BIG_ROWS = 40_000
pytestmark = pytest.mark.timeout(120)


def _env(db_url: str, folder: Path, **extra: str) -> dict[str, str]:
    return clean_env(SMSGW_DATABASE_URL=db_url, SMSGW_REPORTER__DIR=str(folder),
                     SMSGW_REPORTER__METRICS_PORT="0", SMSGW_REPORTER__LEASE_S="3",
                     SMSGW_REPORTER__PROGRESS_S="0.5", SMSGW_REPORTER__FETCH_ROWS="100",
                     SMSGW_REPORTER__DRAIN_S="1", **extra)


async def _cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI_MODULE, "reports", *args, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def _row(pool: asyncpg.Pool, rid: int) -> Any:
    return await pool.fetchrow("SELECT * FROM report_requests WHERE id = $1", rid)


async def _until(pool: asyncpg.Pool, rid: int, cond: str, within_s: float = 30) -> Any:
    """Wait until the report row satisfies `cond` (SQL over its columns)."""
    async with asyncio.timeout(within_s):
        while True:
            row = await pool.fetchrow(
                f"SELECT * FROM report_requests WHERE id = $1 AND ({cond})", rid)
            if row is not None:
                return row
            await asyncio.sleep(0.1)


async def _big(env: dict[str, str]) -> int:
    code, out, err = await _cli(env, "create", "campaign", "--campaign", BIG, "--from",
                                "2026-01-01", "--to", "2026-02-01", "--json")
    assert code == 0, err
    return int(json.loads(out)["id"])


async def test_cli_daemon_cancel_drain_and_takeover(pool: asyncpg.Pool, db_url: str,
                                                    tmp_path: Path) -> None:
    await seed(pool)
    await pool.execute(
        "INSERT INTO campaign_entries (campaign, number, period_key, created_at)"
        " SELECT $1, '+4477009' || lpad((g % 90000)::text, 5, '0'), 'd',"
        " timestamptz '2026-01-10' + g * interval '1 second' FROM generate_series(1, $2) g",
        BIG, BIG_ROWS)
    folder = tmp_path / "reports"
    # A and B work a fifth of the time, so the big report outlasts the drain (0.8 s) and the
    # kill; C, which takes the report over, runs at full speed
    env = _env(db_url, folder, SMSGW_REPORTER__BUSY_SHARE="0.2")
    fast = _env(db_url, folder)
    spawner = Spawner(tmp_path, stderr="devnull")
    try:
        a = await (await spawner.start(*CLI_MODULE[1:], "reporter", env=env,
                                       python=[sys.executable])).ready()
        # 1. a campaign report through the CLI, waited for
        code, out, err = await _cli(env, "create", "campaign", "--campaign", CAMPAIGN,
                                    "--from", START, "--to", END, "--tz", ZONE, "--wait",
                                    "--json")
        assert code == 0, err
        done = json.loads(out)
        assert done["status"] == "done" and set(done["files"]) == {"csv", "html", "entries_csv"}
        for path in done["files"].values():
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
        assert stat.S_IMODE(os.stat(Path(done["files"]["csv"]).parent).st_mode) == 0o750
        dl = tmp_path / "dl.csv"
        code, _, err = await _cli(env, "download", str(done["id"]), "entries_csv", "--out",
                                  str(dl))
        assert code == 0, err
        assert read(dl) == read(done["files"]["entries_csv"])
        code, out, _ = await _cli(env, "show", str(done["id"]), "--json")
        assert json.loads(out)["progress"]["percent"] == 100.0
        port = await a.site_port("health")
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200 and '"listener": true' in await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
        assert 'smsgw_build_info{daemon="reporter"' in metrics
        assert 'smsgw_reporter_reports_total{kind="campaign",outcome="done"} 1.0' in metrics
        audit = await pool.fetch("SELECT action FROM audit_log WHERE object_type = 'report'")
        assert [r["action"] for r in audit] == ["report_requested"]

        # 2. cancel a running report: cancelled, nothing left in its folder
        rid = await _big(env)
        await _until(pool, rid, "status = 'running' AND rows_scanned > 0")
        code, _, err = await _cli(env, "cancel", str(rid))
        assert code == 0, err
        row = await _until(pool, rid, "status = 'cancelled'")
        assert row["last_error"] == "cancelled" and row["files"] is None
        await a.named("report_ended", report_id=rid, outcome="cancelled")
        assert not list((folder / str(rid)).glob("*")), "a cancelled report leaves no file"

        # 3. SIGTERM mid-report: released (queued, attempts 0), exit 0
        rid = await _big(env)
        await _until(pool, rid, "status = 'running' AND rows_scanned > 0")
        assert await a.stop() == 0
        row = await _row(pool, rid)
        assert (row["status"], row["attempts"], row["lease_owner"]) == ("queued", 0, None)
        assert a.seen("reports_released")

        # 4. kill -9 mid-report; another reporter takes it over after the lease
        b = await (await spawner.start(*CLI_MODULE[1:], "reporter", env=env,
                                       python=[sys.executable])).ready()
        await _until(pool, rid, "status = 'running' AND rows_scanned > 0")
        await b.kill()
        c: DaemonProcess = await (await spawner.start(
            *CLI_MODULE[1:], "reporter", env=fast, python=[sys.executable])).ready()
        row = await _until(pool, rid, "status = 'done'", within_s=60)
        assert row["attempts"] == 1  # the lost try of the killed reporter
        await c.named("report_reclaimed", report_id=rid)
        entries = read(row["files"]["entries_csv"]["path"])
        assert entries.count(b"\r\n") == BIG_ROWS + 1  # complete: header + every entry once
        stored = await pool.fetchval(
            "SELECT sum(length(data)) FROM report_chunks WHERE report_id = $1"
            " AND name = 'entries_csv'", rid)
        assert stored == len(entries)
        assert not list((folder / str(rid)).glob(".*.tmp"))
        assert await c.stop() == 0
    finally:
        await spawner.close()
