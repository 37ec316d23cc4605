"""`smsgw bench {mt,sendsms,mo,promo,intake}`: the whole gateway, end to end, measured honestly.

Each run starts its own stack (`services.bench.stack`: temp data folder, embedded Postgres with
fsync and synchronous_commit ON unless told otherwise, the simulator, the daemons as
subprocesses under `smsgw up`'s supervisor), drives it, waits until every acknowledged message
reached a final state, then reads the figures from the database, the simulator and /proc:

- conditions: machine, cores, CPU model, Python and Postgres versions, Postgres `fsync`,
  `synchronous_commit`, `full_page_writes`, whether the queue tables are logged — a figure is
  called durable only with all of fsync, synchronous_commit and logged tables;
- throughput during load (first request -> last acknowledgement) and sustained including the
  drain (first request -> last final state), submit_sm/s and matched receipts/s separately;
- latency p50/p95/p99 per stage from the rows' own timestamps and end to end;
- CPU seconds and CPU-us per message per daemon, Postgres (all its processes), the simulator and
  the load driver; peak RSS (VmHWM) per process;
- losses and duplicates: the driver's acknowledgements against the database (message by
  message: every text is unique) and the simulator's own counts.

Scenarios: `mt` (POST /v1/messages -> submit_sm -> receipt), `sendsms` (the same through
/cgi-bin/sendsms), `mo` (simulator deliver_sm -> processor -> forwarded to a local application
sink), `promo` (MO keyword -> auto-reply -> submit_sm -> receipt), `intake` (signed generic
webhooks -> inbound -> processed). `--runs N` repeats with a fresh stack and reports medians.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import re
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, unquote_plus, urlencode, urlsplit

import aiohttp
import asyncpg
from aiohttp import web

from smsgw.services.bench import procstats
from smsgw.services.bench.leanhttp import LeanClient, LeanHTTPError, LeanSink
from smsgw.services.bench.profile import Profiler, summarise
from smsgw.services.bench.stack import Stack, StackOptions
from smsgw.shared.core.aio import sleep_or_stop
from smsgw.shared.core.db import DATABASE_ERRORS

MT_FINAL = ("delivered", "undeliverable", "expired", "rejected", "suppressed", "submit_unknown",
            "dead")
INBOUND_FINAL = ("done", "failed", "dead")
WEBHOOK_SECRET_ENV = "BENCH_WEBHOOK_SECRET"
MESSAGE_TABLES = frozenset({
    "inbound", "outbound", "outbound_queue", "outbound_part", "receipts", "callbacks",
    "mo_parts", "dedupe_keys", "events", "inbound_history", "outbound_history",
    "receipts_history", "callbacks_history"})
SHORT_CODE = "12345"


# --- options ------------------------------------------------------------------------------

def build_parser(scenario: str) -> argparse.ArgumentParser:
    """The command line of `smsgw bench SCENARIO`."""
    p = argparse.ArgumentParser(
        prog=f"smsgw bench {scenario}", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0])
    load = p.add_argument_group("load")
    load.add_argument("--count", type=int, default=20000, help="messages per run")
    load.add_argument("--duration", type=float, default=None,
                      help="seconds of load instead of --count")
    load.add_argument("--rate", type=float, default=0.0,
                      help="offered messages/s (0: as fast as accepted)")
    load.add_argument("--concurrency", type=int, default=64,
                      help="requests (or MO deliver_sm) in flight")
    load.add_argument("--sources", type=int, default=100000,
                      help="distinct subscriber numbers the load uses")
    load.add_argument("--client-ref", action="store_true",
                      help="mt: send a client_ref, so a retry after a lost answer stores once")
    load.add_argument("--runs", type=int, default=1, help="repeat; figures are medians")
    load.add_argument("--warmup", type=float, default=0.0, metavar="S",
                      help="take latency percentiles only over messages that arrived S seconds "
                           "or more after the first (daemons' first batches prepare statements "
                           "and load caches); losses and states still count every message")
    if scenario == "sendsms":
        load.add_argument("--status-callback", action="store_true",
                          help="every message asks for one status callback (a Kannel dlr-url "
                               "with dlr-mask 3: the final state) from a local application, "
                               "which counts them: the run drains when every message's "
                               "callback has arrived")
    if scenario == "mo":
        load.add_argument("--rates", default=None, metavar="R1,R2,...",
                          help="one measurement per offered rate (msg/s; 'max' = as fast as "
                               "accepted), each a fresh stack loaded for --duration seconds "
                               "(default 10), then a table of CPU-us per message by rate "
                               "(how the cost per message holds as the rate falls)")
        load.add_argument("--forward-batch", type=int, default=1, metavar="N",
                          help="the forward rule's `batch`: MOs per request to the application "
                               "(1 = one request per MO, as Kannel's get-url; N > 1 = JSON "
                               "arrays of up to N)")
    load.add_argument("--http-client", choices=("lean", "aiohttp"), default="lean",
                      help="the driver's HTTP client and the MO sink's server: 'lean' (asyncio "
                           "protocols, services/bench/leanhttp.py: least CPU taken from the "
                           "gateway on a shared box) or 'aiohttp' (the earlier driver)")
    load.add_argument("--drain-timeout", type=float, default=180.0,
                      help="seconds to wait for every message to reach a final state")
    stack = p.add_argument_group("stack")
    stack.add_argument("--receivers", type=int, default=1)
    stack.add_argument("--processors", type=int, default=1)
    stack.add_argument("--senders", type=int, default=1)
    stack.add_argument("--window", type=int, default=100, help="SMPP window per bind")
    stack.add_argument("--binds", type=int, default=1, help="SMPP binds of the connector")
    stack.add_argument("--receipts", action=argparse.BooleanOptionalAction, default=True,
                       help="the simulator sends a receipt for every submit")
    stack.add_argument("--receipt-delay", type=float, default=0.05, help="seconds")
    stack.add_argument("--fsync", choices=("on", "off"), default="on")
    stack.add_argument("--synchronous-commit", choices=("on", "off"), default="on")
    stack.add_argument("--full-page-writes", choices=("on", "off"), default="on")
    stack.add_argument("--unlogged", action="store_true",
                       help="queue tables UNLOGGED (figures are then not durable)")
    stack.add_argument("--pg-conf", action="append", default=[], metavar="KEY=VALUE",
                       help="extra postgresql.conf setting (repeatable)")
    stack.add_argument("--set", dest="sets", action="append", default=[],
                       metavar="SECTION.KEY=VALUE",
                       help="daemon config key, e.g. sender.batch=500 (repeatable; JSON values)")
    stack.add_argument("--database-url", default=None,
                       help="use this database instead of an embedded Postgres")
    stack.add_argument("--data-dir", type=Path, default=None,
                       help="data folder (default: a temporary one, removed after the run)")
    stack.add_argument("--keep", action="store_true", help="keep the data folder and logs")
    stack.add_argument("--log-level", default="warning",
                       choices=("debug", "info", "warning", "error"))
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, help="write the results here too")
    out.add_argument("--quiet", action="store_true", help="no progress lines")
    out.add_argument("--statements", action="store_true",
                     help="load pg_stat_statements and print the top statements by server "
                          "time (embedded Postgres only)")
    out.add_argument("--profile", type=Path, default=None, metavar="DIR",
                     help="py-spy every daemon during the load; collapsed stacks and a summary "
                          "of the top functions go to DIR (profiling costs CPU: do not quote "
                          "throughput from a profiled run)")
    return p


def _sections(sets: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, _, raw = item.partition("=")
        section, _, name = key.partition(".")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out.setdefault(section, {})
        *path, leaf = name.split(".")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


# --- the run ------------------------------------------------------------------------------

@dataclass(slots=True)
class DriverStats:
    """What the load driver saw."""

    started_at: float = 0.0
    last_ack_at: float = 0.0
    acked: set[int] = field(default_factory=set)
    sent: int = 0
    retries: int = 0  # 503/429 answers (the gateway asked for a retry) and connection errors
    errors: dict[str, int] = field(default_factory=dict)  # other answers, by status
    latencies: list[float] = field(default_factory=list)  # request -> 2xx, seconds
    done: bool = False


@dataclass(slots=True)
class Run:
    """One run's context."""

    scenario: str
    args: argparse.Namespace
    tag: str
    stack: Stack
    driver: DriverStats = field(default_factory=DriverStats)
    sink: Sink | None = None
    sink_url: str | None = None

    @property
    def prefix(self) -> str:
        """Every text of this run starts with it (unique per message: prefix + number)."""
        word = "WIN" if self.scenario == "promo" else ("MO" if self.scenario == "mo" else "B")
        return f"{word} {self.tag}"


