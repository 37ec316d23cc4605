"""Migrations: applied once, recorded, safe to run concurrently; the schema check refuses
versions that are too old or too new."""

import asyncio

import asyncpg
import pytest

from smsgw.shared.core import db
from smsgw.shared.core.errors import SchemaVersionError

from ..harness import empty_database


async def test_template_has_every_named_table(pool: asyncpg.Pool) -> None:
    names = {r["tablename"] for r in await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    for table in ("inbound", "outbound", "outbound_part", "receipts", "callbacks", "mo_parts",
                  "dedupe_keys", "events", "accounts", "api_keys", "rules", "suppressions",
                  "campaign_entries", "audit_log", "schema_migrations", "inbound_history",
                  "outbound_history"):
        assert table in names, table


async def test_concurrent_migrate_applies_each_once(pg_server: dict, unique) -> None:
    """1. create an empty database; 2. run migrate() from 4 tasks at once;
    3. every migration is recorded once and exactly one caller applied it."""
    async with empty_database(str(pg_server["url"]), unique("smsgw_mig_")) as url:
        results = await asyncio.gather(*(db.migrate(url) for _ in range(4)))
        applied = [n for r in results for n in r]
        assert sorted(applied) == sorted(m.name for m in db.load_migrations())
        c = await asyncpg.connect(url)
        try:
            assert await db.current_version(c) == db.schema_needed()
            assert await c.fetchval("SELECT count(*) FROM schema_migrations") == len(
                db.load_migrations())
        finally:
            await c.close()


async def test_check_schema_refuses_old_and_too_new(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await db.check_schema(conn, "test") == db.schema_needed()
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'x')")
        with pytest.raises(SchemaVersionError, match="newer than this release"):
            await db.check_schema(conn, "test")
        await conn.execute("DELETE FROM schema_migrations")
        with pytest.raises(SchemaVersionError, match="run `smsgw migrate`"):
            await db.check_schema(conn, "test")


async def test_pool_resets_only_connections_marked_with_session_state(db_url: str) -> None:
    """1. A connection released after a plain query keeps its session as it was (no reset
    round trip: its SET survives). 2. One that took a session advisory lock through
    `store.try_advisory_lock` and was released without unlocking gets asyncpg's full reset:
    the lock is free again for another session and its SET is gone."""
    from smsgw.shared.queue import store

    pool = await db.create_pool(db_url, min_size=1, max_size=1)
    other = await db.connect(db_url)
    try:
        async with pool.acquire() as conn:
            await conn.execute("SET application_name = 'left_alone'")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") == "left_alone"
            assert await store.try_advisory_lock(conn, 424242)
        assert await other.fetchval("SELECT pg_try_advisory_lock(424242)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW application_name") != "left_alone"
    finally:
        await other.close()
        await pool.close()
