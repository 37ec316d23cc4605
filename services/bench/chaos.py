"""`smsgw chaos [CASE…] [--soak DURATION --rate R]`: the reliability suite, under steady load.

Cases (all by default, in this order):

- `kill`      kill -9 each daemon in turn (receiver, processor, sender) and let the supervisor
              restart it, as systemd would;
- `pgrestart` restart Postgres with `pg_ctl restart -m immediate` (a crash and recovery);
- `smsc`      drop every SMPP connection with submits in the window, then answer bursts with
              ESME_RTHROTTLED and with a transient error status;
- `watermark` pause the sender (SIGSTOP) until the outbound queue passes the receiver's
              watermark, so the API answers 503 + Retry-After, then let it drain.
- `failover`  (only when named) a Postgres primary and streaming standby: a planned switchover
              and a crash + promote under MT and MO load (`services.bench.failover`; options
              --replication sync|async|both, --runs N, --failover-cases, --mo-rate).

Each case runs its own stack (see `services.bench.stack`) with MT load through `POST
/v1/messages` at `--rate`, every request carrying a `client_ref` (so a retry after a lost answer
stores once), and ends with the same checks: every acknowledged message is stored once and
reached a final state; the simulator's duplicate SMS (same recipient and text accepted twice)
are no more than the sender's `smsgw_possible_duplicates_total` (the documented submit window);
every daemon is running and ready again without a manual restart.

`--soak DURATION` instead runs MT load at `--rate` for that long and reports RSS and open file
descriptors per daemon over time, with the growth from the first sample after warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smsgw.services.bench import e2e, procstats
from smsgw.services.bench.stack import Stack, StackOptions
from smsgw.shared.core.embedded_pg import EmbeddedPostgres, find_pg_bin

CASES = ("kill", "pgrestart", "smsc", "watermark")
# Short leases and timeouts so a killed sender's rows come back within seconds (the lease must
# still outlast the response timeout plus the drain deadline: docs/ARCHITECTURE.md, guarantee 3).
CHAOS_SECTIONS: dict[str, dict[str, Any]] = {
    "sender": {"lease_s": 6.0, "drain_s": 2.0},
    "processor": {"drain_s": 2.0},
    "receiver": {"drain_s": 2.0},
}
CHAOS_CONNECTOR = {"response_timeout_s": 2.0, "window": 50}
DAEMONS = ("receiver", "processor", "sender")


@dataclass(slots=True)
class CaseResult:
    """The outcome of one case."""

    case: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def _say(msg: str) -> None:
    sys.stderr.write(f"[smsgw chaos] {msg}\n")
    sys.stderr.flush()


def load_args(rate: float, concurrency: int = 32) -> argparse.Namespace:
    """The e2e driver's options for steady MT load with client_ref."""
    return argparse.Namespace(count=10**9, duration=None, rate=rate, concurrency=concurrency,
                              sources=100000, receipts=True, client_ref=True, senders=1,
                              quiet=True)


def chaos_stack(*, database_url: str | None = None, pg: EmbeddedPostgres | None = None,
                sections: dict[str, dict[str, Any]] | None = None,
                say: Callable[[str], None] = _say, keep: bool = False) -> Stack:
    """A stack tuned for fault injection (short leases and timeouts), durable Postgres."""
    merged = {k: dict(v) for k, v in CHAOS_SECTIONS.items()}
    for k, v in (sections or {}).items():
        merged.setdefault(k, {}).update(v)
    return Stack(StackOptions(database_url=database_url, pg=pg, sections=merged,
                              connector=dict(CHAOS_CONNECTOR), receipt_delay_s=0.05,
                              say=say, keep=keep))