def _say(msg: str) -> None:
    sys.stderr.write(f"[smsgw bench] {msg}\n")
    sys.stderr.flush()


def stack_options(scenario: str, a: argparse.Namespace, sink_url: str | None) -> StackOptions:
    """The stack for a scenario: receipts, rules, webhook secret and the user's overrides."""
    rules: list[dict[str, Any]] | None = None
    if scenario == "mo":
        rules = [{"name": "bench-forward", "default": True, "match": {},
                  "actions": [{"type": "forward", "url": sink_url,
                               "batch": getattr(a, "forward_batch", 1)}]}]
    elif scenario == "promo":
        rules = [{"name": "bench-promo", "priority": 10, "match": {"keyword": ["WIN"]},
                  "actions": [{"type": "reply", "template": "OK {text}",
                               "category": "transactional"}]}]
    sections = _sections(a.sets)
    env: dict[str, str] = {}
    if scenario == "intake":
        env[WEBHOOK_SECRET_ENV] = "bench-secret"
        sections.setdefault("webhooks", {}).setdefault("generic", {})["bench"] = {
            "secret_env": WEBHOOK_SECRET_ENV}
    pg_conf = dict(kv.split("=", 1) for kv in a.pg_conf)
    if a.statements:
        pg_conf["shared_preload_libraries"] = "pg_stat_statements"
        pg_conf["pg_stat_statements.track"] = "all"
    return StackOptions(
        receivers=a.receivers, processors=a.processors, senders=a.senders,
        data_dir=a.data_dir, keep=a.keep, database_url=a.database_url,
        fsync=a.fsync == "on", synchronous_commit=a.synchronous_commit == "on",
        full_page_writes=a.full_page_writes == "on", unlogged=a.unlogged, pg_conf=pg_conf,
        receipt_delay_s=a.receipt_delay if a.receipts else None,
        connector={"window": a.window, "binds": a.binds}, sections=sections, rules=rules,
        log_level=a.log_level, env=env, say=_say)


# --- the application sink (mo) -------------------------------------------------------------

class Sink:
    """A local application: counts forwarded MO by the unique number in their text."""

    def __init__(self, prefix_word: str, *, lean: bool = True) -> None:
        self.pattern = re.compile(rf"{prefix_word} [0-9a-f]+ (\d+)".encode())
        self.seen: dict[int, float] = {}
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.lean: LeanSink | None = LeanSink(self._count) if lean else None
        self.port = 0

    def _count(self, method: str, target: str, body: bytes) -> None:
        del method
        self.requests += 1
        now = time.time()
        for m in self.pattern.finditer(body + unquote_plus(target).encode()):
            self.seen.setdefault(int(m.group(1)), now)  # a batched forward holds several

    async def start(self) -> str:
        """Listen on a free port; return the URL to forward to."""
        if self.lean is not None:
            self.port = await self.lean.start()
            return f"http://127.0.0.1:{self.port}/mo"
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{self.port}/mo"

    async def _handle(self, request: web.Request) -> web.Response:
        self._count(request.method, request.path_qs, await request.read())
        return web.json_response({"ok": True})

    async def stop(self) -> None:
        """Close the site."""
        if self.lean is not None:
            await self.lean.stop()
        if self.runner is not None:
            await self.runner.cleanup()


# --- HTTP load driver ----------------------------------------------------------------------

