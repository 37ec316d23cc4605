"""Drain deadline, crashed workers, the second SIGINT, start-up without Postgres, the watchdog.

These use `stub_daemon.py`, a daemon on the real runtime whose worker ignores `stop` or
crashes on purpose, and the real `smsgw` daemons.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smsgw.shared.queue import store
from smsgw.shared.runtime import systemd

from ..harness import clean_env

STUB = [sys.executable, str(Path(__file__).with_name("stub_daemon.py"))]


def env_for(db_url: str, notify: Any, **extra: str) -> dict[str, str]:
    return clean_env(SMSGW_DATABASE_URL=db_url, NOTIFY_SOCKET=notify.address,
                     # the processor and the sender refuse to start without a server secret
                     SMSGW_SECURITY__SERVER_SECRET_ENV="TEST_SERVER_SECRET",
                     TEST_SERVER_SECRET="test-server-secret", **extra)


async def test_drain_deadline_exceeded_exits_1_after_release(
        db_url: str, spawn: Any, notify_socket: Any) -> None:
    """1. a worker that ignores stop; drain_s = 1; 2. SIGTERM: STOPPING=1;
    3. after ~1 s `drain_deadline_exceeded`, release() still runs, exit code 1."""
    env = env_for(db_url, notify_socket, STUB_MODE="stubborn", SMSGW_STUB__DRAIN_S="1",
                  SMSGW_STUB__METRICS_PORT="0")
    proc = await spawn(env=env, python=STUB)
    await notify_socket.expect("READY")
    await proc.named("stubborn_working")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    await notify_socket.expect("STOPPING")
    assert await proc.exit_code() == 1
    assert 1.0 <= time.monotonic() - started < 10
    names = [e["event"] for e in proc.events]
    assert names.index("drain_deadline_exceeded") < names.index("release_ran")


async def test_crashed_worker_is_one_event_with_traceback_and_exit_1(
        db_url: str, spawn: Any, notify_socket: Any) -> None:
    """1. a worker raises after READY=1; 2. the daemon logs ONE `daemon_crashed` event whose
    traceback names the error; 3. release() runs; 4. exit code 1."""
    env = env_for(db_url, notify_socket, STUB_MODE="crash", SMSGW_STUB__METRICS_PORT="0")
    proc = await spawn(env=env, python=STUB)
    await notify_socket.expect("READY")
    assert await proc.exit_code() == 1
    crashed = [e for e in proc.events if e["event"] == "daemon_crashed"]
    assert len(crashed) == 1
    assert "boom: worker failed" in str(crashed[0]["exception"])
    assert any(e["event"] == "release_ran" for e in proc.events)


async def test_second_sigint_exits_at_once(db_url: str, spawn: Any, notify_socket: Any) -> None:
    """1. a worker that ignores stop; drain_s = 60; 2. SIGINT: STOPPING=1, draining;
    3. a second SIGINT: the process exits at once with 130, skipping the drain."""
    env = env_for(db_url, notify_socket, STUB_MODE="stubborn", SMSGW_STUB__DRAIN_S="60",
                  SMSGW_STUB__METRICS_PORT="0")
    proc = await spawn(env=env, python=STUB)
    await notify_socket.expect("READY")
    await proc.named("stubborn_working")
    proc.signal(signal.SIGINT)
    await notify_socket.expect("STOPPING")
    await proc.named("drain_started", signal="SIGINT")
    started = time.monotonic()
    proc.signal(signal.SIGINT)
    assert await proc.exit_code(within_s=10) == 130
    assert time.monotonic() - started < 10  # far below the 60 s drain


async def test_start_without_postgres_retries_and_stops_cleanly(
        spawn: Any, notify_socket: Any) -> None:
    """1. the database URL points at a closed port; 2. the daemon logs retries
    (`database_wait`), says so in STATUS= and extends systemd's start timeout before each
    attempt, and is not READY; 3. SIGTERM during the retries exits 0 at once (nothing to
    drain)."""
    env = env_for("postgresql://postgres@127.0.0.1:9/none", notify_socket,
                  SMSGW_SENDER__METRICS_PORT="0")
    proc = await spawn("sender", env=env)
    await proc.named("database_wait", attempt=2, step="pool")
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(10):
        while not any(m.get("STATUS", "").startswith("waiting for a primary database (pool, ")
                      for m in notify_socket.messages):
            notify_socket.messages.append(systemd.parse_message(
                await loop.sock_recv(notify_socket.sock, 4096)))
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0
    assert not [m for m in notify_socket.messages if m.get("READY")]
    assert [m for m in notify_socket.messages if "EXTEND_TIMEOUT_USEC" in m]


async def test_schema_too_old_exits_1_with_a_clear_message(
        pg_server: dict[str, object], unique: Any, spawn: Any, notify_socket: Any) -> None:
    """An empty (unmigrated) database: `schema_version_mismatch` says to run migrate; exit 1."""
    admin = str(pg_server["url"])
    name = unique("smsgw_rt_empty_")
    conn = await asyncpg.connect(admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.rsplit("/", 1)[0] + "/" + name
        proc = await spawn("processor", env=env_for(url, notify_socket,
                                                    SMSGW_PROCESSOR__METRICS_PORT="0"))
        assert await proc.exit_code() == 1
        event = await proc.named("schema_version_mismatch")
        assert "run `smsgw migrate`" in event["error"]
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_watchdog_pings_and_status(db_url: str, spawn: Any, notify_socket: Any) -> None:
    """WATCHDOG_USEC=400000 (and WATCHDOG_PID unset): WATCHDOG=1 arrives every ~0.2 s;
    STATUS= tells the state."""
    env = env_for(db_url, notify_socket, WATCHDOG_USEC="400000",
                  SMSGW_SENDER__METRICS_PORT="0")
    proc = await spawn("sender", env=env)
    await notify_socket.expect("READY")
    await notify_socket.expect("WATCHDOG")
    await notify_socket.expect("WATCHDOG")
    assert any(m.get("STATUS", "").startswith("ready") for m in notify_socket.messages)
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0



async def test_listener_reconnect_is_counted_and_daemon_keeps_running(
        db_url: str, spawn: Any, notify_socket: Any, pool: asyncpg.Pool) -> None:
    """1. start the processor; 2. terminate its LISTEN backend (pg_terminate_backend);
    3. it logs `listener_reconnected`, counts it in smsgw_listener_reconnects_total, and
    still consumes a NOTIFY-woken row (poll_s 60: only the notification explains it)."""
    env = env_for(db_url, notify_socket, SMSGW_PROCESSOR__METRICS_PORT="0",
                  SMSGW_PROCESSOR__POLL_S="60", SMSGW_PROCESSOR__LOG_LEVEL="debug")
    proc = await spawn("processor", env=env)
    await notify_socket.expect("READY")
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND query LIKE 'LISTEN%'")
    assert killed == 1
    await proc.named("listener_reconnected")
    port = int((await proc.named("http_site_started", site="health"))["port"])
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        assert "smsgw_listener_reconnects_total 1.0" in await resp.text()
    await store.enqueue(pool, "inbound", [{"channel": "http", "provider": "test",
                                           "from_addr": "+447911000001", "to_addr": "1",
                                           "body": "x"}])
    await proc.named("inbound_processed", count=1)
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0


async def test_gc_is_tuned_once_started(db_url: str, spawn: Any, notify_socket: Any) -> None:
    """Once start-up is over, the runtime freezes what it made and raises the young
    generation's threshold (`daemon.GC_THRESHOLDS`; CPython's default is 700): a running
    worker sees both, and the daemon says so in `gc_tuned`."""
    from smsgw.shared.runtime.daemon import GC_THRESHOLDS

    env = env_for(db_url, notify_socket, STUB_MODE="gc", SMSGW_STUB__METRICS_PORT="0")
    proc = await spawn(env=env, python=STUB)
    await notify_socket.expect("READY")
    state = await proc.named("gc_state")
    assert state["thresholds"] == list(GC_THRESHOLDS)
    assert state["frozen"] > 1000  # the modules, config and caches start-up made
    tuned = await proc.named("gc_tuned")
    assert tuned["thresholds"] == list(GC_THRESHOLDS) and tuned["frozen"] > 1000
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0
