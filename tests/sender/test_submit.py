"""Submitting against the simulator: outcomes, window, permanent errors, expiry, send_at."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import quote_plus

import asyncpg

from smsgw.services.smsc_sim.server import Simulator
from smsgw.shared.smpp import pdu as P

from .conftest import add_mt, all_final, connector, running, statuses, wait_until


async def test_messages_are_submitted_and_parts_recorded(db_url: str, pool: asyncpg.Pool,
                                                         sim: Simulator) -> None:
    """1. enqueue 50 single-part and 5 three-part MTs  2. run the sender
    3. every message ends submitted with one part row per part, each with the simulator's id."""
    ids = await add_mt(pool, 50)
    long_ids = await add_mt(pool, 5, body="x" * 400)
    async with running(db_url, pool, [connector("c1", sim.port, window=5)]) as stack:
        await stack.wait_bound()
        await wait_until(lambda: all_final(pool, ids + long_ids, {"submitted"}))
    parts = await pool.fetch("SELECT outbound_id, part_no, smsc_id, status FROM outbound_part")
    assert len(parts) == 50 + 15
    sim_ids = {r.message_id for r in sim.submits}
    assert {p["smsc_id"] for p in parts} == sim_ids
    assert sim.counters.max_pipelined <= 5
    assert len(sim.submits) == 65


def max_in_window(ts: list[float], width: float = 1.0) -> int:
    """Most timestamps inside any half-open window [t, t + width)."""
    ts = sorted(ts)
    best, j = 0, 0
    for i, t in enumerate(ts):
        while ts[j] <= t - width:
            j += 1
        best = max(best, i - j + 1)
    return best


async def test_window_and_tps_are_never_exceeded(db_url: str, pool: asyncpg.Pool,
                                                 sim: Simulator) -> None:
    """1. slow responses (0.2 s) so the window fills; tps 40, burst 0, window 4
    2. 60 MTs  3. the session never had more than 4 outstanding, and the simulator never
    saw more than 40 submits in any second."""
    sim.inject(response_delay_s=0.2)
    ids = await add_mt(pool, 60)
    async with running(db_url, pool, [connector("c1", sim.port, window=4, tps=40, burst=0)]
                       ) as stack:
        await stack.wait_bound()
        await wait_until(lambda: all_final(pool, ids, {"submitted"}), timeout=30)
        client = stack.managers["c1"].sessions()[0].client
        assert 1 <= client.counters.max_outstanding <= 4
    assert 2 <= sim.counters.max_unanswered <= 4  # the SMSC's own view of the window
    assert max_in_window(sim.timestamps()) <= 40


# Kannel's smpp_error_to_string (gw/smsc/smpp_pdu.c) for the codes below
_KANNEL_TEXT = {P.SMPP_ESME_RINVDSTADR: "Invalid Destination Address",
                P.SMPP_ESME_RINVSRCADR: "Invalid Source Address",
                P.SMPP_ESME_RINVMSGLEN: "Message Length is invalid",
                P.SMPP_ESME_RSUBMITFAIL: "Submit failed",
                P.SMPP_ESME_RX_P_APPN: "ESME Receiver Permanent App Error Code"}


async def test_permanent_errors_end_rejected(db_url: str, pool: asyncpg.Pool,
                                             sim: Simulator) -> None:
    """For each permanent status: the next submit gets it, the message ends rejected with the
    status in error_code, and it was submitted exactly once."""
    codes = [P.SMPP_ESME_RINVDSTADR, P.SMPP_ESME_RINVSRCADR, P.SMPP_ESME_RINVMSGLEN,
             P.SMPP_ESME_RSUBMITFAIL, P.SMPP_ESME_RX_P_APPN]
    async with running(db_url, pool, [connector("c1", sim.port, window=1)]) as stack:
        await stack.wait_bound()
        for code in codes:
            sim.inject(error_next=1, error_status=code)
            (mid,) = await add_mt(pool, 1, callback_url="http://127.0.0.1:9/dlr?t=%d&r=%A",
                                  dlr_mask=16 + 8, meta={"callback_style": "kannel"})
            await wait_until(lambda mid=mid: all_final(pool, [mid], {"rejected"}))
            row = await pool.fetchrow("SELECT error_code, attempts FROM outbound WHERE id=$1",
                                      mid)
            assert row["error_code"] == code
            url = await pool.fetchval("SELECT url FROM callbacks WHERE outbound_id=$1", mid)
            # Kannel's NACK: type 16, "NACK/0x%08lx/<smpp_error_to_string>" as the text
            # (gw/smsc/smsc_smpp.c handle_pdu → bb_smscconn_send_failed)
            reply = quote_plus(f"NACK/0x{code:08x}/{_KANNEL_TEXT[code]}", safe="")
            assert url == f"http://127.0.0.1:9/dlr?t=16&r={reply}"
    assert len(sim.submits) == len(codes)


