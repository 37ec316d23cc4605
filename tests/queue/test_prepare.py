"""Every query of the queue core PREPAREs against the migrated schema (column typos fail here)."""

from __future__ import annotations

import dataclasses

import asyncpg

from smsgw.shared.queue import store


async def test_every_query_prepares(pool: asyncpg.Pool) -> None:
    """1. Collect every (table, variant) SQL the store can run.
    2. PREPARE each on the migrated test database; any error names the query."""
    queries = store.all_queries()
    assert len(queries) > 60
    failures = []
    async with pool.acquire() as conn:
        for label, sql in queries:
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
