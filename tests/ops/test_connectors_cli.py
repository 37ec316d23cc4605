"""`smsgw connectors` against a real database: unknown names, two operators at once, the NOTIFY,
`list`. (That running daemons obey it: tests/sender/test_live_control.py.)"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import asyncpg
import pytest

from smsgw.services.admin import connectors, status
from smsgw.shared.core import db
from smsgw.shared.domain.connector_state import (
    CHANNEL,
    ConnectorState,
    StateWatcher,
    read_states,
    set_state,
)

CONFIG = """
[[connectors]]
name = "opA"
system_id = "a"

[[connectors]]
name = "opB"
system_id = "b"
bind_mode = "receiver"
"""


async def test_unknown_name_is_refused_naming_it_and_the_known_ones(
        pool: asyncpg.Pool, db_url: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """1. `stop opA nope` exits 2 naming 'nope' and listing opA, opB; nothing is stored.
    2. `stop opA --reason …` then `list --json`: opA stopped with who and why, opB running.
    3. opA leaves the config while stopped: `list` still shows it, `start opA` clears it.
    (The command's `main` runs in a thread, as the console script would run it; the
    subprocess form is tests/ops/test_admin.py's.)"""
    config = tmp_path / "smsgw.toml"
    config.write_text(CONFIG)

    async def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(connectors.main, [*args, "--config", str(config),
                                                         "--database-url", db_url])
        out = capsys.readouterr()
        return code, out.out, out.err

    async def listed() -> dict[str, dict[str, object]]:
        code, out, err = await run("list", "--json")
        assert code == 0, err
        return {r["name"]: r for r in json.loads(out)}

    code, _, err = await run("stop", "opA", "nope")
    assert code == 2
    assert "'nope'" in err and "known: opA, opB" in err
    assert await read_states(pool) == {}

    code, _, err = await run("stop", "opA", "--reason", "flapping", "--actor", "ops:kim")
    assert code == 0, err
    rows = await listed()
    assert (rows["opA"]["state"], rows["opA"]["changed_by"], rows["opA"]["reason"]) == \
        ("stopped", "ops:kim", "flapping")
    assert rows["opB"]["state"] == "running" and rows["opB"]["bind_mode"] == "receiver"
    async with pool.acquire() as conn:  # `smsgw status` reads the states from the database
        shown = status.render(await status.collect(conn, argparse.Namespace(
            metrics=["http://127.0.0.1:9/metrics"], data_dir=str(tmp_path))))
    assert "connectors: opA STOPPED (by ops:kim: flapping)" in shown

    config.write_text(CONFIG.replace('[[connectors]]\nname = "opA"\nsystem_id = "a"\n', ""))
    rows = await listed()
    assert rows["opA"]["configured"] is False and rows["opA"]["state"] == "stopped"
    assert (await run("start", "opA"))[0] == 0
    assert "opA" not in await listed()


async def test_two_operators_at_once_last_wins_both_audited_and_notified(
        pool: asyncpg.Pool, db_url: str) -> None:
    """1. Operator 1 stops opA in a transaction still open; operator 2's isolate of opA waits
       on the row (pg_blocking_pids).
    2. Operator 1 commits: operator 2 goes on and sees `stopped` as the previous state.
    3. The stored state is operator 2's (isolated); both changes are in audit_log; a listener
       on the channel was notified, and a `StateWatcher` reads the new state."""
    one, two, listener = [await db.connect(db_url) for _ in range(3)]
    try:
        await _two_operators(pool, one, two, listener)
    finally:
        for conn in (one, two, listener):
            await conn.close()


async def _two_operators(pool: asyncpg.Pool, one: asyncpg.Connection, two: asyncpg.Connection,
                         listener: asyncpg.Connection) -> None:
    notified = asyncio.Event()
    await listener.add_listener(CHANNEL, lambda *_: notified.set())
    tx = one.transaction()
    await tx.start()
    await set_state(one, ["opA"], ConnectorState.STOPPED, actor="op1")
    second = asyncio.create_task(set_state(two, ["opA"], ConnectorState.ISOLATED, actor="op2"))
    pid = two.get_server_pid()
    for _ in range(200):
        if await pool.fetchval("SELECT cardinality(pg_blocking_pids($1))", pid):
            break
        await asyncio.sleep(0.02)
    else:
        pytest.fail("operator 2 never waited for operator 1")
    await tx.commit()
    assert await asyncio.wait_for(second, 10) == {"opA": ConnectorState.STOPPED}
    await asyncio.wait_for(notified.wait(), 5)
    assert (await read_states(pool))["opA"].state is ConnectorState.ISOLATED
    audit = [(r["actor"], r["action"]) for r in await pool.fetch(
        "SELECT actor, action FROM audit_log WHERE object_type = 'connector' ORDER BY id")]
    assert audit == [("op1", "connector_stopped"), ("op2", "connector_isolated")]

    seen: list[dict[str, ConnectorState]] = []

    async def on_change(states: object) -> None:
        seen.append(dict(states))  # type: ignore[call-overload]
    watcher = StateWatcher(pool, on_change)
    assert await watcher.load() and watcher.states == {"opA": ConnectorState.ISOLATED}
    await set_state(one, ["opA"], ConnectorState.RUNNING, actor="op1")
    stop = asyncio.Event()

    async def once(_t: float) -> None:
        stop.set()  # one wake-up, then the loop ends after it re-read
    run = asyncio.create_task(watcher.run(asyncio.Event(), once))
    await asyncio.wait_for(stop.wait(), 5)
    for _ in range(100):
        if seen:
            break
        await asyncio.sleep(0.02)
    run.cancel()
    assert seen == [{}]  # back to running: no row state other than running