class Load:
    """Steady MT load on a running stack until `stop()`; then `check()` verifies everything."""

    def __init__(self, stack: Stack, rate: float, concurrency: int = 32) -> None:
        self.run = e2e.Run("mt", load_args(rate, concurrency), uuid.uuid4().hex[:8], stack)
        self._stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin sending."""
        self.task = asyncio.create_task(e2e.drive_http(self.run, self._stop), name="chaos.load")

    async def stop(self) -> None:
        """Stop sending (requests in flight finish or are abandoned unacknowledged)."""
        self._stop.set()
        if self.task is not None:
            await self.task

    @property
    def acked(self) -> int:
        """Acknowledged so far."""
        return len(self.run.driver.acked)


async def check(stack: Stack, load: Load, *, drain_s: float = 60.0) -> CaseResult:
    """The end-of-case checks: stored once, final, duplicates counted, daemons recovered."""
    run = load.run
    drained = await e2e.drain(run, drain_s)
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        mt = await e2e.check_mt(conn, run)
    finally:
        await conn.close()
    mt.pop("by_num")
    sim = await stack.sim_stats()
    possible = 0.0
    for i in range(1, stack.opts.senders + 1):
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            possible += await stack.metric("sender", "smsgw_possible_duplicates_total", i)
    problems: list[str] = []
    if not drained:
        problems.append(f"not every message reached a final state within {drain_s}s")
    if mt["lost"]:
        problems.append(f"{mt['lost']} acknowledged messages are not in the database")
    if mt["duplicate_rows"]:
        problems.append(f"{mt['duplicate_rows']} messages stored twice")
    if mt["not_final"]:
        problems.append(f"{mt['not_final']} messages not final: {mt['states']}")
    if sim["duplicates"] > possible:
        problems.append(f"the simulator got {sim['duplicates']} duplicate SMS but the sender "
                        f"counted {possible:.0f} possible duplicates")
    problems += await recovered(stack)
    details = {"acked": load.acked, "rows": mt["rows"], "states": mt["states"],
               "sim_duplicates": sim["duplicates"], "possible_duplicates_total": possible,
               "sim_receipt_retries": sim.get("receipt_retries"),
               "driver_retries": run.driver.retries, "driver_errors": run.driver.errors,
               "restarts": {c.name: c.restarts for c in stack.children}}
    return CaseResult("", not problems, problems, details)


async def recovered(stack: Stack) -> list[str]:
    """Every child runs and every daemon answers /readyz 200."""
    problems = []
    for c in stack.children:
        if c.proc is None or c.proc.returncode is not None:
            problems.append(f"{c.name} is not running")
            continue
        if c.daemon not in DAEMONS:
            continue
        url = stack.metrics_url(c.daemon, c.instance).replace("/metrics", "/readyz")
        ok = False
        for _ in range(50):
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with aiohttp.ClientSession() as s, s.get(
                        url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        ok = True
                        break
            await asyncio.sleep(0.2)
        if not ok:
            problems.append(f"{c.name} is not ready ({url})")
    return problems


# --- the faults ---------------------------------------------------------------------------

async def fault_kill(stack: Stack, load: Load, names: tuple[str, ...] = DAEMONS,
                     settle_s: float = 3.0) -> dict[str, Any]:
    """kill -9 each daemon in turn, wait for the supervisor's restart, let load run on."""
    out = {}
    for name in names:
        child = name if "@" in name else f"{name}@1"
        before = load.acked
        pid = stack.kill(child, signal.SIGKILL)
        t0 = time.monotonic()
        await stack.wait_restarted(child, pid)
        out[child] = {"killed_pid": pid, "back_after_s": round(time.monotonic() - t0, 2)}
        _say(f"killed {child} (pid {pid}); ready again after {out[child]['back_after_s']}s")
        await asyncio.sleep(settle_s)
        out[child]["acked_meanwhile"] = load.acked - before
    return out


def restart_immediate(pg: EmbeddedPostgres, timeout_s: int = 60) -> None:
    """`pg_ctl restart -m immediate`, with the server's output going to its log file.

    Not `EmbeddedPostgres.restart`: it captures pg_ctl's output without `-l`, so the new
    postmaster inherits the pipe and `subprocess.run` waits for it forever.
    """
    log = pg.datadir / "server.log"
    subprocess.run(
        pg._cmd([find_pg_bin("pg_ctl"), "-D", str(pg.datadir), "-m", "immediate", "-l", str(log),
                 "-o", pg._options(), "-w", "-t", str(timeout_s), "restart"]),
        check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, timeout=timeout_s + 10)


