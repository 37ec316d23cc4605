"""`smsgw bench queue`: the queue core alone — enqueue → claim → ack — messages/s and CPU-µs.

Two pipelines, each three stages (one round trip per stage and batch):

- lease:  `enqueue(outbound)` → `outbound.claim` → `outbound.write_back` (as `submitted`, no
          parts): the sender's own claim statement (fair lanes, expiry, suppression) and
          its fenced write-back (the core's generic `claim_leased` serves callbacks)
- tx:     `enqueue(inbound)` → in one transaction `claim_tx(inbound)` + `ack` (the processor's
          path; `tx-hol` adds the head-of-line condition on from_addr, 5000 numbers)

Producers enqueue batches of B with one NOTIFY per call; consumers run the real `consume` loop
on a `Listener`, claiming batches of B. A run ends when every message is acked. CPU per message
is this process's CPU plus the Postgres server's: for the embedded cluster, the postmaster's own
and reaped children's time plus every live child (/proc/<pid>/stat); with `--database-url` only
our own backends are counted (other users of a shared server would pollute the rest), so the
figure is a lower bound there. Figures are medians of `--runs` runs; the queue tables are
truncated before each run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from smsgw.services.bench.component import run_on_database
from smsgw.shared.core import db
from smsgw.shared.core.aio import sleep_or_stop
from smsgw.shared.queue import outbound, store
from smsgw.shared.queue.listener import CHANNELS, Listener, consume

_CLK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class Result:
    """One run: messages, wall seconds, client and server CPU seconds."""

    messages: int
    wall_s: float
    client_cpu_s: float
    server_cpu_s: float

    @property
    def rate(self) -> float:
        """Messages per second through all three stages."""
        return self.messages / self.wall_s

    @property
    def cpu_us(self) -> float:
        """Client + server CPU microseconds per message."""
        return (self.client_cpu_s + self.server_cpu_s) * 1e6 / self.messages


def _proc_cpu(pid: int, children: bool = False) -> float:
    """CPU seconds of process `pid` (plus its reaped children's when `children`)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # after the ")" field 0 is state (3rd stat field): utime=11, stime=12, cutime=13, cstime=14
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLK


class ServerCpu:
    """Measures the Postgres server's CPU: a whole embedded cluster, or a set of backends."""

    def __init__(self, postmaster: int | None, backends: list[int]) -> None:
        self.postmaster = postmaster
        self.backends = backends

    def _children(self) -> list[int]:
        pids = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.postmaster:  # ppid
                    pids.append(int(entry))
        return pids

    def read(self) -> float:
        """Total CPU seconds so far."""
        if self.postmaster is None:
            return sum(_proc_cpu(p) for p in self.backends)
        return _proc_cpu(self.postmaster, children=True) + sum(
            _proc_cpu(p) for p in self._children())


async def _truncate(pool: asyncpg.Pool) -> None:
    # No VACUUM ANALYZE here: statistics gathered on an empty table make the planner sort the
    # whole queue for every claim instead of walking the claim index (measured: 9.5 ms instead
    # of 0.2 ms per claim with 10k rows queued) until autoanalyze catches up.
    await pool.execute("TRUNCATE inbound, outbound, outbound_queue, dedupe_keys, events "
                       "RESTART IDENTITY")


async def _producer(conn: asyncpg.Connection, table: str, batch: int, count: int,
                    n_prod: int, idx: int) -> None:
    if table == "inbound":
        def row(i: int) -> dict[str, Any]:
            return {"channel": "http", "provider": "bench", "from_addr": f"+49151{i % 5000:07d}",
                    "to_addr": "12345", "body": "benchmark message body"}
    else:
        def row(i: int) -> dict[str, Any]:
            return {"from_addr": "BENCH", "to_addr": f"+49151{i % 5000:07d}",
                    "body": "benchmark message body", "source": "bench"}
    for start in range(idx * batch, count, batch * n_prod):
        await store.enqueue(conn, table, [row(i) for i in range(start, min(count, start + batch))])


async def _refresh_stats(conn: asyncpg.Connection, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await store.refresh_queue_stats(conn)
        await sleep_or_stop(stop, 0.5)


SENDER_MAX_ACCOUNTS = 100  # [sender] max_accounts' default: accounts served per claim


def _lease_pass(conn: asyncpg.Connection, batch: int, owner: str, acked: list[int],
                done: asyncio.Event, total: int) -> Callable[[], Any]:
    async def claim_pass() -> int:
        rows = await outbound.claim(conn, owner=owner, lease_s=60.0, limit=batch,
                                    max_accounts=SENDER_MAX_ACCOUNTS)
        if rows:
            n = len(rows)
            await outbound.write_back(conn, owner, [r.id for r in rows], ["submitted"] * n,
                                      [None] * n, [None] * n, [0.0] * n, [0] * n, [None] * n,
                                      [None] * n, *([] for _ in range(8)))
            acked[0] += len(rows)
            if acked[0] >= total:
                done.set()
        return len(rows)
    return claim_pass


def _tx_pass(conn: asyncpg.Connection, batch: int, hol: bool, acked: list[int],
             done: asyncio.Event, total: int) -> Callable[[], Any]:
    async def claim_pass() -> int:
        async with conn.transaction():
            rows = await store.claim_tx(conn, "inbound", limit=batch,
                                        hol_column="from_addr" if hol else None)
            if rows:
                await store.ack(conn, "inbound", [r.id for r in rows])
        acked[0] += len(rows)
        if acked[0] >= total:
            done.set()
        return len(rows)
    return claim_pass


async def run_once(pool: asyncpg.Pool, dsn: str, cpu: ServerCpu, *, mode: str, batch: int,
                   messages: int, producers: int, consumers: int) -> Result:
    """One timed run of `messages` messages through one pipeline."""
    table = "outbound" if mode == "lease" else "inbound"
    await _truncate(pool)
    listener = Listener(dsn, [CHANNELS[table]])
    await listener.start()
    done, stop, acked = asyncio.Event(), asyncio.Event(), [0]
    # Each producer and consumer holds one connection, as a daemon's worker loop should: a
    # pool.fetch per statement costs asyncpg's reset round trip (RESET ALL, UNLISTEN *, ...)
    # on every release.
    conns = [await pool.acquire() for _ in range(consumers + producers + 1)]
    passes = [_lease_pass(c, batch, f"bench{i}", acked, done, messages) if mode == "lease"
              else _tx_pass(c, batch, mode == "tx-hol", acked, done, messages)
              for i, c in enumerate(conns[:consumers])]
    t_cpu, s_cpu, t0 = time.process_time(), cpu.read(), time.perf_counter()
    try:
        async with asyncio.TaskGroup() as tg:
            for p in passes:
                tg.create_task(consume(listener, CHANNELS[table], p, stop=stop, poll_s=1.0))
            # the daemons' depth snapshot (every 0.5 s), which also re-analyzes a queue whose
            # planner statistics say "empty" while it fills up
            tg.create_task(_refresh_stats(conns[-1], stop))
            await asyncio.gather(*(_producer(c, table, batch, messages, producers, i)
                                   for i, c in enumerate(conns[consumers:-1])))
            await done.wait()
            wall = time.perf_counter() - t0
            client, server = time.process_time() - t_cpu, cpu.read() - s_cpu
            stop.set()
    finally:
        await listener.close()
        for c in conns:
            await pool.release(c)
    return Result(messages, wall, client, server)


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def _conditions(pool: asyncpg.Pool, embedded: bool) -> list[str]:
    settings = {r["name"]: r["setting"] for r in await pool.fetch(
        "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
        ["fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "server_version"])}
    model = _cpu_model()
    load = os.getloadavg()
    return [
        f"machine: {os.cpu_count()} cores ({model}), load average {load[0]:.2f} {load[1]:.2f}",
        f"python {platform.python_version()}, asyncpg {asyncpg.__version__}, "
        f"postgres {settings.get('server_version')} "
        f"({'embedded cluster' if embedded else 'existing server (--database-url)'})",
        f"fsync={settings.get('fsync')} synchronous_commit={settings.get('synchronous_commit')} "
        f"full_page_writes={settings.get('full_page_writes')} "
        f"shared_buffers={int(settings.get('shared_buffers', 0)) * 8 // 1024}MB",
    ]


async def _bench(args: argparse.Namespace, dsn: str, postmaster: int | None) -> None:
    pool = await db.create_pool(dsn, min_size=args.producers + args.consumers + 2,
                                max_size=args.producers + args.consumers + 3)
    try:
        async with pool.acquire() as c:
            backends = [int(await c.fetchval("SELECT pg_backend_pid()"))]
        backends = [int(r[0]) for r in await pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = ''")] or backends
        cpu = ServerCpu(postmaster, backends)
        if args.statements:
            await pool.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for line in await _conditions(pool, postmaster is not None):
            print(line)
        print(f"producers={args.producers} consumers={args.consumers} runs={args.runs} "
              "(medians); CPU = this process + every Postgres process, per message")
        print(f"{'pipeline':<10}{'batch':>6}{'messages':>10}{'msg/s':>10}{'CPU-µs/msg':>12}"
              f"{'client':>9}{'server':>9}")
        for mode in args.modes:
            for batch in args.batches:
                n = max(batch * 10, int(args.messages * min(1.0, (batch / 100) ** 0.5)))
                res = [await run_once(pool, dsn, cpu, mode=mode, batch=batch, messages=n,
                                      producers=args.producers, consumers=args.consumers)
                       for _ in range(args.runs)]
                _print_row(mode, batch, n, res)
                if args.statements:
                    await _print_statements(pool)
    finally:
        await pool.close()


async def _print_statements(pool: asyncpg.Pool) -> None:
    """Top statements by total server time since the last call (pg_stat_statements)."""
    rows = await pool.fetch(
        "SELECT calls, rows, total_exec_time, total_plan_time, query FROM pg_stat_statements "
        "ORDER BY total_exec_time DESC LIMIT 6")
    for r in rows:
        per_row = r["total_exec_time"] * 1000 / max(1, r["rows"])
        query = " ".join(r["query"].split())[:90]
        print(f"    {r['calls']:>7} calls {r['rows']:>8} rows {r['total_exec_time']:>9.1f} ms "
              f"({per_row:6.1f} µs/row)  {query}")
    await pool.execute("SELECT pg_stat_statements_reset()")


def _print_row(label: str, batch: int, n: int, res: list[Result]) -> None:
    rate = statistics.median(r.rate for r in res)
    cpu = statistics.median(r.cpu_us for r in res)
    client = statistics.median(r.client_cpu_s * 1e6 / r.messages for r in res)
    server = statistics.median(r.server_cpu_s * 1e6 / r.messages for r in res)
    print(f"{label:<10}{batch:>6}{n:>10}{rate:>10.0f}{cpu:>12.1f}{client:>9.1f}{server:>9.1f}",
          flush=True)


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="smsgw bench queue", description=__doc__.split("\n")[0])
    p.add_argument("--database-url", help="use this (empty, migrated here) database instead of "
                   "an embedded cluster; its tables are TRUNCATEd")
    p.add_argument("--no-fsync", action="store_true",
                   help="embedded cluster with fsync/synchronous_commit off (default: on)")
    p.add_argument("--messages", type=int, default=20000,
                   help="messages per run at batch 100 (smaller batches run fewer)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 10, 100])
    p.add_argument("--modes", nargs="+", choices=["lease", "tx", "tx-hol"],
                   default=["lease", "tx"],
                   help="tx-hol: transaction mode with the head-of-line condition on from_addr")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--producers", type=int, default=1)
    p.add_argument("--consumers", type=int, default=2)
    p.add_argument("--statements", action="store_true",
                   help="embedded only: load pg_stat_statements and print each configuration's "
                   "top statements by server time (slows the run a little)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    """Run the queue micro-benchmark; prints conditions and a table of medians."""
    args = _parse(argv)
    extra = {"shared_preload_libraries": "pg_stat_statements"} if args.statements else {}
    return run_on_database(args.database_url, lambda dsn, pid: _bench(args, dsn, pid),
                           fsync=not args.no_fsync, extra_conf=extra)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
