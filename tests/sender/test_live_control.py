"""Live control against real daemons: `smsgw connectors stop|isolate|start` and `smsgw accounts
disable|enable` take effect in every running sender and receiver instance without a restart;
a daemon started while a connector is stopped starts with the stored state.

One module starts the simulators, two senders and two receivers once and runs every command
against them (issue 19, "How to know it worked"); `test_reload_*` is the SIGHUP side.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from signal import SIGHUP
from typing import Any

import aiohttp
import asyncpg

from smsgw.services.admin import accounts
from smsgw.services.smsc_sim.server import Simulator
from smsgw.shared.domain.connector_state import ConnectorState, set_state

from ..harness import Spawner, clean_env
from .conftest import add_mt, all_final, statuses, wait_until

SECRET = "live-control-secret"
FAST_SENDER = {"metrics_port": 0, "drain_s": 3, "lease_s": 5, "poll_s": 0.5,
               "bind_grace_s": 0.2, "bind_retry_s": 0.3, "bind_check_s": 0.5, "flush_s": 0.02,
               "not_sent_retry_s": 0.2, "no_bind_wait_s": 0.3}
WAIT_ROUTE = "+447912345678"  # the 4479 route waits for a stopped connector
OTHER = "+447700900001"  # the default route fails over


def _connector(name: str, port: int, **kw: Any) -> list[str]:
    base = {"name": name, "host": "127.0.0.1", "port": port, "system_id": "smsgw",
            "binds": 2, "window": 10, "enquire_link_s": 0, "response_timeout_s": 2,
            "reconnect_min_s": 0.1, "reconnect_max_s": 0.5, **kw}
    return ["[[connectors]]", *(f"{k} = {json.dumps(v)}" for k, v in base.items()), ""]


def write_config(path: Path, connectors: list[list[str]], *, routes: bool = True) -> None:
    lines = [line for c in connectors for line in c]
    if routes:
        lines += ["[[routes]]", 'prefix = "4479"', 'connectors = ["a", "b"]',
                  'when_stopped = "wait"', "",
                  "[[routes]]", 'prefix = ""', 'connectors = ["a", "b"]', ""]
    lines += ["[sender]", *(f"{k} = {json.dumps(v)}" for k, v in FAST_SENDER.items()), "",
              "[receiver]", "metrics_port = 0", "http_port = 0", "auth_cache_s = 1",
              'default_country = "GB"']
    path.write_text("\n".join(lines) + "\n")


async def smsgw(*args: str, cwd: Path, db_url: str) -> tuple[int, str]:
    """Run the CLI (`python -m smsgw.services.cli ARGS --database-url`); (exit code, output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", *args, "--database-url", db_url,
        cwd=cwd, env=clean_env(), stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


def _env(db_url: str) -> dict[str, str]:
    return clean_env(SMSGW_DATABASE_URL=db_url, SMSGW_SECURITY__SERVER_SECRET_ENV="LIVE_SECRET",
                     LIVE_SECRET=SECRET)


async def _submitted_on(pool: asyncpg.Pool, ids: list[int]) -> dict[str, int]:
    rows = await pool.fetch("SELECT connector, count(*) AS n FROM outbound WHERE id = ANY($1) "
                            "AND status = 'submitted' GROUP BY connector", ids)
    return {r["connector"]: r["n"] for r in rows}


async def test_connector_and_account_commands_reach_every_running_instance(
        tmp_path: Path, db_url: str, pool: asyncpg.Pool) -> None:
    """Two senders (connectors a and b, transceiver, 2 binds each) and two receivers
    (connector r, receiver binds, 2) run against three simulators.

    1. `connectors stop a`: both senders unbind a (its simulator sees 0 binds); default-route
       MTs fail over to b, 4479-route MTs (`when_stopped = "wait"`) wait, `last_error` says why.
    2. `isolate a`: a binds again (2) and an MO sent over it is stored, but nothing is submitted
       on it; the waiting MTs still wait.
    3. `start a`: the waiting MTs go out on a.
    4. `stop r` / `start r`: both receivers unbind and rebind r.
    5. `accounts disable` (after a positive control: the key works on both receivers): both
       receivers refuse the key within auth_cache_s; the account's queued MTs are held while
       another account's go out; `enable` sends them.
    6. `stop b`; sender 2 restarts: it starts with b stopped (never binds b) but binds a.
    Each command's effect is awaited, its delay from the command's exit recorded in the log."""
    spawner = Spawner(tmp_path, stderr="stdout")
    cfg = tmp_path / "smsgw.toml"
    delays: dict[str, float] = {}

    async def cli(*args: str) -> str:
        code, out = await smsgw(*args, "--config", str(cfg), cwd=tmp_path, db_url=db_url)
        assert code == 0, out
        return out

    async def connectors(action: ConnectorState, name: str) -> None:
        # what `smsgw connectors` runs once it has checked the name (the CLI itself: the first
        # stop here, and tests/ops/test_connectors_cli.py); a subprocess costs ~0.7 s
        async with pool.acquire() as conn:
            await set_state(conn, [name], action, actor="test")

    async def effect(name: str, pred: Any, within_s: float = 10.0) -> None:
        t0 = time.monotonic()
        await wait_until(pred, timeout=within_s, every=0.02)
        delays[name] = round(time.monotonic() - t0, 3)

    try:
        async with Simulator() as sa, Simulator() as sb, Simulator() as sr:
            write_config(cfg, [_connector("a", sa.port), _connector("b", sb.port),
                               _connector("r", sr.port, bind_mode="receiver")])
            env = _env(db_url)
            senders = [await spawner.start("sender", "--config", str(cfg), "--instance", str(i),
                                           env=env) for i in (1, 2)]
            receivers = [await spawner.start("receiver", "--config", str(cfg), "--instance",
                                             str(i), env=env) for i in (1, 2)]
            for d in (*senders, *receivers):
                await d.ready()
            ports = [await r.site_port("api") for r in receivers]
            await wait_until(lambda: (sa.bind_count, sb.bind_count, sr.bind_count) == (2, 2, 2))

            # 1. stop a: both senders unbind it; failover and wait routes
            out = await cli("connectors", "stop", "a", "--reason", "test")
            assert "stopped (was running)" in out
            await effect("stop_unbinds_both_senders", lambda: sa.bind_count == 0)
            for s in senders:
                await s.named("connector_states_changed")
            failover = await add_mt(pool, 10, to_addr=OTHER)
            waiting = await add_mt(pool, 3, to_addr=WAIT_ROUTE)
            await wait_until(lambda: all_final(pool, failover, {"submitted"}))
            assert await _submitted_on(pool, failover) == {"b": 10}
            assert set((await statuses(pool, waiting)).values()) == {"queued"}
            reasons = {r["last_error"] for r in await pool.fetch(
                "SELECT last_error FROM outbound WHERE id = ANY($1)", waiting)}
            assert reasons == {"connector a stopped"}

            # 2. isolate a: binds back, MO taken, nothing submitted on it
            await connectors(ConnectorState.ISOLATED, "a")
            await effect("isolate_binds_again", lambda: sa.bind_count == 2)
            assert await sa.send_mo("over isolated a") == 0
            assert await pool.fetchval(
                "SELECT count(*) FROM inbound WHERE connector = 'a'") == 1
            more = await add_mt(pool, 5, to_addr=OTHER)
            await wait_until(lambda: all_final(pool, more, {"submitted"}))
            assert await _submitted_on(pool, more) == {"b": 5}
            assert not sa.submits
            assert set((await statuses(pool, waiting)).values()) == {"queued"}

            # 3. start a: the waiting MTs go out on a
            await connectors(ConnectorState.RUNNING, "a")
            await effect("start_sends_waiting",
                         lambda: all_final(pool, waiting, {"submitted"}))
            assert await _submitted_on(pool, waiting) == {"a": 3}

            # 4. the receivers' rx binds
            await connectors(ConnectorState.STOPPED, "r")
            await effect("stop_unbinds_both_receivers", lambda: sr.bind_count == 0)
            await connectors(ConnectorState.RUNNING, "r")
            await effect("start_rebinds_receivers", lambda: sr.bind_count == 2, within_s=15)

            # 5. accounts disable / enable
            async with pool.acquire() as conn:
                _, key = await accounts.create_account(conn, SECRET.encode(), "acme")
                acme = await conn.fetchval("SELECT id FROM accounts WHERE name = 'acme'")
            async with aiohttp.ClientSession() as http:
                async def post(port: int) -> int:
                    async with http.post(f"http://127.0.0.1:{port}/v1/messages",
                                         json={"to": OTHER, "from": "ACME", "text": "hi"},
                                         headers={"Authorization": f"Bearer {key}"}) as resp:
                        return resp.status
                assert [await post(p) for p in ports] == [202, 202]
                async with pool.acquire() as conn:
                    await accounts.disable_account(conn, "acme", actor="test")
                held = await add_mt(pool, 3, to_addr=OTHER, account_id=acme)
                await effect("disable_refuses_keys",
                             lambda: _all_refused(post, ports), within_s=10)
            control = await add_mt(pool, 2, to_addr=OTHER)
            await wait_until(lambda: all_final(pool, control, {"submitted"}))
            assert set((await statuses(pool, held)).values()) == {"queued"}
            async with pool.acquire() as conn:
                await accounts.set_enabled(conn, "acme", actor="test")
            await effect("enable_sends_held", lambda: all_final(pool, held, {"submitted"}))

            # 6. a sender started while b is stopped never binds b
            await connectors(ConnectorState.STOPPED, "b")
            await effect("stop_b", lambda: sb.bind_count == 0)
            for d in senders:
                assert await d.stop() == 0
            await wait_until(lambda: sa.bind_count == 0)
            binds_b = sb.counters.binds
            restarted = await spawner.start("sender", "--config", str(cfg), "--instance", "2",
                                            env=env)
            await restarted.ready()
            await wait_until(lambda: sa.bind_count == 2)  # positive control: it binds a
            assert sb.counters.binds == binds_b and sb.bind_count == 0
            for d in (restarted, *receivers):
                assert await d.stop() == 0
            print("live control delays (s):", delays)
    finally:
        await spawner.close()

    audit = [(r["action"], r["object_id"]) for r in await pool.fetch(
        "SELECT action, object_id FROM audit_log WHERE object_type = 'connector' ORDER BY id")]
    assert audit == [("connector_stopped", "a"), ("connector_isolated", "a"),
                     ("connector_started", "a"), ("connector_stopped", "r"),
                     ("connector_started", "r"), ("connector_stopped", "b")]


async def _metrics(port: int) -> str:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        return await resp.text()


async def _all_refused(post: Any, ports: list[int]) -> bool:
    return all([await post(p) == 401 for p in ports])


async def test_reload_adds_and_removes_a_connector_under_load_losing_nothing(
        tmp_path: Path, db_url: str, pool: asyncpg.Pool) -> None:
    """1. One sender with connector a; MTs keep coming (no routes: every connector).
    2. SIGHUP with a and b: b binds (a keeps its bind: no rebind), and takes messages.
    3. SIGHUP with b only: a drains its window and unbinds; b takes the rest.
    4. A SIGHUP with an invalid connector is refused whole: logged, counted in /metrics, b
       stays bound (and shows running).
    5. Every MT ends submitted exactly once (simulator submits = MTs), none lost, and each
       on the connector the simulators saw it on.
    6. A SIGHUP changing a bind key of b (system_id) rebinds b once."""
    spawner = Spawner(tmp_path, stderr="stdout")
    cfg = tmp_path / "smsgw.toml"
    try:
        async with Simulator() as sa, Simulator() as sb:
            sa.inject(response_delay_s=0.02)
            sb.inject(response_delay_s=0.02)
            a, b = _connector("a", sa.port, binds=1), _connector("b", sb.port, binds=1)
            write_config(cfg, [a], routes=False)
            sender = await spawner.start("sender", "--config", str(cfg), env=_env(db_url))
            await sender.ready()
            await wait_until(lambda: sa.bind_count == 1)
            ids: list[int] = []
            stop_load = asyncio.Event()

            async def load() -> None:  # 10 MTs every 20 ms until both reloads are done
                while not stop_load.is_set():
                    ids.extend(await add_mt(pool, 10))
                    await asyncio.sleep(0.02)
            loader = asyncio.create_task(load())
            await wait_until(lambda: len(sa.submits) >= 50)
            write_config(cfg, [a, b], routes=False)
            sender.signal(SIGHUP)
            await sender.named("sender_reloaded", added=["b"])
            await wait_until(lambda: sb.bind_count == 1)
            assert sa.counters.binds == 1  # a unchanged: not rebound

            write_config(cfg, [b], routes=False)
            mark = len(sender.events)
            sender.signal(SIGHUP)
            await sender.wait_event(lambda e: e.get("event") == "sender_reloaded"
                                    and e.get("removed") == ["a"], start=mark)
            await wait_until(lambda: sa.bind_count == 0)
            assert sa.counters.unbinds == 1  # drained and unbound, not dropped
            await wait_until(lambda: len(sb.submits) >= 50)  # b alone under load
            await wait_until(lambda: len(ids) >= 200)  # enough load however fast the reloads
            stop_load.set()
            await loader
            write_config(cfg, [b, _connector("c", 0)], routes=False)
            mark = len(sender.events)
            sender.signal(SIGHUP)
            failed = await sender.wait_event(
                lambda e: e.get("event") == "config_reload_failed", start=mark)
            assert "port" in json.dumps(failed["errors"])
            metrics = await _metrics(await sender.site_port("health"))
            assert 'smsgw_config_reloads_total{outcome="failed"} 1.0' in metrics
            assert 'smsgw_connector_state{connector="b",state="running"} 1.0' in metrics
            await wait_until(lambda: all_final(pool, ids, {"submitted"}), timeout=30)
            assert sb.bind_count == 1 and sb.counters.binds == 1

            # a bind key changed (system_id): b rebinds once; nothing else changes
            write_config(cfg, [_connector("b", sb.port, binds=1, system_id="smsgw2")],
                         routes=False)
            sender.signal(SIGHUP)
            await wait_until(lambda: sb.counters.binds == 2 and sb.bind_count == 1)
            assert sb.counters.unbinds == 1
            # exactly once each: no MT lost, none submitted twice by the hand-over
            assert len(sa.submits) + len(sb.submits) == len(ids) >= 200
            assert len(sa.submits) >= 50
            by_connector = await _submitted_on(pool, ids)
            assert by_connector == {"a": len(sa.submits), "b": len(sb.submits)}
            assert await sender.stop() == 0
    finally:
        await spawner.close()
