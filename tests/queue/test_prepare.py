"""Every query of the queue core PREPAREs against the migrated schema (column typos fail here)."""

from __future__ import annotations

import asyncpg

from shared.queue import store


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
