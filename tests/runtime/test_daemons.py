"""The daemon contract at process level: READY, reload, drain with leases, bad config -> 78.

Each test starts real `smsgw <daemon>` processes against a real migrated database, with
NOTIFY_SOCKET pointing at a test socket (systemd is not needed), on port 0 everywhere.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from smsgw.shared.queue import store
from smsgw.shared.runtime import lifecycle

from ..harness import NotifySocket, clean_env

# (`notify_socket` and `spawn` are fixtures of tests/runtime/conftest.py.)

DAEMONS = ("receiver", "processor", "sender")


def daemon_env(daemon: str, db_url: str, notify: NotifySocket, **extra: str) -> dict[str, str]:
    upper = daemon.upper()
    env = clean_env(SMSGW_DATABASE_URL=db_url, NOTIFY_SOCKET=notify.address,
                    **{f"SMSGW_{upper}__METRICS_PORT": "0", f"SMSGW_{upper}__DRAIN_S": "5"},
                    # the processor and the sender refuse to start without a server secret
                    SMSGW_SECURITY__SERVER_SECRET_ENV="TEST_SERVER_SECRET",
                    TEST_SERVER_SECRET="test-server-secret")
    if daemon == "receiver":
        env["SMSGW_RECEIVER__HTTP_PORT"] = "0"
    env.update(extra)
    return env


async def http_get(port: int, path: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}{path}") as r:
        return r.status, await r.text()


@pytest.mark.parametrize("daemon", DAEMONS)
async def test_daemon_ready_serves_health_and_stops(daemon: str, db_url: str, spawn: Any,
                                                    notify_socket: NotifySocket) -> None:
    """1. start the daemon; 2. READY=1 arrives; 3. /readyz (database + listener) is 200,
    /healthz 200, /metrics has build info and the queue snapshot gauges; 4. SIGTERM ->
    STOPPING=1 and exit 0."""
    proc = await spawn(daemon, env=daemon_env(daemon, db_url, notify_socket))
    await notify_socket.expect("READY")
    port = await proc.site_port("health")
    status, body = await http_get(port, "/readyz")
    assert status == 200, body
    assert '"database": true' in body
    assert (await http_get(port, "/healthz"))[0] == 200
    _, metrics = await http_get(port, "/metrics")
    assert f'smsgw_build_info{{daemon="{daemon}"' in metrics
    assert "process_open_fds" in metrics
    if daemon == "receiver":
        assert (await http_get(await proc.site_port("api"), "/v1/ping"))[0] == 200
    proc.signal(signal.SIGTERM)
    await notify_socket.expect("STOPPING")
    assert await proc.exit_code() == 0
    assert (await proc.named("drained"))["event"] == "drained"


async def test_sighup_reload_applies_log_level_and_survives_broken_file(
        db_url: str, spawn: Any, notify_socket: NotifySocket, tmp_path: Path) -> None:
    """1. start the processor at log level info: no debug lines;
    2. change the file to debug (and a restart-only key), SIGHUP: RELOADING=1 with
       MONOTONIC_USEC in one datagram, then READY=1, `config_reloaded`, a warning naming the
       restart-only key, and debug lines start to appear;
    3. break the file, SIGHUP: RELOADING=1, READY=1, `config_reload_failed` naming the bad
       key; the old config (debug) stays in force and the failure is counted."""
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text('[processor]\nlog_level = "info"\nqueue_stats_s = 0.2\n')
    proc = await spawn("processor", "--config", str(cfg),
                       env=daemon_env("processor", db_url, notify_socket))
    await notify_socket.expect("READY")
    port = await proc.site_port("health")
    assert not [e for e in proc.events if e.get("level") == "debug"]

    cfg.write_text('[processor]\nlog_level = "debug"\nqueue_stats_s = 0.2\n'
                   '[database]\npool_max_size = 9\n')
    proc.signal(signal.SIGHUP)
    reloading = await notify_socket.expect("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0
    await notify_socket.expect("READY")
    mark = len(proc.events)
    await proc.named("config_reloaded", log_level="debug")
    assert (await proc.named("config_restart_required"))["keys"] == ["database"]
    await proc.wait_event(lambda e: e.get("level") == "debug", start=mark)

    cfg.write_text('[processor]\nlog_levle = "error"\n')
    proc.signal(signal.SIGHUP)
    await notify_socket.expect("RELOADING")
    await notify_socket.expect("READY")
    failed = await proc.named("config_reload_failed")
    assert any("processor.log_levle: unknown key" in e for e in failed["errors"])
    mark = len(proc.events)
    await proc.wait_event(lambda e: e.get("level") == "debug", start=mark)  # still debug
    _, metrics = await http_get(port, "/metrics")
    assert 'smsgw_config_reloads_total{outcome="failed"} 1.0' in metrics
    assert 'smsgw_config_reloads_total{outcome="ok"} 1.0' in metrics
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0


async def test_sigterm_releases_sender_leases(db_url: str, spawn: Any,
                                              notify_socket: NotifySocket,
                                              pool: asyncpg.Pool) -> None:
    """1. queue 30 outbound rows; 2. start the sender against the SMSC simulator at 2 submits/s
    with window 1, so it leases a batch it cannot send yet; 3. once some are submitted and the
    rest are still leased to it (status sending, lease_owner = its worker id), SIGTERM;
    4. STOPPING=1 and exit 0 within the drain deadline; 5. every row it had not submitted is
    back to queued with the lease cleared and no attempt counted, the submitted ones stay
    submitted, and the simulator saw exactly the submitted ones."""
    from smsgw.services.smsc_sim.server import SimConfig, Simulator

    await store.enqueue(pool, "outbound", [
        {"from_addr": "TEST", "to_addr": f"+4479111{i:05d}", "body": "hi"} for i in range(30)])
    async with Simulator(SimConfig()) as sim:
        connector = ('[{"name": "sim", "host": "127.0.0.1", "port": ' + str(sim.port) +
                     ', "system_id": "smsgw", "binds": 1, "window": 1, "tps": 2, "burst": 0,'
                     ' "enquire_link_s": 0}]')
        env = daemon_env("sender", db_url, notify_socket, SMSGW_CONNECTORS=connector,
                         SMSGW_SENDER__BIND_GRACE_S="0.1", SMSGW_SENDER__LEASE_S="30")
        proc = await spawn("sender", env=env)
        await notify_socket.expect("READY")
        async with asyncio.timeout(20):
            while await pool.fetchval(  # noqa: ASYNC110 - polling the database's state
                    "SELECT count(*) FROM outbound WHERE status = 'submitted'") < 2:
                await asyncio.sleep(0.1)
        leased = await pool.fetch("SELECT lease_owner FROM outbound WHERE status = 'sending'")
        assert len(leased) >= 10, "the sender should hold leased rows it has not sent yet"
        assert {r["lease_owner"].split(":")[0] for r in leased} == {"sender@1"}

        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        await notify_socket.expect("STOPPING")
        assert await proc.exit_code() == 0
        assert time.monotonic() - started < 5 + lifecycle.RELEASE_TIMEOUT_S + 8  # drain + unbind
        rows = await pool.fetch("SELECT status, lease_owner, lease_until, attempts FROM outbound")
        assert len(rows) == 30
        submitted = [r for r in rows if r["status"] == "submitted"]
        queued = [r for r in rows if r["status"] == "queued"]
        assert len(submitted) + len(queued) == 30
        assert len(queued) >= 10
        assert all(r["lease_owner"] is None and r["lease_until"] is None and r["attempts"] == 0
                   for r in queued)
        assert sim.counters.submit_ok == len(submitted)


async def test_processor_consumes_notified_inbound(db_url: str, spawn: Any,
                                                   notify_socket: NotifySocket,
                                                   pool: asyncpg.Pool) -> None:
    """1. start the processor (poll_s 60, so only NOTIFY can wake it); 2. enqueue 5 inbound
    rows with one NOTIFY; 3. all 5 end `done`."""
    env = daemon_env("processor", db_url, notify_socket, SMSGW_PROCESSOR__POLL_S="60",
                     SMSGW_PROCESSOR__LOG_LEVEL="debug")
    proc = await spawn("processor", env=env)
    await notify_socket.expect("READY")
    await store.enqueue(pool, "inbound", [
        {"channel": "http", "provider": "test", "from_addr": f"+4479111{i:05d}",
         "to_addr": "12345", "body": "hi"} for i in range(5)])
    await proc.named("inbound_processed", count=5)
    assert await pool.fetchval("SELECT count(*) FROM inbound WHERE status = 'done'") == 5
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0


@pytest.mark.parametrize(("setup", "named"), [
    ({"file": "[sender]\ndrian_s = 3\n"}, "sender.drian_s: unknown key"),
    ({"env": {"SMSGW_SENDER_DRAIN_S": "3"}}, "SMSGW_SENDER_DRAIN_S: unknown environment"),
    ({"env": {"SMSGW_SENDER__DRAIN_S": "soon"}}, "SMSGW_SENDER__DRAIN_S (sender.drain_s)"),
])
async def test_bad_config_exits_78_naming_it(setup: dict[str, Any], named: str, spawn: Any,
                                             tmp_path: Path) -> None:
    """A bad key in the file or an unknown/invalid SMSGW_* variable: exit 78 before any I/O
    (the database URL points nowhere), with the culprit named on stderr."""
    env = clean_env(SMSGW_DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
                    **setup.get("env", {}))
    args = ["sender"]
    if "file" in setup:
        (tmp_path / "bad.toml").write_text(setup["file"])
        args += ["--config", str(tmp_path / "bad.toml")]
    proc = await spawn(*args, env=env)
    assert await proc.exit_code() == 78
    assert named in proc.stderr.decode()
    assert proc.events == []  # nothing started: no log lines at all


async def test_help_explains_itself(spawn: Any) -> None:
    proc = await spawn("sender", "--help", env=clean_env())
    assert await proc.exit_code() == 0
    text = "".join(e.get("raw", "") for e in proc.events)
    for needle in ("--config", "--instance", "--log-level", "SMSGW_DATABASE_URL",
                   "SMSGW_SENDER__DRAIN_S", "78"):
        assert needle in text


async def test_queue_snapshot_stretches_its_interval_under_a_deep_backlog(
        db_url: str, spawn: Any, notify_socket: NotifySocket, pool: asyncpg.Pool) -> None:
    """The depth snapshot counts the queued rows; under a deep backlog one takes tens of
    milliseconds, so its interval stretches past `queue_stats_s` to keep it near 1 % of a
    core: 1. 60,000 queued MTs  2. a processor with queue_stats_s = 0.05  3. over 3 s it
    refreshes the snapshot a few times (each with the full depth), not every 50 ms."""
    await pool.execute(
        "INSERT INTO outbound (from_addr, to_addr, body, source)"
        " SELECT 'X', '+447700900001', 'hi', 'api' FROM generate_series(1, 60000)")
    env = daemon_env("processor", db_url, notify_socket, SMSGW_PROCESSOR__QUEUE_STATS_S="0.05")
    proc = await spawn("processor", env=env)
    await notify_socket.expect("READY")
    seen: set[Any] = set()
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        row = await pool.fetchrow("SELECT depth, updated_at FROM queue_stats"
                                  " WHERE queue = 'outbound' AND status = 'queued'")
        if row is not None:
            assert row["depth"] == 60000
            seen.add(row["updated_at"])
        await asyncio.sleep(0.01)
    proc.signal(signal.SIGTERM)
    assert await proc.exit_code() == 0
    assert 1 <= len(seen) <= 12, len(seen)  # every 50 ms would be ~60
