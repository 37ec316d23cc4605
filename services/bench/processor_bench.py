"""`smsgw bench processor`: inbound messages/s through the processor alone, and CPU-µs each.

A queue of `--messages` inbound rows (default 100,000, from `--numbers` distinct subscribers,
interleaved) is prefilled before the clock starts; then `--processors` engines (each with its
own connection, in this process, as the daemon's batch loop runs them) drain it in batches of
`--batch` with the promotion rules below, and the run ends when every row is done. Per message
the processor matches the keyword, checks flood control and the per-day quota, records a
campaign entry, writes an auto-reply to outbound, logs an event and advances the inbound row —
all in the one batch transaction.

CPU per message is this process's CPU plus the Postgres server's (the embedded cluster:
postmaster, its reaped and live children; with `--database-url` only our own backends, a lower
bound). The embedded cluster runs with fsync on unless `--no-fsync`. Conditions are printed
with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from smsgw.services.bench.component import run_on_database
from smsgw.services.bench.queue_bench import ServerCpu
from smsgw.services.processor.engine import Engine
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.options import ProcessorKeys
from smsgw.services.processor.rules import parse_rules
from smsgw.services.processor.rules_cli import import_rules
from smsgw.shared.core import db
from smsgw.shared.core.logging import configure_logging
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import store

SHORT_CODE = "80080"
PROMO_RULES: list[dict[str, Any]] = [
    {"name": "win", "priority": 10, "match": {"to": [SHORT_CODE], "keyword": ["WIN", "WINN"]},
     "actions": [
         {"type": "campaign_entry", "campaign": "bench", "quota": {"per": "day", "max": 1},
          "over_quota_reply": "One entry a day please, {from}."},
         {"type": "reply", "category": "marketing",
          "template": "Thanks {keyword}! You are entered ({entries}/{quota_max})."}]},
    {"name": "info", "priority": 20, "match": {"to": [SHORT_CODE], "keyword": "INFO"},
     "actions": [{"type": "reply", "template": "Text WIN to {to} to enter."}]},
    {"name": "fallback", "default": True, "match": {"to": [SHORT_CODE]},
     "actions": [{"type": "reply", "template": "Sorry, text WIN to enter."}]},
]
REPLY_RULES: list[dict[str, Any]] = [
    {"name": "echo", "match": {"to": [SHORT_CODE]},
     "actions": [{"type": "reply", "template": "Thanks {keyword}, got: {rest}"}]},
]


def _row(i: int, numbers: int) -> dict[str, Any]:
    body = "WIN" if i % 10 else "win please"  # keyword in two spellings
    return {"channel": "smpp", "provider": "bench", "connector": "bench",
            "from_addr": f"+4477{i % numbers:08d}", "to_addr": SHORT_CODE, "body": body}


async def _prefill(pool: asyncpg.Pool, messages: int, numbers: int) -> None:
    chunk = 10_000
    for start in range(0, messages, chunk):
        rows = [_row(i, numbers) for i in range(start, min(messages, start + chunk))]
        await store.enqueue(pool, "inbound", rows, notify=False)
    await pool.execute("ANALYZE inbound")


async def _reset(pool: asyncpg.Pool, rules: list[dict[str, Any]]) -> None:
    await pool.execute("TRUNCATE inbound, outbound, callbacks, events, campaign_entries, "
                       "flood_counters, suppressions, queue_stats RESTART IDENTITY")
    async with pool.acquire() as conn:
        await import_rules(conn, parse_rules(rules), actor="bench", replace=True)


async def _drain(engine: Engine, counted: list[int]) -> None:
    while True:
        n = await engine.run_batch()
        if n == 0:
            return
        counted[0] += n


def _cpu_model() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    return next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                platform.processor())


async def _conditions(pool: asyncpg.Pool, embedded: bool) -> list[str]:
    s = {r["name"]: r["setting"] for r in await pool.fetch(
        "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
        ["fsync", "synchronous_commit", "server_version", "shared_buffers"])}
    model = _cpu_model()
    load = os.getloadavg()
    return [
        f"machine: {os.cpu_count()} cores ({model}), load average {load[0]:.2f} {load[1]:.2f} "
        f"(shared with other users: figures vary with their load)",
        f"python {platform.python_version()}, asyncpg {asyncpg.__version__}, postgres "
        f"{s.get('server_version')} ({'embedded cluster' if embedded else '--database-url'}), "
        f"fsync={s.get('fsync')} synchronous_commit={s.get('synchronous_commit')} "
        f"shared_buffers={int(s.get('shared_buffers', 0)) * 8 // 1024}MB",
    ]


async def _bench(args: argparse.Namespace, dsn: str, postmaster: int | None) -> dict[str, float]:
    pool = await db.create_pool(dsn, min_size=args.processors + 1, max_size=args.processors + 2)
    try:
        for line in await _conditions(pool, postmaster is not None):
            print(line)
        rules = PROMO_RULES if args.rules == "promo" else REPLY_RULES
        await _reset(pool, rules)
        await _prefill(pool, args.messages, args.numbers)
        settings = ProcessorKeys(batch=args.batch, events=not args.no_events,
                                 flood_max=0 if args.no_flood else 20,
                                 outbound_high_watermark=10**9)
        hasher = NumberHasher.from_secret(os.urandom(32))  # replies carry keyed hashes
        engines = [Engine(pool, settings, hasher=hasher,
                          metrics=ProcessorMetrics.create(CollectorRegistry()))
                   for _ in range(args.processors)]
        backends = [int(r[0]) for r in await pool.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()")]
        cpu = ServerCpu(postmaster, backends)
        counted = [0]
        t_cpu, s_cpu, t0 = time.process_time(), cpu.read(), time.perf_counter()
        await asyncio.gather(*(_drain(e, counted) for e in engines))
        wall = time.perf_counter() - t0
        client, server = time.process_time() - t_cpu, cpu.read() - s_cpu
        left = await pool.fetchval("SELECT count(*) FROM inbound WHERE status <> 'done'")
        replies = await pool.fetchval("SELECT count(*) FROM outbound")
        entries = await pool.fetchval("SELECT count(*) FROM campaign_entries")
    finally:
        await pool.close()
    n = counted[0]
    print(f"rules={args.rules} messages={args.messages} numbers={args.numbers} "
          f"batch={args.batch} processors={args.processors} events={not args.no_events} "
          f"flood_control={not args.no_flood}")
    print(f"processed {n} in {wall:.2f} s: {n / wall:.0f} msg/s; CPU per message "
          f"{(client + server) * 1e6 / n:.0f} µs (processor {client * 1e6 / n:.0f}, "
          f"postgres {server * 1e6 / n:.0f}{'' if postmaster else ', own backends only'})")
    print(f"check: {left} rows not done, {replies} replies, {entries} campaign entries")
    return {"rate": n / wall, "client_us": client * 1e6 / n, "server_us": server * 1e6 / n}


def _parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="smsgw bench processor", description=__doc__.split("\n")[0])
    p.add_argument("--database-url", help="an existing database (migrated here; the processor "
                   "tables are TRUNCATEd) instead of an embedded cluster")
    p.add_argument("--no-fsync", action="store_true", help="embedded cluster with fsync off")
    p.add_argument("--messages", type=int, default=100_000)
    p.add_argument("--numbers", type=int, default=50_000, help="distinct subscribers")
    p.add_argument("--batch", type=int, default=200)
    p.add_argument("--processors", type=int, default=1)
    p.add_argument("--rules", choices=["promo", "reply"], default="promo",
                   help="promo: keyword + quota + entry + reply; reply: one auto-reply rule")
    p.add_argument("--no-events", action="store_true", help="skip the per-message event rows")
    p.add_argument("--no-flood", action="store_true", help="flood control off")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the processor benchmark; prints its conditions and figures."""
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    configure_logging("warning", "processor", 1)  # the figures, not a log line per batch
    return run_on_database(args.database_url, lambda dsn, pid: _bench(args, dsn, pid),
                           fsync=not args.no_fsync)

if __name__ == "__main__":
    sys.exit(main())