async def fault_pgrestart(stack: Stack, load: Load, settle_s: float = 4.0) -> dict[str, Any]:
    """`pg_ctl restart -m immediate` (crash recovery) while the load runs."""
    assert stack.pg is not None, "the pgrestart case needs an embedded Postgres"
    t0 = time.monotonic()
    await asyncio.to_thread(restart_immediate, stack.pg)
    took = round(time.monotonic() - t0, 2)
    _say(f"postgres restarted (-m immediate) in {took}s")
    before = load.acked
    await asyncio.sleep(settle_s)
    return {"restart_s": took, "acked_after_restart": load.acked - before}


async def fault_smsc(stack: Stack, load: Load, settle_s: float = 3.0) -> dict[str, Any]:
    """Drop the SMPP connections with submits in flight, then throttling and error bursts."""
    await stack.sim("/inject", {"response_delay_s": 0.3})  # keep the window full
    await asyncio.sleep(1.0)
    dropped = await stack.sim("/drop")
    await stack.sim("/inject", {"response_delay_s": 0.0})
    _say(f"dropped {dropped['dropped']} SMPP connections mid-window")
    await asyncio.sleep(settle_s)
    await stack.sim("/inject", {"throttle_next": 300})
    await asyncio.sleep(settle_s)
    # throttle_next is checked before error_next: end the throttling burst first
    await stack.sim("/inject", {"throttle_next": 0, "error_next": 100,
                                "error_status": 0x08})  # ESME_RSYSERR, transient
    await asyncio.sleep(settle_s)
    await stack.sim("/clear")
    stats = await stack.sim_stats()
    return {"dropped": dropped["dropped"], "throttled": stats["counters"]["throttled"],
            "errors": stats["counters"]["errors"], "binds": stats["counters"]["binds"]}


async def fault_watermark(stack: Stack, load: Load, pause_s: float = 6.0) -> dict[str, Any]:
    """SIGSTOP the sender until outbound passes the receiver's watermark (503s), then SIGCONT."""
    before = load.run.driver.retries
    stack.kill("sender@1", signal.SIGSTOP)
    try:
        await asyncio.sleep(pause_s)
    finally:
        stack.kill("sender@1", signal.SIGCONT)
    rejected = load.run.driver.retries - before
    _say(f"sender paused {pause_s}s: the API asked for {rejected} retries (503/429)")
    await asyncio.sleep(3.0)
    return {"retries_while_paused": rejected}


FAULTS: dict[str, Callable[[Stack, Load], Awaitable[dict[str, Any]]]] = {
    "kill": fault_kill, "pgrestart": fault_pgrestart, "smsc": fault_smsc,
    "watermark": fault_watermark}
# The watermark case needs low watermarks to reach them in seconds.
CASE_SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "watermark": {"receiver": {"outbound_high_watermark": 300}},
}


async def run_case(case: str, rate: float, *, warmup_s: float = 3.0, keep: bool = False,
                   database_url: str | None = None,
                   pg: EmbeddedPostgres | None = None) -> CaseResult:
    """One case on a fresh stack: load, fault, more load, drain, checks."""
    stack = chaos_stack(database_url=database_url, pg=pg, sections=CASE_SECTIONS.get(case),
                        keep=keep)
    async with stack:
        load = Load(stack, rate)
        load.start()
        await asyncio.sleep(warmup_s)
        if load.acked == 0:
            await load.stop()
            return CaseResult(case, False, ["no message was acknowledged before the fault"])
        fault = await FAULTS[case](stack, load)
        await asyncio.sleep(2.0)
        await load.stop()
        result = await check(stack, load)
    result.case = case
    result.details["fault"] = fault
    if case == "watermark" and not fault["retries_while_paused"]:
        result.problems.append("the watermark was not reached (no 503 while the sender paused)")
        result.ok = False
    return result


# --- soak -----------------------------------------------------------------------------------

async def soak(duration_s: float, rate: float, every_s: float, keep: bool) -> dict[str, Any]:
    """MT load for `duration_s`; RSS and open fds per daemon every `every_s`."""
    stack = chaos_stack(keep=keep)
    samples: list[dict[str, Any]] = []
    async with stack:
        load = Load(stack, rate)
        load.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < duration_s:
            await asyncio.sleep(min(every_s, duration_s - (time.monotonic() - t0)))
            row: dict[str, Any] = {"t_s": round(time.monotonic() - t0), "acked": load.acked}
            for name, pid in stack.pids().items():
                row[name] = {"rss_kb": procstats.status_kb(pid, "VmRSS"),
                             "fds": procstats.open_fds(pid)}
            samples.append(row)
            _say(json.dumps(row))
        await load.stop()
        result = await check(stack, load, drain_s=120.0)
    return {"samples": samples, "growth": growth(samples), "ok": result.ok,
            "problems": result.problems, "details": result.details}


