"""`smsgw chaos failover`: the gateway rides through a Postgres switchover and a crash-promote.

Each case starts a primary and a streaming standby (`services.bench.pgha.HaPair`, synchronous
replication unless `--replication async`), the whole stack on the multi-host URL
`postgresql://…@127.0.0.1:A,127.0.0.1:B/smsgw` (smsgw adds `target_session_attrs=read-write`),
steady MT load through `POST /v1/messages` (with `client_ref`) and MO load through the
simulator's deliver_sm, receipts for every MT, and the retention move running every half second
(so the failover also lands in a move, a receipt matching pass, a group commit and the sender's
bind-slot hand-over). Then:

- `switchover`: `pg_ctl stop -m fast` of the primary, `pg_ctl promote` of the standby;
- `crash`:      `pg_ctl stop -m immediate` of the primary (a crash), `pg_ctl promote`;
- `freeze`:     the primary stops answering without closing a connection (SIGSTOP of every
                Postgres process for 15 s, as a network partition looks): API requests sent
                meanwhile must get 503 + Retry-After within the commit wait (10 s), well inside
                a client's 30 s patience, never hang; then SIGCONT (no promote).

After the promote the old primary is fenced and rejoined as a standby (`pg_rewind`,
`standby.signal`): the case checks that no smsgw connection lands on it (a standby reports
`in_hot_standby = on`, so `target_session_attrs=read-write` skips it) and that a read-write
connection to it alone is refused. Load runs on, stops, everything drains, and one line says:

    <case> OK|FAIL acknowledged= stored= final= lost= duplicates= recovery_s=

acknowledged: MT answered 2xx + MO answered ESME_ROK; stored: how many of those are in the
database; final: how many reached a final state; lost: acknowledged but not stored (must be 0
with synchronous replication); duplicates: rows stored twice plus SMS the simulator got twice
(only from the submit window: a commit whose answer was lost with the connection);
recovery_s: seconds from the promote until the API acknowledged again (target < 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smsgw.services.admin import up
from smsgw.services.bench import e2e
from smsgw.services.bench.chaos import Load, chaos_stack, recovered
from smsgw.services.bench.pgha import HaPair, in_recovery
from smsgw.services.bench.procstats import postmaster_pid
from smsgw.services.bench.stack import DATABASE_NAME, Stack
from smsgw.shared.core import db
from smsgw.shared.queue.groupcommit import COMMIT_WAIT_S
from smsgw.shared.smpp import bindslots

CASES = ("switchover", "crash", "freeze")
FREEZE_S = 15.0
CLIENT_PATIENCE_S = 30.0  # a typical HTTP client's timeout
# The retention move runs all the time, so that a failover lands inside one.
FAILOVER_SECTIONS: dict[str, dict[str, Any]] = {
    "retention": {"finished_after_s": 1.0, "interval_s": 0.5, "batch": 200}}
RECOVERY_TARGET_S = 30.0


@dataclass(slots=True)
class FailoverResult:
    """One case's figures and problems."""

    case: str
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The result line: `<case> OK|FAIL acknowledged= stored= final= lost= …`."""
        f = self.figures
        keys = ("acknowledged", "stored", "final", "lost", "duplicates", "recovery_s")
        return f"{self.case} {'OK' if self.ok else 'FAIL'} " + " ".join(
            f"{k}={f.get(k)}" for k in keys)


def _say(msg: str) -> None:
    sys.stderr.write(f"[smsgw chaos failover] {msg}\n")
    sys.stderr.flush()


async def _ha_database(pair: HaPair) -> None:
    dsn = pair.node_dsn(pair.primary_name)
    await up.ensure_database(dsn, DATABASE_NAME, password=pair.password)


class MoLoad:
    """`count` MO messages from the simulator at `rate` (each retried until ESME_ROK)."""

    def __init__(self, stack: Stack, count: int, rate: float) -> None:
        args = argparse.Namespace(count=count, duration=None, rate=rate, concurrency=8,
                                  sources=1000, receipts=False)
        self.run = e2e.Run("mo", args, uuid.uuid4().hex[:8], stack)
        self.count, self.rate = count, rate
        self.acked = 0

    async def start(self) -> None:
        """Start the simulator's MO run."""
        await self.run.stack.sim("/mo", {"count": self.count, "rate": self.rate, "window": 8,
                                         "sources": 1000, "prefix": self.run.prefix,
                                         "to": e2e.SHORT_CODE})

    async def finish(self, timeout_s: float) -> dict[str, Any]:
        """Wait until every MO was acknowledged; the simulator's counters."""
        deadline = time.monotonic() + timeout_s
        mo: dict[str, Any] = {}
        while time.monotonic() < deadline:
            mo = (await self.run.stack.sim_stats())["mo"]
            if mo["done"]:
                break
            await asyncio.sleep(0.25)
        # which numbers were acknowledged is not known (only how many): `lost` for MO is the
        # count acknowledged minus the distinct numbers stored (see _checks)
        self.acked = int(mo.get("acked", 0))
        return mo