def request_for(run: Run, n: int) -> tuple[str, str, dict[str, str], bytes | None]:
    """(method, url, headers, body) of message `n` in this run's scenario."""
    s = run.stack
    to = f"+4477009{n % run.args.sources:05d}"
    text = f"{run.prefix} {n}"
    # a status callback's URL carries the message's number (the sink counts it from there)
    callback = (f"{run.sink_url}?m={quote_plus(text)}" if run.sink_url
                and getattr(run.args, "status_callback", False) else None)
    if run.scenario == "mt":
        msg = {"to": to, "from": "BENCH", "text": text}
        if getattr(run.args, "client_ref", False):
            msg["client_ref"] = f"{run.tag}-{n}"  # idempotent retries (the chaos suite)
        body = json.dumps(msg).encode()
        return "POST", s.api_url + "/v1/messages", {
            "Authorization": f"Bearer {s.api_key}", "Content-Type": "application/json"}, body
    if run.scenario == "sendsms":
        params = {"username": "bench", "password": s.api_key, "from": "BENCH", "to": to,
                  "text": text}
        if callback:
            params |= {"dlr-url": callback + "&type=%d", "dlr-mask": "3"}
        q = urlencode(params)
        return "GET", s.api_url + "/cgi-bin/sendsms?" + q, {}, None
    body = json.dumps({"id": f"{run.tag}-{n}", "from": to, "to": SHORT_CODE,
                       "text": text}).encode()
    ts = str(int(time.time()))
    sig = "sha256=" + hmac.new(b"bench-secret", ts.encode() + b"." + body,
                               hashlib.sha256).hexdigest()
    return "POST", s.api_url + "/v1/inbound/generic/bench", {
        "Content-Type": "application/json", "X-Smsgw-Timestamp": ts,
        "X-Smsgw-Signature": sig}, body


class HttpDriver:
    """Single-message requests with `concurrency` in flight until count/duration."""

    def __init__(self, run: Run, stop: asyncio.Event) -> None:
        a = run.args
        self.run, self.stop, self.d = run, stop, run.driver
        self.loop = asyncio.get_running_loop()
        self.interval = 1.0 / a.rate if a.rate > 0 else 0.0
        self.next_at = self.loop.time()
        self.counter = iter(range(a.count if a.duration is None else 10**12))
        self.deadline = None if a.duration is None else self.loop.time() + a.duration

    def settle(self, n: int, t0: float, status: int, retry_after: str | None) -> float | None:
        """Record one answer; return the seconds to wait before a retry, None when done."""
        d = self.d
        if 200 <= status < 300:
            d.acked.add(n)
            d.last_ack_at = time.time()
            d.latencies.append(time.perf_counter() - t0)
            return None
        if status in (429, 503):
            d.retries += 1
            return min(float(retry_after or 0.05), 0.2)
        d.errors[str(status)] = d.errors.get(str(status), 0) + 1
        return None

    async def pace(self) -> bool:
        """Wait for the next slot of a fixed rate; False when the run is over."""
        if self.stop.is_set() or (self.deadline is not None
                                  and self.loop.time() >= self.deadline):
            return False
        if self.interval:
            at = self.next_at
            self.next_at = max(at, self.loop.time() - 1.0) + self.interval
            if at > self.loop.time():
                await asyncio.sleep(at - self.loop.time())
        return True

    async def one_aiohttp(self, session: aiohttp.ClientSession, n: int) -> None:
        """Send message `n` until it is answered (not 429/503) or the run stops."""
        method, url, headers, body = request_for(self.run, n)
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.d.sent += 1
            try:
                async with session.request(method, url, headers=headers, data=body) as r:
                    await r.read()
                    status, retry_after = r.status, r.headers.get("Retry-After")
            except (aiohttp.ClientError, TimeoutError):
                self.d.retries += 1  # not acknowledged: retry (mt/sendsms without client_ref
                await asyncio.sleep(0.1)  # may store twice: counted as a duplicate row)
                continue
            wait = self.settle(n, t0, status, retry_after)
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def one_lean(self, client: LeanClient, n: int) -> None:
        """The same through the lean client."""
        method, url, headers, body = request_for(self.run, n)
        u = urlsplit(url)
        raw = client.build(method, u.path + ("?" + u.query if u.query else ""), headers, body)
        while not self.stop.is_set():
            t0 = time.perf_counter()
            self.d.sent += 1
            try:
                r = await client.send(raw)
            except (LeanHTTPError, TimeoutError):
                self.d.retries += 1  # as above: not acknowledged, retried
                await asyncio.sleep(0.1)
                continue
            wait = self.settle(n, t0, r.status, r.headers.get("retry-after"))
            if wait is None:
                return
            await asyncio.sleep(wait)

    async def aiohttp_worker(self, session: aiohttp.ClientSession) -> None:
        """One of `concurrency` loops sharing an aiohttp session."""
        for n in self.counter:
            if not await self.pace():
                return
            await self.one_aiohttp(session, n)

    async def lean_worker(self) -> None:
        """One of `concurrency` loops, each with its own keep-alive connection."""
        client = LeanClient(self.run.stack.api_url)
        try:
            for n in self.counter:
                if not await self.pace():
                    return
                await self.one_lean(client, n)
        finally:
            client.close()

    async def drive(self) -> None:
        """Run the workers to the end of the run."""
        a = self.run.args
        self.d.started_at = time.time()
        if getattr(a, "http_client", "lean") == "lean":
            await asyncio.gather(*(self.lean_worker() for _ in range(a.concurrency)))
        else:
            connector = aiohttp.TCPConnector(limit=a.concurrency, force_close=False)
            timeout = aiohttp.ClientTimeout(total=30)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                await asyncio.gather(*(self.aiohttp_worker(session)
                                       for _ in range(a.concurrency)))
        self.d.done = True


async def drive_http(run: Run, stop: asyncio.Event) -> None:
    """Send single-message requests with `concurrency` in flight until count/duration."""
    await HttpDriver(run, stop).drive()


async def drive_mo(run: Run, stop: asyncio.Event) -> None:
    """Start the simulator's MO load and follow it until it is done."""
    a, d = run.args, run.driver
    count = a.count if a.duration is None else int(a.duration * (a.rate or 5000))
    d.started_at = time.time()
    await run.stack.sim("/mo", {"count": count, "rate": a.rate, "window": a.concurrency,
                                "sources": a.sources, "prefix": run.prefix, "to": SHORT_CODE})
    while not stop.is_set():
        mo = (await run.stack.sim_stats())["mo"]
        d.sent = mo["attempts"]
        d.retries = mo["error_status"] + mo["timeouts"]
        if mo["last_ack_at"]:
            d.last_ack_at = mo["last_ack_at"]
        if mo["done"]:
            d.acked = set(range(count)) if mo["acked"] == count else set(range(mo["acked"]))
            d.done = True
            return
        await asyncio.sleep(0.25)


# --- database checks ----------------------------------------------------------------------