def growth(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """RSS and fd change per process from the first sample after warm-up (10 %) to the last."""
    if len(samples) < 2:
        return {}
    first = samples[max(1, len(samples) // 10)] if len(samples) > 2 else samples[0]
    last = samples[-1]
    out = {}
    for name, v in last.items():
        if not isinstance(v, dict) or name not in first or not isinstance(first[name], dict):
            continue
        r0, r1 = first[name]["rss_kb"], v["rss_kb"]
        out[name] = {"rss_kb_from": r0, "rss_kb_to": r1,
                     "rss_growth_pct": round((r1 - r0) * 100 / r0, 1) if r0 and r1 else None,
                     "fds_from": first[name]["fds"], "fds_to": v["fds"]}
    return out


# --- command line ---------------------------------------------------------------------------

def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    if text[-1:] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def build_parser() -> argparse.ArgumentParser:
    """Command line of `smsgw chaos`."""
    p = argparse.ArgumentParser(prog="smsgw chaos", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("cases", nargs="*", metavar="CASE",
                   help=f"cases to run (default: all of {', '.join(CASES)})")
    p.add_argument("--rate", type=float, default=200.0, help="MT messages/s offered")
    p.add_argument("--soak", type=_duration, default=None, metavar="DURATION",
                   help="soak mode for this long (e.g. 30m) instead of the cases")
    p.add_argument("--sample-every", type=_duration, default=30.0,
                   help="soak: seconds between RSS/fd samples")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    p.add_argument("--keep", action="store_true", help="keep data folders and logs")
    from smsgw.services.bench import failover

    failover.add_arguments(p)
    return p


async def _main(a: argparse.Namespace) -> int:
    if a.soak:
        res = await soak(a.soak, a.rate, a.sample_every, a.keep)
        sys.stdout.write(f"soak {a.soak:.0f}s at {a.rate}/s: {'OK' if res['ok'] else 'FAILED'}\n")
        for name, g in res["growth"].items():
            sys.stdout.write(f"  {name:<14} RSS {g['rss_kb_from']} -> {g['rss_kb_to']} kB "
                             f"({g['rss_growth_pct']}%), fds {g['fds_from']} -> {g['fds_to']}\n")
        for prob in res["problems"]:
            sys.stdout.write(f"  - {prob}\n")
        if a.json:
            a.json.write_text(json.dumps(res, indent=2, default=str))
        return 0 if res["ok"] else 1
    results = []
    if "failover" in a.cases:
        from smsgw.services.bench import failover

        code = await failover.main_async(a)
        a.cases = [c for c in a.cases if c != "failover"]
        if not a.cases:
            return code
    for case in a.cases or CASES:
        _say(f"case {case}: starting")
        r = await run_case(case, a.rate, keep=a.keep)
        results.append(r)
        sys.stdout.write(f"{case:<10} {'OK' if r.ok else 'FAILED'}  "
                         f"{json.dumps(r.details, default=str)}\n")
        for prob in r.problems:
            sys.stdout.write(f"  - {prob}\n")
        sys.stdout.flush()
    if a.json:
        a.json.write_text(json.dumps([{"case": r.case, "ok": r.ok, "problems": r.problems,
                                       "details": r.details} for r in results],
                                     indent=2, default=str))
    return 0 if all(r.ok for r in results) else 1


def main(argv: list[str]) -> int:
    """Entry point of `smsgw chaos`."""
    parser = build_parser()
    a = parser.parse_args(argv)
    unknown = [c for c in a.cases if c not in (*CASES, "failover")]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(CASES)}")
    try:  # the standard loop: uvloop's subprocess_exec rejects up.Child's process_group
        return int(asyncio.run(_main(a)))
    except KeyboardInterrupt:
        return 130
