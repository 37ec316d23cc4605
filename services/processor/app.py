"""The processor's composition root: wires the runtime to the processor's workers.

SKELETON (issue 2): no rules yet. The processor claims inbound rows in transaction mode with the
head-of-line condition on `from_addr` (per-subscriber order, DESIGN.md guarantee 7) and marks
them done in the same transaction, and runs the retention move (DESIGN.md: the processor runs
it). The rules engine replaces `_claim_pass`.
"""

from __future__ import annotations

import asyncpg

from services.processor.settings import ProcessorSettings
from shared.daemon import Daemon
from shared.queue import store
from shared.queue.listener import CHANNELS

INBOUND = "inbound"


class ProcessorDaemon(Daemon[ProcessorSettings]):
    """`smsgw processor`: consumes inbound rows (see the module docstring)."""

    name = "processor"
    settings_model = ProcessorSettings
    listen_channels = (CHANNELS[INBOUND],)

    async def setup(self) -> None:
        """One inbound consumer and the retention job."""
        self.add_worker("inbound_loop", lambda: self.consume(CHANNELS[INBOUND], self._claim_pass))
        # run_retention takes its own advisory lock (session mode, batch by batch).
        self.add_periodic("retention", lambda: self.config.retention.interval_s,
                          self._retention, locked=False)

    async def _claim_pass(self) -> int:
        # Claim, process and ack in one transaction: a crash rolls back and the row locks go
        # with the connection (transaction mode, DESIGN.md guarantee 3).
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await store.claim_tx(conn, INBOUND, limit=self.settings.batch,
                                        hol_column="from_addr")
            if rows:
                await store.ack(conn, INBOUND, [r.id for r in rows])
        if rows:
            self.log.debug("inbound_processed", count=len(rows))
        return len(rows)

    async def _retention(self, conn: asyncpg.Connection) -> None:
        r = self.config.retention
        counts = await store.run_retention(conn, store.RetentionSettings(
            finished_s=r.finished_after_s, parts_s=r.parts_s, events_s=r.events_s,
            body_after_s=r.body_after_s, batch=r.batch))
        if counts and any(counts.values()):
            self.log.info("retention_done", **counts)
