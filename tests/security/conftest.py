"""Fixtures shared by the security regression tests (each helper's prefixed by its area)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..harness import CLI_MODULE, ROOT, DaemonProcess, Spawner, clean_env, free_port

# -- edge: a real `smsgw receiver` process, its log captured ----------------------------------

# Each is a tests/harness.py DaemonProcess: `port` (its API), `lines`/`log` (everything it
# wrote, stdout and stderr), `stop()` (SIGTERM, then the exit code).
SecEdgeStart = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture
async def sec_edge_receiver(db_url: str) -> AsyncIterator[SecEdgeStart]:
    """Start `smsgw receiver` processes on the test database with extra environment; each
    is ready (its `daemon_ready` line seen) when returned, and stopped at the end."""
    spawner = Spawner(ROOT, stderr="stdout", wait_s=60)

    async def start(env: dict[str, str], *, port: int | None = None,
                    ready: bool = True) -> DaemonProcess:
        port = port or free_port()
        full = clean_env(**{
            "SMSGW_DATABASE_URL": db_url, "SMSGW_RECEIVER__HTTP_PORT": str(port),
            "SMSGW_RECEIVER__METRICS_PORT": "0", "SMSGW_RECEIVER__DEFAULT_COUNTRY": "GB",
            "SMSGW_RECEIVER__SMPP_BINDS": "false", **env})
        daemon = await spawner.start("receiver", env=full, python=CLI_MODULE, port=port)
        return await daemon.ready() if ready else daemon

    yield start
    await spawner.close()


# -- mt: an in-process receiver API on a real socket, and accounts (recipients, fairness) ------

SEC_MT_SECRET = b"sec-mt-server-secret"


@dataclass
class SecMtReceiver:
    """One receiver API on 127.0.0.1 (real aiohttp site) and a client session for it."""

    ctx: object  # services.receiver.context.ReceiverContext
    url: str
    http: object  # aiohttp.ClientSession

    async def call(self, method: str, path: str, *, key: str | None = None,
                   **kw: object) -> tuple[int, object]:
        """A request; (status, decoded JSON or text)."""
        headers = dict(kw.pop("headers", None) or {})  # type: ignore[call-overload]
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.url + path,  # type: ignore[attr-defined]
                                     headers=headers, **kw) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


@pytest.fixture
async def sec_mt_receiver(pool: object) -> AsyncIterator[Callable[..., Awaitable[SecMtReceiver]]]:
    """Start receiver APIs over the test pool: `await start(options, connectors=[...])`."""
    import aiohttp
    from aiohttp import web

    from smsgw.services.receiver.context import build_context
    from smsgw.services.receiver.options import ReceiverOptions
    from smsgw.services.receiver.web import create_api_app
    from smsgw.shared.runtime.config import WebhooksSettings

    started: list[tuple[web.AppRunner, object, aiohttp.ClientSession]] = []

    async def start(options: ReceiverOptions | None = None, connectors: tuple[str, ...] = (),
                    clock: Callable[[], float] | None = None) -> SecMtReceiver:
        extra: dict[str, object] = {"connectors": connectors} if connectors else {}
        if clock is not None:
            extra["clock"] = clock
        ctx = build_context(pool, options or ReceiverOptions(default_country="GB"),  # type: ignore[arg-type]
                            WebhooksSettings(), server_secret=SEC_MT_SECRET, **extra)
        runner = web.AppRunner(create_api_app(ctx), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        http = aiohttp.ClientSession()
        started.append((runner, ctx, http))
        return SecMtReceiver(ctx, f"http://127.0.0.1:{runner.addresses[0][1]}", http)

    yield start
    for runner, ctx, http in reversed(started):
        await http.close()
        await runner.cleanup()
        await ctx.close(timeout_s=2)  # type: ignore[attr-defined]


@pytest.fixture
def sec_mt_account(pool: object) -> Callable[..., Awaitable[tuple[int, str]]]:
    """Create an account and its first key as `smsgw accounts create` does: (id, key)."""
    from smsgw.services.admin.accounts import create_account

    async def make(name: str, **kw: object) -> tuple[int, str]:
        async with pool.acquire() as conn:  # type: ignore[attr-defined]
            return await create_account(conn, SEC_MT_SECRET, name, **kw)  # type: ignore[arg-type]
    return make


# -- erase: a real `smsgw sender` process on an in-process SMSC simulator (receipts on) -------

# The server secret as the daemons and admin commands get it (the same as the mt receiver's).
SEC_ERASE_ENV = {"SMSGW_SECURITY__SERVER_SECRET_ENV": "SEC_ERASE_SERVER_SECRET",
                 "SEC_ERASE_SERVER_SECRET": SEC_MT_SECRET.decode()}


def sec_erase_env(db_url: str, **extra: str) -> dict[str, str]:
    """os.environ without SMSGW_*/NOTIFY_* variables, the database and the server secret."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMSGW_", "NOTIFY_"))}
    env.update(SMSGW_DATABASE_URL=db_url, PYTHONPATH=str(ROOT), **SEC_ERASE_ENV, **extra)
    return env


@pytest.fixture
async def sec_erase_sender(db_url: str, tmp_path: Path) -> AsyncIterator[object]:
    """A simulator (receipts after 50 ms) and `smsgw sender` bound to it; yields the
    simulator. The sender is stopped with SIGTERM at the end."""
    from smsgw.services.smsc_sim.server import SimConfig, Simulator

    async with Simulator(SimConfig(receipt_delay_s=0.05)) as sim:
        cfg = tmp_path / "sec_erase_sender.toml"
        cfg.write_text("\n".join([
            "[[connectors]]", 'name = "sim"', 'host = "127.0.0.1"', f"port = {sim.port}",
            'system_id = "smsgw"', "binds = 1", "window = 10", "tps = 500",
            "enquire_link_s = 0", "response_timeout_s = 2", "reconnect_min_s = 0.1",
            "reconnect_max_s = 0.5", "", "[sender]", "metrics_port = 0", "drain_s = 3",
            "poll_s = 0.2", "bind_grace_s = 0.2", "bind_retry_s = 0.3", "bind_check_s = 0.5",
            "flush_s = 0.02"]) + "\n")
        spawner = Spawner(tmp_path, stderr="devnull", wait_s=20)
        sender = await spawner.start("sender", "--config", str(cfg), env=sec_erase_env(db_url),
                                     python=CLI_MODULE)
        try:
            yield sim
        finally:
            with contextlib.suppress(TimeoutError):  # not stopped within 20 s: killed
                await sender.stop()
            await spawner.close()
