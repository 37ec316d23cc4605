"""Migration 0024: ANALYZE gathers no statistics for the payload columns no plan reads (the
message text, raw receipts, JSON and binary fields), and still does for the ones plans use."""

from __future__ import annotations

import asyncpg


async def test_analyze_skips_payload_columns_and_keeps_the_planned_ones(
        pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO outbound (from_addr, to_addr, body, meta) SELECT 'Shop',"
            " '+4477009' || lpad(g::text, 5, '0'), 'text ' || g, '{\"k\": 1}'::jsonb"
            " FROM generate_series(1, 500) g")
        await conn.execute(
            "INSERT INTO receipts (connector, smsc_id, raw_id, stat, err, body)"
            " SELECT 'sim', 'id' || g, 'id' || g, 'DELIVRD', '000', 'id:' || g || ' stat:DELIVRD'"
            " FROM generate_series(1, 500) g")
        await conn.execute("ANALYZE outbound; ANALYZE receipts")
        stats = {(r["tablename"], r["attname"]) for r in await conn.fetch(
            "SELECT tablename, attname FROM pg_stats"
            " WHERE tablename IN ('outbound', 'receipts')")}
    assert not stats & {("outbound", "body"), ("outbound", "meta"), ("receipts", "body"),
                        ("receipts", "raw_id"), ("receipts", "stat"), ("receipts", "err")}
    assert {("outbound", "to_addr"), ("outbound", "status"), ("receipts", "smsc_id"),
            ("receipts", "status")} <= stats
