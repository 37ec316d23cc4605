"""The report kinds: what each reads (`queries.py`) and what it writes.

Each kind takes a `Ctx` (the report's read-only transaction, its parameters, the output files,
the progress counters) and returns the page (`Page`: key figures, charts, tables); its CSV
files are written while it reads. Python holds per-group totals only (hours, days, accounts x
connectors) — never the rows: rows a kind writes out one by one (the campaign's draw list) come
through a server-side cursor, `fetch_rows` at a time.

Definitions (README "Reports"): traffic `accepted` = every MT created in the range,
`submitted` = with a submit_sm accepted by the SMSC, the next five = the message's state,
`parts` = SMS parts, `delivery_ratio` = delivered / submitted, latency = submit_sm_resp →
final receipt of delivered parts (seconds; p50/p95/p99, continuous percentiles).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import IO, Any, Final
from zoneinfo import ZoneInfo

import asyncpg

from smsgw.services.reporter import queries as q
from smsgw.services.reporter.csvout import CsvWriter
from smsgw.services.reporter.htmlout import Chart, Table
from smsgw.shared.domain.reports import ReportParams

TRAFFIC_COLUMNS: Final = ["day", "account", "connector", "accepted", "submitted", "delivered",
                          "undeliverable", "expired", "rejected", "suppressed", "parts",
                          "delivery_ratio", "latency_p50_s", "latency_p95_s", "latency_p99_s"]
CAMPAIGN_COLUMNS: Final = ["hour", "entries", "over_quota_attempts", "replies_sent",
                           "replies_delivered", "replies_failed", "replies_suppressed",
                           "optouts"]
ENTRY_COLUMNS: Final = ["entry_id", "entered_at", "number", "period", "inbound_id", "data"]
INBOUND_COLUMNS: Final = ["day", "short_code", "keyword", "channel", "provider", "total",
                          "processed", "failed", "dead", "queued"]
OPTOUT_COLUMNS: Final = ["day", "op", "keyword", "scope", "source", "count"]
TOP_KEYS: Final = 50


@dataclass(slots=True)
class Progress:
    """Rows read so far and the planner's estimate of the total (the heartbeat reports it)."""

    scanned: int = 0
    estimated: int | None = None

    @property
    def percent(self) -> float:
        """0 to 99 while running (100 is set when the report is done)."""
        if not self.estimated:
            return 0.0
        return min(99.0, 100.0 * self.scanned / self.estimated)


@dataclass(slots=True)
class Page:
    """What the HTML page shows."""

    title: str
    facts: list[tuple[str, Any]] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass(slots=True)
class Ctx:
    """One running report."""

    conn: asyncpg.Connection
    params: ReportParams
    account_id: int | None
    progress: Progress
    open_text: Callable[[str, str], IO[str]]  # (file name, extension) -> UTF-8 text file
    fetch_rows: int = 5000
    pause: Callable[[], Awaitable[None]] = field(default=lambda: _no_pause())

    def csv(self, name: str, header: list[str]) -> CsvWriter:
        """A CSV output file (`csv` is the main table)."""
        return CsvWriter(self.open_text(name, "csv"), header)

    @property
    def zone(self) -> ZoneInfo:
        """The report's time zone."""
        return self.params.zone


async def _no_pause() -> None:
    return None


def local_days(start: datetime, end: datetime, zone: ZoneInfo) -> list[tuple[date, datetime,
                                                                            datetime]]:
    """[start, end) cut at local midnights: (local date, slice start, slice end). A day of a
    DST change is 23 or 25 hours long."""
    out = []
    day = start.astimezone(zone).date()
    while True:
        midnight = datetime.combine(day + timedelta(days=1), datetime.min.time(), zone)
        lo = max(start, datetime.combine(day, datetime.min.time(), zone))
        hi = min(end, midnight)
        if lo < hi:
            out.append((day, lo, hi))
        if midnight >= end:
            return out
        day += timedelta(days=1)


