"""Migrations: applied once, recorded, safe to run concurrently; the schema check refuses
versions that are too old or too new."""

import asyncio

import asyncpg
import pytest

from shared import db
from shared.errors import SchemaVersionError


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
    admin = str(pg_server["url"])
    name = unique("smsgw_mig_")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin.rsplit("/", 1)[0] + "/" + name
    try:
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
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await conn.close()


async def test_check_schema_refuses_old_and_too_new(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await db.check_schema(conn, "test") == db.schema_needed()
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES (9999, 'x')")
        with pytest.raises(SchemaVersionError, match="newer than this release"):
            await db.check_schema(conn, "test")
        await conn.execute("DELETE FROM schema_migrations")
        with pytest.raises(SchemaVersionError, match="run `smsgw migrate`"):
            await db.check_schema(conn, "test")


async def test_every_daemons_warm_statements_prepare_on_the_schema(pool: asyncpg.Pool) -> None:
    """Each statement a daemon prepares on every new pool connection is valid SQL for the
    current schema (the pool's init skips one that fails, so a stale entry would go unseen)."""
    from services.processor.app import ProcessorDaemon
    from services.receiver.app import ReceiverDaemon
    from services.sender.app import SenderDaemon

    async with pool.acquire() as conn:
        for daemon in (ReceiverDaemon, ProcessorDaemon, SenderDaemon):
            assert daemon.warm_statements, daemon.name
            for sql in daemon.warm_statements:
                await conn.prepare(sql)


async def test_pool_warming_tolerates_an_unmigrated_database(pg_server: dict, unique) -> None:
    """A pool whose warm statements name tables that do not exist yet still opens (the
    daemon's schema check then says what is wrong) and runs queries."""
    admin = str(pg_server["url"])
    name = unique("smsgw_warm_")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.rsplit("/", 1)[0] + "/" + name
        pool = await db.create_pool(url, min_size=2, max_size=2,
                                    warm=["SELECT 1", "SELECT id FROM outbound"])
        try:
            assert await pool.fetchval("SELECT 41 + 1") == 42
        finally:
            await pool.close()
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()
