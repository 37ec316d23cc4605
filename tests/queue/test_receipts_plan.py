"""The Kannel dlr-url lookup after a matching batch (`receipts.kannel_dlrs`) stays on primary
keys whatever the planner believes of the message filter: with plain joins it estimated that
filter at one row and hashed the whole receipts and outbound_part tables at every call (seen in
`smsgw bench sendsms --status-callback`: 10-30 ms per batch on 10,000 rows, growing with the
tables)."""

from __future__ import annotations

import json

import asyncpg

from smsgw.shared.queue.receipts import STATEMENTS

ROWS = 5000


def _scans(plan: dict) -> list[tuple[str, str]]:
    """(node type, relation) of every node of an EXPLAIN (FORMAT JSON) plan."""
    out = [(plan["Node Type"], plan.get("Relation Name", ""))]
    for child in plan.get("Plans", []):
        out += _scans(child)
    return out


async def test_kannel_dlr_lookup_reads_by_primary_key(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (from_addr, to_addr, status, callback_url, dlr_mask, meta)"
            " SELECT 'Shop', '+4477009' || lpad(g::text, 5, '0'), 'delivered',"
            " 'http://app.example/dlr?type=%d', 3, '{\"callback_style\": \"kannel\"}'::jsonb"
            " FROM generate_series(1, $1) g", ROWS)
        await conn.execute(
            "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
            " status) SELECT id, 1, 1, 'sim', 'id' || id, 'delivered' FROM outbound", )
        await conn.execute(
            "INSERT INTO receipts (connector, smsc_id, outbound_part_id, status)"
            " SELECT 'sim', smsc_id, id, 'matched' FROM outbound_part")
        await conn.execute("ANALYZE outbound; ANALYZE outbound_part; ANALYZE receipts")
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM receipts ORDER BY id LIMIT 800")]
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        explained = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + STATEMENTS["receipts.kannel_dlrs"], ids)
        plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
        await conn.execute("RESET plan_cache_mode")
        rows = await conn.fetch(STATEMENTS["receipts.kannel_dlrs"], ids)
    scans = _scans(plan)
    assert ("Seq Scan", "receipts") not in scans and ("Seq Scan", "outbound_part") not in scans, \
        scans
    assert ("Index Scan", "receipts") in scans and ("Index Scan", "outbound_part") in scans
    assert [r["receipt_id"] for r in rows] == ids  # every one, in the order given


async def test_receipt_store_stays_on_indexes_whatever_the_statistics(
        pool: asyncpg.Pool) -> None:
    """`receipts.store` runs as a cached generic plan, often first planned while the tables
    are small. Planned so, its joins became hash joins over whole-table scans of
    outbound_part and receipts, kept while the tables grew (~90 µs a receipt in `smsgw bench
    mt`); and its question "is an earlier receipt of this SMSC id still queued", asked with
    `status = 'queued'`, walked receipts_claim_idx (every queued receipt, per receipt). With
    small analysed tables and many queued receipts since, every lookup must stay a probe of
    an index per receipt."""
    async with pool.acquire() as conn:
        await _small_analysed_then_queued(conn, matched=1500)
        doc = json.dumps([{"connector": "sim", "smsc_id": f"p{i}", "state": "delivered",
                           "final": True, "siblings": ["sim"], "n": i} for i in range(1, 41)])
        explained = await conn.fetchval(
            "EXPLAIN (FORMAT JSON) " + STATEMENTS["receipts.store"], doc, "smsgw_receipts",
            3600.0)
        await conn.execute("RESET plan_cache_mode")
    plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]
    scans = _scans(plan)
    tables = {"outbound", "outbound_part", "receipts"}
    assert not [(n, r) for n, r in scans if r in tables and n != "Index Scan"
                and n != "ModifyTable"], scans
    names = _index_names(plan)
    assert "receipts_unmatched_smsc_idx" in names and "receipts_claim_idx" not in names
    assert {"outbound_part_smsc_idx", "outbound_part_pkey", "outbound_pkey"} <= names


async def _small_analysed_then_queued(conn: asyncpg.Connection, *, matched: int) -> None:
    """3,000 written-back one-part messages, `matched` matched receipts, statistics taken,
    then ROWS receipts queued (the planner believes them absent); generic plans from here."""
    await conn.execute(
        "INSERT INTO outbound (from_addr, to_addr, body, status, parts_total, connector)"
        " SELECT 'X', '+4477', 'hi', 'submitted', 1, 'sim' FROM generate_series(1, 3000)")
    await conn.execute(
        "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
        " status, kannel_dlr) SELECT id, 1, 1, 'sim', 'p' || id, 'submitted', false"
        " FROM outbound")
    await conn.execute(
        "INSERT INTO receipts (connector, smsc_id, status, outbound_part_id)"
        " SELECT 'sim', 'm' || g, 'matched', g FROM generate_series(1, $1::int) g", matched)
    await conn.execute("ANALYZE outbound; ANALYZE outbound_part; ANALYZE receipts")
    await conn.execute(  # queued since the statistics were taken
        "INSERT INTO receipts (connector, smsc_id) SELECT 'sim', 'q' || g"
        " FROM generate_series(1, $1) g", ROWS)
    await conn.execute("SET plan_cache_mode = force_generic_plan")


def _index_names(plan: dict) -> set[str]:
    names = {plan["Index Name"]} if "Index Name" in plan else set()
    for child in plan.get("Plans", []):
        names |= _index_names(child)
    return names


async def test_write_back_receipt_lookups_stay_on_indexes(pool: asyncpg.Pool) -> None:
    """The write-back's two receipt statements (`receipts.waiting`: the receipts that raced
    their part; `receipts.matched_to_parts`) run as generic plans on the sender's pool: with
    small analysed tables and many queued receipts since, each stays a probe of an index per
    SMSC id / receipt — receipts_unmatched_smsc_idx, never receipts_claim_idx (every queued
    receipt) nor a scan."""
    async with pool.acquire() as conn:
        await _small_analysed_then_queued(conn, matched=0)
        plans = []
        async with conn.transaction():
            for name, args in (("receipts.waiting", ([f"q{i}" for i in range(1, 301)],)),
                               ("receipts.matched_to_parts", (list(range(1, 301)),
                                                              list(range(1, 301))))):
                explained = await conn.fetchval("EXPLAIN (FORMAT JSON) " + STATEMENTS[name],
                                                *args)
                plans.append((json.loads(explained) if isinstance(explained, str)
                              else explained)[0]["Plan"])
        await conn.execute("RESET plan_cache_mode")
    for plan in plans:
        scans = _scans(plan)
        assert not [(n, r) for n, r in scans if r in {"outbound_part", "receipts"}
                    and n not in ("Index Scan", "Tid Scan", "ModifyTable")], scans
        assert "receipts_claim_idx" not in _index_names(plan)
    assert "receipts_unmatched_smsc_idx" in _index_names(plans[0])
    assert {"receipts_pkey", "outbound_part_outbound_id_part_no_key"} == _index_names(plans[1])