def hour_label(bucket: datetime, zone: ZoneInfo) -> str:
    """A local hour with its offset (the repeated DST hour reads differently)."""
    return bucket.astimezone(zone).isoformat(timespec="minutes")


async def estimate(conn: asyncpg.Connection, sql: str, *args: Any) -> int:
    """The planner's row estimate for `sql` (EXPLAIN, nothing is read)."""
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    data = json.loads(plan) if isinstance(plan, str) else plan
    return int(data[0]["Plan"]["Plan Rows"])


def range_text(p: ReportParams) -> str:
    """The report's range in its own zone, e.g. "2026-10-24 00:00 to 2026-10-27 00:00"."""
    z = p.zone
    return (f"{p.start.astimezone(z):%Y-%m-%d %H:%M} to {p.end.astimezone(z):%Y-%m-%d %H:%M} "
            f"({p.tz})")


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


# --- traffic ------------------------------------------------------------------------------

async def traffic(ctx: Ctx) -> Page:
    """Per local day x account x connector (see the module docstring)."""
    p = ctx.params
    ctx.progress.estimated = await estimate(ctx.conn, q.ESTIMATE_OUTBOUND, p.start, p.end)
    out = ctx.csv("csv", TRAFFIC_COLUMNS)
    days: list[str] = []
    ratio: dict[str, dict[str, float | None]] = {}
    lat: dict[str, list[float]] = {}
    totals = {k: 0 for k in TRAFFIC_COLUMNS[3:11]}
    for day, lo, hi in local_days(p.start, p.end, ctx.zone):
        await ctx.pause()
        days.append(day.isoformat())
        per_conn: dict[str, list[int]] = {}
        for r in await ctx.conn.fetch(q.TRAFFIC_DAY, lo, hi, ctx.account_id):
            pct = list(r["pct"]) if r["pct"] is not None else [None, None, None]
            out.write([day.isoformat(), r["account"], r["connector"], *(r[k] for k in totals),
                       _ratio(r["delivered"], r["submitted"]), *pct])
            for k in totals:
                totals[k] += r[k]
            c = per_conn.setdefault(r["connector"] or "(none)", [0, 0])
            c[0] += r["delivered"]
            c[1] += r["submitted"]
            if pct[0] is not None:
                lat.setdefault(r["connector"] or "(none)", []).extend(
                    float(x) for x in pct)
            ctx.progress.scanned += r["accepted"]
        for name, (d, s) in per_conn.items():
            ratio.setdefault(name, {})[day.isoformat()] = (100.0 * d / s) if s else None
    page = Page(f"Traffic {range_text(p)}")
    page.facts = [("range", range_text(p)),
                  ("account", p.account or "all"), *totals.items(),
                  ("delivery ratio", _ratio(totals["delivered"], totals["submitted"]))]
    page.charts.append(Chart("Delivery ratio per connector (%)", days,
                             {c: [v.get(d) for d in days] for c, v in sorted(ratio.items())},
                             percent=True))
    conns = sorted(lat)
    page.charts.append(Chart(
        "Submit → receipt latency (s), worst day per connector", conns,
        {name: [max(lat[c][i::3]) for c in conns] for i, name in
         enumerate(("p50", "p95", "p99"))}, shape="bar", y_label="seconds"))
    page.tables.append(Table("Totals", ["figure", "value"], [[k, v] for k, v in totals.items()],
                             note="Per day, account and connector: the CSV."))
    return page


# --- campaign -----------------------------------------------------------------------------

