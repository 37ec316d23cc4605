"""The sender's composition root: wires the runtime to the sender's workers.

SKELETON (issue 2): there is no SMPP yet, so the sender only takes part in the queue work that
exists — it leases queued outbound rows (up to `batch`), keeps their leases alive, and gives
them back at the drain (`release`), which is exactly what a draining sender does with rows it
claimed but never submitted. The SMPP submit loop replaces `_claim_pass`.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from services.sender.settings import SenderSettings
from shared.config import AppConfig
from shared.daemon import Daemon
from shared.queue import store
from shared.queue.listener import CHANNELS

OUTBOUND = "outbound"


class SenderDaemon(Daemon[SenderSettings]):
    """`smsgw sender`: leases outbound rows (see the module docstring)."""

    name = "sender"
    settings_model = SenderSettings
    listen_channels = (CHANNELS[OUTBOUND],)

    def __init__(self, config: AppConfig[SenderSettings], **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.held: set[int] = set()  # ids leased to this instance and not yet written back

    async def setup(self) -> None:
        """One lease loop, plus a job that keeps the held leases from expiring."""
        self.add_worker("lease_loop", lambda: self.consume(CHANNELS[OUTBOUND], self._claim_pass))
        self.add_periodic("sender_extend_leases", lambda: self.settings.lease_s / 3,
                          self._extend_leases, locked=False)

    async def _claim_pass(self) -> int:
        free = self.settings.batch - len(self.held)
        if free <= 0:
            return 0
        rows = await store.claim_leased(self.pool, OUTBOUND, limit=free, owner=self.worker_id,
                                        lease_s=self.settings.lease_s)
        if rows:
            self.held.update(r.id for r in rows)
            self.log.info("outbound_leased", count=len(rows), held=len(self.held))
            self.set_status(f"ready; holding {len(self.held)} leased outbound rows")
        return len(rows)

    async def _extend_leases(self, conn: asyncpg.Connection) -> None:
        if self.held:
            await store.extend_lease(conn, OUTBOUND, sorted(self.held), owner=self.worker_id,
                                     lease_s=self.settings.lease_s)

    async def release(self) -> None:
        """Give every row still leased to this instance back to `queued` (attempts unchanged)."""
        released = await store.release(self.pool, OUTBOUND, self.worker_id)
        self.held.clear()
        self.log.info("leases_released", queue=OUTBOUND, count=released)