async def _first_ack_after(load: Load, since: float, timeout_s: float) -> float | None:
    """Seconds from `since` (time.time()) until the MT load's next acknowledgement."""
    start = load.acked
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if load.acked > start:
            return round(max(0.0, load.run.driver.last_ack_at - since), 2)
        await asyncio.sleep(0.02)
    return None


class ReadyWatch:
    """Polls the receiver's /readyz every 0.2 s: how long it said 'not ready'."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.unready_s = 0.0
        self.samples = 0
        self.unready_samples = 0
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        async with aiohttp.ClientSession() as s:
            while True:
                t0 = time.monotonic()
                ready = False
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    async with s.get(self.url, timeout=aiohttp.ClientTimeout(total=3)) as r:
                        ready = r.status == 200
                self.samples += 1
                if not ready:
                    self.unready_samples += 1
                await asyncio.sleep(max(0.0, 0.2 - (time.monotonic() - t0)))
                if not ready:
                    self.unready_s += time.monotonic() - t0

    def start(self) -> None:
        """Begin polling."""
        self._task = asyncio.create_task(self._loop(), name="failover.readywatch")

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _process_tree(root: int) -> list[int]:
    """`root` and its children (a postmaster and its backends)."""
    out = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == root:
                    out.append(int(entry))
    return out


async def _probe(stack: Stack, tag: str, n: int) -> tuple[int | str, str | None, float]:
    """One API request with a client's patience: (status or error, Retry-After, seconds)."""
    body = json.dumps({"to": "+447700900999", "from": "PROBE", "text": f"P {tag} {n}",
                       "client_ref": f"probe-{tag}-{n}"})
    t0 = time.monotonic()
    try:
        async with aiohttp.ClientSession() as s, s.post(
                stack.api_url + "/v1/messages", data=body,
                headers={"Authorization": f"Bearer {stack.api_key}",
                         "Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=CLIENT_PATIENCE_S)) as r:
            await r.read()
            return r.status, r.headers.get("Retry-After"), round(time.monotonic() - t0, 2)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return type(exc).__name__, None, round(time.monotonic() - t0, 2)


async def fault_freeze(res: FailoverResult, pair: HaPair, stack: Stack) -> float:
    """SIGSTOP the primary's processes for FREEZE_S with probes sent meanwhile; returns the
    time of the SIGCONT."""
    pm = postmaster_pid(pair.primary.datadir)
    assert pm is not None, "the primary is not running"
    pids = _process_tree(pm)
    tag = uuid.uuid4().hex[:6]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        first = [asyncio.create_task(_probe(stack, tag, i)) for i in range(5)]
        await asyncio.sleep(3.0)
        later = [asyncio.create_task(_probe(stack, tag, i)) for i in range(5, 10)]
        probes = await asyncio.gather(*first, *later)
        await asyncio.sleep(max(0.0, FREEZE_S - 3.0 - max(p[2] for p in probes)))
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    thawed = time.time()
    bound = COMMIT_WAIT_S + 3.0
    bad = [p for p in probes if p[0] != 503 or not p[1] or p[2] > bound]
    if bad:
        res.problems.append(f"while Postgres did not answer, {len(bad)} of {len(probes)} "
                            f"requests were not a 503 + Retry-After within {bound:g}s: {bad}")
    res.details["freeze_probes"] = sorted({(p[0], p[1], round(p[2])) for p in probes},
                                          key=str)
    _say(f"freeze: {len(pids)} Postgres processes stopped {FREEZE_S:g}s; probes {probes}")
    return thawed


async def fenced_old_primary(pair: HaPair) -> list[str]:
    """The rejoined old primary is a standby, no smsgw session is on it, and a read-write
    connection to it alone is refused."""
    problems: list[str] = []
    old = pair.standby_name
    if await in_recovery(pair.node_dsn(old), pair.password) is not True:
        problems.append(f"the old primary ({old}) is not in recovery after the rejoin")
    conn = await asyncpg.connect(pair.node_dsn(old, DATABASE_NAME), password=pair.password)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
            " AND pid <> pg_backend_pid() AND usename IS NOT NULL")
    finally:
        await conn.close()
    if n:
        problems.append(f"{n} client sessions on the fenced old primary ({old})")
    try:
        c2 = await db.connect(pair.node_dsn(old, DATABASE_NAME), password=pair.password,
                              timeout=5)
    except asyncpg.exceptions.TargetServerAttributeNotMatched:
        pass
    else:
        await c2.close()
        problems.append("a read-write connection to the fenced old primary was accepted")
    return problems


async def _slot_holders(stack: Stack) -> int:
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        return len(await bindslots.slot_holders(conn, "sim"))
    finally:
        await conn.close()


async def start_pair(base: Path, *, sync: bool) -> HaPair:
    """A started primary/standby pair with the (empty) smsgw database on the primary."""
    pair = HaPair(base / "ha", sync=sync)
    await asyncio.to_thread(pair.start)
    await _ha_database(pair)
    return pair


async def run_case(case: str, *, sync: bool = True, rate: float = 100.0,
                   mo_rate: float = 20.0, warmup_s: float = 4.0, after_s: float = 6.0,
                   keep: bool = False, base: Path | None = None, rejoin: bool = True,
                   pair: HaPair | None = None, lag_s: float = 0.0,
                   on_promoted: Callable[[], Awaitable[None]] | None = None) -> FailoverResult:
    """One failover case on a fresh stack and primary/standby pair (module docstring).

    `pair`: use this started pair (the caller stops it) instead of a new one; `on_promoted`
    runs right after the promote (a test's own checks of the outage); `lag_s` > 0 (crash
    only): the standby is down for that long before the crash and comes back just before the
    promote, so it lacks what the primary committed meanwhile (asynchronous: those commits
    were acknowledged and are lost; synchronous: none was acknowledged)."""
    res = FailoverResult(f"{case}-{'sync' if sync else 'async'}")
    tmp = base is None and pair is None
    base = Path(base or tempfile.mkdtemp(prefix="smsgw-failover-"))
    own = pair is None
    try:
        if pair is None:
            pair = await start_pair(base, sync=sync)
        stack = chaos_stack(database_url=pair.url(DATABASE_NAME, password=True),
                            sections=FAILOVER_SECTIONS, say=_say, keep=keep)
        async with stack:
            stack.dsn = db.primary_url(stack.dsn)  # our own checks: the primary too
            await _run_in_stack(case, res, pair, stack, rate=rate, mo_rate=mo_rate,
                                warmup_s=warmup_s, after_s=after_s, rejoin=rejoin,
                                lag_s=lag_s, on_promoted=on_promoted)
    finally:
        if own and pair is not None:
            await asyncio.to_thread(pair.stop)
        if tmp and not keep:
            shutil.rmtree(base, ignore_errors=True)
    res.ok = not res.problems
    return res


async def _run_in_stack(case: str, res: FailoverResult, pair: HaPair, stack: Stack, *,
                        rate: float, mo_rate: float, warmup_s: float, after_s: float,
                        rejoin: bool, lag_s: float,
                        on_promoted: Callable[[], Awaitable[None]] | None) -> None:
    load = Load(stack, rate)
    mo = MoLoad(stack, count=int(mo_rate * (warmup_s + after_s + 6)), rate=mo_rate)
    watch = ReadyWatch(stack.metrics_url("receiver").replace("/metrics", "/readyz"))
    load.start()
    await mo.start()
    watch.start()
    await asyncio.sleep(warmup_s)
    acked_before = load.acked
    if acked_before == 0:
        res.problems.append("no message was acknowledged before the fault")
    t0 = time.time()
    if case == "freeze":
        promoted_at = await fault_freeze(res, pair, stack)  # the thaw, for recovery_s
        rejoin = False
    elif case == "switchover":
        promoted_at = await asyncio.to_thread(pair.switchover)
    else:
        if lag_s > 0:
            await asyncio.to_thread(pair.standby.stop, "fast")
            acked_lag = load.acked
            await asyncio.sleep(lag_s)
            res.details["acked_while_standby_down"] = load.acked - acked_lag
        await asyncio.to_thread(pair.crash)
        if lag_s > 0:
            await asyncio.to_thread(pair.standby.start)
        promoted_at = await asyncio.to_thread(pair.promote)
    _say(f"{case}: primary is now {pair.primary_name} (outage to promote "
         f"{promoted_at - t0:.2f}s)")
    recovery = await _first_ack_after(load, promoted_at, 60.0)
    if on_promoted is not None:
        await on_promoted()
    if recovery is None:
        res.problems.append("the API did not acknowledge again within 60 s of the promote")
    elif recovery > RECOVERY_TARGET_S:
        res.problems.append(f"recovery took {recovery}s (target {RECOVERY_TARGET_S}s)")
    if rejoin:
        await asyncio.to_thread(pair.rejoin_old_primary)
        _say("old primary fenced and rejoined as a standby")
    await asyncio.sleep(after_s)
    await load.stop()
    mo_stats = await mo.finish(60.0)
    await watch.stop()
    if not mo_stats.get("done"):
        res.problems.append(f"the MO load did not finish: {mo_stats}")
    await _checks(res, pair, stack, load, mo, rejoin=rejoin)
    res.figures["recovery_s"] = recovery
    res.details.update({"outage_to_promote_s": round(promoted_at - t0, 2),
                        "readyz_unready_s": round(watch.unready_s, 1),
                        "readyz_unready_samples": watch.unready_samples,
                        "mo_error_status": mo_stats.get("error_status"),
                        "mo_statuses": mo_stats.get("statuses"),
                        "mo_timeouts": mo_stats.get("timeouts"),
                        "mt_driver_retries": load.run.driver.retries})


async def _checks(res: FailoverResult, pair: HaPair, stack: Stack, load: Load, mo: MoLoad, *,
                  rejoin: bool) -> None:
    drained = await e2e.drain(load.run, 90.0) and await e2e.drain(mo.run, 30.0)
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        mt = await e2e.check_mt(conn, load.run)
        mi = await e2e.check_inbound(conn, mo.run)
    finally:
        await conn.close()
    sim = await stack.sim_stats()
    possible = 0.0
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        possible = await stack.metric("sender", "smsgw_possible_duplicates_total")
    mo_stored = mi["rows"] - mi["duplicate_rows"]
    mo_lost = max(0, mo.acked - mo_stored)
    acked = len(load.run.driver.acked) + mo.acked
    lost = mt["lost"] + mo_lost
    stored = acked - lost
    not_final = mt["not_final"] + mi["not_final"]
    res.figures.update({
        "acknowledged": acked, "stored": stored, "final": stored - not_final, "lost": lost,
        "duplicates": mt["duplicate_rows"] + mi["duplicate_rows"] + sim["duplicates"]})
    res.details.update({"mt": {"acked": len(load.run.driver.acked), "rows": mt["rows"],
                               "states": mt["states"], "duplicate_rows": mt["duplicate_rows"]},
                        "mo": {"acked": mo.acked, "rows": mi["rows"],
                               "states": mi["states"], "duplicate_rows": mi["duplicate_rows"]},
                        "sim_duplicate_sms": sim["duplicates"],
                        "possible_duplicates_total": possible,
                        "binds_now": sim["counters"]["current_binds"]})
    if lost and pair.sync:
        res.problems.append(f"{lost} acknowledged messages lost with synchronous replication")
    if not drained or not_final:
        res.problems.append(f"{not_final} messages not final (MT {mt['states']}, "
                            f"MO {mi['states']})")
    if mt["duplicate_rows"]:
        res.problems.append(f"{mt['duplicate_rows']} MT stored twice despite client_ref")
    if sim["duplicates"] > possible:
        res.problems.append(f"the simulator got {sim['duplicates']} duplicate SMS, the sender "
                            f"counted {possible:.0f} possible duplicates")
    restarts = {c.name: c.restarts for c in stack.children if c.restarts}
    res.details["restarts"] = restarts
    if restarts:
        res.problems.append(f"daemons exited and were restarted: {restarts}")
    if await _slot_holders(stack) < stack.opts.senders:
        res.problems.append("the sender holds no bind slot on the new primary")
    res.problems += await recovered(stack)
    if rejoin:
        res.problems += await fenced_old_primary(pair)


async def run_all(cases: list[str], *, sync_modes: list[bool], runs: int, rate: float,
                  mo_rate: float, keep: bool, lag_s: float = 0.0) -> list[FailoverResult]:
    """Every case, replication mode and run, printing each result line as it comes."""
    results = []
    for sync in sync_modes:
        for case in cases:
            for i in range(runs):
                _say(f"{case} ({'sync' if sync else 'async'}) run {i + 1}/{runs}")
                r = await run_case(case, sync=sync, rate=rate, mo_rate=mo_rate, keep=keep,
                                   lag_s=lag_s if case == "crash" else 0.0)
                results.append(r)
                sys.stdout.write(r.line() + "\n")
                for p in r.problems:
                    sys.stdout.write(f"  - {p}\n")
                sys.stdout.write(f"  details: {r.details}\n")
                sys.stdout.flush()
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The failover options of `smsgw chaos`."""
    g = p.add_argument_group("failover case")
    g.add_argument("--failover-cases", default=",".join(CASES[:2]),
                   help=f"which of {','.join(CASES)} (default {','.join(CASES[:2])})")
    g.add_argument("--replication", choices=["sync", "async", "both"], default="sync",
                   help="synchronous_standby_names set (sync, the default: nothing "
                        "acknowledged is lost) or not (async: shows what is lost)")
    g.add_argument("--runs", type=int, default=1, help="runs of each failover case")
    g.add_argument("--mo-rate", type=float, default=20.0, help="MO messages/s offered")
    g.add_argument("--standby-lag", type=float, default=0.0, metavar="S",
                   help="crash case: stop the standby S seconds before the crash (it lacks "
                        "what was committed meanwhile: lost with async, never acknowledged "
                        "with sync)")


async def main_async(a: argparse.Namespace) -> int:
    """`smsgw chaos failover …`: run and print; exit 0 when every case is OK."""
    cases = [c for c in a.failover_cases.split(",") if c]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        sys.stderr.write(f"unknown failover case(s) {unknown}; known: {', '.join(CASES)}\n")
        return 2
    modes = {"sync": [True], "async": [False], "both": [True, False]}[a.replication]
    rate = a.rate if a.rate != 200.0 else 100.0
    results = await run_all(cases, sync_modes=modes, runs=a.runs, rate=rate,
                            mo_rate=a.mo_rate, keep=a.keep, lag_s=a.standby_lag)
    return 0 if all(r.ok for r in results) else 1
