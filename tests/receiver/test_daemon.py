"""The real `smsgw receiver` process: killed with SIGKILL under load, it has lost nothing it
acknowledged; stopped with SIGTERM, it drains and exits 0."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import orjson
import pytest

from .. import harness
from ..harness import CLI_MODULE, ROOT, clean_env, free_port
from .conftest import SERVER_SECRET, AccountFactory

MSG = {"to": "+447700900123", "from": "MyBrand", "text": "load"}


async def start_daemon(db_url: str, port: int, **extra_env: str) -> asyncio.subprocess.Process:
    """Start `smsgw receiver` on `port` and wait for its `daemon_ready` log event."""
    env = clean_env(**{
        "SMSGW_DATABASE_URL": db_url, "SMSGW_RECEIVER__HTTP_PORT": str(port),
        "SMSGW_RECEIVER__METRICS_PORT": "0", "SMSGW_RECEIVER__DEFAULT_COUNTRY": "GB",
        "SMSGW_SECURITY__SERVER_SECRET_ENV": "RECEIVER_TEST_SECRET",
        "RECEIVER_TEST_SECRET": SERVER_SECRET.decode(), **extra_env})
    daemon = await harness.start_daemon("receiver", env=env, cwd=ROOT, python=CLI_MODULE,
                                        stderr="stdout", port=port, wait_s=30)
    await daemon.ready()
    return daemon.proc


@pytest.fixture
async def daemon_port() -> AsyncIterator[int]:
    yield free_port()


async def _client(url: str, key: str, acked: list[int], stop: asyncio.Event,
                  enough: asyncio.Event, threshold: int) -> None:
    async with aiohttp.ClientSession() as http:
        while not stop.is_set():
            try:
                async with http.post(url, json=MSG,
                                     headers={"Authorization": f"Bearer {key}"}) as resp:
                    body = await resp.read()
                    if resp.status == 202:
                        acked.append(orjson.loads(body)["id"])
                        if len(acked) >= threshold:
                            enough.set()
            except (aiohttp.ClientError, OSError):
                return  # the server died: anything not answered was not acknowledged


async def test_sigkill_under_load_loses_no_acknowledged_message(
        db_url: str, pool: asyncpg.Pool, account_factory: AccountFactory,
        daemon_port: int) -> None:
    """1. start the real daemon; 32 clients post single messages as fast as they can
    2. after 300 acknowledgements, SIGKILL it mid-load
    3. every acknowledged id is a committed row (rows ≥ acknowledgements)."""
    _, key = await account_factory()
    proc = await start_daemon(db_url, daemon_port)
    acked: list[int] = []
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{daemon_port}/v1/messages"
    enough = asyncio.Event()
    clients = [asyncio.ensure_future(_client(url, key, acked, stop, enough, 300))
               for _ in range(32)]
    try:
        await asyncio.wait_for(enough.wait(), 30)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        await asyncio.gather(*clients)
    finally:
        stop.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stored = {r["id"] for r in await pool.fetch("SELECT id FROM outbound")}
    assert len(acked) >= 300
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged messages lost"
    assert len(stored) >= len(acked)


async def test_sigterm_drains_and_exits_zero(db_url: str, pool: asyncpg.Pool,
                                             account_factory: AccountFactory,
                                             daemon_port: int) -> None:
    """1. start the daemon, submit under load  2. SIGTERM: exit code 0
    3. every acknowledged message is stored."""
    _, key = await account_factory()
    proc = await start_daemon(db_url, daemon_port)
    acked: list[int] = []
    stop = asyncio.Event()
    url = f"http://127.0.0.1:{daemon_port}/v1/messages"
    enough = asyncio.Event()
    clients = [asyncio.ensure_future(_client(url, key, acked, stop, enough, 50))
               for _ in range(8)]
    try:
        await asyncio.wait_for(enough.wait(), 30)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        stop.set()
        await asyncio.gather(*clients)
    finally:
        stop.set()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stored = {r["id"] for r in await pool.fetch("SELECT id FROM outbound")}
    assert set(acked) <= stored


async def test_daemon_binds_rx_and_stores_mo(db_url: str, pool: asyncpg.Pool,
                                             daemon_port: int) -> None:
    """1. the daemon with a `bind_mode = "receiver"` connector binds to the simulator
    2. an MO deliver_sm is answered ESME_ROK and stored; 3. SIGTERM unbinds, exit 0."""
    from smsgw.services.smsc_sim.server import Simulator

    async with Simulator() as sim:
        connectors = orjson.dumps([{
            "name": "rx1", "port": sim.port, "system_id": "smsgw", "bind_mode": "receiver",
            "binds": 1, "default_country": "GB", "enquire_link_s": 0}]).decode()
        proc = await start_daemon(db_url, daemon_port, SMSGW_CONNECTORS=connectors)
        try:
            async with asyncio.timeout(20):
                while sim.bind_count < 1:  # noqa: ASYNC110 - another process binds; no event to wait on
                    await asyncio.sleep(0.05)
            assert await sim.send_mo("hello", source_addr="447700900123") == 0
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
            assert sim.counters.unbinds == 1
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    row = await pool.fetchrow("SELECT * FROM inbound")
    assert row["from_addr"] == "+447700900123" and row["connector"] == "rx1"
