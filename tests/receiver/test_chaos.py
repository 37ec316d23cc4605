"""Postgres stopped under the receiver: HTTP answers 503 + Retry-After, SMPP a transient status,
and both recover without a restart when Postgres returns. Needs the embedded test cluster
(run with SMSGW_TEST_DATABASE_URL unset)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from smsgw.services.smsc_sim.server import Simulator
from smsgw.shared.core.embedded_pg import EmbeddedPostgres
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.session import BindMode, Client

from .conftest import AccountFactory, ReceiverFactory

MSG = {"to": "+447700900123", "from": "MyBrand", "text": "hi"}
pytestmark = pytest.mark.chaos


async def test_postgres_down_then_back(pg_cluster: EmbeddedPostgres,
                                       receiver_factory: ReceiverFactory,
                                       account_factory: AccountFactory,
                                       pool: asyncpg.Pool) -> None:
    """1. a receiver API and an rx bind (the shared intake as its handler) are up; both store
    2. Postgres stops: POST → 503 with Retry-After; deliver_sm → the connector's transient
       status (0x64); nothing is acknowledged
    3. Postgres starts again: both store again, same processes, no restart."""
    receiver = await receiver_factory()
    _, key = await account_factory()
    async with Simulator() as sim:
        conn = ConnectorSettings(name="rx1", port=sim.port, system_id="smsgw",
                                 bind_mode="receiver", default_country="GB", enquire_link_s=0)
        client = Client(conn.session_config(bind_mode=BindMode.RECEIVER),
                        receiver.ctx.intake.handler_for(conn), backoff_min_s=0.05,
                        backoff_max_s=0.2)
        client.start()
        try:
            assert await client.wait_up(10)
            assert (await receiver.post("/v1/messages", key=key, json=MSG))[0] == 202
            assert await sim.send_mo("one") == P.SMPP_ESME_ROK
            pg_cluster.stop(mode="fast")
            try:
                status, body = await receiver.post("/v1/messages", key=key, json=MSG)
                assert status == 503 and body["reason"] == "database_unavailable"
                assert int(receiver.last_headers["Retry-After"]) >= 1
                assert await sim.send_mo("two") == conn.transient_mo_status == 0x64
            finally:
                pg_cluster.start()
            status = await _retry_until_ok(
                lambda: receiver.post("/v1/messages", key=key, json=MSG))
            assert status == 202
            assert await _retry_until_ok(lambda: sim.send_mo("three"), ok=0) == 0
        finally:
            await client.close(2)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 2
    assert [r["body"] for r in await pool.fetch("SELECT body FROM inbound ORDER BY id")] == [
        "one", "three"]


async def _retry_until_ok(call, ok: int = 202) -> int:  # type: ignore[no-untyped-def]
    """The first attempts after the restart may still find dead pooled connections."""
    status = -1
    for _ in range(50):
        result = await call()
        status = result[0] if isinstance(result, tuple) else result
        if status == ok:
            return status
        await asyncio.sleep(0.1)
    return status
