"""`smsgw status`: queue depths and oldest age per queue, rates, SMPP binds, dead counts.

Depths are live counts of the hot tables per status (the daemons' `queue_stats` snapshot holds
only the claimable statuses; its age is shown, telling whether a daemon is refreshing it).
Rates are rows per second over the last minute, read from the hot tables (rows move to history
only after `[retention] finished_after_s`, an hour by default). Binds come from
each daemon's `/metrics` (`smsgw_smpp_session_up`; the ESMEs bound to the receivers' SMPP
server from `smsgw_esme_binds`), because only the daemon knows its sockets.
Connector states an operator set (`smsgw connectors stop|isolate`) come from the database.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from smsgw.services.admin import dbcli
from smsgw.shared.domain.connector_state import read_states
from smsgw.shared.runtime.config import DAEMON_PORT_OFFSET, METRICS_PORT_BASE

QUEUES = ("inbound", "outbound", "outbound_part", "receipts", "callbacks", "mo_parts",
          "esme_deliveries")  # receipts and MO waiting for customers' ESMEs
STATS_FRESH_S = 5.0
RATE_WINDOW_S = 60
SCRAPE_TIMEOUT_S = 1.0
# Default /metrics ports probed when neither --metrics nor `smsgw up`'s endpoints file names
# them: docs/ARCHITECTURE.md "Ports": 9100 + 10 x (instance - 1) + n for instances 1-3.
DEFAULT_PROBE = tuple(
    (daemon, inst, METRICS_PORT_BASE + 10 * (inst - 1) + DAEMON_PORT_OFFSET[daemon])
    for inst in (1, 2, 3) for daemon in ("receiver", "processor", "sender"))
ENDPOINTS_FILE = "endpoints.json"  # written by `smsgw up` into its data folder

# Age of the snapshot the daemons refresh (shared.queue.store.refresh_queue_stats).
SQL_SNAPSHOT_AGE = "SELECT extract(epoch FROM now() - max(updated_at)) FROM queue_stats"
# Live fallback for one queue table; {t} is one of QUEUES (a whitelisted identifier).
SQL_LIVE_COUNTS = """
SELECT status, count(*) AS depth,
       extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'queued')) AS oldest_age_s
  FROM {t} GROUP BY status
"""
# Rows per stage in the last $1 seconds (hot tables only; see the module docstring).
SQL_RATES = """
SELECT
  (SELECT count(*) FROM inbound WHERE created_at > now() - make_interval(secs => $1))
      AS mo_received,
  (SELECT count(*) FROM outbound WHERE created_at > now() - make_interval(secs => $1))
      AS mt_accepted,
  (SELECT count(*) FROM outbound_part WHERE submitted_at > now() - make_interval(secs => $1))
      AS parts_submitted,
  (SELECT count(*) FROM receipts WHERE created_at > now() - make_interval(secs => $1))
      AS receipts_received,
  (SELECT count(*) FROM outbound WHERE status = 'delivered'
      AND done_at > now() - make_interval(secs => $1)) AS mt_delivered,
  (SELECT count(*) FROM callbacks WHERE status = 'done'
      AND updated_at > now() - make_interval(secs => $1)) AS callbacks_done
"""


@dataclass(slots=True)
class QueueStatus:
    """One queue's depth per status and the age of its oldest queued row."""

    queue: str
    by_status: dict[str, int] = field(default_factory=dict)
    oldest_queued_age_s: float | None = None


@dataclass(frozen=True, slots=True)
class Bind:
    """One SMPP session gauge read from a daemon's /metrics."""

    daemon: str
    instance: int
    connector: str
    bind: str
    up: bool
    window_in_use: float | None


@dataclass(slots=True)
class Status:
    """Everything `smsgw status` shows."""

    source: str
    queues: list[QueueStatus]
    rates_per_s: dict[str, float]
    binds: list[Bind]
    daemons: dict[str, bool]
    # connectors an operator stopped or isolated: name -> {state, changed_by, reason, at}
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


