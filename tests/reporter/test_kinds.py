"""Every figure of each report kind against an independent count over the same data.

The oracle reads the raw rows of the hot and history tables itself and counts them in Python
(its own day/hour bucketing with zoneinfo): it never runs the reporter's queries. The data
(conftest.py) straddles the range, is split between hot and history tables and has a DST
change inside the range. Reports are made by `runner.run_report` in-process against the test
database, the same function the daemon runs.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from smsgw.services.reporter.kinds import Progress
from smsgw.services.reporter.runner import run_report
from smsgw.services.reporter.settings import ReporterSettings
from smsgw.shared.domain.reports import parse_request
from smsgw.shared.queue import report_requests as rq
from smsgw.shared.queue.records import ReportStatus

from .conftest import CAMPAIGN, END, START, ZONE, seed

TZ = ZoneInfo(ZONE)
OWNER = "test-reporter"
FAILED = {"undeliverable", "expired", "rejected", "dead", "submit_unknown"}


async def make(pool: asyncpg.Pool, tmp: Path, kind: str, **kw: Any) -> dict[str, list[list[str]]]:
    """Queue, claim and run one report; its CSV files parsed (header row included)."""
    params = parse_request(kind, start=START, end=END, tz=ZONE, **kw)
    req = await rq.insert(pool, kind=kind, params=params.as_json(), account_id=None,
                          requested_by="test", keep_s=60)
    [claimed] = await rq.claim(pool, owner=OWNER, limit=1, lease_s=60)
    assert claimed.id == req.id
    outcome = await run_report(pool, claimed, Progress(), owner=OWNER,
                               settings=ReporterSettings(dir=str(tmp)))
    assert outcome == "done"
    done = await rq.get(pool, req.id, account_id=None)
    assert done is not None and done.status == ReportStatus.DONE and done.progress == 100
    out = {}
    for name, meta in (done.files or {}).items():
        raw = read(meta["path"])
        stored = b"".join([c async for c in rq.read_file(pool, req.id, name)])
        assert stored == raw and len(raw) == meta["bytes"]  # Postgres holds the same file
        if meta["path"].endswith(".csv"):
            assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
            out[name] = list(csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    assert "html" in (done.files or {})
    return out


def read(path: str | Path) -> bytes:
    """A file's bytes (sync: the tests' event loop has nothing else to do meanwhile)."""
    return Path(path).read_bytes()


def in_range(t: datetime) -> bool:
    return datetime.fromisoformat(START).replace(tzinfo=TZ) <= t \
        < datetime.fromisoformat(END).replace(tzinfo=TZ)


def day(t: datetime) -> str:
    return t.astimezone(TZ).date().isoformat()


def hour(t: datetime) -> str:
    return t.astimezone(TZ).replace(minute=0, second=0, microsecond=0).isoformat(
        timespec="minutes")


def pct(values: list[float], p: float) -> float:
    """Continuous percentile (linear interpolation, as Postgres' percentile_cont)."""
    v = sorted(values)
    pos = p * (len(v) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def cell(text: str) -> str:
    """What the CSV must hold for a text from a message: formula starts neutralised by hand."""
    return "'" + text if text[:1] in ("=", "@", "-", "+") and not text[1:].isdigit() else text


async def rows(pool: asyncpg.Pool, sql: str, *tables: str) -> list[asyncpg.Record]:
    out: list[asyncpg.Record] = []
    for t in tables:
        out += await pool.fetch(sql.format(t=t))
    return out


@pytest.fixture
async def data(pool: asyncpg.Pool) -> asyncpg.Pool:
    await seed(pool)
    return pool


async def test_traffic_matches_an_independent_count(data: asyncpg.Pool, tmp_path: Path) -> None:
    """1. Make a traffic report (Europe/London, 3 local days, one of them 25 hours long).
    2. Count the same MT rows (hot + history) per local day x account x connector in Python,
       with the latency percentiles of their delivered parts.
    3. Every row and figure of the CSV equals the count; no group is missing or extra."""
    got = (await make(data, tmp_path, "traffic"))["csv"]
    assert got[0][:3] == ["day", "account", "connector"]
    names = {r["id"]: r["name"] for r in await data.fetch("SELECT id, name FROM accounts")}
    msgs = await rows(data, "SELECT id, account_id, connector, status, parts_total, submitted_at,"
                            " created_at FROM {t}", "outbound", "outbound_history")
    lat = {r["outbound_id"]: (r["done_at"] - r["submitted_at"]).total_seconds()
           for r in await data.fetch("SELECT * FROM outbound_part WHERE status = 'delivered'")}
    want: dict[tuple[str, str, str], Counter[str]] = defaultdict(Counter)
    lats: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for m in msgs:
        if not in_range(m["created_at"]):
            continue
        key = (day(m["created_at"]), names.get(m["account_id"], ""), m["connector"] or "")
        c = want[key]
        c["accepted"] += 1
        c["was_submitted"] += m["submitted_at"] is not None
        c["status:" + m["status"]] += 1
        c["parts"] += m["parts_total"] or 0
        if m["id"] in lat:
            lats[key].append(lat[m["id"]])
    assert {tuple(r[:3]) for r in got[1:]} == set(want)
    assert {r[0] for r in got[1:]} == {"2026-10-24", "2026-10-25", "2026-10-26"}
    for r in got[1:]:
        c = want[(r[0], r[1], r[2])]
        assert [int(x) for x in r[3:11]] == [c[k] for k in (
            "accepted", "was_submitted", "status:delivered", "status:undeliverable",
            "status:expired", "status:rejected", "status:suppressed", "parts")], r
        assert float(r[11]) == pytest.approx(c["status:delivered"] / c["was_submitted"],
                                             abs=1e-4)
        values = lats[(r[0], r[1], r[2])]
        if values:
            assert [float(x) for x in r[12:15]] == pytest.approx(
                [pct(values, p) for p in (0.5, 0.95, 0.99)], rel=1e-4), r
        else:
            assert r[12:15] == ["", "", ""]
    # the 25-hour day holds 25 hours of rows (3 per hour)
    assert sum(int(r[3]) for r in got[1:] if r[0] == "2026-10-25") == 75


async def test_campaign_matches_an_independent_count(data: asyncpg.Pool, tmp_path: Path) -> None:
    """1. Make the campaign report of `autumn`.
    2. Per local hour: entries, over-quota attempts of its rule, its replies by outcome and
       opt-outs, counted in Python from the raw rows; the DST hour 01:00 shows twice.
    3. The draw list holds exactly the campaign's entries in the range, one row each, with
       the entry's number readable and its data's formula neutralised."""
    got = await make(data, tmp_path, "campaign", campaign=CAMPAIGN)
    hours, draw = got["csv"], got["entries_csv"]
    entries = [e for e in await data.fetch("SELECT * FROM campaign_entries WHERE campaign = $1",
                                           CAMPAIGN) if in_range(e["created_at"])]
    rule_id = await data.fetchval("SELECT id FROM rules WHERE name = 'autumn-rule'")
    want: dict[str, list[int]] = defaultdict(lambda: [0] * 7)
    for e in entries:
        want[hour(e["created_at"])][0] += 1
    for ev in await data.fetch("SELECT * FROM events"):
        if ev["detail"]["outcome"] == "over_quota" and ev["detail"]["rule"] == "autumn-rule" \
                and in_range(ev["at"]):
            want[hour(ev["at"])][1] += 1
    for m in await rows(data, "SELECT * FROM {t} WHERE source = 'rule'", "outbound",
                        "outbound_history"):
        if m["rule_id"] == rule_id and in_range(m["created_at"]):
            w = want[hour(m["created_at"])]
            w[2] += 1
            w[3] += m["status"] == "delivered"
            w[4] += m["status"] in FAILED
            w[5] += m["status"] == "suppressed"
    for a in await data.fetch("SELECT * FROM audit_log WHERE action = 'suppression_add'"):
        if in_range(a["at"]):
            want[hour(a["at"])][6] += 1
    assert hours[0] == ["hour", "entries", "over_quota_attempts", "replies_sent",
                        "replies_delivered", "replies_failed", "replies_suppressed", "optouts"]
    assert {r[0]: [int(x) for x in r[1:]] for r in hours[1:]} == dict(want)
    assert {"2026-10-25T01:00+01:00", "2026-10-25T01:00+00:00"} <= {r[0] for r in hours}
    assert draw[0] == ["entry_id", "entered_at", "number", "period", "inbound_id", "data"]
    assert sorted(int(r[0]) for r in draw[1:]) == sorted(e["id"] for e in entries)
    by_id = {e["id"]: e for e in entries}
    for r in draw[1:]:
        assert r[2] == by_id[int(r[0])]["number"] and r[2].startswith("+44")
        assert datetime.fromisoformat(r[1]) == by_id[int(r[0])]["created_at"]
        assert r[5].startswith("{") and "HYPERLINK" in r[5]


async def test_inbound_and_optouts_match_an_independent_count(data: asyncpg.Pool,
                                                              tmp_path: Path) -> None:
    """1. Make the inbound and the opt-out reports.
    2. Inbound: per local day x short code x keyword x channel x provider, by status, from the
       raw hot + history rows; keywords that a spreadsheet would run are neutralised, the
       phone-number keyword stays as it is.
    3. Opt-outs: STOP / START per local day x keyword x scope x source from the audit log."""
    got = (await make(data, tmp_path, "inbound"))["csv"]
    want: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
    for m in await rows(data, "SELECT * FROM {t}", "inbound", "inbound_history"):
        if in_range(m["created_at"]):
            kw = (m["body"] or "").strip(" ").split(" ")[0].upper()[:20]
            c = want[(day(m["created_at"]), m["to_addr"], cell(kw), m["channel"],
                      m["provider"])]
            c["total"] += 1
            c[m["status"]] += 1
    assert {tuple(r[:5]): [int(x) for x in r[5:]] for r in got[1:]} == {
        k: [c["total"], c["done"], c["failed"], c["dead"], c["queued"]]
        for k, c in want.items()}
    kws = {r[2] for r in got[1:]}
    assert {"'=SUM(A1)", "+447700900123", "'@CMD", "WIN", ""} <= kws

    got = (await make(data, tmp_path, "optouts"))["csv"]
    opt: Counter[tuple[str, ...]] = Counter()
    for a in await data.fetch("SELECT * FROM audit_log"):
        if in_range(a["at"]):
            d = a["detail"]
            op = "STOP" if a["action"] == "suppression_add" else "START"
            kw = (d.get("evidence") or d.get("reason") or {}).get("keyword", "").upper()
            opt[(day(a["at"]), op, kw, d["scope"], d["source"])] += 1
    assert got[0] == ["day", "op", "keyword", "scope", "source", "count"]
    assert {tuple(r[:5]): int(r[5]) for r in got[1:]} == dict(opt)


async def test_an_unwritable_reports_area_fails_the_report_with_its_reason(
        data: asyncpg.Pool, tmp_path: Path) -> None:
    """1. [reporter] dir is under a regular file (no folder can be made there; the tests run
       as root, for whom permission bits would not stop a write).
    2. The report ends `failed` naming the reports area and the OS error; nothing is stored
       in Postgres and no file is served."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    params = parse_request("traffic", start=START, end=END, tz=ZONE)
    req = await rq.insert(data, kind="traffic", params=params.as_json(), account_id=None,
                          requested_by="test", keep_s=60)
    [claimed] = await rq.claim(data, owner=OWNER, limit=1, lease_s=60)
    outcome = await run_report(data, claimed, Progress(), owner=OWNER,
                               settings=ReporterSettings(dir=str(blocker / "reports")))
    assert outcome == "failed"
    row = await rq.get(data, req.id, account_id=None)
    assert row is not None and row.status == ReportStatus.FAILED and row.files is None
    assert row.last_error is not None and "writing the reports area" in row.last_error
    assert "Not a directory" in row.last_error
    assert await data.fetchval("SELECT count(*) FROM report_chunks") == 0