async def campaign(ctx: Ctx) -> Page:
    """Entries per hour, participants, over-quota attempts, replies, opt-outs, keywords, and
    the draw list (`entries_csv`)."""
    p = ctx.params
    assert p.campaign is not None
    conn, span = ctx.conn, (p.start, p.end)
    est = await estimate(conn, q.ESTIMATE_ENTRIES, *span, p.campaign)
    ctx.progress.estimated = 2 * est
    rules = await conn.fetch(q.CAMPAIGN_RULES, p.campaign)
    hours: dict[datetime, list[int]] = {}

    async def add(rows: list[Any], col: int, *keys: str) -> None:
        await ctx.pause()
        for r in rows:
            slot = hours.setdefault(r["bucket"], [0] * 7)
            for i, k in enumerate(keys):
                slot[col + i] += r[k]

    await add(await conn.fetch(q.CAMPAIGN_HOURS, *span, p.campaign, p.tz), 0, "entries")
    ctx.progress.scanned += sum(v[0] for v in hours.values())
    await add(await conn.fetch(q.CAMPAIGN_OVER_QUOTA, *span, [r["name"] for r in rules], p.tz), 1,
        "attempts")
    await add(await conn.fetch(q.CAMPAIGN_REPLIES, *span, [r["id"] for r in rules], p.tz), 2,
        "sent", "delivered", "failed", "suppressed")
    await add(await conn.fetch(q.CAMPAIGN_STOPS, *span, p.tz), 6, "n")
    participants = await conn.fetch(q.CAMPAIGN_PARTICIPANTS, *span, p.campaign)
    keywords = await conn.fetch(q.CAMPAIGN_KEYWORDS, *span, p.campaign)
    out = ctx.csv("csv", CAMPAIGN_COLUMNS)
    ordered = sorted(hours.items())
    out.write_many([hour_label(b, ctx.zone), *v] for b, v in ordered)
    drawn = await _draw_list(ctx)
    totals = [sum(v[i] for _, v in ordered) for i in range(7)]
    unique = sum(r["participants"] for r in participants)
    page = Page(f"Campaign {p.campaign}")
    page.facts = [("campaign", p.campaign), ("range", range_text(p)), ("entries", totals[0]),
                  ("unique participants", unique),
                  ("entries per participant", round(totals[0] / unique, 2) if unique else None),
                  ("over-quota attempts", totals[1]), ("replies sent", totals[2]),
                  ("replies delivered", totals[3]), ("replies failed", totals[4]),
                  ("opt-outs (STOP) during the campaign", totals[6]),
                  ("draw list rows", drawn), ("rules", ", ".join(r["name"] for r in rules))]
    labels = [hour_label(b, ctx.zone) for b, _ in ordered]
    page.charts.append(Chart("Entries per hour", labels,
                             {"entries": [float(v[0]) for _, v in ordered],
                              "over quota": [float(v[1]) for _, v in ordered]}))
    page.charts.append(Chart("Replies per hour", labels,
                             {"sent": [float(v[2]) for _, v in ordered],
                              "delivered": [float(v[3]) for _, v in ordered],
                              "failed": [float(v[4]) for _, v in ordered]}))
    page.tables += [
        Table("Entries per day", ["day", "entries"], _per_day(ordered, ctx.zone)),
        Table("Entries per participant", ["entries", "participants"],
              [[r["entries"], r["participants"]] for r in participants]),
        Table("Top keywords", ["keyword", "entries"],
              [[r["keyword"], r["entries"]] for r in keywords]),
        Table("Per hour", CAMPAIGN_COLUMNS, [[hour_label(b, ctx.zone), *v] for b, v in ordered])]
    return page


def _per_day(ordered: list[tuple[datetime, list[int]]], zone: ZoneInfo) -> list[list[Any]]:
    days: dict[str, int] = {}
    for b, v in ordered:
        key = b.astimezone(zone).date().isoformat()
        days[key] = days.get(key, 0) + v[0]
    return [[d, n] for d, n in days.items()]


async def _draw_list(ctx: Ctx) -> int:
    p = ctx.params
    out = ctx.csv("entries_csv", ENTRY_COLUMNS)
    async for r in ctx.conn.cursor(q.CAMPAIGN_ENTRIES, p.start, p.end, p.campaign,
                                   prefetch=ctx.fetch_rows):
        data = r["data"]
        out.write([r["id"], r["created_at"].astimezone(ctx.zone), r["number"], r["period_key"],
                   r["inbound_id"], json.dumps(data, ensure_ascii=False, sort_keys=True)
                   if data is not None else None])
        ctx.progress.scanned += 1
        await ctx.pause()
    return out.rows


