"""`smsgw bench report`: a campaign report over 1,000,000 and 10,000,000 history rows.

For each size: the campaign's entries (`campaign_entries`) and the MO behind each one
(`inbound_history`, which the report's keyword count joins) are generated in Postgres, spread
over 30 days, then ANALYZEd; a real `smsgw reporter` process makes the campaign report (CSV
per hour, the draw list of every entry, the HTML page). Printed per size: the report's time
(started_at → finished_at, from the database), the rows it read, the reporter's peak RSS
(VmHWM from /proc), the draw list's size, and the plan of the report's main statements
(EXPLAIN, to show which index each reads through).

    smsgw bench report                        # 1M and 10M on a throwaway cluster
    smsgw bench report --rows 200000          # one size
    smsgw bench report --database-url URL     # an existing (migrated) database: its rows
                                              # of the bench campaign are replaced

Target (issue 17): under 5 minutes for 10 million on the 2-vCPU machine, and the same peak RSS
for both sizes (rows are streamed, never loaded).

    smsgw bench report --rows 1000000 --beside-mt 20000 --pairs 3

`--beside-mt N`: the message path with and without a report beside it. After seeding, runs
`smsgw bench mt --count N` on the same database `--pairs` times each way, alternating: without
a report, then with the reporter kept busy (a campaign report over the seeded rows, queued
again as soon as one finishes) for the whole run. Prints each run's MT rate and the medians
(a drop above 15 % needs a fix, e.g. a lower priority or a replica).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from smsgw.services.bench.component import run_on_database
from smsgw.services.bench.procstats import machine, status_kb
from smsgw.services.reporter import queries as q
from smsgw.shared.core import db
from smsgw.shared.domain.reports import parse_request
from smsgw.shared.queue import report_requests as rq

CAMPAIGN = "bench-campaign"
DAYS = 30
START = "2026-03-01T00:00:00+00:00"
END = "2026-03-31T00:00:00+00:00"

SEED_INBOUND = """
INSERT INTO inbound_history (id, channel, provider, connector, from_addr, to_addr, body,
                             status, attempts, run_after, created_at, updated_at)
SELECT $1::bigint + g, 'smpp', 'bench', 'sim', '+4477009' || lpad((g % 200000)::text, 6, '0'),
       '80080', CASE WHEN g % 3 = 0 THEN 'WIN now' ELSE 'win' END, 'done', 0,
       t, t, t
  FROM generate_series(1, $2::int) g,
       LATERAL (SELECT timestamptz '2026-03-01' + (g::float8 / $2) * interval '30 days' AS t) x
"""
SEED_OUTBOUND = """
INSERT INTO outbound_history (id, account_id, source, from_addr, to_addr, body, status,
                              connector, parts_total, submitted_at, created_at, updated_at)
SELECT $1::bigint + g, NULL, 'rule', '80080', '+4477009' || lpad((g % 200000)::text, 6, '0'),
       'thanks', CASE WHEN g % 10 = 0 THEN 'undeliverable' ELSE 'delivered' END, 'sim', 1,
       t + interval '1 second', t, t
  FROM generate_series(1, $2::int) g,
       LATERAL (SELECT timestamptz '2026-03-01' + (g::float8 / $2) * interval '30 days' AS t) x
"""
SEED_ENTRIES = """
INSERT INTO campaign_entries (campaign, number, period_key, inbound_id, data, created_at)
SELECT $3, from_addr, 'd', id, '{"prize": "a car"}', created_at
  FROM inbound_history WHERE id > $1::bigint AND id <= $1::bigint + $2::int
