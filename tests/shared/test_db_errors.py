"""`CONNECTION_ERRORS` and `DATABASE_ERRORS` (shared/core/db.py), checked against what asyncpg and
a real Postgres actually raise: an unreachable server and a connection killed by the server are
connection errors; a bad statement is a database error but not a connection error."""

from __future__ import annotations

import socket

import asyncpg
import pytest

from smsgw.shared.core import db


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_an_unreachable_server_is_a_connection_error() -> None:
    with pytest.raises(db.CONNECTION_ERRORS):
        await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{_closed_port()}/x", timeout=5)


async def test_a_connection_the_server_ended_is_a_connection_error(db_url: str) -> None:
    victim = await asyncpg.connect(db_url)
    admin = await asyncpg.connect(db_url)
    try:
        pid = victim.get_server_pid()
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(db.CONNECTION_ERRORS):
            await victim.fetchval("SELECT 1")
    finally:
        await admin.close()
        victim.terminate()


async def test_a_bad_statement_is_a_database_error_not_a_connection_error(db_url: str) -> None:
    conn = await asyncpg.connect(db_url)
    try:
        with pytest.raises(db.DATABASE_ERRORS) as caught:
            await conn.fetchval("SELECT * FROM no_such_table")
        assert not isinstance(caught.value, db.CONNECTION_ERRORS)
    finally:
        await conn.close()


def test_database_errors_contain_every_connection_error() -> None:
    assert set(db.CONNECTION_ERRORS) <= set(db.DATABASE_ERRORS)
    assert asyncpg.PostgresError in db.DATABASE_ERRORS
