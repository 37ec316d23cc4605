"""Factories for the queue tests: rows to enqueue, dedicated connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from smsgw.shared.core import db

Connect = Callable[[], Awaitable[asyncpg.Connection]]


def inbound_row(from_addr: str = "+4915100000001", body: str = "hello",
                **kw: Any) -> dict[str, Any]:
    """One inbound row as the receiver would enqueue it."""
    return {"channel": "http", "provider": "generic", "from_addr": from_addr, "to_addr": "12345",
            "body": body, **kw}


def callback_row(url: str = "http://127.0.0.1:9/cb", **kw: Any) -> dict[str, Any]:
    """One callback row (the generic lease claims' table: outbound's queue has its own
    statements, shared/queue/outbound.py)."""
    return {"kind": "mo", "url": url, **kw}


def outbound_row(to_addr: str = "+4915100000002", body: str = "hi", **kw: Any) -> dict[str, Any]:
    """One outbound row as the API would enqueue it."""
    return {"from_addr": "SMSGW", "to_addr": to_addr, "body": body, **kw}


@pytest.fixture
async def connect(db_url: str) -> AsyncIterator[Connect]:
    """Open dedicated connections (closed or terminated by the test, or at teardown)."""
    opened: list[asyncpg.Connection] = []

    async def open_one() -> asyncpg.Connection:
        conn = await db.connect(db_url)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        if not conn.is_closed():
            await conn.close()
