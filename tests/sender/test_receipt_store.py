"""Receipts matched in the statement that stores them (`receipts.store`, the sender's
`ReceiptStore`), and everything else left to the matcher exactly as before."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from smsgw.services.sender import matching
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.smsc_sim.server import SimConfig, Simulator
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import ReceiptStored, ReceiptWrite

from .conftest import add_mt, all_final, connector, running, statuses, wait_until

SETTINGS = replace(matching.MatchSettings.from_config([], SenderSettings(receipt_min_age_s=0)),
                   operators={"a1": "opA", "a2": "opA", "b1": "b1"})


async def _part(pool: asyncpg.Pool, conn_name: str, smsc_id: str, *, parts_total: int = 1,
                kannel_dlr: bool | None = False, age_s: float = 0.0, **cols: Any) -> int:
    """A message written back as the write-back writes it: `submitted`, its parts recorded."""
    (mid,) = await add_mt(pool, 1, **cols)
    await pool.execute("UPDATE outbound SET status='submitted', parts_total=$2, connector=$3"
                       " WHERE id=$1", mid, parts_total, conn_name)
    await pool.execute(
        "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
        " command_status, status, submitted_at, kannel_dlr, created_at)"
        " SELECT $1, n, $2, $3, CASE WHEN n = 1 THEN $4 ELSE $4 || '-' || n END, 0,"
        " 'submitted', now(), $5, now() - make_interval(secs => $6)"
        " FROM generate_series(1, $2::int) n", mid, parts_total, conn_name, smsc_id,
        kannel_dlr, age_s)
    return mid


def _rcpt(conn_name: str, smsc_id: str, state: str = "delivered", *, final: bool = True,
          err: str | None = "000") -> ReceiptWrite:
    return ReceiptWrite(connector=conn_name, smsc_id=smsc_id, raw_id=smsc_id,
                        stat=state.upper()[:7], state=state, final=final, err=err,
                        done_date=datetime(2026, 1, 2, 3, 4, tzinfo=UTC), body="id:x stat:y",
                        message_state=2, network_error=b"\x03\x00\x01")


async def test_store_matches_what_needs_nothing_else(pool: asyncpg.Pool) -> None:
    """1. written-back one-part messages without callback (one of them an ESME's asking for a
    receipt), and the cases the matcher keeps: no part yet, a JSON callback_url, a Kannel
    dlr-url, two parts, a part older than the window, a part from before migration 0017, a
    message moved to outbound_history, an SMSC id with an earlier receipt still queued, a part
    already final
    2. one batch of receipts through the sender's `ReceiptStore`  3. right after the store
    the plain ones are matched, their parts and messages final (the ESME's receipt queued by
    the trigger), one NOTIFY wakes the matcher, every other receipt is queued untouched
    4. the matcher then matches those, with their callbacks, as before."""
    plain = await _part(pool, "a1", "p1")
    sibling = await _part(pool, "a1", "s1")  # its receipt comes on a2, same operator
    expired = await _part(pool, "b1", "e1")
    inter = await _part(pool, "b1", "i1")
    multi = await _part(pool, "b1", "m1")  # two receipts: the final one wins
    esme = await _part(pool, "b1", "x1", source="smpp", account_id=1,
                       meta={"esme_rd": 1, "esme_id": "abc"})
    json_cb = await _part(pool, "b1", "j1", callback_url="http://127.0.0.1:9/cb")
    kannel = await _part(pool, "b1", "k1", kannel_dlr=True,
                         callback_url="http://127.0.0.1:9/dlr?t=%d", dlr_mask=1,
                         meta={"callback_style": "kannel"})
    two = await _part(pool, "b1", "t1", parts_total=2)
    old = await _part(pool, "b1", "o1", age_s=4 * 86400)
    legacy = await _part(pool, "b1", "l1", kannel_dlr=None)
    moved = await _part(pool, "b1", "h1")
    await pool.execute("WITH m AS (DELETE FROM outbound WHERE id=$1 RETURNING *) "
                       "INSERT INTO outbound_history SELECT * FROM m", moved)
    final = await _part(pool, "b1", "f1")  # its part already has a final receipt
    await pool.execute("UPDATE outbound_part SET status='delivered' WHERE outbound_id=$1", final)
    await pool.execute("UPDATE outbound SET status='delivered' WHERE id=$1", final)
    waiting = await _part(pool, "b1", "w1")
    await pool.execute("INSERT INTO receipts (connector, smsc_id, stat, state, final)"
                       " VALUES ('b1', 'w1', 'ENROUTE', 'enroute', false)")
    batch = [_rcpt("a1", "p1"), _rcpt("a2", "s1"), _rcpt("b1", "e1", "expired", err="027"),
             _rcpt("b1", "i1", "enroute", final=False, err="005"),
             _rcpt("b1", "m1", "undeliverable"), _rcpt("b1", "m1", "enroute", final=False),
             _rcpt("b1", "x1"), _rcpt("b1", "nopart"), _rcpt("b1", "j1"), _rcpt("b1", "k1"),
             _rcpt("b1", "t1"), _rcpt("b1", "o1"), _rcpt("b1", "l1"), _rcpt("b1", "h1"),
             _rcpt("b1", "w1"), _rcpt("b1", "f1", "undeliverable")]
    stored: list[ReceiptStored] = []
    woken: list[str] = []

    def heard(*args: Any) -> None:
        woken.append(args[1])

    async with pool.acquire() as listen:
        await listen.add_listener(CHANNELS["receipts"], heard)
        async with pool.acquire() as conn:
            ids = await matching.ReceiptStore(lambda: SETTINGS, on_stored=stored.append)(
                conn, batch)
        await wait_until(lambda: woken, timeout=5)
        await asyncio.sleep(0.1)
        await listen.remove_listener(CHANNELS["receipts"], heard)
    assert len(woken) == 1
    rows = await pool.fetch("SELECT r.id, r.smsc_id, r.status, r.attempts, r.message_state,"
                            " r.network_error, p.outbound_id FROM receipts r"
                            " LEFT JOIN outbound_part p ON p.id = r.outbound_part_id"
                            " WHERE r.id = ANY($1) ORDER BY r.id", ids)
    assert [r["smsc_id"] for r in rows] == [r.smsc_id for r in batch]  # ids in input order
    assert rows[0]["message_state"] == 2 and rows[0]["network_error"] == b"\x03\x00\x01"
    got = {(r["smsc_id"], r["status"], r["outbound_id"]) for r in rows}
    matched_now = {("p1", plain), ("s1", sibling), ("e1", expired), ("i1", inter),
                   ("m1", multi), ("x1", esme)}
    assert got == {(sid, "matched", mid) for sid, mid in matched_now} | {
        (s, "queued", None) for s in ("nopart", "j1", "k1", "t1", "o1", "l1", "h1", "w1", "f1")}
    assert (stored[0].matched, stored[0].finalized) == (7, 5)
    assert await statuses(pool, [plain, sibling, expired, inter, multi, esme]) == {
        plain: "delivered", sibling: "delivered", expired: "expired", inter: "submitted",
        multi: "undeliverable", esme: "delivered"}
    parts = {r["outbound_id"]: r for r in await pool.fetch("SELECT * FROM outbound_part")}
    assert (parts[inter]["status"], parts[inter]["err"]) == ("submitted", "005")
    assert parts[multi]["status"] == "undeliverable" and parts[multi]["done_at"] is not None
    assert await pool.fetchval("SELECT last_error FROM outbound WHERE id=$1",
                               expired) == "receipt err 027"
    assert await pool.fetchval("SELECT stat FROM esme_deliveries WHERE outbound_id=$1",
                               esme) == "DELIVRD"
    assert await pool.fetchval("SELECT count(*) FROM callbacks") == 0

    # the matcher takes the rest exactly as before (the part older than the window stays)
    async with pool.acquire() as conn:
        res = await matching.match_batch(conn, SETTINGS)
    assert (res.matched, res.retried, res.finalized, res.callbacks) == (8, 2, 5, 2)
    assert await statuses(pool, [json_cb, kannel, two, legacy, moved, waiting, old, final]) == {
        json_cb: "delivered", kannel: "delivered", two: "submitted", legacy: "delivered",
        moved: "delivered", waiting: "delivered", old: "submitted", final: "delivered"}
    cbs = {r["outbound_id"]: r["method"] for r in await pool.fetch("SELECT * FROM callbacks")}
    assert cbs == {json_cb: "POST", kannel: "GET"}


async def test_sender_matches_at_store_and_leaves_the_rest_to_the_matcher(
        db_url: str, pool: asyncpg.Pool) -> None:
    """1. a sender stack as the daemon builds it; the SMSC sends each receipt 0.3 s after the
    submit (the part is written back by then)  2. 8 plain MTs, 2 with a JSON callback_url,
    1 of two parts  3. the plain ones are matched in the statement that stored their receipt
    (never tried by the matcher); the others are matched by the matcher, which queues the
    callbacks; every message ends delivered."""
    async with Simulator(SimConfig(receipt_delay_s=0.3)) as sim:
        plain = await add_mt(pool, 8)
        cb = await add_mt(pool, 2, callback_url="http://127.0.0.1:9/cb")
        long = await add_mt(pool, 1, body="y" * 300)
        async with running(db_url, pool, [connector("c1", sim.port)]) as stack:
            await stack.wait_bound()
            await wait_until(lambda: all_final(pool, plain + cb + long, {"delivered"}),
                             timeout=15)
    rows = await pool.fetch(
        "SELECT p.outbound_id, r.updated_at = r.created_at AS at_store, r.attempts"
        " FROM receipts r JOIN outbound_part p ON p.id = r.outbound_part_id"
        " WHERE r.status = 'matched'")
    assert len(rows) == await pool.fetchval("SELECT count(*) FROM outbound_part") == 12
    assert {r["outbound_id"] for r in rows if r["at_store"]} == set(plain)
    assert all(r["attempts"] == 0 for r in rows)
    assert {r["outbound_id"] for r in await pool.fetch("SELECT outbound_id FROM callbacks")} \
        == set(cb)


class _Counts:
    """An intake observer that records what it is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, ...]] = []

    def mo(self, channel: str, provider: str, outcome: str) -> None:
        self.seen.append(("mo", outcome))

    def receipt(self, connector: str, state: str) -> None:
        self.seen.append(("receipt", connector, state))

    def rejected(self, reason: str) -> None:
        self.seen.append(("rejected", reason))


