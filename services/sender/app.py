"""The sender's composition root: the runtime (`shared.runtime.daemon.Daemon`) plus `SenderEngine`.

The runtime opens the pool, the LISTEN connection (outbound, receipts and connector-state
channels) and the health site; `setup()` builds the engine (bind slots and SMPP sessions per
connector, lanes, submitter, receipt matcher) and registers its workers. SIGHUP applies
routes, connector rates in place, and adds, removes or rebinds connectors (`on_reload`; see
`engine.py`); `smsgw connectors stop|start|isolate` applies within a second; the drain is
the submitter's (stop claiming, wait for outstanding responses, write back, release unsent
claims), then the binds unbind; `release()`
gives back anything still leased if the deadline cut the drain short. It refuses to start
(exit 78) without `[security] server_secret`, which keys the recipient hashes the claim's
suppression check compares; at start it re-keys legacy suppression entries.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from smsgw.services.sender.engine import SenderEngine
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.domain.suppression import MISSING_SECRET, rekey_legacy
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.runtime.config import AppConfig
from smsgw.shared.runtime.daemon import Daemon

# shared/smpp/bindslots.py bounds one session's drain + unbind at 8 s, sessions close in parallel
UNBIND_CLOSE_S = 8.0


class SenderDaemon(Daemon[SenderSettings]):
    """`smsgw sender`: submits outbound messages over SMPP and matches their receipts."""

    name = "sender"
    settings_model = SenderSettings
    listen_channels = (CHANNELS["outbound"], CHANNELS["receipts"], CHANNELS["connectors"])
    reload_help = ("routes, connector rates (in place), and connectors added, removed or "
                   "rebound (only those whose bind keys changed)")
    engine: SenderEngine

    @classmethod
    def required_config(cls, config: AppConfig[Any]) -> list[str]:
        """The server secret: it keys the recipient hashes the suppression check compares."""
        return [] if config.server_secret else [MISSING_SECRET.format(daemon="sender")]

    async def setup(self) -> None:
        """Build the engine, start the intake committers, register every worker."""
        assert self.config.database.url is not None
        self._check_lease(self.config)
        self.engine = SenderEngine(self.config, self.pool, self.config.database.url,
                                   self.worker_id, wait_for_work=self.wait_for_work,
                                   registry=self.registry)
        hasher = self.engine.submitter.hasher
        assert hasher is not None  # required_config
        async with self.pool.acquire() as conn:
            n = await rekey_legacy(conn, hasher)  # unkeyed entries: re-keyed before sending
        if n:
            self.log.info("suppressions_rekeyed", entries=n)
        await self.engine.start()
        for name, fn in self.engine.workers(self.stop):
            self.add_worker(name, fn)
        self.add_periodic("sender_status", 5.0, self._status, locked=False)

    def _check_lease(self, config: AppConfig[SenderSettings]) -> None:
        worst = max((c.response_timeout_s for c in config.connectors), default=0.0)
        if config.daemon.lease_s <= worst + config.daemon.drain_s:
            self.log.warning("lease_shorter_than_drain", lease_s=config.daemon.lease_s,
                             needed_s=worst + config.daemon.drain_s)

    async def _status(self, _conn: asyncpg.Connection) -> None:
        self.set_status(f"binds {self.engine.status_line()}")

    async def on_reload(self, new: AppConfig[SenderSettings]) -> None:
        """SIGHUP: routes, connector rates in place; connectors added, removed, rebound."""
        self._check_lease(new)
        await self.engine.reload(new)

    async def release(self) -> None:
        """Give back every row still leased to this instance; close the intake."""
        await self.engine.release()

    @classmethod
    def extra_close_s(cls, settings: SenderSettings) -> float:
        """SMPP drain + unbind time added to the stop budget (sessions close in parallel)."""
        return UNBIND_CLOSE_S
