"""Sender benchmark: submit_sm/s and matched receipts/s from a prefilled outbound queue.

    python -m smsgw.services.bench.sender_bench [--messages 100000] [--database-url URL]
        [--no-receipts]

What runs where: Postgres (embedded, fsync ON, a fresh cluster in a temp dir — or the database
at `--database-url`, where a scratch database is created and dropped), the SMSC simulator in a
child process (as a real SMSC is another machine; here it shares the CPUs), and the sender's
real parts in this process on uvloop — bind slots, lanes, submitter, write-back, the shared
intake for receipts arriving on the transceiver binds, and the receipt matcher.

Measured and printed:
- submit_sm/s: accepted submit_sm_resp per second, overall and sustained (the 10%-90% span);
- matched receipts/s: receipts matched to parts per second, overall and sustained;
- database statements per message (pg_stat_statements when available, over the bench
  database) and transactions per message (pg_stat_database xact_commit);
- CPU-µs per message: this process (sender + intake + matcher), the simulator process, and
  the Postgres processes (embedded cluster only);
- the conditions: machine, cores, fsync, binds, window, batch, receipts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import uvloop

from smsgw.services.sender.lanes import Lane
from smsgw.services.sender.matching import MatchResult, MatchSettings, run_matcher
from smsgw.services.sender.routing import Router
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.sender.submitter import Submitter
from smsgw.shared.core import db
from smsgw.shared.core.embedded_pg import EmbeddedPostgres
from smsgw.shared.domain.intake import DeliverIntake, flush_inbound, flush_receipts
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.smpp.bindslots import BindManager
from smsgw.shared.smpp.connector import ConnectorSettings

PREFILL_BATCH = 5000


# --- simulator process ----------------------------------------------------------------------


def _sim_main(conn: Any, receipts: bool, receipt_delay_s: float) -> None:
    """Child process: run the simulator until told to stop; report port and CPU time."""
    from smsgw.services.smsc_sim.server import SimConfig, Simulator

    async def run() -> None:
        cfg = SimConfig(keep_submits=False,
                        receipt_delay_s=receipt_delay_s if receipts else None)
        async with Simulator(cfg) as sim:
            conn.send(sim.port)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, conn.recv)
            conn.send({"cpu_s": time.process_time(), "submits": sim.counters.submits,
                       "receipts_sent": sim.counters.receipts_sent})

    uvloop.run(run())


# --- database ----------------------------------------------------------------------------------


def _with_db(url: str, name: str) -> str:
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, "/" + name, p.query, p.fragment))


async def _prefill(url: str, n: int) -> None:
    conn = await db.connect(url)
    try:
        for start in range(0, n, PREFILL_BATCH):
            k = min(PREFILL_BATCH, n - start)
            await conn.execute(
                "INSERT INTO outbound (from_addr, to_addr, body, source) "
                "SELECT 'SMSGW', '+4477009' || lpad((g % 100000)::text, 5, '0'), "
                "'Your code is ' || g, 'bench' FROM generate_series($1::int, $2::int) g",
                start, start + k - 1)
        await conn.execute("VACUUM ANALYZE outbound")
    finally:
        await conn.close()


async def _db_counters(url: str, stmts: bool) -> dict[str, float]:
    conn = await asyncpg.connect(url)
    try:
        out = {"xacts": float(await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "WHERE datname = current_database()"))}
        if stmts:
            out["calls"] = float(await conn.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"))
        return out
    finally:
        await conn.close()


async def _enable_statements(url: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await conn.execute("SELECT pg_stat_statements_reset()")
        return True
    except asyncpg.PostgresError:
        return False
    finally:
        await conn.close()


async def _print_top(url: str, n: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT calls, round(total_exec_time::numeric, 1) AS ms, rows, "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS q FROM pg_stat_statements s "
            "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database() "
            "ORDER BY total_exec_time DESC LIMIT $1", n)
    finally:
        await conn.close()
    for r in rows:
        sys.stdout.write(
            f"  {r['ms']:>10} ms {r['calls']:>7} calls {r['rows']:>8} rows  {r['q']}\n")


def _pg_cpu_s(datadir: Path | None) -> float | None:
    """CPU seconds of the embedded cluster's postmaster and its children (None if unknown)."""
    if datadir is None:
        return None
    try:
        master = int((datadir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid = int(fields[1])
        if int(pid) == master or ppid == master:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# --- the run -------------------------------------------------------------------------------------


class Progress:
    """Timestamps of progress, for overall and sustained (10%-90%) rates."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.points: list[tuple[float, int]] = []

    def add(self, count: int) -> None:
        self.points.append((time.monotonic(), count))

    def rates(self) -> tuple[float, float]:
        """(overall per second, sustained per second between 10% and 90% of the total)."""
        if len(self.points) < 2 or self.points[-1][1] == 0:
            return 0.0, 0.0
        first = next(p for p in self.points if p[1] > 0)
        last = self.points[-1]
        overall = last[1] / max(1e-9, last[0] - first[0])
        lo = next((p for p in self.points if p[1] >= 0.1 * self.total), first)
        hi = next((p for p in self.points if p[1] >= 0.9 * self.total), last)
        sustained = (hi[1] - lo[1]) / max(1e-9, hi[0] - lo[0]) if hi[0] > lo[0] else overall
        return overall, sustained


async def _run_sender(url: str, port: int, args: argparse.Namespace,
                      datadir: Path | None) -> dict[str, Any]:
    conn_cfg = ConnectorSettings(name="bench", host="127.0.0.1", port=port, system_id="bench",
                                 binds=args.binds, window=args.window, enquire_link_s=0,
                                 response_timeout_s=30,
                                 handler_concurrency=args.handler_concurrency)
    pool = await db.create_pool(url, min_size=4, max_size=12)
    stop, manager_stop = asyncio.Event(), asyncio.Event()
    committers = [GroupCommitter(pool, flush_inbound, name="inbound"),
                  GroupCommitter(pool, flush_receipts, name="receipts", max_batch=2000)]
    for gc in committers:
        gc.start()
    intake = DeliverIntake(inbound=committers[0], receipts=committers[1])
    manager = BindManager(conn_cfg, conn_cfg.bind_mode, url, handler=intake.handler_for(conn_cfg),
                          grace_s=0.0)
    lane = Lane(conn_cfg, manager.sessions, lambda *a: None)
    sub = Submitter(pool, {"bench": lane}, Router.from_settings([], [conn_cfg]),
                    SenderSettings(batch=args.batch, flush_size=args.flush, flush_s=0.02,
                                   events=False), owner="bench",
                    wait_for_work=lambda: asyncio.sleep(0.2))
    sub.ported_enabled = False
    submitted, matched = Progress(args.messages), Progress(args.messages)
    matched_n = 0

    def on_match(res: MatchResult) -> None:
        nonlocal matched_n
        matched_n += res.matched
        matched.add(matched_n)

    tasks = [asyncio.create_task(manager.run(manager_stop)),
             asyncio.create_task(sub.run(stop))]
    if args.receipts:
        tasks.append(asyncio.create_task(run_matcher(
            pool, MatchSettings.from_config([conn_cfg], SenderSettings(
                receipt_batch=args.match_batch)), stop=stop,
            wait_for_work=lambda: asyncio.sleep(args.match_pause_s), on_result=on_match)))
    t0, cpu0, pg0 = time.monotonic(), time.process_time(), _pg_cpu_s(datadir)
    deadline = t0 + args.timeout_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        submitted.add(sub.results_ok)
        done = sub.results_ok >= args.messages
        if done and (not args.receipts or matched_n >= args.messages):
            break
    elapsed, cpu = time.monotonic() - t0, time.process_time() - cpu0
    # Backends' CPU is only visible while they live: read it before the pool closes.
    pg1 = _pg_cpu_s(datadir)
    pg_cpu = None if pg0 is None or pg1 is None else pg1 - pg0
    stop.set()
    await asyncio.gather(tasks[1], *tasks[2:], return_exceptions=True)
    manager_stop.set()
    await asyncio.gather(tasks[0], return_exceptions=True)
    for gc in committers:
        await gc.close()
    await pool.close()
    return {"submitted": submitted, "matched": matched, "ok": sub.results_ok,
            "matched_n": matched_n, "elapsed": elapsed, "cpu_s": cpu, "pg_cpu_s": pg_cpu}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw bench sender", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--database-url", help="use this server (a scratch database is created); "
                   "default: an embedded cluster with fsync on")
    p.add_argument("--no-receipts", dest="receipts", action="store_false")
    p.add_argument("--receipt-delay-s", type=float, default=0.0)
    p.add_argument("--binds", type=int, default=2)
    p.add_argument("--window", type=int, default=200)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--flush", type=int, default=1000)
    p.add_argument("--match-batch", type=int, default=2000)
    p.add_argument("--match-pause-s", type=float, default=0.01,
                   help="matcher wait after a batch that was not full (the daemon waits for a "
                        "NOTIFY or poll_s instead)")
    p.add_argument("--handler-concurrency", type=int, default=1000,
                   help="deliver_sm handlers in flight per bind (the connector setting)")
    p.add_argument("--top", type=int, default=0, help="print the N costliest statements")
    p.add_argument("--timeout-s", type=float, default=600)
    return p


async def _bench(args: argparse.Namespace, admin_url: str, datadir: Path | None) -> int:
    name = f"smsgw_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = _with_db(admin_url, name)
    try:
        await db.migrate(url)
        await _prefill(url, args.messages)
        stmts = await _enable_statements(url)
        parent, child = mp.get_context("spawn").Pipe()
        proc = mp.get_context("spawn").Process(
            target=_sim_main, args=(child, args.receipts, args.receipt_delay_s), daemon=True)
        proc.start()
        port = parent.recv()
        before = await _db_counters(url, stmts)
        result = await _run_sender(url, port, args, datadir)
        after = await _db_counters(url, stmts)
        if stmts and args.top:
            await _print_top(url, args.top)
        parent.send("stop")
        sim = parent.recv()
        proc.join(10)
        _report(args, result, before, after, sim, result["pg_cpu_s"], datadir is not None)
        ok = result["ok"] >= args.messages and (
            not args.receipts or result["matched_n"] >= args.messages)
        return 0 if ok else 1
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _report(args: argparse.Namespace, r: dict[str, Any], before: dict[str, float],
            after: dict[str, float], sim: dict[str, Any], pg_cpu: float | None,
            embedded: bool) -> None:
    n = max(1, r["ok"])
    s_all, s_sus = r["submitted"].rates()
    m_all, m_sus = r["matched"].rates()
    lines = [
        "sender benchmark",
        f"  conditions: {os.cpu_count()} cores, load avg {os.getloadavg()[0]:.2f} at end, "
        f"{'embedded Postgres, fsync on' if embedded else 'external Postgres (see its fsync)'}, "
        f"simulator in a child process, sender on uvloop in one process",
        f"  messages {args.messages}, receipts {'on' if args.receipts else 'off'} "
        f"(delay {args.receipt_delay_s}s), binds {args.binds}, window {args.window}/bind, "
        f"claim batch {args.batch}, write-back batch {args.flush}, "
        f"deliver_sm handlers/bind {args.handler_concurrency}",
        f"  accepted submit_sm: {r['ok']} (simulator counted {sim['submits']}, sent "
        f"{sim['receipts_sent']} receipts)  matched receipts: {r['matched_n']}  "
        f"elapsed {r['elapsed']:.1f}s",
        f"  submit_sm/s: overall {s_all:,.0f}, sustained (10-90%) {s_sus:,.0f}",
    ]
    if args.receipts:
        lines.append(f"  matched receipts/s: overall {m_all:,.0f}, sustained (10-90%) {m_sus:,.0f}")
    xacts = after["xacts"] - before["xacts"]
    lines.append(f"  database transactions per message: {xacts / n:.3f}")
    if "calls" in after:
        lines.append(f"  database statements per message (pg_stat_statements): "
                     f"{(after['calls'] - before['calls']) / n:.3f}")
    lines.append(f"  CPU-us per message: sender process {r['cpu_s'] / n * 1e6:,.0f}, "
                 f"simulator {sim['cpu_s'] / n * 1e6:,.0f}"
                 + (f", Postgres {pg_cpu / n * 1e6:,.0f}" if pg_cpu is not None else ""))
    sys.stdout.write("\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; exit 0 when every message was submitted (and matched)."""
    args = _parser().parse_args(argv)
    if args.database_url:
        return uvloop.run(_bench(args, args.database_url, None))
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-pg-") as tmp:
        cluster = EmbeddedPostgres(Path(tmp) / "data", fsync=True, extra_conf={
            "shared_preload_libraries": "pg_stat_statements"})
        cluster.start()
        try:
            return uvloop.run(_bench(args, cluster.url_with_password(), cluster.datadir))
        finally:
            with contextlib.suppress(Exception):
                cluster.stop(mode="fast")


if __name__ == "__main__":
    sys.exit(main())