async def test_handle_many_stores_a_read_and_answers_each_pdu(pool: asyncpg.Pool) -> None:
    """The sender's batch intake (`handle_many`): the receipts and the MO of one read are
    stored (one committer wait for the receipts), each PDU answered ESME_ROK and counted;
    `handle` (the receiver's way, one PDU at a time) stores and counts the same way."""
    from smsgw.shared.domain.intake import DeliverIntake, flush_inbound, flush_receipts
    from smsgw.shared.queue.groupcommit import GroupCommitter
    from smsgw.shared.smpp import pdu as P
    from smsgw.shared.smpp.receipts import format_receipt_text

    now = datetime.now(UTC)
    c = connector("hm1", 2775)

    def receipt(smsc_id: str, stat: str) -> P.DeliverSm:
        text = format_receipt_text(smsc_id, stat, now, now).encode()
        return P.DeliverSm(source_addr="447700900001", destination_addr="SMSGW", esm_class=4,
                           short_message=text)

    pdus = [receipt("hm-a", "DELIVRD"), receipt("hm-b", "DELIVRD"), receipt("hm-c", "UNDELIV"),
            P.DeliverSm(source_addr="447700900002", destination_addr="12345",
                        short_message=b"hello from a handset")]
    committers = [GroupCommitter(pool, flush_inbound, name="inbound"),
                  GroupCommitter(pool, flush_receipts, name="receipts", transactional=False)]
    for gc in committers:
        gc.start()
    try:
        counts = _Counts()
        intake = DeliverIntake(inbound=committers[0], receipts=committers[1], observer=counts)
        handler = intake.handler_for(c, batch=True)
        assert await handler.many(pdus) == [0, 0, 0, 0]
        assert sorted(counts.seen) == [("mo", "accepted"), ("receipt", "hm1", "delivered"),
                                       ("receipt", "hm1", "delivered"),
                                       ("receipt", "hm1", "undeliverable")]
        stored = await pool.fetch("SELECT smsc_id, state FROM receipts WHERE connector = 'hm1'"
                                  " ORDER BY smsc_id")
        assert [tuple(r) for r in stored] == [("hm-a", "delivered"), ("hm-b", "delivered"),
                                              ("hm-c", "undeliverable")]
        assert await pool.fetchval("SELECT count(*) FROM inbound WHERE connector = 'hm1'") == 1
        one = DeliverIntake(inbound=committers[0], receipts=committers[1],
                            observer=counts).handler_for(c)  # the receiver's way
        counts.seen.clear()
        assert await one(receipt("hm-d", "DELIVRD")) == 0
        assert counts.seen == [("receipt", "hm1", "delivered")]
    finally:
        for gc in committers:
            await gc.close()