# --- inbound ------------------------------------------------------------------------------

async def inbound(ctx: Ctx) -> Page:
    """MO per local day x short code x keyword x channel x provider, by outcome."""
    p = ctx.params
    ctx.progress.estimated = await estimate(ctx.conn, q.ESTIMATE_INBOUND, p.start, p.end)
    out = ctx.csv("csv", INBOUND_COLUMNS)
    days: list[str] = []
    per_day: dict[str, list[float | None]] = {k: [] for k in ("total", "processed", "failed",
                                                              "dead")}
    keys: dict[tuple[str, str, str, str], list[int]] = {}
    for day, lo, hi in local_days(p.start, p.end, ctx.zone):
        await ctx.pause()
        days.append(day.isoformat())
        sums = [0, 0, 0, 0]
        for r in await ctx.conn.fetch(q.INBOUND_DAY, lo, hi):
            counts = [r["total"], r["processed"], r["failed"], r["dead"], r["queued"]]
            out.write([day.isoformat(), r["short_code"], r["keyword"], r["channel"],
                       r["provider"], *counts])
            sums = [a + b for a, b in zip(sums, counts[:4], strict=True)]
            k = (r["short_code"], r["keyword"], r["channel"], r["provider"])
            keys[k] = [a + b for a, b in zip(keys.get(k, [0] * 5), counts, strict=True)]
            if len(keys) > 20 * TOP_KEYS:  # keep the largest: the page shows a top list
                keys = dict(sorted(keys.items(), key=lambda kv: -kv[1][0])[:10 * TOP_KEYS])
        for name, v in zip(per_day, sums, strict=True):
            per_day[name].append(float(v))
        ctx.progress.scanned += sums[0]
    page = Page(f"Inbound {range_text(p)}")
    totals = {k: int(sum(v or 0 for v in vals)) for k, vals in per_day.items()}
    page.facts = [("range", range_text(p)), *totals.items()]
    page.charts.append(Chart("MO per day", days, per_day))
    top = sorted(keys.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_KEYS]
    page.tables.append(Table("Top short code x keyword x channel x provider",
                             INBOUND_COLUMNS[1:], [[*k, *v] for k, v in top],
                             note="Per day and complete: the CSV."))
    return page


# --- opt-outs -----------------------------------------------------------------------------

async def optouts(ctx: Ctx) -> Page:
    """STOP and START per local day x keyword x scope x source."""
    p = ctx.params
    out = ctx.csv("csv", OPTOUT_COLUMNS)
    days: dict[str, dict[str, float]] = {}
    by_kw: dict[tuple[str, str], int] = {}
    async for r in ctx.conn.cursor(q.OPTOUT_CHANGES, p.start, p.end, p.tz,
                                   prefetch=ctx.fetch_rows):
        day = r["bucket"].astimezone(ctx.zone).date().isoformat()
        out.write([day, r["op"], r["keyword"], r["scope"], r["source"], r["n"]])
        d = days.setdefault(day, {"STOP": 0.0, "START": 0.0})
        d[r["op"]] += r["n"]
        by_kw[(r["op"], r["keyword"])] = by_kw.get((r["op"], r["keyword"]), 0) + r["n"]
        ctx.progress.scanned += r["n"]
    labels = sorted(days)
    page = Page(f"Opt-outs {range_text(p)}")
    page.facts = [("range", range_text(p)),
                  ("STOP", int(sum(d["STOP"] for d in days.values()))),
                  ("START", int(sum(d["START"] for d in days.values())))]
    page.charts.append(Chart("STOP and START per day", labels,
                             {op: [days[d][op] for d in labels] for op in ("STOP", "START")},
                             shape="bar"))
    page.tables.append(Table("By keyword", ["op", "keyword", "count"],
                             [[op, kw, n] for (op, kw), n in sorted(by_kw.items())][:TOP_KEYS]))
    return page


KINDS: Final[dict[str, Callable[[Ctx], Awaitable[Page]]]] = {
    "traffic": traffic, "campaign": campaign, "inbound": inbound, "optouts": optouts}