MT_ROWS = """
SELECT body, status, created_at, submitted_at, done_at FROM outbound WHERE body LIKE $1
UNION ALL
SELECT body, status, created_at, submitted_at, done_at FROM outbound_history WHERE body LIKE $1
"""
IN_ROWS = """
SELECT i.id, i.body, i.status, i.created_at, i.updated_at FROM inbound i WHERE i.body LIKE $1
UNION ALL
SELECT i.id, i.body, i.status, i.created_at, i.updated_at FROM inbound_history i
 WHERE i.body LIKE $1
"""
CB_ROWS = """
SELECT inbound_id, status, created_at, updated_at FROM callbacks WHERE inbound_id = ANY($1)
UNION ALL
SELECT inbound_id, status, created_at, updated_at FROM callbacks_history WHERE inbound_id = ANY($1)
"""
PENDING_MT = "SELECT count(*) FROM outbound WHERE body LIKE $1 AND NOT (status = ANY($2))"
# Messages that left the queue (neither queued nor sending) but kept their queue row.
STALE_QUEUE_ROWS = ("SELECT count(*) FROM outbound_queue q JOIN outbound o USING (id)"
                    " WHERE o.body LIKE $1 AND o.status NOT IN ('queued', 'sending')")
PENDING_IN = "SELECT count(*) FROM inbound WHERE body LIKE $1 AND NOT (status = ANY($2))"
MATCHED_RECEIPTS = "SELECT count(*), max(updated_at) FROM receipts WHERE status = 'matched'"


def mt_final(run: Run) -> list[str]:
    """Final outbound states for this run ('submitted' too when no receipts come)."""
    return [*MT_FINAL, "submitted"] if not run.args.receipts else list(MT_FINAL)


def mt_like(run: Run) -> str:
    """LIKE pattern of the MT bodies of this run (replies in promo start with 'OK ')."""
    return f"OK {run.prefix} %" if run.scenario == "promo" else f"{run.prefix} %"


async def pending(conn: asyncpg.Connection, run: Run) -> int:
    """Messages of this run not yet in a final state (the drain is over at 0)."""
    n = 0
    if run.scenario in ("mt", "sendsms", "promo"):
        n += int(await conn.fetchval(PENDING_MT, mt_like(run), mt_final(run)))
    if run.scenario in ("mo", "promo", "intake"):
        n += int(await conn.fetchval(PENDING_IN, run.prefix + " %", list(INBOUND_FINAL)))
    if run.scenario == "promo":
        made = await conn.fetchval("SELECT count(*) FROM outbound WHERE body LIKE $1",
                                   mt_like(run))
        n += max(len(run.driver.acked) - int(made), 0)
    if run.sink is not None and run.scenario in ("mo", "sendsms"):
        n += max(len(run.driver.acked) - len(run.sink.seen), 0)
    return n


def _num(body: str | None) -> int | None:
    if not body:
        return None
    tail = body.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else None


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile (nearest rank) of `values`, in milliseconds."""
    if not values:
        return None
    s = sorted(values)
    return round(s[min(len(s) - 1, max(0, round(q * len(s)) - 1))] * 1000, 2)


def stage(values: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 in ms."""
    return {"p50_ms": pct(values, 0.50), "p95_ms": pct(values, 0.95), "p99_ms": pct(values, 0.99),
            "n": len(values)}


def _d(a: datetime | None, b: datetime | None) -> float | None:
    return (b - a).total_seconds() if a is not None and b is not None else None


def warm(run: Run, rows: list[Any]) -> list[Any]:
    """The rows latency percentiles are taken over: all, or with `--warmup S` those created
    S seconds or more after the run's first row (losses and states always count every row)."""
    warmup = float(getattr(run.args, "warmup", 0.0) or 0.0)
    if not warmup or not rows:
        return rows
    cut = min(r["created_at"] for r in rows) + timedelta(seconds=warmup)
    return [r for r in rows if r["created_at"] >= cut]


async def check_mt(conn: asyncpg.Connection, run: Run) -> dict[str, Any]:
    """Losses, duplicates, final states and stage latencies of the MT rows, and whether the
    queue table (outbound_queue, migration 0021) still holds any of them once they left the
    queue (it must not)."""
    all_rows = await conn.fetch(MT_ROWS, mt_like(run))
    stale_queue = await conn.fetchval(STALE_QUEUE_ROWS, mt_like(run))
    nums = [_num(r["body"]) for r in all_rows]
    found = {n for n in nums if n is not None}
    final = set(mt_final(run))
    states: dict[str, int] = {}
    for r in all_rows:
        states[r["status"]] = states.get(r["status"], 0) + 1
    rows = warm(run, all_rows)
    q = [x for r in rows if (x := _d(r["created_at"], r["submitted_at"])) is not None]
    rc = [x for r in rows if (x := _d(r["submitted_at"], r["done_at"])) is not None]
    e2e = [x for r in rows if (x := _d(r["created_at"], r["done_at"] or r["submitted_at"]))
           is not None]
    rows = all_rows
    last = max((r["done_at"] or r["submitted_at"] for r in rows
                if (r["done_at"] or r["submitted_at"])), default=None)
    first_created = min((r["created_at"] for r in rows), default=None)
    return {
        "rows": len(rows), "states": states,
        "lost": len(run.driver.acked - found) if run.scenario != "promo" else None,
        "duplicate_rows": len(rows) - len(found),
        "not_final": sum(1 for r in rows if r["status"] not in final),
        "stale_queue_rows": int(stale_queue),
        "latency": {"created_to_submitted": stage(q), "submitted_to_receipt": stage(rc),
                    "created_to_final": stage(e2e)},
        "last_final_at": last.timestamp() if last else None,
        "first_created_at": first_created.timestamp() if first_created else None,
        "by_num": {n: r for n, r in zip(nums, all_rows, strict=True) if n is not None},
    }