async def read_queues(conn: asyncpg.Connection) -> tuple[str, list[QueueStatus]]:
    """Depths per queue and status (live counts), and how fresh the daemons' snapshot is.

    The snapshot holds only the claimable statuses; an operator also wants dead, failed and
    orphan rows, so this command counts the hot tables itself (once per call, never on a
    request path). The snapshot's age says whether a daemon is refreshing it.
    """
    out = {q: QueueStatus(q) for q in QUEUES}
    for q in QUEUES:
        for r in await conn.fetch(SQL_LIVE_COUNTS.format(t=q)):
            out[q].by_status[r["status"]] = int(r["depth"])
            if r["oldest_age_s"] is not None:
                out[q].oldest_queued_age_s = float(r["oldest_age_s"])
    stale = await conn.fetchval(SQL_SNAPSHOT_AGE)
    if stale is None:
        source = "live counts; no queue_stats snapshot yet"
    elif float(stale) < STATS_FRESH_S:
        source = f"live counts; daemons' snapshot {float(stale):.1f}s old"
    else:
        source = (f"live counts; daemons' snapshot {dbcli.fmt_age(float(stale))} old: "
                  "are the daemons running?")
    return source, list(out.values())


async def read_rates(conn: asyncpg.Connection) -> dict[str, float]:
    """Rows per second over the last minute, per stage."""
    row = await conn.fetchrow(SQL_RATES, float(RATE_WINDOW_S))
    assert row is not None
    return {k: round(int(v) / RATE_WINDOW_S, 2) for k, v in row.items()}


def metrics_targets(args: argparse.Namespace) -> list[tuple[str, int, str]]:
    """(daemon, instance, URL) of every /metrics endpoint to read."""
    if args.metrics:
        return [("?", 0, url) for url in args.metrics]
    path = dbcli.data_dir(args) / ENDPOINTS_FILE
    if path.is_file():
        data = json.loads(path.read_text())
        return [(m["daemon"], int(m["instance"]), m["url"]) for m in data.get("metrics", [])]
    return [(d, i, f"http://127.0.0.1:{p}/metrics") for d, i, p in DEFAULT_PROBE]


def parse_binds(text: str, daemon: str, instance: int) -> list[Bind]:
    """The `smsgw_smpp_session_up` series (with window in use) in one /metrics page, and the
    ESME binds (`smsgw_esme_binds`: connector "esme:<account>", one row per bound session)."""
    ups: list[tuple[str, str, bool]] = []
    window: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "smsgw_esme_binds":
                name = f"esme:{s.labels.get('account', '?')}"
                ups += [(name, s.labels.get("bind", "?"), True)] * int(s.value)
            elif s.name == "smsgw_smpp_session_up":
                ups.append((s.labels.get("connector", "?"), s.labels.get("bind", "?"),
                            s.value >= 1))
            elif s.name == "smsgw_smpp_window_in_use":
                window[s.labels.get("connector", "?")] = s.value
    return [Bind(daemon, instance, c, b, up, window.get(c)) for c, b, up in ups]


async def _scrape(session: aiohttp.ClientSession, url: str) -> str | None:
    try:
        async with session.get(url) as resp:
            return await resp.text() if resp.status == 200 else None
    except (aiohttp.ClientError, TimeoutError):
        return None


async def read_binds(targets: list[tuple[str, int, str]]) -> tuple[list[Bind], dict[str, bool]]:
    """Scrape every target; return the binds seen and which targets answered."""
    timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        pages = await asyncio.gather(*(_scrape(session, url) for _, _, url in targets))
    binds: list[Bind] = []
    answered: dict[str, bool] = {}
    for (daemon, inst, url), page in zip(targets, pages, strict=True):
        if daemon == "?" and page:
            daemon = _daemon_of(page)
        key = f"{daemon}@{inst}" if inst else url
        answered[key] = page is not None
        if page:
            binds += parse_binds(page, daemon, inst)
    return binds, answered


def _daemon_of(page: str) -> str:
    for fam in text_string_to_metric_families(page):
        for s in fam.samples:
            if s.name == "smsgw_build_info":
                return s.labels.get("daemon", "?")
    return "?"


