"""Every statement of the queue core and of each queue table's owner PREPAREs against the
migrated schema (column typos fail here); records and status enums match the schema."""

from __future__ import annotations

import dataclasses
import re

import asyncpg

from smsgw.shared.queue import (
    callbacks,
    esme_deliveries,
    inbound,
    mo_parts,
    outbound,
    receipts,
    report_requests,
    store,
)
from smsgw.shared.queue.records import (
    CallbackStatus,
    EsmeDeliveryStatus,
    InboundStatus,
    MoPartStatus,
    OutboundStatus,
    PartStatus,
    ReceiptStatus,
    ReportStatus,
)

OWNERS = (store, outbound, inbound, receipts, callbacks, mo_parts, esme_deliveries,
          report_requests)


async def test_every_query_prepares(pool: asyncpg.Pool) -> None:
    """1. Collect every (table, variant) SQL the queue core can run and every statement of
       each table's owner (one registry, `STATEMENTS`, per module; labels never collide).
    2. PREPARE each on the migrated test database; any error names the query."""
    queries: dict[str, str] = {}
    for owner in OWNERS:
        assert not set(owner.STATEMENTS) & set(queries), owner.__name__
        queries |= owner.STATEMENTS
    assert len(queries) > 80
    failures = []
    async with pool.acquire() as conn:
        for label, sql in queries.items():
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                failures.append(f"{label}: {exc}")
    assert not failures, "\n".join(failures)


async def test_records_and_history_match_the_schema(pool: asyncpg.Pool) -> None:
    """1. Each queue table's columns (after every migration) are exactly its record's fields,
       and the enqueue whitelist names only real columns.
    2. Each history table has the same columns in the same order as its hot table, so the
       retention move's `INSERT INTO <table>_history SELECT * FROM moved` stays valid."""
    async def columns(table: str) -> list[str]:
        rows = await pool.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
            "AND table_schema = current_schema() ORDER BY ordinal_position", table)
        return [r[0] for r in rows]

    for table, spec in store.TABLES.items():
        cols = await columns(table)
        fields = [f.name for f in dataclasses.fields(spec.record) if f.name != "reclaimed"]
        assert sorted(cols) == sorted(fields), table
        assert set(spec.columns) <= set(cols) - {"id"}, table
    for table, history in store.HISTORY_TABLES.items():
        assert await columns(history) == await columns(table), history


STATUS_ENUMS = {"inbound": InboundStatus, "outbound": OutboundStatus, "outbound_part": PartStatus,
                "receipts": ReceiptStatus, "callbacks": CallbackStatus, "mo_parts": MoPartStatus,
                "esme_deliveries": EsmeDeliveryStatus, "report_requests": ReportStatus}


async def test_status_enums_match_the_check_constraints(pool: asyncpg.Pool) -> None:
    """1. Read each queue table's CHECK constraint on `status` from Postgres (pg_constraint,
       after every migration), as the list of values it allows.
    2. Its StrEnum has exactly those values: none the database would refuse, none missing.
    3. The queue core's view of each table (statuses, pending, terminal) stays inside it."""
    for table, enum in STATUS_ENUMS.items():
        rows = await pool.fetch(
            "SELECT pg_get_constraintdef(c.oid) AS def FROM pg_constraint c"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attname = 'status'"
            " WHERE c.conrelid = to_regclass($1) AND c.contype = 'c'"
            "   AND c.conkey = ARRAY[a.attnum]", table)
        assert len(rows) == 1, (table, rows)
        # e.g. CHECK ((status = ANY (ARRAY['queued'::text, 'done'::text])))
        allowed = set(re.findall(r"'([a-z_]+)'::text", rows[0]["def"]))
        assert allowed, rows[0]["def"]
        assert {str(s) for s in enum} == allowed, table
    for table, spec in store.TABLES.items():
        assert set(spec.statuses) == {str(s) for s in STATUS_ENUMS[table]}, table
        assert set(spec.pending) | set(spec.terminal) | {spec.ok} <= set(spec.statuses), table
