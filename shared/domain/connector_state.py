"""Connector state set at run time: `smsgw connectors stop|start|isolate NAME` (migration 0014).

An operator's state for a connector lives in `connector_state` (no row: `running`):

- `running`: binds open, submits flow (the default);
- `stopped`: no new submits; the submits already in its window finish (their responses and
  receipts are still taken), then every bind of it (transmitter, transceiver, receiver) is
  unbound and not reopened until `start`;
- `isolated`: no new submits, binds kept, so receipts and MO still arrive (the receiver's rx
  binds and the sender's transceiver binds stay up).

Every write goes through `set_state` (one upsert per name, audited in the same transaction;
the last change wins, and each change has its audit row). The table's statement trigger sends
`NOTIFY smsgw_connectors`; each sender and receiver holds the states in memory
(`StateWatcher`): it re-reads the table (one small query) on that notification and every
`refresh_s` as a safety net, never per message, and calls its `on_change` with the new map.
A daemon that starts reads the stored states before it binds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, LiteralString

import asyncpg
import structlog

from smsgw.shared.core.aio import race_stop
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.domain.apikeys import audit
from smsgw.shared.queue.listener import CHANNELS

log = structlog.get_logger("smsgw.connectors")

CHANNEL: Final = CHANNELS["connectors"]  # the statement trigger's NOTIFY (migration 0014)
REFRESH_S: Final = 30.0  # the safety-net re-read when no notification came
MAX_REASON: Final = 500


class ConnectorState(StrEnum):
    """`connector_state.state` (its CHECK constraint)."""

    RUNNING = "running"
    STOPPED = "stopped"
    ISOLATED = "isolated"


# read_states: every stored state (few rows: one per connector ever changed).
READ_STATES: Final[LiteralString] = """
SELECT name, state, changed_by, reason, updated_at FROM connector_state ORDER BY name
"""

# ensure_row: a `running` row for connector $1 unless it has one ($2: who), so that `set_state`
# always finds a row to lock (a concurrent first change waits here for the other's insert).
ENSURE_ROW: Final[LiteralString] = """
INSERT INTO connector_state (name, state, changed_by) VALUES ($1, 'running', $2)
ON CONFLICT (name) DO NOTHING
"""

# set_state: store connector $1's state $2 (by $3, reason $4); returns the state before. The
# row lock (FOR UPDATE re-reads the row once the lock is granted) makes two operators' changes
# of one connector queue up: the later commit wins, and its `previous` is the earlier one's.
SET_STATE: Final[LiteralString] = """
WITH prev AS (SELECT name, state FROM connector_state WHERE name = $1 FOR UPDATE)
UPDATE connector_state AS c
   SET state = $2, changed_by = $3, reason = $4, updated_at = now()
  FROM prev
 WHERE c.name = prev.name
RETURNING prev.state AS previous, c.updated_at
"""

STATEMENTS: Final[dict[str, LiteralString]] = {"connector_state.read": READ_STATES,
                                               "connector_state.ensure": ENSURE_ROW,
                                               "connector_state.set": SET_STATE}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""


@dataclass(frozen=True, slots=True)
class StoredState:
    """One `connector_state` row."""

    name: str
    state: ConnectorState
    changed_by: str
    reason: str | None
    updated_at: datetime


async def read_states(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, StoredState]:
    """Every stored state by connector name (a connector without a row is running)."""
    return {r["name"]: StoredState(r["name"], ConnectorState(r["state"]), r["changed_by"],
                                   r["reason"], r["updated_at"])
            for r in await conn.fetch(READ_STATES)}


async def set_state(conn: asyncpg.Connection, names: Iterable[str], state: ConnectorState, *,
                    actor: str, reason: str | None = None) -> dict[str, ConnectorState]:
    """Set `state` on each connector in `names` in one transaction, each change audited
    (`connector_stopped` / `_started` / `_isolated`); return each one's previous state. The
    caller checks the names against the configuration; the NOTIFY goes out at commit."""
    if reason is not None and len(reason) > MAX_REASON:
        raise ValueError(f"a reason is at most {MAX_REASON} characters")
    before: dict[str, ConnectorState] = {}
    async with conn.transaction():
        for name in names:
            await conn.execute(ENSURE_ROW, name, actor)
            rec = await conn.fetchrow(SET_STATE, name, state.value, actor, reason)
            assert rec is not None
            before[name] = ConnectorState(rec["previous"])
            action = {ConnectorState.RUNNING: "connector_started",
                      ConnectorState.STOPPED: "connector_stopped",
                      ConnectorState.ISOLATED: "connector_isolated"}[state]
            await audit(conn, actor=actor, action=action, object_type="connector",
                        object_id=name, detail={"previous": before[name].value,
                                                "state": state.value, "reason": reason})
    return before


def state_of(states: Mapping[str, ConnectorState], name: str) -> ConnectorState:
    """A connector's state in a map read by `StateWatcher` (absent: running)."""
    return states.get(name, ConnectorState.RUNNING)


class StateWatcher:
    """The connector states of one daemon, in memory (see the module docstring).

    `states` is replaced (never mutated) on each change, so readers on the hot path look a
    name up in a plain dict. `run` re-reads on each NOTIFY on `CHANNEL` (`wait_notify(timeout)`
    returns after one or after `timeout`) and every `refresh_s`, and awaits
    `on_change(states)` when the map changed; a failed read keeps the old map and is retried
    at the next wake-up.
    """

    def __init__(self, pool: asyncpg.Pool,
                 on_change: Callable[[Mapping[str, ConnectorState]], Awaitable[None]], *,
                 refresh_s: float = REFRESH_S) -> None:
        self.pool = pool
        self.on_change = on_change
        self.refresh_s = refresh_s
        self.states: Mapping[str, ConnectorState] = {}

    async def load(self) -> bool:
        """Read the table now; return True when the map changed (`on_change` not called)."""
        stored = await read_states(self.pool)
        states = {n: s.state for n, s in stored.items() if s.state != ConnectorState.RUNNING}
        if states == self.states:
            return False
        self.states = states
        return True

    async def run(self, stop: asyncio.Event,
                  wait_notify: Callable[[float], Awaitable[object]]) -> None:
        """Follow the table until `stop`."""
        while not stop.is_set():
            await race_stop(wait_notify(self.refresh_s), stop)
            if stop.is_set():
                return
            try:
                changed = await self.load()
            except DATABASE_ERRORS as exc:
                log.warning("connector_state_read_failed", error=f"{type(exc).__name__}")
                continue
            if changed:
                log.info("connector_states_changed", states=dict(self.states))
                await self.on_change(self.states)
