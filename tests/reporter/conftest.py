"""Report test data: a few days of traffic around a DST change, split between the hot tables
and their history, with campaign entries, over-quota events, replies and opt-outs.

Europe/London leaves summer time on 2026-10-25: 01:00 local happens twice (00:00-01:00 UTC
as BST, 01:00-02:00 UTC as GMT), so that day is 25 hours long.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

import asyncpg
import pytest

# the receiver's fixtures, for the reports API test
from ..receiver.conftest import account_factory, receiver_factory  # noqa: F401

ZONE: Final = "Europe/London"
START: Final = "2026-10-24T00:00"  # local, the report's range [START, END)
END: Final = "2026-10-27T00:00"
T0: Final = datetime(2026, 10, 23, 20, 0, tzinfo=UTC)  # data from here, every STEP
STEP: Final = timedelta(minutes=20)
N: Final = 300  # 100 hours of rows: some before and after the range
CAMPAIGN: Final = "autumn"
STATUSES: Final = ("delivered", "delivered", "undeliverable", "expired", "rejected",
                   "suppressed", "queued", "submitted", "dead")
KEYWORDS: Final = ("WIN", "win big", "=SUM(A1)", "+447700900123", "STOP", "@cmd", "")


async def seed(pool: asyncpg.Pool) -> None:
    """Insert the data set (plain SQL: the oracle reads these tables itself)."""
    async with pool.acquire() as conn, conn.transaction():
        acct = [await conn.fetchval("INSERT INTO accounts (name) VALUES ($1) RETURNING id", n)
                for n in ("shop", "bank")]
        rule = await conn.fetchval(
            "INSERT INTO rules (name, match, actions) VALUES ('autumn-rule', '{}',"
            " jsonb_build_array(jsonb_build_object('type', 'campaign_entry',"
            " 'campaign', $1::text))) RETURNING id", CAMPAIGN)
        await conn.execute(
            "INSERT INTO rules (name, match, actions) VALUES ('other-rule', '{}', '[]')")
        times = [T0 + STEP * i for i in range(N)]
        # MT: accounts, connectors (one NULL), statuses, parts; replies of the campaign rule
        await conn.executemany(
            "INSERT INTO outbound (account_id, source, rule_id, from_addr, to_addr, body, status,"
            " connector, parts_total, submitted_at, created_at) VALUES ($1, $2, $3, 'x', $4,"
            " 'b', $5, $6, $7, CASE WHEN $5 IN ('queued', 'suppressed', 'dead') THEN NULL"
            " ELSE $8::timestamptz + interval '1 second' END, $8)",
            [(acct[i % 2] if i % 5 else None, "rule" if i % 7 == 0 else "api",
              rule if i % 7 == 0 else None, f"+4477009{i:05d}", STATUSES[i % len(STATUSES)],
              ("c1", "c2", None)[i % 3], 1 + i % 3, t) for i, t in enumerate(times)])
        await conn.execute(
            "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, status,"
            " submitted_at, done_at) SELECT id, 1, 1, coalesce(connector, 'c1'), status,"
            " submitted_at, submitted_at + make_interval(secs => id % 11 + 0.5)"
            " FROM outbound WHERE status = 'delivered'")
        await conn.executemany(
            "INSERT INTO inbound (channel, provider, connector, from_addr, to_addr, body, status,"
            " created_at) VALUES ($1, $2, 'c1', $3, $4, $5, $6, $7)",
            [(("smpp", "http")[i % 2], ("smsc-a", "twilio")[i % 2], f"+4477001{i % 40:05d}",
              ("80080", "80081")[i % 3 == 0], KEYWORDS[i % len(KEYWORDS)],
              ("done", "done", "failed", "dead", "queued")[i % 5], t)
             for i, t in enumerate(times)])
        # campaign entries of 40 numbers (several each), pointing at their MO
        await conn.execute(
            "INSERT INTO campaign_entries (rule_id, campaign, number, period_key, inbound_id,"
            " data, created_at) SELECT $1, $2, from_addr, 'd', id,"
            " jsonb_build_object('prize', '=HYPERLINK(\"http://x\")'), created_at"
            " FROM inbound WHERE id % 3 <> 0", rule, CAMPAIGN)
        await conn.execute(
            "INSERT INTO campaign_entries (rule_id, campaign, number, period_key, created_at)"
            " SELECT NULL, 'spring', from_addr, 'd', created_at FROM inbound WHERE id % 4 = 0")
        await conn.executemany(
            "INSERT INTO events (message_table, message_id, event, detail, at)"
            " VALUES ('inbound', $1, 'processed', $2, $3)",
            [(i, {"outcome": "over_quota" if i % 2 else "applied",
                  "rule": "autumn-rule" if i % 3 else "other-rule"}, t)
             for i, t in enumerate(times) if i % 4 == 1])
        await conn.executemany(
            "INSERT INTO audit_log (actor, action, object_type, object_id, detail, at)"
            " VALUES ('processor', $1, 'suppression', $2, $3, $4)",
            [("suppression_add" if i % 3 else "suppression_remove", f"h{i}",
              {"scope": ("global", "80080")[i % 2], "source": "sms",
               ("evidence" if i % 3 else "reason"): {
                   "keyword": ("stop", "end")[i % 2] if i % 3 else "start"}},
              t) for i, t in enumerate(times) if i % 2 == 0])
        # half of every queue table moves to history (as the retention move would)
        for table in ("outbound", "inbound"):
            await conn.execute(f"INSERT INTO {table}_history SELECT * FROM {table}"
                               f" WHERE id % 2 = 0")
            await conn.execute(f"DELETE FROM {table} WHERE id % 2 = 0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`browser` tests of this directory are opt-in: they run only with `-m browser`."""
    if "browser" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="opt-in: run with -m browser")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and item.get_closest_marker("browser"):
            item.add_marker(skip)
