"""Receipts that arrive before their part's write-back (a fast SMSC's receipt racing the
submit_sm_resp's write-back): the write-back matches them itself, in its statement, for the
messages that need nothing else; everything else is left to the matcher exactly as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import asyncpg

from smsgw.services.sender import matching, writeback
from smsgw.services.sender.records import Outcome
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.queue import outbound
from smsgw.shared.queue.records import ClaimedOutbound

from .conftest import add_mt, statuses
from .test_receipt_store import _rcpt

SETTINGS = replace(matching.MatchSettings.from_config([], SenderSettings(receipt_min_age_s=0)),
                   operators={"a1": "opA", "a2": "opA", "b1": "b1"})
OWNER = "sender-wb-test"


async def _claimed(pool: asyncpg.Pool, **cols: Any) -> ClaimedOutbound:
    (mid,) = await add_mt(pool, 1, **cols)
    async with pool.acquire() as conn:
        rows = await outbound.claim(conn, owner=OWNER, lease_s=60, limit=100, max_accounts=100)
    (row,) = [r for r in rows if r.id == mid]
    return row


def _accepted(row: ClaimedOutbound, conn_name: str, smsc_id: str, *, parts: int = 1,
              status: str = "submitted") -> Outcome:
    st = "submitted" if status == "submitted" else "rejected"
    return Outcome(msg_id=row.id, status=status, attempts_inc=1, parts_total=parts,
                   connector=conn_name, row=row,
                   parts=tuple((n, smsc_id if n == 1 else f"{smsc_id}-{n}",
                                0 if st == "submitted" else 0x58, st)
                               for n in range(1, parts + 1)))


async def test_write_back_matches_the_receipts_that_raced_it(pool: asyncpg.Pool) -> None:
    """1. claimed messages: plain ones (a receipt on its own connector, one on a sibling, an
    undeliverable one, an intermediate one, two for one part), and the cases the write-back
    leaves to the matcher: a JSON callback_url, a Kannel dlr-url, two parts, an ESME asking
    for intermediate receipts, a receipt from a connector of another operator, a receipt a
    matcher holds locked, a rejected submit
    2. the receipts are stored first (`ReceiptStore`: no part yet, so all `queued`)
    3. one write-back: the plain ones' receipts are matched to their parts, the parts and
    messages final (delivered / undeliverable, the receipt's err kept), the intermediate one
    submitted with its err; every other receipt is still queued, untouched, its message
    submitted as before; the result and the matched count agree with the rows."""
    plain = await _claimed(pool)
    sibling = await _claimed(pool)
    undeliv = await _claimed(pool)
    inter = await _claimed(pool)
    multi = await _claimed(pool)
    json_cb = await _claimed(pool, callback_url="http://127.0.0.1:9/cb")
    kannel = await _claimed(pool, callback_url="http://127.0.0.1:9/dlr?t=%d", dlr_mask=1,
                            meta={"callback_style": "kannel"})
    two = await _claimed(pool)
    esme = await _claimed(pool, source="smpp", account_id=1,
                          meta={"esme_rd": 17, "esme_id": "abc"})
    other_op = await _claimed(pool)
    locked = await _claimed(pool)
    rejected = await _claimed(pool)
    batch = [_rcpt("a1", "p1"), _rcpt("a2", "s1"), _rcpt("a1", "u1", "undeliverable", err="001"),
             _rcpt("a1", "i1", "enroute", final=False, err="005"),
             _rcpt("a1", "m1", "undeliverable"), _rcpt("a1", "m1", "enroute", final=False),
             _rcpt("a1", "j1"), _rcpt("a1", "k1"), _rcpt("a1", "t1"), _rcpt("a1", "x1"),
             _rcpt("b1", "o1"), _rcpt("a1", "l1"), _rcpt("a1", "r1")]
    async with pool.acquire() as conn:
        ids = await matching.ReceiptStore(lambda: SETTINGS)(conn, batch)
    assert {r["status"] for r in await pool.fetch(
        "SELECT status FROM receipts WHERE id = ANY($1)", ids)} == {"queued"}
    outcomes = [_accepted(plain, "a1", "p1"), _accepted(sibling, "a1", "s1"),
                _accepted(undeliv, "a1", "u1"), _accepted(inter, "a1", "i1"),
                _accepted(multi, "a1", "m1"), _accepted(json_cb, "a1", "j1"),
                _accepted(kannel, "a1", "k1"), _accepted(two, "a1", "t1", parts=2),
                _accepted(esme, "a1", "x1"), _accepted(other_op, "a1", "o1"),
                _accepted(locked, "a1", "l1"), _accepted(rejected, "a1", "r1", status="rejected")]
    siblings = matching.Siblings(lambda: SETTINGS)()
    async with pool.acquire() as holder, pool.acquire() as conn, holder.transaction():
        # a matcher holding one receipt
        await holder.execute("SELECT 1 FROM receipts WHERE smsc_id = 'l1' FOR UPDATE")
        res = await writeback.write_back(conn, OWNER, outcomes, siblings=siblings)
    assert sorted(res.owned) == sorted(o.msg_id for o in outcomes)
    rows = await pool.fetch("SELECT r.smsc_id, r.status, p.outbound_id FROM receipts r"
                            " LEFT JOIN outbound_part p ON p.id = r.outbound_part_id"
                            " WHERE r.id = ANY($1)", ids)
    matched = {(r["smsc_id"], r["outbound_id"]) for r in rows if r["status"] == "matched"}
    assert matched == {("p1", plain.id), ("s1", sibling.id), ("u1", undeliv.id),
                       ("i1", inter.id), ("m1", multi.id)}
    assert res.receipts_matched == 6  # m1's two receipts both point at its part
    queued = {r["smsc_id"] for r in rows if r["status"] == "queued" and r["outbound_id"] is None}
    assert queued == {"j1", "k1", "t1", "x1", "o1", "l1", "r1"}
    assert await statuses(pool, [o.msg_id for o in outcomes]) == {
        plain.id: "delivered", sibling.id: "delivered", undeliv.id: "undeliverable",
        inter.id: "submitted", multi.id: "undeliverable", json_cb.id: "submitted",
        kannel.id: "submitted", two.id: "submitted", esme.id: "submitted",
        other_op.id: "submitted", locked.id: "submitted", rejected.id: "rejected"}
    parts = {r["outbound_id"]: r for r in await pool.fetch(
        "SELECT * FROM outbound_part WHERE part_no = 1")}
    assert (parts[plain.id]["status"], parts[plain.id]["err"]) == ("delivered", "000")
    assert parts[plain.id]["done_at"] is not None
    assert (parts[undeliv.id]["status"], parts[undeliv.id]["err"]) == ("undeliverable", "001")
    assert (parts[inter.id]["status"], parts[inter.id]["err"]) == ("submitted", "005")
    assert parts[inter.id]["done_at"] is None
    assert parts[locked.id]["status"] == "submitted" and parts[locked.id]["err"] is None
    msgs = {r["id"]: r for r in await pool.fetch("SELECT * FROM outbound")}
    assert msgs[undeliv.id]["last_error"] == "receipt err 001"
    assert msgs[plain.id]["done_at"] is not None and msgs[plain.id]["submitted_at"] is not None
    assert msgs[inter.id]["done_at"] is None
    assert not await pool.fetchval("SELECT count(*) FROM outbound_queue WHERE id = ANY($1)",
                                   [o.msg_id for o in outcomes])
    # the matcher then takes what was left to it, as before (the locked one included)
    async with pool.acquire() as conn:
        result = await matching.match_batch(conn, SETTINGS)
    assert result.matched >= 5  # j1, k1, t1, x1, l1 (o1 has no part on its operator)
    assert (await statuses(pool, [locked.id]))[locked.id] == "delivered"


async def test_write_back_without_siblings_matches_nothing(pool: asyncpg.Pool) -> None:
    """The statement's callers that pass no siblings (admin tools, the queue benchmark, an
    engine without receipt settings) record the parts exactly as before: the receipt waits."""
    row = await _claimed(pool)
    async with pool.acquire() as conn:
        (rid,) = await matching.ReceiptStore(lambda: SETTINGS)(conn, [_rcpt("a1", "n1")])
        res = await writeback.write_back(conn, OWNER, [_accepted(row, "a1", "n1")])
    assert (res.owned, res.receipts_matched) == ({row.id}, 0)
    assert await pool.fetchval("SELECT status FROM receipts WHERE id = $1", rid) == "queued"
    assert (await statuses(pool, [row.id]))[row.id] == "submitted"


async def test_a_store_and_a_write_back_of_one_smsc_id_never_overlap() -> None:
    """The sender orders a receipt's store and its part's write-back (`ReceiptRace`):
    1. a write-back of ids {a, b} waits for a store in progress that carries b, and starts as
       soon as it ends; a store of {c} (no shared id) runs beside it at once
    2. a store of {a} waits for the running write-back, and runs once it ended
    3. a wait is bounded: a store that never ends holds a write-back for `bound_s` only."""
    race = writeback.ReceiptRace(bound_s=5.0)
    log: list[str] = []
    token = await race.before_store(frozenset({"b", "x"}))

    async def flush() -> None:
        await race.before_flush(frozenset({"a", "b"}))
        log.append("flush started")

    task = asyncio.create_task(flush())
    await asyncio.sleep(0.05)
    assert log == []  # waiting for the store of b
    other = await asyncio.wait_for(race.before_store(frozenset({"c"})), 1)  # no shared id
    race.after_store(other)
    race.after_store(token)
    await asyncio.wait_for(task, 1)
    assert log == ["flush started"]

    async def store() -> None:
        t = await race.before_store(frozenset({"a"}))
        log.append("store started")
        race.after_store(t)

    task = asyncio.create_task(store())
    await asyncio.sleep(0.05)
    assert log == ["flush started"]  # the write-back of a is still running
    race.after_flush()
    await asyncio.wait_for(task, 1)
    assert log == ["flush started", "store started"]

    short = writeback.ReceiptRace(bound_s=0.1)
    await short.before_store(frozenset({"z"}))  # never ends
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await asyncio.wait_for(short.before_flush(frozenset({"z"})), 2)
    assert 0.05 <= loop.time() - t0 < 1.5