async def collect(conn: asyncpg.Connection, args: argparse.Namespace) -> Status:
    """Read everything once."""
    source, queues = await read_queues(conn)
    rates = await read_rates(conn)
    targets = metrics_targets(args)
    binds, answered = await read_binds(targets)
    if not args.metrics and not (dbcli.data_dir(args) / ENDPOINTS_FILE).is_file():
        answered = {k: v for k, v in answered.items() if v}  # default probes: only those found
    connectors = {n: {"state": st.state.value, "changed_by": st.changed_by,
                      "reason": st.reason, "at": st.updated_at.timestamp()}
                  for n, st in (await read_states(conn)).items() if st.state != "running"}
    return Status(source, queues, rates, binds, answered, connectors)


def render(st: Status) -> str:
    """The human view."""
    statuses = sorted({s for q in st.queues for s in q.by_status})
    rows = [[q.queue, *[str(q.by_status.get(s, 0)) for s in statuses],
             dbcli.fmt_age(q.oldest_queued_age_s)] for q in st.queues]
    out = [f"queues ({st.source})",
           dbcli.table(rows, ["queue", *statuses, "oldest queued"]), "",
           f"rates (per second, last {RATE_WINDOW_S}s)",
           "  " + "  ".join(f"{k}={v}" for k, v in st.rates_per_s.items()), ""]
    dead = {q.queue: q.by_status.get("dead", 0) for q in st.queues if q.by_status.get("dead")}
    out.append("dead rows: " + (", ".join(f"{k}={v}" for k, v in dead.items()) or "none")
               + ("  (smsgw requeue TABLE --dry-run)" if dead else ""))
    out.append("connectors: " + (", ".join(
        f"{n} {c['state'].upper()} (by {c['changed_by']}"
        + (f": {c['reason']}" if c["reason"] else "") + ")"
        for n, c in st.connectors.items()) or "all running"))
    out.append("")
    out.append("daemons: " + (", ".join(f"{k} {'up' if v else 'DOWN'}"
                                        for k, v in st.daemons.items()) or "none found"))
    if st.binds:
        # The bind limit is global: an instance without a bind slot reports 0 while another
        # instance holds the connector's binds. Only a connector bound nowhere is DOWN.
        bound = {b.connector for b in st.binds if b.up}
        brows = [[f"{b.daemon}@{b.instance}", b.connector, b.bind,
                  "up" if b.up else ("no slot" if b.connector in bound else "DOWN"),
                  "-" if b.window_in_use is None else f"{b.window_in_use:g}"] for b in st.binds]
        out += ["", "binds", dbcli.table(brows, ["daemon", "connector", "bind", "state",
                                                 "window in use"])]
    else:
        out.append("binds: none reported")
    return "\n".join(out)


def as_json(st: Status) -> dict[str, Any]:
    """The JSON view (stable keys for scripts)."""
    data = asdict(st)
    data["dead"] = {q.queue: q.by_status.get("dead", 0) for q in st.queues}
    return data


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw status",
        description="Queue depths and oldest queued age per queue, rates over the last minute, "
                    "SMPP binds (from each daemon's /metrics) and dead rows.",
        epilog=dbcli.TARGET_EPILOG)
    dbcli.add_common_args(p)
    p.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    p.add_argument("--interval", type=float, default=2.0, help="--watch refresh seconds")
    p.add_argument("--metrics", action="append", metavar="URL",
                   help="a daemon's /metrics URL to read binds from (repeatable; default: "
                        "`smsgw up`'s endpoints, else the default ports in "
                        "docs/ARCHITECTURE.md, Ports)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `smsgw status`."""
    args = _parser().parse_args(argv)

    async def body(conn: asyncpg.Connection) -> int:
        while True:
            st = await collect(conn, args)
            if args.json:
                dbcli.dump_json(as_json(st))
            else:
                # \x1b[H\x1b[2J: cursor home + clear screen, so --watch redraws in place.
                prefix = "\x1b[H\x1b[2J" if args.watch and sys.stdout.isatty() else ""
                stamp = time.strftime("%H:%M:%S")
                sys.stdout.write(f"{prefix}smsgw status  {stamp}\n\n{render(st)}\n")
            sys.stdout.flush()
            if not args.watch:
                return dbcli.EXIT_OK
            await asyncio.sleep(args.interval)

    try:
        return dbcli.run(body, args)
    except KeyboardInterrupt:
        return dbcli.EXIT_OK