async def test_throttling_storm_slows_but_loses_nothing(db_url: str, pool: asyncpg.Pool,
                                                        sim: Simulator) -> None:
    """1. the simulator throttles half of all submits  2. 40 MTs  3. every one ends
    submitted (none rejected, dead or lost) and the sender saw throttling."""
    sim.inject(throttle_fraction=0.5)
    ids = await add_mt(pool, 40)
    async with running(db_url, pool,
                       [connector("c1", sim.port, window=5, throttle_pause_s=0.05,
                                  throttle_retries=1)],
                       throttle_retry_s=0.1) as stack:
        await stack.wait_bound()
        await wait_until(lambda: all_final(pool, ids, {"submitted"}), timeout=40)
    assert sim.counters.throttled > 0
    assert sim.counters.submit_ok == 40


async def test_expired_and_scheduled(db_url: str, pool: asyncpg.Pool, sim: Simulator) -> None:
    """1. an MT past valid_until, one with send_at 1.5 s ahead, one plain
    2. the expired one ends expired and is never submitted; the scheduled one is submitted
    only after its send_at."""
    now = datetime.now(UTC)
    (expired,) = await add_mt(pool, 1, valid_until=now - timedelta(seconds=1), body="exp")
    (later,) = await add_mt(pool, 1, send_at=now + timedelta(seconds=1.5), body="later")
    (plain,) = await add_mt(pool, 1, body="plain")
    async with running(db_url, pool, [connector("c1", sim.port)]) as stack:
        await stack.wait_bound()
        await wait_until(lambda: all_final(pool, [plain], {"submitted"}))
        assert (await statuses(pool, [expired, later])) == {expired: "expired", later: "queued"}
        await wait_until(lambda: all_final(pool, [later], {"submitted"}), timeout=10)
    texts = [r.pdu.short_message for r in sim.submits]
    assert b"exp" not in texts
    sent_at = await pool.fetchval("SELECT submitted_at FROM outbound WHERE id=$1", later)
    assert sent_at >= now + timedelta(seconds=1.5)


async def test_suppressed_marketing_is_never_submitted(db_url: str, pool: asyncpg.Pool,
                                                       sim: Simulator) -> None:
    """1. +447700900777 is suppressed (STOP), globally
    2. a marketing MT and a transactional MT to it, and a marketing MT to another number
    3. the marketing one ends suppressed and never reaches the SMSC; the others are sent."""
    await pool.execute(
        "INSERT INTO suppressions (number_hash, number, scope, source) "
        "VALUES (sha256(convert_to($1, 'UTF8')), $1, 'global', 'stop')", "+447700900777")
    (mkt,) = await add_mt(pool, 1, to_addr="+447700900777", category="marketing", body="promo",
                          callback_url="http://127.0.0.1:9/status", client_ref="m-1")
    (txn,) = await add_mt(pool, 1, to_addr="+447700900777", body="otp")
    (other,) = await add_mt(pool, 1, to_addr="+447700900778", category="marketing",
                            body="promo2")
    async with running(db_url, pool, [connector("c1", sim.port)]) as stack:
        await stack.wait_bound()
        await wait_until(lambda: all_final(pool, [txn, other], {"submitted"}))
        await wait_until(lambda: all_final(pool, [mkt], {"suppressed"}))
    assert b"promo" not in [r.pdu.short_message for r in sim.submits]
    assert len(sim.submits) == 2
    cb = await pool.fetchrow("SELECT url, method, body FROM callbacks WHERE outbound_id=$1", mkt)
    assert cb["method"] == "POST" and b'"status":"suppressed"' in cb["body"]
    assert b'"client_ref":"m-1"' in cb["body"]


