"""Receiver intake benchmark: committed messages/s through the HTTP API and /cgi-bin/sendsms.

    smsgw bench receiver [--database-url URL] [--duration 10] [--clients 64]
                           [--mode api|sendsms|both] [--batch 1] [--server-procs 1]

Starts its own Postgres (initdb into a temp dir, **fsync on**, settings printed) unless
`--database-url` is given, migrates a fresh database, creates an account, starts the receiver
API in `--server-procs` separate processes (SO_REUSEPORT), and drives it with `--clients`
keep-alive HTTP/1.1 connections from this process (a lean raw-socket client, so the load
generator costs little CPU). Every 202 counted was answered after its commit. Reports requests
and messages per second, p50/p99 latency, and the mean rows per INSERT/commit from the
`smsgw_receiver_commit_batch_rows` histogram, then checks the row count against the
acknowledgements (rows ≥ acks, or the benchmark fails).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
import orjson

from smsgw.shared.core import db

BODY = {"to": "+447700900123", "from": "Bench", "text": "Your code is 123456"}


# -- server side (runs in a child process) ------------------------------------------------------

async def _serve(url: str, port: int, secret: bytes) -> None:
    from aiohttp import web
    from prometheus_client import CollectorRegistry

    from smsgw.services.receiver.context import build_context
    from smsgw.services.receiver.metrics import ReceiverMetrics
    from smsgw.services.receiver.options import ReceiverOptions
    from smsgw.services.receiver.web import create_api_app
    from smsgw.shared.runtime.config import WebhooksSettings

    pool = await db.create_pool(url, min_size=4, max_size=8)
    metrics = ReceiverMetrics.create(CollectorRegistry())
    extra = json.loads(os.environ.get("SMSGW_BENCH_OPTIONS", "{}"))
    ctx = build_context(pool, ReceiverOptions(default_country="GB", **extra), WebhooksSettings(),
                        server_secret=secret, metrics=metrics)
    runner = web.AppRunner(create_api_app(ctx), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, reuse_port=True, backlog=1024)
    await site.start()
    sys.stdout.write(f"READY {runner.addresses[0][1]}\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()
    await ctx.close()
    await pool.close()
    hist = {s.name: s.value
            for h in (metrics.commit_batch_rows, metrics.commit_duration)
            for m in h.collect() for s in m.samples
            if s.labels.get("queue") == "outbound" and s.name.endswith(("_sum", "_count"))}
    sys.stdout.write("STATS " + json.dumps(hist) + "\n")
    sys.stdout.flush()


def _serve_main(argv: Sequence[str]) -> int:
    import uvloop

    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    secret = os.environ["SMSGW_BENCH_SECRET"].encode()
    uvloop.run(_serve(args.database_url, args.port, secret))
    return 0


# -- load generator --------------------------------------------------------------------------

class _Stats:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.ok = 0
        self.other: dict[int, int] = {}


async def _client(host: str, port: int, request: bytes, deadline: float, stats: _Stats) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            stats.latencies.append(time.perf_counter() - started)
            if status == 202:
                stats.ok += 1
            else:
                stats.other[status] = stats.other.get(status, 0) + 1
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


def _api_request(key: str, batch: int) -> bytes:
    body = orjson.dumps({"messages": [BODY] * batch} if batch > 1 else BODY)
    return (b"POST /v1/messages HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + key.encode() + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


def _sendsms_request(key: str) -> bytes:
    qs = (f"username=bench&password={quote(key)}&from=Bench&to=%2B447700900123"
          f"&text={quote(BODY['text'])}")
    return f"GET /cgi-bin/sendsms?{qs} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


async def _drive(port: int, request: bytes, clients: int, duration: float,
                 warmup: float) -> tuple[_Stats, float]:
    await asyncio.gather(*(_client("127.0.0.1", port, request, time.perf_counter() + warmup,
                                   _Stats()) for _ in range(clients)))
    stats = _Stats()
    started = time.perf_counter()
    await asyncio.gather(*(_client("127.0.0.1", port, request, started + duration, stats)
                           for _ in range(clients)))
    return stats, time.perf_counter() - started


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- orchestration ----------------------------------------------------------------------------

async def _prepare(url: str, secret: bytes) -> tuple[str, str]:
    """Create a fresh database on the server at `url`, migrate it, make the bench account."""
    from smsgw.services.admin.accounts import create_account

    name = f"smsgw_bench_{os.getpid()}"
    admin = await asyncpg.connect(url)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
        settings = {r["name"]: r["setting"] for r in await admin.fetch(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit',"
            " 'wal_sync_method', 'shared_buffers', 'max_connections', 'full_page_writes',"
            " 'server_version')")}
    finally:
        await admin.close()
    parts = urlsplit(url)
    bench_url = parts._replace(path="/" + name).geturl()
    await db.migrate(bench_url)
    conn = await db.connect(bench_url)
    try:
        # unlimited: the bench measures the gateway, not [receiver] default_account_rate
        _, key = await create_account(conn, secret, "bench", rate_per_s=math.inf)
    finally:
        await conn.close()
    print("postgres settings:", json.dumps(settings))
    print(f"machine: {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.2f} at start, "
          f"python {sys.version.split()[0]}")
    return bench_url, key


def _start_servers(url: str, n: int, secret: bytes) -> tuple[list[subprocess.Popen[str]], int]:
    env = {**os.environ, "SMSGW_BENCH_SECRET": secret.decode()}
    port = 0
    procs: list[subprocess.Popen[str]] = []
    if n > 1:
        with socket.socket() as s:  # one free port shared through SO_REUSEPORT
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    for _ in range(n):
        proc = subprocess.Popen(
            [sys.executable, "-m", "smsgw.services.bench.receiver_bench", "--serve",
             "--database-url", url, "--port", str(port)],
            stdout=subprocess.PIPE, text=True, env=env)
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY "):
            raise RuntimeError(f"receiver did not start: {line!r}")
        port = int(line.split()[1])
        procs.append(proc)
    return procs, port


def _stop_servers(procs: list[subprocess.Popen[str]]) -> tuple[float, float]:
    total_sum = total_count = 0.0
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        for line in out.splitlines():
            if line.startswith("STATS "):
                hist = json.loads(line[6:])
                total_sum += hist.get("smsgw_receiver_commit_batch_rows_sum", 0.0)
                total_count += hist.get("smsgw_receiver_commit_batch_rows_count", 0.0)
    return total_sum, total_count


async def _run_mode(mode: str, url: str, key: str, args: argparse.Namespace,
                    secret: bytes) -> bool:
    conn = await asyncpg.connect(url)
    before = int(await conn.fetchval("SELECT count(*) FROM outbound"))
    procs, port = _start_servers(url, args.server_procs, secret)
    try:
        request = _api_request(key, args.batch) if mode == "api" else _sendsms_request(key)
        stats, elapsed = await _drive(port, request, args.clients, args.duration, args.warmup)
    finally:
        rows_sum, commits = _stop_servers(procs)
    after = int(await conn.fetchval("SELECT count(*) FROM outbound"))
    await conn.close()
    per_request = args.batch if mode == "api" else 1
    msgs = stats.ok * per_request
    print(f"[{mode}] clients={args.clients} batch={per_request} duration={elapsed:.1f}s "
          f"server_procs={args.server_procs}")
    print(f"  acknowledged requests: {stats.ok} ({stats.ok / elapsed:,.0f} req/s); "
          f"messages: {msgs / elapsed:,.0f} msg/s committed; non-202: {stats.other or 0}")
    print(f"  latency p50={_pct(stats.latencies, 0.5) * 1000:.2f} ms "
          f"p99={_pct(stats.latencies, 0.99) * 1000:.2f} ms")
    if commits:
        print(f"  mean rows per INSERT/commit (outbound): {rows_sum / commits:.1f} "
              f"over {int(commits)} commits (incl. warm-up)")
    stored = after - before
    print(f"  rows stored during the run (incl. warm-up): {stored}; acknowledged in the "
          f"measured window: {msgs}")
    return stored >= msgs


def main(argv: Sequence[str] | None = None) -> int:
    """`smsgw bench receiver …` → 0 when every acknowledged message is stored."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["--serve"]:
        return _serve_main(args_in[1:])
    parser = argparse.ArgumentParser(prog="smsgw bench receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", help="use this server instead of an embedded one")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1, help="messages per API request")
    parser.add_argument("--mode", choices=["api", "sendsms", "both"], default="both")
    parser.add_argument("--server-procs", type=int, default=1)
    args = parser.parse_args(args_in)
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    secret = os.urandom(16).hex().encode()
    cluster: Any = None
    url = args.database_url
    if url is None:
        from smsgw.shared.core.embedded_pg import EmbeddedPostgres

        cluster = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="smsgw-bench-pg-")) / "data",
                                   fsync=True)
        cluster.start()
        url = cluster.url_with_password()  # a throwaway cluster; printed without it
        print("embedded postgres with fsync=on at", cluster.dsn)
    try:
        bench_url, key = await _prepare(url, secret)
        modes = ["api", "sendsms"] if args.mode == "both" else [args.mode]
        ok = True
        for mode in modes:
            ok = await _run_mode(mode, bench_url, key, args, secret) and ok
        return 0 if ok else 1
    finally:
        if cluster is not None:
            cluster.stop(mode="fast")


if __name__ == "__main__":
    sys.exit(main())
