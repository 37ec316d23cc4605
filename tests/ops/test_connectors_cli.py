"""`smsgw connectors` against a real database: unknown names, two operators at once, the NOTIFY,
`list`. (That running daemons obey it: tests/sender/test_live_control.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from smsgw.shared.core import db
from smsgw.shared.domain.connector_state import (
    CHANNEL,
    ConnectorState,
    StateWatcher,
    read_states,
    set_state,
)

from .test_admin import as_json, smsgw

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
        pool: asyncpg.Pool, db_url: str, tmp_path: Path) -> None:
    """1. `stop opA nope` exits 2 naming 'nope' and listing opA, opB; nothing is stored.
    2. `stop opA --reason …` then `list --json`: opA stopped with who and why, opB running."""
    (tmp_path / "smsgw.toml").write_text(CONFIG)
    res = smsgw(["connectors", "stop", "opA", "nope"], db_url, tmp_path)
    assert res.returncode == 2
    assert "'nope'" in res.stderr and "known: opA, opB" in res.stderr
    assert await read_states(pool) == {}

    res = smsgw(["connectors", "stop", "opA", "--reason", "flapping", "--actor", "ops:kim"],
                db_url, tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in as_json(smsgw(["connectors", "list", "--json"], db_url,
                                                tmp_path))}
    assert (rows["opA"]["state"], rows["opA"]["changed_by"], rows["opA"]["reason"]) == \
        ("stopped", "ops:kim", "flapping")
    assert rows["opB"]["state"] == "running" and rows["opB"]["bind_mode"] == "receiver"


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
