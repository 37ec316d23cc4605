"""Every statement the sender runs PREPAREs on the migrated schema: the `outbound` owner's
(claim, write-back, receipt matching…), the `receipts` and `callbacks` owners', routing's, and
the connector states it follows (`shared.domain.connector_state`)."""

from __future__ import annotations

import asyncpg
import pytest

from smsgw.services.sender import routing
from smsgw.shared.domain import connector_state
from smsgw.shared.queue import callbacks, outbound, receipts

STATEMENTS = {**outbound.STATEMENTS, **receipts.STATEMENTS, **callbacks.STATEMENTS,
              **routing.STATEMENTS, **connector_state.STATEMENTS}


@pytest.mark.parametrize("name", sorted(STATEMENTS))
async def test_query_prepares(name: str, pool: asyncpg.Pool) -> None:
    """PREPARE catches a wrong column or type without any data."""
    async with pool.acquire() as conn:
        await conn.prepare(STATEMENTS[name])
