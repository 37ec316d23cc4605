"""Every smsgw session runs without JIT compilation (shared/core/db.py `_init_connection`):
pooled connections, a pooled connection after the full reset of one that held session state,
and dedicated connections. Postgres's own default is `jit = on`."""

from __future__ import annotations

import asyncpg

from smsgw.shared.core import db


async def test_sessions_run_without_jit(db_url: str) -> None:
    raw = await asyncpg.connect(db_url)
    try:
        assert await raw.fetchval("SHOW jit") == "on"  # the server's default: what is changed
    finally:
        await raw.close()
    pool = await db.create_pool(db_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW jit") == "off"
            db.mark_session_state(conn)
            await conn.execute("SELECT pg_advisory_lock(42)")
        async with pool.acquire() as conn:  # the same connection, after RESET ALL
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                       " AND pid = pg_backend_pid()") == 0
            assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await pool.close()
    conn = await db.connect(db_url)
    try:
        assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await conn.close()
