"""Every named query of the sender and of receipt matching PREPAREs on the migrated schema."""

from __future__ import annotations

import asyncpg
import pytest

from smsgw.services.sender import queries
from smsgw.shared.domain import dlr

ALL = {**queries.ALL, **{f"dlr.{k}": v for k, v in dlr.QUERIES.items()}}


@pytest.mark.parametrize("name", sorted(ALL))
async def test_query_prepares(name: str, pool: asyncpg.Pool) -> None:
    """PREPARE catches a wrong column or type without any data."""
    async with pool.acquire() as conn:
        await conn.prepare(ALL[name])