async def test_failover_and_back(db_url: str, pool: asyncpg.Pool) -> None:
    """1. route [primary, backup]; the primary SMSC is down  2. MTs go to the backup
    3. the primary comes up  4. new MTs go to the primary again."""
    from smsgw.services.sender.routing import Route, Router

    async with Simulator() as backup:
        primary = Simulator()
        await primary.start()
        port = primary.port
        await primary.stop()
        conns = [connector("primary", port), connector("backup", backup.port)]
        router = Router([Route("", ("primary", "backup"))], ["primary", "backup"])
        async with running(db_url, pool, conns, routes=router) as stack:
            await wait_until(lambda: stack.managers["backup"].up() == 1)
            ids = await add_mt(pool, 5)
            await wait_until(lambda: all_final(pool, ids, {"submitted"}))
            assert len(backup.submits) == 5
            async with Simulator(port=port) as prim:
                await wait_until(lambda: stack.managers["primary"].up() == 1, timeout=10)
                ids2 = await add_mt(pool, 5)
                await wait_until(lambda: all_final(pool, ids2, {"submitted"}))
                assert len(prim.submits) == 5
        rows = await pool.fetch("SELECT id, connector FROM outbound")
        by_id = {r["id"]: r["connector"] for r in rows}
        assert {by_id[i] for i in ids} == {"backup"}
        assert {by_id[i] for i in ids2} == {"primary"}


async def test_long_message_methods_and_encodings(db_url: str, pool: asyncpg.Pool) -> None:
    """1. connector A splits with SAR TLVs, connector B sends message_payload (the SMSC
    splits)  2. a 300-char GSM text and a 100-char Cyrillic text to each  3. A gets 2 + 2
    SAR parts (UCS-2, data_coding 8, for the Cyrillic one), B one PDU per message; the
    alphanumeric sender goes as TON 5 / NPI 0, the destination without '+' as 1/1."""
    from smsgw.services.sender.routing import Route, Router

    async with Simulator() as a, Simulator() as b:
        conns = [connector("sar", a.port, long_message="sar"),
                 connector("pay", b.port, long_message="payload")]
        router = Router([Route("4477009", ("sar",)), Route("4477008", ("pay",))],
                        ["sar", "pay"])
        ids = [*await add_mt(pool, 1, to_addr="+447700900001", body="g" * 300),
               *await add_mt(pool, 1, to_addr="+447700900002", body="Ж" * 100),
               *await add_mt(pool, 1, to_addr="+447700800001", body="g" * 300),
               *await add_mt(pool, 1, to_addr="+447700800002", body="Ж" * 100)]
        async with running(db_url, pool, conns, routes=router) as stack:
            await stack.wait_bound()
            await wait_until(lambda: all_final(pool, ids, {"submitted"}))
        sar = [r.pdu for r in a.submits]
        assert len(sar) == 4 and all(p.esm_class & 0x40 == 0 for p in sar)
        assert all(any(tag == 0x020C for tag, _ in p.tlvs) for p in sar)  # sar_msg_ref_num
        assert sorted(p.data_coding for p in sar) == [0, 0, 8, 8]
        pay = [r.pdu for r in b.submits]
        assert len(pay) == 2 and all(p.short_message == b"" for p in pay)
        assert all(any(tag == 0x0424 for tag, _ in p.tlvs) for p in pay)  # message_payload
        first = sar[0]
        assert (first.source_addr_ton, first.source_addr_npi, first.source_addr) == (5, 0, "SMSGW")
        assert (first.dest_addr_ton, first.dest_addr_npi) == (1, 1)
        assert first.destination_addr.startswith("4477009")
    parts = await pool.fetch("SELECT outbound_id, count(*) FROM outbound_part GROUP BY 1")
    assert sorted(r["count"] for r in parts) == [1, 1, 2, 2]
