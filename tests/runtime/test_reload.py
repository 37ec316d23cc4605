"""SIGHUP reloads what the daemons say it reloads, on real processes: the sender's routes (the
next MT goes to the newly routed SMSC on binds that stay up) and the receiver's admission
watermarks (the MT API starts refusing, then accepting again, without a restart).

Each reload is awaited through the notify socket (RELOADING=1, then READY=1) and the daemon's
own log event, never a fixed sleep; each change is shown in both directions.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smsgw.services.admin.accounts import create_account
from smsgw.services.smsc_sim.server import Simulator
from smsgw.shared.queue import store

from .test_daemons import daemon_env

SECRET = "test-server-secret"  # daemon_env's server secret


def _sender_config(path: Path, ports: dict[str, int], route_to: str) -> None:
    lines = []
    for name, port in ports.items():
        lines += ["[[connectors]]", f'name = "{name}"', 'host = "127.0.0.1"', f"port = {port}",
                  'system_id = "smsgw"', "binds = 1", "window = 5", "enquire_link_s = 0",
                  "reconnect_min_s = 0.1", "reconnect_max_s = 0.5", ""]
    lines += ["[[routes]]", 'prefix = ""', f'connectors = ["{route_to}"]', "",
              "[sender]", "poll_s = 0.2", "bind_grace_s = 0.1", "flush_s = 0.02"]
    path.write_text("\n".join(lines) + "\n")


async def _status(pool: asyncpg.Pool, msg_id: int) -> str:
    return str(await pool.fetchval(
        "SELECT status FROM outbound WHERE id = $1 UNION ALL "
        "SELECT status FROM outbound_history WHERE id = $1", msg_id))


async def _send_one(pool: asyncpg.Pool, body: str) -> int:
    [res] = await store.enqueue(pool, "outbound", [
        {"from_addr": "TEST", "to_addr": "+447700900123", "body": body, "source": "api"}])
    return res.id


async def _until(pred: Any, within_s: float = 20.0) -> None:
    """Poll `pred` (the database or the API: no event to wait on) until true, within a bound."""
    async with asyncio.timeout(within_s):
        while not await pred():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_sighup_reroutes_the_sender_without_rebinding(
        db_url: str, pool: asyncpg.Pool, spawn: Any, notify_socket: Any,
        tmp_path: Path) -> None:
    """1. Two SMSCs, A and B, each bound once; the default route names A: an MT goes to A.
    2. The file routes everything to B; SIGHUP: RELOADING=1, READY=1, `sender_reloaded`.
    3. The next MT goes to B, not A. 4. Back to A with another SIGHUP: the third MT goes to A.
    Neither SMSC ever saw a second bind or an unbind."""
    async with Simulator() as sim_a, Simulator() as sim_b:
        cfg = tmp_path / "smsgw.toml"
        ports = {"a": sim_a.port, "b": sim_b.port}
        _sender_config(cfg, ports, "a")
        proc = await spawn("sender", "--config", str(cfg),
                           env=daemon_env("sender", db_url, notify_socket))
        await notify_socket.expect("READY")
        sent = []
        for step, target in enumerate(("a", "b", "a")):
            if step:
                _sender_config(cfg, ports, target)
                mark = len(proc.events)
                proc.signal(signal.SIGHUP)
                await notify_socket.expect("RELOADING")
                await notify_socket.expect("READY")
                await proc.wait_event(lambda e: e.get("event") == "sender_reloaded", start=mark)
            body = f"mt {step} via {target}"
            msg_id = await _send_one(pool, body)
            await _until(lambda m=msg_id: _has_status(pool, m, "submitted"))
            sent.append((body, target))
        got_a = [r.pdu.short_message.decode() for r in sim_a.submits]
        got_b = [r.pdu.short_message.decode() for r in sim_b.submits]
        assert got_a == [b for b, t in sent if t == "a"] and got_b == [b for b, t in sent
                                                                       if t == "b"]
        for sim in (sim_a, sim_b):
            assert (sim.counters.binds, sim.counters.unbinds) == (1, 0)
        proc.signal(signal.SIGTERM)
        assert await proc.exit_code() == 0


async def _has_status(pool: asyncpg.Pool, msg_id: int, status: str) -> bool:
    return await _status(pool, msg_id) == status


def _receiver_config(path: Path, high: int) -> None:
    path.write_text("[receiver]\nqueue_stats_s = 0.1\nstats_read_s = 0.1\n"
                    f"outbound_high_watermark = {high}\n")


async def test_sighup_moves_the_receivers_outbound_watermark(
        db_url: str, pool: asyncpg.Pool, spawn: Any, notify_socket: Any,
        tmp_path: Path) -> None:
    """1. 20 MTs are due; the receiver's outbound watermark is 1,000: the API accepts (202).
    2. The file says 5; SIGHUP (RELOADING=1, READY=1): the API refuses with 503 + Retry-After
       (`outbound_watermark`) within a bound, and stores nothing more.
    3. The file says 1,000 again; SIGHUP: the API accepts again. Same process throughout."""
    await store.enqueue(pool, "outbound", [
        {"from_addr": "TEST", "to_addr": "+447700900124", "body": "due", "source": "api"}
        for _ in range(20)])
    async with pool.acquire() as conn:
        _, key = await create_account(conn, SECRET.encode(), "reload-acct")
    cfg = tmp_path / "smsgw.toml"
    _receiver_config(cfg, 1000)
    proc = await spawn("receiver", "--config", str(cfg),
                       env=daemon_env("receiver", db_url, notify_socket))
    await notify_socket.expect("READY")
    url = f"http://127.0.0.1:{await proc.site_port('api')}/v1/messages"
    pid = proc.proc.pid

    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {key}"}) as http:
        async def post() -> tuple[int, dict[str, str], Any]:
            async with http.post(url, json={"to": "+447700900125", "from": "Brand",
                                            "text": "hi"}) as resp:
                return resp.status, dict(resp.headers), await resp.json()

        async def answered(want: int) -> bool:
            return (await post())[0] == want

        await _until(lambda: answered(202))
        for high, want in ((5, 503), (1000, 202)):
            _receiver_config(cfg, high)
            proc.signal(signal.SIGHUP)
            await notify_socket.expect("RELOADING")
            await notify_socket.expect("READY")
            await _until(lambda w=want: answered(w))
            if want == 503:
                before = await pool.fetchval("SELECT count(*) FROM outbound")
                status, headers, body = await post()
                assert status == 503 and "Retry-After" in headers, body
                assert await pool.fetchval("SELECT count(*) FROM outbound") == before
    assert proc.proc.pid == pid and proc.proc.returncode is None
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0
