"""Receipts: matched whichever arrives first, multipart, hex/decimal ids, siblings, late."""

from __future__ import annotations

from dataclasses import replace

import asyncpg

from smsgw.services.sender import matching
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.smsc_sim.server import SimConfig, Simulator
from smsgw.shared.domain.kannel import message_uuid
from smsgw.shared.queue import outbound, receipts

from .conftest import add_mt, all_final, connector, running, statuses, wait_until


async def test_receipts_before_responses_and_multipart(db_url: str, pool: asyncpg.Pool) -> None:
    """1. receipts are sent at once, and every submit_sm_resp is delayed 0.3 s, so each
    receipt is stored before its part is recorded  2. 10 single-part and 3 three-part MTs
    3. every message ends delivered, every receipt matched, none orphaned."""
    async with Simulator(SimConfig(receipt_delay_s=0.0)) as sim:
        sim.inject(response_delay_s=0.3)
        ids = await add_mt(pool, 10)
        long_ids = await add_mt(pool, 3, body="y" * 300)
        async with running(db_url, pool, [connector("c1", sim.port)]) as stack:
            await stack.wait_bound()
            await wait_until(lambda: all_final(pool, ids + long_ids, {"delivered"}), timeout=20)
        assert sim.counters.receipts_sent == 16
    counts = await pool.fetch("SELECT status, count(*) FROM receipts GROUP BY 1")
    assert {r["status"]: r["count"] for r in counts} == {"matched": 16}
    early = await pool.fetchval(
        "SELECT count(*) FROM receipts r JOIN outbound_part p ON p.id = r.outbound_part_id "
        "WHERE r.created_at < p.created_at")
    assert early > 0  # the scenario really had receipts before their parts


async def test_mixed_part_states_end_undeliverable(db_url: str, pool: asyncpg.Pool) -> None:
    """1. the SMSC reports DELIVRD or UNDELIV at random  2. 8 three-part MTs  3. a message
    is delivered only when all its parts are; one with mixed finals is undeliverable."""
    async with Simulator(SimConfig(receipt_delay_s=0.0, seed=7,
                                   receipt_stats={"DELIVRD": 0.7, "UNDELIV": 0.3})) as sim:
        ids = await add_mt(pool, 8, body="z" * 300)
        async with running(db_url, pool, [connector("c1", sim.port)]) as stack:
            await stack.wait_bound()
            await wait_until(lambda: all_final(pool, ids, {"delivered", "undeliverable"}))
    rows = await pool.fetch(
        "SELECT o.id, o.status, array_agg(p.status) AS parts FROM outbound o "
        "JOIN outbound_part p ON p.outbound_id = o.id GROUP BY o.id, o.status")
    for r in rows:
        want = "delivered" if set(r["parts"]) == {"delivered"} else "undeliverable"
        assert r["status"] == want, r
    assert {r["status"] for r in rows} == {"delivered", "undeliverable"}  # both cases ran


async def test_hex_submit_ids_decimal_receipts(db_url: str, pool: asyncpg.Pool) -> None:
    """1. the SMSC answers hex ids and reports decimal ids in receipts (Vonage style)
    2. the connector normalises submit ids hex→dec  3. all receipts match."""
    async with Simulator(SimConfig(receipt_delay_s=0.05, id_format="hex",
                                   receipt_id_format="dec", first_id=0xABC00)) as sim:
        ids = await add_mt(pool, 10)
        conn = connector("c1", sim.port, submit_id_mode="hex_to_dec")
        async with running(db_url, pool, [conn]) as stack:
            await stack.wait_bound()
            await wait_until(lambda: all_final(pool, ids, {"delivered"}))
    smsc_ids = {r["smsc_id"] for r in await pool.fetch("SELECT smsc_id FROM outbound_part")}
    assert str(0xABC00) in smsc_ids


async def _seed_part(pool: asyncpg.Pool, connector_name: str, smsc_id: str,
                     status: str = "submitted") -> int:
    (mid,) = await add_mt(pool, 1)
    await pool.execute("UPDATE outbound SET status=$2, parts_total=1, connector=$3 WHERE id=$1",
                       mid, status, connector_name)
    await pool.execute(
        "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id, "
        "status) VALUES ($1, 1, 1, $2, $3, 'submitted')", mid, connector_name, smsc_id)
    return mid


async def _receipt(pool: asyncpg.Pool, connector_name: str, smsc_id: str,
                   state: str = "delivered", final: bool = True) -> None:
    await pool.execute(
        "INSERT INTO receipts (connector, smsc_id, stat, state, final) VALUES ($1,$2,$3,$4,$5)",
        connector_name, smsc_id, state.upper(), state, final)