"""


async def _seed(conn: asyncpg.Connection, rows: int) -> float:
    started = time.monotonic()
    base = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM inbound_history"))
    await conn.execute("DELETE FROM campaign_entries WHERE campaign = $1", CAMPAIGN)
    await conn.execute(SEED_INBOUND, base, rows, timeout=3600)
    await conn.execute(SEED_ENTRIES, base, rows, CAMPAIGN, timeout=3600)
    # replies, a tenth of the entries: the traffic statement's plan reads them
    out_base = int(await conn.fetchval("SELECT coalesce(max(id), 0) FROM outbound_history"))
    await conn.execute(SEED_OUTBOUND, out_base, rows // 10, timeout=3600)
    for table in ("outbound_history", "inbound_history", "campaign_entries"):
        await conn.execute(f"VACUUM ANALYZE {table}", timeout=1800)  # BRIN summaries too
    return time.monotonic() - started

    await conn.execute("ANALYZE campaign_entries", timeout=600)
    return time.monotonic() - started


async def _explain(conn: asyncpg.Connection) -> dict[str, str]:
    whole = parse_request("campaign", start=START, end=END, campaign=CAMPAIGN)
    day = parse_request("traffic", start="2026-03-10T00:00+00:00", end="2026-03-11T00:00+00:00")
    span, one = (whole.start, whole.end), (day.start, day.end)
    plans = {}
    for name, sql, args in (
            ("campaign_hours (30 days)", q.CAMPAIGN_HOURS, (*span, CAMPAIGN, "UTC")),
            ("campaign_entries (30 days)", q.CAMPAIGN_ENTRIES, (*span, CAMPAIGN)),
            ("campaign_keywords (30 days)", q.CAMPAIGN_KEYWORDS, (*span, CAMPAIGN)),
            ("campaign_entries (1 day)", q.CAMPAIGN_ENTRIES, (*one, CAMPAIGN)),
            ("traffic_day (1 day)", q.TRAFFIC_DAY, (*one, None)),
            ("inbound_day (1 day)", q.INBOUND_DAY, one)):
        rows = await conn.fetch("EXPLAIN " + sql, *args)
        plans[name] = "\n".join(r[0] for r in rows)
    return plans


def _load_json(path: Path) -> Any:
    return json.loads(path.read_text())


def _reporter_env(dsn: str, folder: Path, busy_share: float = 1.0) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(SMSGW_DATABASE_URL=dsn, SMSGW_REPORTER__DIR=str(folder),
               SMSGW_REPORTER__METRICS_PORT="0", SMSGW_REPORTER__LOG_LEVEL="warning",
               SMSGW_REPORTER__BUSY_SHARE=str(busy_share))
    return env


async def _mt_rate(dsn: str, count: int, out: Path) -> dict[str, Any]:
    """One `smsgw bench mt` run on `dsn`; its throughput figures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "bench", "mt", "--database-url", dsn,
        "--count", str(count), "--json", str(out), "--quiet", env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    await proc.wait()
    figures = _load_json(out)["summary"]["figures"]
    return {k: figures.get(k) for k in ("acked_per_s_load", "final_per_s_sustained")}


async def _keep_busy(conn: asyncpg.Connection, stop: asyncio.Event) -> int:
    """Queue campaign reports one after the other until `stop`, then cancel the one running
    and wait until it stopped (so no report runs into the next run without one); how many
    finished meanwhile."""
    params = parse_request("campaign", start=START, end=END, campaign=CAMPAIGN)
    done = 0
    while not stop.is_set():
        req = await rq.insert(conn, kind="campaign", params=params.as_json(), account_id=None,
                              requested_by="bench", keep_s=600)
        while True:
            row = await rq.get(conn, req.id, account_id=None)
            if row is not None and row.status in ("done", "failed", "cancelled"):
                done += row.status == "done"
                break
            if stop.is_set():
                await rq.cancel(conn, req.id, account_id=None)
            await asyncio.sleep(0.2)
    return done


async def _beside_mt(dsn: str, rows: int, count: int, pairs: int, folder: Path,
                     busy_share: float) -> dict[str, Any]:
    conn = await db.connect(dsn)
    proc = None
    try:
        await _seed(conn, rows)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smsgw.services.cli", "reporter",
            env=_reporter_env(dsn, folder, busy_share), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        runs: list[dict[str, Any]] = []
        for i in range(pairs):
            for with_report in (False, True):
                stop = asyncio.Event()
                busy = asyncio.create_task(_keep_busy(conn, stop)) if with_report else None
                if busy is not None:
                    await asyncio.sleep(2.0)  # the report is under way before the load starts
                rate = await _mt_rate(dsn, count, folder / f"mt-{i}-{with_report}.json")
                stop.set()
                reports = await busy if busy is not None else 0
                runs.append({"pair": i, "report_beside": with_report, **rate,
                             "reports_finished_meanwhile": reports})
                sys.stdout.write(json.dumps(runs[-1]) + "\n")
                sys.stdout.flush()
        def med(flag: bool, key: str) -> float:
            return statistics.median(r[key] for r in runs if r["report_beside"] is flag)
        out = {"rows": rows, "mt_count": count, "pairs": pairs, "busy_share": busy_share,
               "runs": runs}
        for key in ("acked_per_s_load", "final_per_s_sustained"):
            without, beside = med(False, key), med(True, key)
            out[key] = {"without": without, "with_report": beside,
                        "drop_pct": round(100 * (without - beside) / without, 1)}
        return out
    finally:
        if proc is not None:
            proc.terminate()
            await proc.wait()
        await conn.close()


