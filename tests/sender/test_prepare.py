"""Every named query of the sender and of receipt matching PREPAREs on the migrated schema."""

from __future__ import annotations

import asyncpg
import pytest

from smsgw.services.sender import queries
from smsgw.shared.queue import callbacks, outbound, receipts

STATEMENTS = {**queries.ALL, **outbound.STATEMENTS, **receipts.STATEMENTS,
              **callbacks.STATEMENTS}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_query_prepares(name: str, pool: asyncpg.Pool) -> None:
    """PREPARE catches a wrong column or type without any data."""
    async with pool.acquire() as conn:
        await conn.prepare(STATEMENTS[name])