async def test_sibling_intermediate_and_orphans(pool: asyncpg.Pool) -> None:
    """1. a part on connector a1; its receipt arrives on sibling a2 (same operator) → matched
    2. an intermediate receipt leaves a part submitted  3. a receipt on an unrelated connector
    does not match, retries, and the periodic job orphans it."""
    sib = await _seed_part(pool, "a1", "111")
    inter = await _seed_part(pool, "a1", "222")
    await pool.execute("UPDATE outbound SET callback_url='http://127.0.0.1:9/d?t=%d',"
                       " dlr_mask=7, meta='{\"callback_style\": \"kannel\"}' WHERE id=$1",
                       inter)
    other = await _seed_part(pool, "b1", "333")
    await _receipt(pool, "a2", "111")
    await _receipt(pool, "a1", "222", state="enroute", final=False)
    await _receipt(pool, "c9", "333")
    settings = replace(matching.MatchSettings.from_config([], SenderSettings(receipt_min_age_s=0)),
                       operators={"a1": "opA", "a2": "opA", "b1": "b1", "c9": "c9"})
    async with pool.acquire() as conn:
        res = await matching.match_batch(conn, settings)
        assert (res.matched, res.retried, res.finalized) == (2, 1, 1)
        await conn.execute("UPDATE receipts SET created_at = now() - interval '1 hour'"
                           " WHERE status = 'queued'")
        assert await receipts.orphan(conn, older_than_s=600) == 1
    assert await statuses(pool, [sib, inter, other]) == {
        sib: "delivered", inter: "submitted", other: "submitted"}
    # Kannel mask bit 4 asked for "queued on SMSC": the intermediate receipt reports it
    assert await pool.fetchval("SELECT url FROM callbacks WHERE outbound_id=$1",
                               inter) == "http://127.0.0.1:9/d?t=4"


async def test_receipt_after_retention_move_and_callbacks(pool: asyncpg.Pool) -> None:
    """1. a submitted message with a JSON callback_url and one with a Kannel dlr-url
    (mask 1) are moved to outbound_history  2. their receipts arrive  3. both still match,
    outbound_history shows delivered, and one status callback each is queued."""
    json_id = await _seed_part(pool, "c1", "aaa")
    kannel_id = await _seed_part(pool, "c1", "bbb")
    await pool.execute("UPDATE outbound SET callback_url='http://127.0.0.1:9/cb', client_ref='r1'"
                       " WHERE id=$1", json_id)
    await pool.execute("UPDATE outbound SET callback_url='http://127.0.0.1:9/dlr?s=%d&id=%I',"
                       " dlr_mask=1, meta='{\"callback_style\": \"kannel\"}' WHERE id=$1",
                       kannel_id)
    await pool.execute("WITH m AS (DELETE FROM outbound RETURNING *) "
                       "INSERT INTO outbound_history SELECT * FROM m")
    await _receipt(pool, "c1", "aaa")
    await _receipt(pool, "c1", "bbb")
    async with pool.acquire() as conn:
        res = await matching.match_batch(conn, matching.MatchSettings.from_config(
            [], SenderSettings(receipt_min_age_s=0)))
    assert (res.matched, res.finalized, res.callbacks) == (2, 2, 2)
    assert await statuses(pool, [json_id, kannel_id]) == {json_id: "delivered",
                                                         kannel_id: "delivered"}
    cbs = {r["outbound_id"]: r for r in await pool.fetch("SELECT * FROM callbacks")}
    assert cbs[json_id]["method"] == "POST" and b'"status":"delivered"' in cbs[json_id]["body"]
    assert cbs[kannel_id]["method"] == "GET"
    # Kannel's %I is a UUID; smsgw's is the message id in that form (shared.domain.kannel)
    assert cbs[kannel_id]["url"] == f"http://127.0.0.1:9/dlr?s=1&id={message_uuid(kannel_id)}"


async def test_matching_updates_parts_in_place_and_reports_only_callbacks(
        pool: asyncpg.Pool) -> None:
    """1. 120 one-part messages submitted, their parts written as the write-back writes them
    (one statement, consecutive pages), one message with a JSON callback_url  2. a final
    receipt for each, matched in one transaction  3. (nearly) every part update is HOT
    (migration 0020 leaves room on each page for a second version of its rows: no index
    entries written), all 120 messages are finalised and counted, and only the one that asked
    comes back as a change."""
    ids = await add_mt(pool, 120)
    await pool.execute("UPDATE outbound SET status='submitted', parts_total=1, connector='c1'"
                       " WHERE id = ANY($1)", ids)
    await pool.execute("UPDATE outbound SET callback_url='http://127.0.0.1:9/cb' WHERE id=$1",
                       ids[7])
    await pool.execute(
        "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id, "
        "command_status, status, submitted_at, kannel_dlr) "
        "SELECT u, 1, 1, 'c1', 'id-' || u, 0, 'submitted', now(), false"
        " FROM unnest($1::bigint[]) u", ids)
    await pool.execute(
        "INSERT INTO receipts (connector, smsc_id, stat, state, final, err) "
        "SELECT 'c1', 'id-' || u, 'DELIVRD', 'delivered', true, '000' FROM unnest($1::bigint[]) u",
        ids)
    settings = matching.MatchSettings.from_config([], SenderSettings(receipt_min_age_s=0))
    async with pool.acquire() as conn, conn.transaction():
        row = await receipts.match(conn, limit=500, connectors=[], groups=[],
                                   window_s=settings.window_s,
                                   retry_base_s=settings.retry_base_s,
                                   max_attempts=settings.max_attempts, min_age_s=0)
        assert row.matched == 120
        hot = await conn.fetchval(
            "SELECT pg_stat_get_xact_tuples_hot_updated('outbound_part'::regclass)")
        assert hot >= 114  # nearly all: a page's last row may not fit its bigger version
        finalized, changes = await outbound.finalize(conn, row.finals)
    assert finalized == 120
    assert [(c.outbound_id, c.status, c.callback_url) for c in changes] == [
        (ids[7], "delivered", "http://127.0.0.1:9/cb")]
    assert set((await statuses(pool, ids)).values()) == {"delivered"}