async def _run_size(dsn: str, rows: int, folder: Path) -> dict[str, Any]:
    conn = await db.connect(dsn)
    try:
        seed_s = await _seed(conn, rows)
        params = parse_request("campaign", start=START, end=END, campaign=CAMPAIGN)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "smsgw.services.cli", "reporter",
            env=_reporter_env(dsn, folder),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            req = await rq.insert(conn, kind="campaign", params=params.as_json(),
                                  account_id=None, requested_by="bench", keep_s=3600)
            peak = 0
            while True:
                row = await rq.get(conn, req.id, account_id=None)
                peak = max(peak, status_kb(proc.pid, "VmHWM") or 0)
                if row is not None and row.status in ("done", "failed", "cancelled"):
                    break
                if proc.returncode is not None:
                    raise RuntimeError(f"the reporter exited with {proc.returncode}")
                await asyncio.sleep(0.5)
            peak = max(peak, status_kb(proc.pid, "VmHWM") or 0)
        finally:
            proc.terminate()
            await proc.wait()
        assert row.started_at and row.finished_at
        files = row.files or {}
        return {"rows": rows, "status": str(row.status), "error": row.last_error,
                "seed_s": round(seed_s, 1),
                "report_s": round((row.finished_at - row.started_at).total_seconds(), 1),
                "rows_read": row.rows_scanned, "reporter_peak_rss_mb": round(peak / 1024, 1),
                "entries_csv_mb": round(files.get("entries_csv", {}).get("bytes", 0) / 2**20, 1),
                "plans": await _explain(conn)}
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one JSON object per size, then a summary table."""
    p = argparse.ArgumentParser(prog="smsgw bench report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000],
                   help="history rows per run (default: 1000000 10000000)")
    p.add_argument("--database-url", default=None,
                   help="an existing database (default: a throwaway cluster, fsync off)")
    p.add_argument("--beside-mt", type=int, default=0, metavar="N",
                   help="instead: the MT rate of `smsgw bench mt --count N` with and without "
                        "a report beside it (the first --rows size is seeded)")
    p.add_argument("--pairs", type=int, default=3, help="runs each way for --beside-mt (3)")
    p.add_argument("--busy-share", type=float, default=1.0,
                   help="the reporter's [reporter] busy_share for --beside-mt (1.0)")
    args = p.parse_args(argv)
    results: list[dict[str, Any]] = []

    async def bench(dsn: str, _postmaster: int | None) -> None:
        with tempfile.TemporaryDirectory(prefix="reporter-bench-") as tmp:
            if args.beside_mt:
                res = await _beside_mt(dsn, args.rows[0], args.beside_mt, args.pairs,
                                       Path(tmp), args.busy_share)
                sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "runs"})
                                 + "\n")
                return
            for n in args.rows:
                res = await _run_size(dsn, n, Path(tmp) / str(n))
                results.append(res)
                sys.stdout.write(json.dumps({k: v for k, v in res.items() if k != "plans"})
                                 + "\n")
                sys.stdout.flush()

    sys.stdout.write(json.dumps({"machine": machine()}) + "\n")
    run_on_database(args.database_url, bench, fsync=args.beside_mt > 0)
    if args.beside_mt:
        return 0
    sys.stdout.write("\n| history rows | report time | rows read | reporter peak RSS | "
                     "draw list |\n|---|---|---|---|---|\n")
    for r in results:
        sys.stdout.write(f"| {r['rows']:,} | {r['report_s']} s | {r['rows_read']:,} | "
                         f"{r['reporter_peak_rss_mb']} MB | {r['entries_csv_mb']} MB |\n")
    if results:
        sys.stdout.write("\nPlans (EXPLAIN) at the largest size:\n")
        for name, plan in results[-1]["plans"].items():
            sys.stdout.write(f"\n{name}:\n{plan}\n")
    return 0