async def check_inbound(conn: asyncpg.Connection, run: Run) -> dict[str, Any]:
    """Losses, duplicates and latencies of the inbound rows (and their callbacks in mo)."""
    rows = await conn.fetch(IN_ROWS, run.prefix + " %")
    nums = [_num(r["body"]) for r in rows]
    found = {n for n in nums if n is not None}
    proc = [x for r in warm(run, rows) if r["status"] == "done"
            and (x := _d(r["created_at"], r["updated_at"])) is not None]
    out: dict[str, Any] = {
        "rows": len(rows), "lost": len(run.driver.acked - found),
        "duplicate_rows": len(rows) - len(found),
        "not_final": sum(1 for r in rows if r["status"] not in INBOUND_FINAL),
        "states": _count(r["status"] for r in rows),
        "latency": {"received_to_processed": stage(proc)},
        "by_id": {r["id"]: r for r in rows},
    }
    last = max((r["updated_at"] for r in rows), default=None)
    out["last_final_at"] = last.timestamp() if last else None
    if run.scenario == "mo":
        cbs = await conn.fetch(CB_ROWS, [r["id"] for r in rows])
        kept = {r["id"] for r in warm(run, rows)}
        timed = [c for c in cbs if c["inbound_id"] in kept]
        deliver = [x for c in timed if c["status"] == "done"
                   and (x := _d(c["created_at"], c["updated_at"])) is not None]
        e2e = [x for c in timed if c["status"] == "done"
               and (x := _d(out["by_id"][c["inbound_id"]]["created_at"], c["updated_at"]))
               is not None]
        out["callbacks"] = {"rows": len(cbs), "states": _count(c["status"] for c in cbs)}
        out["latency"]["callback_queued_to_done"] = stage(deliver)
        out["latency"]["received_to_app"] = stage(e2e)
        last_cb = max((c["updated_at"] for c in cbs), default=None)
        out["last_final_at"] = last_cb.timestamp() if last_cb else out["last_final_at"]
    return out


