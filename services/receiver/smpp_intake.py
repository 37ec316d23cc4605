"""The receiver's SMPP receiver (rx) binds: one `BindManager` per connector that asks for them.

docs/ARCHITECTURE.md "Where deliver_sm goes": one connector definition serves both daemons; the
sender owns transmitter and transceiver binds, the receiver owns receiver binds. So the receiver
binds the connectors whose
`bind_mode` is `receiver`, through `shared.smpp.bindslots.BindManager`: the binds count against the
connector's global limit (advisory-lock slots shared by every daemon and instance), and every
`deliver_sm`/`data_sm` goes to the one shared intake (`shared.domain.intake.DeliverIntake`), which
commits before the session sends `deliver_sm_resp`.

The set of binds follows the config and the connectors' run-time state without a restart
(`shared.smpp.bindset.BindSet`): SIGHUP adds, removes or rebinds connectors (`update_connectors`),
`smsgw connectors stop` unbinds a connector's rx binds and `start` binds them again
(`shared.domain.connector_state.StateWatcher`: NOTIFY, and a re-read every 30 s); `isolate`
keeps them, since an isolated connector still takes MO and receipts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import structlog

from smsgw.shared.core.aio import race_stop
from smsgw.shared.domain.connector_state import ConnectorState, StateWatcher, state_of
from smsgw.shared.domain.intake import DeliverIntake
from smsgw.shared.smpp.bindset import BindSet
from smsgw.shared.smpp.bindslots import BindManager
from smsgw.shared.smpp.session import BindMode

log = structlog.get_logger("receiver.smpp")

UpGauge = Callable[[str, str, int], None]  # (connector, bind label, bound sessions)
StateGauge = Callable[[str, str], None]  # (connector, state)


def receiver_connectors(connectors: Sequence[Any]) -> list[Any]:
    """The connectors the receiver binds: those whose bind mode is `receiver`."""
    return [c for c in connectors if c.bind_mode == BindMode.RECEIVER]


class SmppIntake:
    """Runs the rx bind managers of this receiver instance until `stop` is set."""

    def __init__(self, connectors: Sequence[Any], dsn: str, intake: DeliverIntake, *,
                 pool: asyncpg.Pool | None = None,
                 on_up: UpGauge | None = None, on_state: StateGauge | None = None,
                 retry_s: float = 2.0, check_s: float = 1.0,
                 grace_s: float | None = None,
                 password: str | Callable[[], str] | None = None) -> None:
        def make(c: Any) -> BindManager:
            return BindManager(c, "rx", dsn, handler=intake.handler_for(c),
                               on_up=_gauge(on_up, c.name), retry_s=retry_s, check_s=check_s,
                               grace_s=grace_s, password=password)
        self.binds = BindSet(make)
        self.connectors = {c.name: c for c in receiver_connectors(connectors)}
        self.on_state = on_state
        self.watcher = StateWatcher(pool, self._states_changed) if pool is not None else None
        self._changed = asyncio.Event()

    @property
    def managers(self) -> list[BindManager]:
        """The running managers (one per bound connector)."""
        return [m for m in map(self.binds.manager, self.binds.names()) if m is not None]

    def bound(self) -> int:
        """Bound rx sessions of this instance, over all connectors."""
        return sum(self.binds.up(n) for n in self.binds.names())

    def update_connectors(self, connectors: Sequence[Any]) -> None:
        """SIGHUP: the rx connectors of the reloaded config (added, removed, changed); the
        binds follow in the background."""
        self.connectors = {c.name: c for c in receiver_connectors(connectors)}
        self._changed.set()

    async def _states_changed(self, _states: Mapping[str, ConnectorState]) -> None:
        self._changed.set()

    def _wanted(self) -> dict[str, Any]:
        states = self.watcher.states if self.watcher is not None else {}
        for name in self.connectors:
            if self.on_state is not None:
                self.on_state(name, state_of(states, name).value)
        return {n: c for n, c in self.connectors.items()
                if state_of(states, n) is not ConnectorState.STOPPED}

    async def run(self, stop: asyncio.Event,
                  wait_notify: Callable[[float], Awaitable[object]] | None = None) -> None:
        """Keep the binds matching config and states until `stop`; then every manager unbinds
        and releases its slots. `wait_notify(timeout)` waits for the connector-state NOTIFY.

        Each deliver_sm already read is committed and answered before its session closes
        (the session waits for its handlers before unbinding).
        """
        watcher = None
        if self.watcher is not None and wait_notify is not None:
            await self.watcher.load()  # a stopped connector is never bound, even briefly
            watcher = asyncio.create_task(self.watcher.run(stop, wait_notify),
                                          name="receiver.connector_states")
        if self.connectors:
            log.info("smpp_rx_binds_starting", connectors=sorted(self.connectors))
        try:
            while not stop.is_set():
                self._changed.clear()
                changes = await self.binds.apply(self._wanted())
                if changes:
                    log.info("smpp_rx_binds_applied", changes=changes)
                await race_stop(self._changed.wait(), stop)
        finally:
            await self.binds.close()
            if watcher is not None:
                await asyncio.wait([watcher])


def _gauge(on_up: UpGauge | None, connector: str) -> Callable[[str, int], None] | None:
    if on_up is None:
        return None

    def publish(mode: str, n: int) -> None:
        on_up(connector, mode, n)
    return publish
