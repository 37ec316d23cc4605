"""Cancelling queued MTs (`outbound.cancel_queued`, `status_callbacks.cancel_queued`): only
queued rows of the account, never a claimed one, with their status callbacks and trace events."""

from __future__ import annotations

import asyncio
import urllib.parse

import asyncpg
import orjson
import pytest

from smsgw.services.admin.trace import render_trace, trace_outbound
from smsgw.shared.domain import status_callbacks
from smsgw.shared.queue import outbound, store

from .conftest import Connect, outbound_row

DLR_URL = "http://app.example/dlr?type=%d&reply=%A&smsc=%i&to=%p"


async def _account(pool: asyncpg.Pool, name: str) -> int:
    return int(await pool.fetchval("INSERT INTO accounts (name) VALUES ($1) RETURNING id", name))


async def _mt(pool: asyncpg.Pool, **kw: object) -> int:
    [res] = await store.enqueue(pool, "outbound", [outbound_row(**kw)], notify=False)
    return res.id


async def test_cancel_takes_only_the_accounts_queued_rows_with_callbacks_and_trace(
        pool: asyncpg.Pool) -> None:
    """1. Account A: m4 (claimed by a sender, `sending`), m1 (JSON callback), m2 (sendsms
       dlr-url, dlr-mask 16, forced connector smsc1), m3 (no callback); account B: b1.
    2. Cancelling ids [m1, m4, b1] for A cancels m1 only: m4 is claimed, b1 is B's.
    3. Cancelling all of A takes m2 and m3; m4 stays `sending`, b1 `queued`.
    4. The cancelled rows are `cancelled` with done_at and the reason; each has a `cancelled`
       event that `smsgw trace` shows; m1 has a JSON POST with status cancelled, m2 a Kannel
       GET as bearerbox makes for a gateway refusal: type 16, `NACK/Cancelled`, %i the forced
       connector. m3 asked for nothing and gets nothing."""
    a, b = await _account(pool, "a"), await _account(pool, "b")
    m4 = await _mt(pool, account_id=a, body="claimed")
    async with pool.acquire() as conn:
        claimed = await outbound.claim(conn, owner="s1", lease_s=60, limit=1, max_accounts=10)
    assert [r.id for r in claimed] == [m4]
    m1 = await _mt(pool, account_id=a, callback_url="https://app.example/status")
    m2 = await _mt(pool, account_id=a, callback_url=DLR_URL, dlr_mask=16, route_hint="smsc1",
                   meta={"callback_style": "kannel"})
    m3 = await _mt(pool, account_id=a)
    b1 = await _mt(pool, account_id=b, callback_url="https://app.example/status")

    async with pool.acquire() as conn:
        first = await status_callbacks.cancel_queued(conn, a, [m1, m4, b1],
                                                     reason="operator: abuse", daemon="admin")
        assert first == [m1]
        rest = await status_callbacks.cancel_queued(conn, a, reason="operator: abuse",
                                                    daemon="admin")
        assert sorted(rest) == [m2, m3]
        again = await status_callbacks.cancel_queued(conn, a, reason="again", daemon="admin")
        assert again == []

    rows = {r["id"]: r for r in await pool.fetch(
        "SELECT id, status, done_at, last_error FROM outbound")}
    assert rows[m4]["status"] == "sending" and rows[b1]["status"] == "queued"
    for m in (m1, m2, m3):
        assert rows[m]["status"] == "cancelled"
        assert rows[m]["done_at"] is not None and rows[m]["last_error"] == "operator: abuse"

    cbs = {r["outbound_id"]: r for r in await pool.fetch(
        "SELECT outbound_id, method, url, body FROM callbacks")}
    assert set(cbs) == {m1, m2}
    body = orjson.loads(cbs[m1]["body"])
    assert (cbs[m1]["method"], body["status"], body["id"]) == ("POST", "cancelled", m1)
    assert body["error"] == "operator: abuse"
    assert cbs[m2]["method"] == "GET"
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(cbs[m2]["url"]).query)
    assert query["type"] == ["16"] and query["reply"] == ["NACK/Cancelled"]
    assert query["smsc"] == ["smsc1"]

    async with pool.acquire() as conn:
        t = await trace_outbound(conn, m2)
    assert t is not None
    assert [e["event"] for e in t["events"]] == ["cancelled"]
    assert t["events"][0]["detail"] == {"reason": "operator: abuse"}
    text = render_trace(t)
    assert "status=cancelled" in text and "cancelled" in text.split("status=cancelled", 1)[1]

    with pytest.raises(ValueError):
        async with pool.acquire() as conn:
            await outbound.cancel_queued(conn, a, reason="", daemon="admin")


async def test_cancel_waits_for_a_claim_in_progress_and_leaves_its_rows(
        pool: asyncpg.Pool, connect: Connect) -> None:
    """1. A sender's claim of m1 is still in its transaction (the row is locked, `sending`
       not yet committed).
    2. A cancel of the account (m1 and the later m2) blocks on that lock (pg_blocking_pids).
    3. The claim commits: the cancel returns m2 only; m1 stays `sending` — never both
       cancelled and submitted. Positive control: m2 was cancelled by the same call."""
    a = await _account(pool, "a")
    m1 = await _mt(pool, account_id=a)
    claimer, canceller = await connect(), await connect()
    tx = claimer.transaction()
    await tx.start()
    claimed = await outbound.claim(claimer, owner="s1", lease_s=60, limit=1, max_accounts=10)
    assert [r.id for r in claimed] == [m1]
    m2 = await _mt(pool, account_id=a)
    task = asyncio.create_task(outbound.cancel_queued(canceller, a, reason="x", daemon="t"))
    pid = canceller.get_server_pid()
    for _ in range(200):
        if await pool.fetchval("SELECT cardinality(pg_blocking_pids($1))", pid):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("the cancel never waited for the claim's lock")
    assert not task.done()
    await tx.commit()
    changes = await asyncio.wait_for(task, 10)
    assert [c.outbound_id for c in changes] == [m2]
    assert {r["id"]: r["status"] for r in await pool.fetch("SELECT id, status FROM outbound")} \
        == {m1: "sending", m2: "cancelled"}