def _count(items: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in items:
        out[i] = out.get(i, 0) + 1
    return out


# --- conditions ---------------------------------------------------------------------------

async def conditions(conn: asyncpg.Connection, run: Run) -> dict[str, Any]:
    """Machine, versions and the durability settings that decide whether a figure is durable."""
    settings = {r["name"]: r["setting"] for r in await conn.fetch(
        "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
        ["fsync", "synchronous_commit", "full_page_writes", "wal_level", "shared_buffers",
         "max_connections", "commit_delay"])}
    unlogged_all = [r["relname"] for r in await conn.fetch(
        "SELECT relname FROM pg_class WHERE relpersistence = 'u' AND relkind IN ('r', 'p')")]
    # Only tables that hold messages or their dedupe keys decide durability; e.g. the
    # receiver's `account_rate_windows` (rate-limit counters) is unlogged by design.
    unlogged = [t for t in unlogged_all if t in MESSAGE_TABLES]
    version = await conn.fetchval("SHOW server_version")
    durable = (settings.get("fsync") == "on" and settings.get("synchronous_commit") == "on"
               and not unlogged)
    a = run.args
    return {**procstats.machine(), "postgres": version, "pg_settings": settings,
            "unlogged_tables": unlogged, "unlogged_other_tables":
            [t for t in unlogged_all if t not in MESSAGE_TABLES], "durable": durable,
            "embedded_postgres": run.stack.own_pg,
            "settings": {"count": a.count, "duration": a.duration, "rate": a.rate or "max",
                         "concurrency": a.concurrency, "receivers": a.receivers,
                         "processors": a.processors, "senders": a.senders, "window": a.window,
                         "binds": a.binds, "receipts": a.receipts,
                         "receipt_delay_s": a.receipt_delay if a.receipts else None,
                         "overrides": a.sets, "sources": a.sources,
                         "http_client": getattr(a, "http_client", "lean"),
                         "latency_warmup_s": getattr(a, "warmup", 0.0),
                         **({"forward_batch": a.forward_batch}
                            if hasattr(a, "forward_batch") else {})}}


# --- CPU and memory -----------------------------------------------------------------------

def cpu_snapshot(stack: Stack) -> dict[str, float]:
    """CPU seconds per process now: each child, Postgres (whole tree) and this driver."""
    out: dict[str, float] = {}
    for name, pid in stack.pids().items():
        out[name] = procstats.tree_cpu_s(pid)
    me = procstats.cpu(os.getpid())
    out["driver"] = me.own_s if me else 0.0
    return out


def cpu_report(before: dict[str, float], after: dict[str, float], messages: int,
               stack: Stack) -> dict[str, Any]:
    """CPU seconds and CPU-us per message per process; the gateway's total (daemons + Postgres)."""
    per: dict[str, Any] = {}
    for name, t1 in after.items():
        used = t1 - before.get(name, 0.0)
        per[name] = {"cpu_s": round(used, 2),
                     "us_per_msg": round(used * 1e6 / messages, 1) if messages else None}
    gateway = sum(v["cpu_s"] for k, v in per.items()
                  if k.split("@")[0] in ("receiver", "processor", "sender", "postgres"))
    rss = {c.name: procstats.status_kb(c.proc.pid, "VmHWM")
           for c in stack.children if c.proc and c.proc.returncode is None}
    return {"per_process": per, "gateway_cpu_s": round(gateway, 2),
            "gateway_us_per_msg": round(gateway * 1e6 / messages, 1) if messages else None,
            "peak_rss_kb": rss}


# --- progress -----------------------------------------------------------------------------

async def progress(run: Run, stop: asyncio.Event, conn: asyncpg.Connection) -> None:
    """One line per second on stderr: acknowledgements, the simulator's counts, the backlog."""
    last_acked, last_submits, t0 = 0, 0, time.time()
    while not stop.is_set():
        await sleep_or_stop(stop, 1.0)
        if run.args.quiet:
            continue
        try:
            sim = await run.stack.sim_stats()
            backlog = await pending(conn, run) if run.driver.done else None
        except (aiohttp.ClientError, *DATABASE_ERRORS):
            continue
        c = sim["counters"]
        acked = len(run.driver.acked) if run.driver.done else _acked_now(run, sim)
        line = (f"t={time.time() - t0:5.1f}s acked={acked} (+{acked - last_acked}/s) "
                f"submit_sm={c['submit_ok']} (+{c['submit_ok'] - last_submits}/s) "
                f"receipts={c['receipts_sent']} mo={c['mo_sent']} retries={run.driver.retries}")
        if backlog is not None:
            line += f" draining: {backlog} not final"
        _say(f"{run.scenario}: {line}")
        last_acked, last_submits = acked, c["submit_ok"]


def _acked_now(run: Run, sim: dict[str, Any]) -> int:
    if run.scenario in ("mo", "promo"):
        return int((sim.get("mo") or {}).get("acked", 0))
    return len(run.driver.acked)


# --- one run ------------------------------------------------------------------------------

async def one_run(scenario: str, a: argparse.Namespace, index: int) -> dict[str, Any]:
    """Start a stack, drive it, drain, measure, verify; return the results."""
    lean = getattr(a, "http_client", "lean") == "lean"
    callbacks = getattr(a, "status_callback", False)
    sink = (Sink("MO", lean=lean) if scenario == "mo"
            else Sink("B", lean=lean) if callbacks else None)
    sink_url = await sink.start() if sink else None
    stack = Stack(stack_options(scenario, a, sink_url if scenario == "mo" else None))
    run = Run(scenario, a, uuid.uuid4().hex[:8], stack, sink=sink, sink_url=sink_url)
    try:
        await stack.start()
        return await _measure(run, index)
    finally:
        await stack.stop()
        if sink:
            await sink.stop()


async def _measure(run: Run, index: int) -> dict[str, Any]:
    stack, a = run.stack, run.args
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        cond = await conditions(conn, run)
        _say(f"run {index + 1}/{a.runs}: {run.scenario}, tag {run.tag}, "
             f"{'durable' if cond['durable'] else 'NOT durable'} "
             f"(fsync={cond['pg_settings'].get('fsync')}, synchronous_commit="
             f"{cond['pg_settings'].get('synchronous_commit')}, "
             f"unlogged={cond['unlogged_tables']})")
        if a.statements:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            await conn.execute("SELECT pg_stat_statements_reset()")
        sim0 = await stack.sim_stats()
        cpu0 = cpu_snapshot(stack)
        stop_progress = asyncio.Event()
        prog = asyncio.create_task(progress(run, stop_progress, conn), name="bench.progress")
        load_stop = asyncio.Event()
        drive = drive_mo if run.scenario in ("mo", "promo") else drive_http
        profiler = await start_profiler(run)
        await drive(run, load_stop)
        load_end = time.time()
        if profiler is not None:
            await profiler.stop()
        drained = await drain(run, a.drain_timeout)
        cpu1 = cpu_snapshot(stack)
        stop_progress.set()
        await prog
        sim1 = await stack.sim_stats()
        return await _results(run, conn, cond, sim0, sim1, cpu0, cpu1, load_end, drained)
    finally:
        await conn.close()


async def start_profiler(run: Run) -> Profiler | None:
    """py-spy on every daemon (not the simulator or Postgres) when --profile is given."""
    if run.args.profile is None:
        return None
    prof = Profiler(run.args.profile / f"{run.scenario}-{run.tag}")
    if not prof.available():
        _say("--profile: py-spy is not installed (pip install py-spy); not profiling")
        return None
    pids = {k: v for k, v in run.stack.pids().items() if k.split("@")[0] in
            ("receiver", "processor", "sender")}
    await prof.start(pids)
    return prof


def profile_summary(run: Run) -> dict[str, Any]:
    """Top functions per daemon from the collapsed stacks."""
    if run.args.profile is None:
        return {}
    folder = run.args.profile / f"{run.scenario}-{run.tag}"
    return {p.stem: summarise(p) for p in sorted(folder.glob("*.collapsed"))}


async def drain(run: Run, timeout_s: float) -> bool:
    """Wait until nothing of this run is pending (own connection: the progress task has one)."""
    conn = await asyncpg.connect(run.stack.dsn, **run.stack.connect_kwargs)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await pending(conn, run) == 0:
                return True
            await asyncio.sleep(0.2)
        return False
    finally:
        await conn.close()


async def _results(run: Run, conn: asyncpg.Connection, cond: dict[str, Any],
                   sim0: dict[str, Any], sim1: dict[str, Any], cpu0: dict[str, float],
                   cpu1: dict[str, float], load_end: float, drained: bool) -> dict[str, Any]:
    d = run.driver
    acked = len(d.acked)
    c0, c1 = sim0["counters"], sim1["counters"]
    sim_delta = {k: c1[k] - c0.get(k, 0) for k in c1 if isinstance(c1[k], int)}
    checks: dict[str, Any] = {}
    last_final = None
    if run.scenario in ("mt", "sendsms", "promo"):
        mt = await check_mt(conn, run)
        mt.pop("by_num")
        checks["outbound"] = mt
        last_final = mt["last_final_at"]
    if run.scenario in ("mo", "promo", "intake"):
        inbound = await check_inbound(conn, run)
        by_id = inbound.pop("by_id")
        checks["inbound"] = inbound
        if run.scenario == "promo":
            checks["promo_latency"] = await promo_latency(conn, run, by_id)
        last_final = max(filter(None, [last_final, inbound["last_final_at"]]), default=None)
    matched, _ = await conn.fetchrow(MATCHED_RECEIPTS)
    possible_dups = 0.0
    for i in range(1, a_senders(run) + 1):
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            possible_dups += await run.stack.metric("sender", "smsgw_possible_duplicates_total", i)
    start = d.started_at
    load_s = max((d.last_ack_at or load_end) - start, 1e-9)
    total_s = max((last_final or load_end) - start, 1e-9)
    submits = sim_delta.get("submit_ok", 0)
    sub_first, sub_last = sim1.get("first_submit_at"), sim1.get("last_submit_at")
    figures = {
        "acked": acked, "load_s": round(load_s, 2), "sustained_s": round(total_s, 2),
        "acked_per_s_load": round(acked / load_s, 1),
        "final_per_s_sustained": round(acked / total_s, 1),
        "submit_sm": submits,
        "submit_sm_per_s": round(submits / max(sub_last - start, 1e-9), 1)
        if submits and sub_last else None,
        "submit_sm_per_s_active": round(submits / max(sub_last - sub_first, 1e-9), 1)
        if submits and sub_first and sub_last else None,
        "receipts_matched": int(matched),
        "receipts_matched_per_s": round(int(matched) / total_s, 1) if matched else None,
        "mo_acked_by_gateway": (sim1.get("mo") or {}).get("acked"),
        "sink_received": len(run.sink.seen) if run.sink else None,
        "sink_per_s": round(len(run.sink.seen) / total_s, 1) if run.sink else None,
        "http_latency": stage(d.latencies) if d.latencies else None,
    }
    cpu = cpu_report(cpu0, cpu1, acked, run.stack)
    statements = await top_statements(conn, acked) if run.args.statements else []
    verdict = verify(run, checks, sim1, sim_delta, possible_dups, drained)
    return {"scenario": run.scenario, "tag": run.tag, "conditions": cond, "figures": figures,
            "cpu": cpu, "checks": checks, "simulator": {"delta": sim_delta,
                                                        "duplicates": sim1["duplicates"],
                                                        "mo": sim1.get("mo")},
            "driver": {"sent": d.sent, "retries": d.retries, "errors": d.errors},
            "possible_duplicates_total": possible_dups, "drained": drained, "verdict": verdict,
            "profile": profile_summary(run), "statements": statements}


async def top_statements(conn: asyncpg.Connection, messages: int) -> list[dict[str, Any]]:
    """The statements with the most server time (pg_stat_statements), per message."""
    rows = await conn.fetch(
        "SELECT calls, rows, total_exec_time, mean_exec_time, query FROM pg_stat_statements"
        " ORDER BY total_exec_time DESC LIMIT 15")
    total = await conn.fetchval("SELECT sum(total_exec_time) FROM pg_stat_statements")
    return [{"ms_total": round(r["total_exec_time"], 1), "calls": r["calls"], "rows": r["rows"],
             "us_per_msg": round(r["total_exec_time"] * 1000 / max(messages, 1), 1),
             "share_pct": round(r["total_exec_time"] * 100 / total, 1) if total else None,
             "query": " ".join(r["query"].split())[:160]} for r in rows]


def a_senders(run: Run) -> int:
    """Sender instances in this run."""
    return int(run.args.senders)


async def promo_latency(conn: asyncpg.Connection, run: Run,
                        by_id: dict[int, Any]) -> dict[str, Any]:
    """MO received (inbound.created_at) -> reply submitted (outbound.submitted_at)."""
    rows = await conn.fetch(
        "SELECT inbound_id, submitted_at FROM outbound WHERE inbound_id = ANY($1)"
        " UNION ALL SELECT inbound_id, submitted_at FROM outbound_history"
        " WHERE inbound_id = ANY($1)", list(by_id))
    kept = {r["id"] for r in warm(run, list(by_id.values()))}
    vals = [x for r in rows if r["inbound_id"] in kept
            and (x := _d(by_id[r["inbound_id"]]["created_at"], r["submitted_at"])) is not None]
    return {"mo_received_to_reply_submitted": stage(vals), "replies": len(rows)}


def verify(run: Run, checks: dict[str, Any], sim1: dict[str, Any], sim_delta: dict[str, int],
           possible_dups: float, drained: bool) -> dict[str, Any]:
    """The no-loss verdict: acknowledged == stored == final; SMS duplicates only if counted."""
    problems: list[str] = []
    if not drained:
        problems.append("not every message reached a final state before --drain-timeout")
    for name, chk in checks.items():
        if not isinstance(chk, dict) or "lost" not in chk:
            continue
        if chk.get("lost"):
            problems.append(f"{name}: {chk['lost']} acknowledged messages missing")
        if chk.get("not_final"):
            problems.append(f"{name}: {chk['not_final']} rows not final")
        if chk.get("stale_queue_rows"):
            problems.append(f"{name}: {chk['stale_queue_rows']} finished messages still in "
                            "outbound_queue")
    if sim1["duplicates"] > possible_dups:
        problems.append(f"simulator saw {sim1['duplicates']} duplicate SMS, sender counted "
                        f"{possible_dups:.0f} possible duplicates")
    if run.scenario in ("mt", "sendsms"):
        out = checks["outbound"]
        accepted = sim_delta.get("submit_ok", 0) - sim1["duplicates"]
        if accepted < len(run.driver.acked) - out["states"].get("rejected", 0):
            problems.append(f"simulator accepted {accepted} distinct messages for "
                            f"{len(run.driver.acked)} acknowledged")
    if run.sink is not None:
        missing = len(run.driver.acked) - len(run.sink.seen)
        if missing > 0:
            problems.append(f"application sink is missing {missing} "
                            f"{'MO' if run.scenario == 'mo' else 'status callbacks'}")
    return {"ok": not problems, "problems": problems}


# --- output -------------------------------------------------------------------------------

def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric figure and CPU value over the runs."""
    def med(values: list[Any]) -> Any:
        nums = [v for v in values if isinstance(v, int | float)]
        return round(statistics.median(nums), 2) if nums else None

    figs = {k: med([r["figures"][k] for r in results]) for k in results[0]["figures"]
            if not isinstance(results[0]["figures"][k], dict)}
    cpu = {name: {"cpu_s": med([r["cpu"]["per_process"].get(name, {}).get("cpu_s")
                                for r in results]),
                  "us_per_msg": med([r["cpu"]["per_process"].get(name, {}).get("us_per_msg")
                                     for r in results])}
           for name in results[0]["cpu"]["per_process"]}
    return {"figures": figs, "cpu": cpu,
            "gateway_us_per_msg": med([r["cpu"]["gateway_us_per_msg"] for r in results]),
            "runs": len(results), "all_ok": all(r["verdict"]["ok"] for r in results)}


def _latency_lines(r0: dict[str, Any]) -> list[str]:
    """Latency per stage of the last run (ms p50 / p95 / p99)."""
    lines: list[str] = []
    lines.append("latency (last run; ms p50 / p95 / p99):")
    for group, chk in r0["checks"].items():
        lat = chk.get("latency") or (chk.get("mo_received_to_reply_submitted") and {
            "mo_received_to_reply_submitted": chk["mo_received_to_reply_submitted"]}) or {}
        for st, v in lat.items():
            lines.append(f"  {group}.{st:<28} {v['p50_ms']} / {v['p95_ms']} / {v['p99_ms']} "
                         f"(n={v['n']})")
    if r0["figures"].get("http_latency"):
        h = r0["figures"]["http_latency"]
        lines.append(f"  http request->2xx{'':<19} {h['p50_ms']} / {h['p95_ms']} / {h['p99_ms']}")
    return lines


def render(results: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The human-readable report (the same data as --json)."""
    r0 = results[-1]
    c = r0["conditions"]
    lines = [f"smsgw bench {r0['scenario']} — {summary['runs']} run(s), medians",
             "conditions:",
             f"  machine: {c['cpu_model']} ({c['usable_cores']} usable cores of {c['cores']}), "
             f"{c['memory_gb']} GB, kernel {c['kernel']}, load at start {c['loadavg_at_start']}",
             f"  Python {c['python']}, Postgres {c['postgres']} "
             f"({'embedded' if c['embedded_postgres'] else 'given database'})",
             f"  postgres: fsync={c['pg_settings'].get('fsync')} synchronous_commit="
             f"{c['pg_settings'].get('synchronous_commit')} full_page_writes="
             f"{c['pg_settings'].get('full_page_writes')} logged tables="
             f"{'no: ' + ','.join(c['unlogged_tables']) if c['unlogged_tables'] else 'yes'}"
             + (f" (unlogged, holding no messages: {','.join(c['unlogged_other_tables'])})"
                if c.get("unlogged_other_tables") else "")
             + f" -> {'DURABLE' if c['durable'] else 'NOT DURABLE'}",
             f"  settings: {json.dumps(c['settings'])}",
             "throughput:"]
    f = summary["figures"]
    for key in ("acked", "acked_per_s_load", "final_per_s_sustained", "submit_sm",
                "submit_sm_per_s", "submit_sm_per_s_active", "receipts_matched",
                "receipts_matched_per_s", "mo_acked_by_gateway", "sink_received",
                "sink_per_s", "load_s",
                "sustained_s"):
        if f.get(key) is not None:
            lines.append(f"  {key:<24} {f[key]}")
    lines += _latency_lines(r0)
    lines.append("CPU (median seconds, CPU-us per message; peak RSS of the last run):")
    for name, v in summary["cpu"].items():
        rss = r0["cpu"]["peak_rss_kb"].get(name)
        lines.append(f"  {name:<14} {v['cpu_s']:>8} s {v['us_per_msg']:>9} us/msg"
                     + (f"   peak RSS {rss / 1024:.0f} MB" if rss else ""))
    lines.append(f"  gateway (daemons + Postgres): {summary['gateway_us_per_msg']} us/msg")
    for name, prof in r0.get("profile", {}).items():
        lines.append(f"profile {name} (share of samples, self): " + ", ".join(
            f"{fn} {share}%" for fn, share in prof.get("self", [])[:8]))
        lines.append(f"profile {name} (inclusive): " + ", ".join(
            f"{fn} {share}%" for fn, share in prof.get("inclusive", [])[:10]))
    if r0.get("statements"):
        lines.append("top statements by server time (last run):")
        for st in r0["statements"][:12]:
            lines.append(f"  {st['share_pct']:>5}% {st['us_per_msg']:>7} us/msg {st['calls']:>7} "
                         f"calls {st['rows']:>7} rows  {st['query'][:110]}")
    lines.append("checks:")
    for r in results:
        v = r["verdict"]
        lines.append(f"  run {r['tag']}: {'OK' if v['ok'] else 'FAILED'} — sim duplicates "
                     f"{r['simulator']['duplicates']}, counted possible duplicates "
                     f"{r['possible_duplicates_total']:.0f}, driver retries "
                     f"{r['driver']['retries']}, errors {r['driver']['errors']}"
                     + "".join(f"\n    - {p}" for p in v["problems"]))
        for group, chk in r["checks"].items():
            if "lost" in chk:
                lines.append(f"    {group}: rows={chk['rows']} lost={chk['lost']} "
                             f"duplicate_rows={chk['duplicate_rows']} not_final="
                             f"{chk['not_final']} states={chk['states']}")
    return "\n".join(lines) + "\n"


def parse_rates(text: str) -> list[float]:
    """`--rates 250,500,max` -> [250.0, 500.0, 0.0] (0: as fast as accepted)."""
    rates = []
    for item in text.split(","):
        item = item.strip().lower()
        if item == "max":
            rates.append(0.0)
            continue
        try:
            rate = float(item)
        except ValueError:
            raise SystemExit(f"smsgw bench: --rates: {item!r} is not a rate (msg/s) or "
                             "'max'") from None
        if rate <= 0:
            raise SystemExit(f"smsgw bench: --rates: {item!r} must be above 0 (or 'max')")
        rates.append(rate)
    return rates


async def run_rates(scenario: str, a: argparse.Namespace) -> int:
    """`--rates`: the whole measurement once per offered rate, then CPU-us per message by
    rate (per daemon, Postgres and the gateway total) in one table."""
    if a.duration is None:
        a.duration = 10.0
    table: list[tuple[str, dict[str, Any]]] = []
    all_ok = True
    for rate in parse_rates(a.rates):
        a.rate = rate
        _say(f"--rates: offered {'max' if rate == 0 else f'{rate:g}/s'}")
        results = [await one_run(scenario, a, i) for i in range(a.runs)]
        summary = medians(results)
        sys.stdout.write(render(results, summary))
        table.append(("max" if rate == 0 else f"{rate:g}", summary))
        all_ok = all_ok and summary["all_ok"]
    names = [n for n in table[0][1]["cpu"] if n != "driver"]
    lines = [f"smsgw bench {scenario} --rates: CPU-us per message by offered rate "
             f"(medians of {a.runs} run(s) each; delivered/s = to the application)",
             f"  {'rate':>6} {'delivered/s':>12} " + " ".join(f"{n:>13}" for n in names)
             + f" {'gateway':>9}"]
    for label, summary in table:
        fig = summary["figures"]
        lines.append(f"  {label:>6} {fig.get('final_per_s_sustained') or 0:>12} " + " ".join(
            f"{summary['cpu'][n]['us_per_msg'] or 0:>13}" for n in names)
            + f" {summary['gateway_us_per_msg']:>9}")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all_ok else 1


async def run_all(scenario: str, a: argparse.Namespace) -> int:
    """Every run, then the report."""
    if getattr(a, "rates", None):
        return await run_rates(scenario, a)
    results = []
    for i in range(a.runs):
        results.append(await one_run(scenario, a, i))
    summary = medians(results)
    sys.stdout.write(render(results, summary))
    if a.json:
        a.json.write_text(json.dumps({"summary": summary, "runs": results}, indent=2,
                                     default=str))
    return 0 if summary["all_ok"] else 1


def main(argv: list[str]) -> int:
    """`smsgw bench SCENARIO [options]` (argv[0] is the scenario)."""
    if not argv:
        sys.stderr.write("usage: smsgw bench {mt,sendsms,mo,promo,intake} [options]\n")
        return 2
    scenario, rest = argv[0], argv[1:]
    if scenario not in ("mt", "sendsms", "mo", "promo", "intake"):
        sys.stderr.write(f"smsgw bench: unknown end-to-end scenario {scenario!r}\n")
        return 2
    a = build_parser(scenario).parse_args(rest)
    try:
        # The standard loop: `smsgw up`'s Child.start passes process_group, which uvloop's
        # subprocess_exec does not accept.
        return int(asyncio.run(run_all(scenario, a)))
    except KeyboardInterrupt:
        return 130

