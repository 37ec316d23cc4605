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


async def test_xid_and_ported_is_current_xid_and_the_ported_routes(pool: asyncpg.Pool) -> None:
    """The claim's one round trip after claiming gives the id `outbound.current_xid` gives
    (what `release_unknown` reads) and the ported numbers' routes, none for the others."""
    async with pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        try:
            await conn.execute("INSERT INTO ported_numbers (number, connectors) "
                               "VALUES ('+447700900777', ARRAY['b', 'a'])")
            xid, ported = await routing.xid_and_ported(conn, ["+447700900777", "+447700900778"])
            assert xid == await outbound.current_xid(conn)
            assert ported == {"+447700900777": ["b", "a"]}
            assert await routing.xid_and_ported(conn, ["+447700900778"]) == (xid, {})
        finally:
            await tx.rollback()
