"""Write-back: a message's outcome, its status callback and its trace events, in batches.

When every part of a message is answered, the submitter hands the policy's `Outcome` to the
`Flusher`, which buffers outcomes and writes each batch in one transaction fenced by the lease
owner (`outbound.write_back`): a row another instance has taken over is not touched. Status
callbacks (`status_change`) and events for unusual outcomes go in the same transaction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog

from smsgw.services.sender.metrics import SenderMetrics
from smsgw.services.sender.records import Outcome
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.core.aio import race_stop
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.domain.status_callbacks import (
    StatusChange,
    callback_row,
    insert_rows,
    is_kannel,
)
from smsgw.shared.queue import outbound
from smsgw.shared.queue.records import ClaimedOutbound, OutboundStatus, StatusCallback

log = structlog.get_logger("smsgw.sender")

_TERMINAL_CALLBACK = frozenset({OutboundStatus.SUBMITTED, OutboundStatus.REJECTED,
                                OutboundStatus.SUBMIT_UNKNOWN, OutboundStatus.DEAD})


def status_change(o: Outcome) -> StatusChange | None:
    """The callback-worthy change of an outcome (None for retries or without a URL)."""
    row = o.row
    if row is None or not row.callback_url or o.status not in _TERMINAL_CALLBACK:
        return None
    return StatusChange(outbound_id=row.id, status=o.status, account_id=row.account_id,
                        from_addr=row.from_addr, to_addr=row.to_addr, client_ref=row.client_ref,
                        callback_url=row.callback_url, dlr_mask=row.dlr_mask, meta=row.meta,
                        parts_total=o.parts_total, delivered_parts=0, connector=o.connector,
                        error_code=o.error_code, error=o.error)


def _first_part_id(o: Outcome) -> str | None:
    """Part 1's SMSC id among the answered parts (a Kannel ACK/NACK's `%F`)."""
    return next((sid for no, sid, _cs, _st in o.parts if no == 1), None)


def outcome_callback(o: Outcome) -> StatusCallback | None:
    """The callback row of an outcome the application asked for (None: none)."""
    change = status_change(o)
    if change is None:
        return None
    return callback_row(change, first_part_id=_first_part_id(o),
                        forced_connector=o.row.route_hint if o.row is not None else None)


def claim_change(row: ClaimedOutbound) -> StatusChange | None:
    """The callback-worthy change of a row the claim finished (expired, suppressed)."""
    if not row.callback_url or row.status not in ("expired", "suppressed"):
        return None
    return StatusChange(outbound_id=row.id, status=row.status, account_id=row.account_id,
                        from_addr=row.from_addr, to_addr=row.to_addr, client_ref=row.client_ref,
                        callback_url=row.callback_url, dlr_mask=row.dlr_mask, meta=row.meta,
                        parts_total=None, delivered_parts=0, connector=None, error_code=None,
                        error=row.status)


def _kannel_dlr(o: Outcome) -> bool | None:
    """Whether the outcome's message asked for a Kannel dlr-url (None: not known here)."""
    row = o.row
    if row is None:
        return None
    return bool(row.callback_url and row.dlr_mask and is_kannel(row.meta))


def _write_back_args(owner: str, outcomes: Sequence[Outcome]) -> list[Any]:
    parts = [(o.msg_id, no, o.parts_total or 1, o.connector or "", sid, cs, st, dlr)
             for o in outcomes for dlr in (_kannel_dlr(o),) for (no, sid, cs, st) in o.parts]
    pcols: list[list[Any]] = [list(c) for c in zip(*parts, strict=True)] if parts else \
        [[] for _ in range(8)]
    return [owner,
            [o.msg_id for o in outcomes], [o.status for o in outcomes],
            [o.error_code for o in outcomes], [o.error for o in outcomes],
            [o.delay_s for o in outcomes], [o.attempts_inc for o in outcomes],
            [o.parts_total for o in outcomes], [o.connector for o in outcomes],
            *pcols]


async def write_back(conn: asyncpg.Connection, owner: str, outcomes: Sequence[Outcome], *,
                     events: bool = True, daemon: str = "sender") -> set[int]:
    """Record outcomes in one transaction (fenced by `owner`); return the ids it owned.

    Status callbacks for the owned messages and events for the unusual outcomes are written
    in the same transaction.
    """
    async with conn.transaction():
        owned = set(await outbound.write_back(conn, *_write_back_args(owner, outcomes)))
        rows = [cb for o in outcomes if o.msg_id in owned
                for cb in (outcome_callback(o),) if cb is not None]
        if rows:
            await insert_rows(conn, rows)
        if events:
            evs = [(o.msg_id, "possible_duplicate" if o.possible_duplicate else o.status,
                    {"error": o.error, "error_code": o.error_code, "connector": o.connector})
                   for o in outcomes if o.msg_id in owned and o.status != "submitted"]
            if evs:
                await outbound.log_events(conn, evs, daemon)
    return owned


class Flusher:
    """Buffers outcomes and writes them in batches, on size (`flush_size`) or time (`flush_s`).

    The buffer is bounded by the submitter's claim budget (it stops claiming while the buffer
    holds more than `4 x flush_size`). A failed flush keeps the batch and retries after a
    second: the rows stay leased meanwhile, and the write-back stays fenced.
    """

    def __init__(self, pool: asyncpg.Pool, settings: SenderSettings, owner: str,
                 metrics: SenderMetrics | None) -> None:
        self.pool = pool
        self.settings = settings
        self.owner = owner  # the lease owner that fences every write-back
        self.metrics = metrics
        self.buffer: list[Outcome] = []
        self._kick = asyncio.Event()
        self._full = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.flushed = 0

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome (never blocks)."""
        self.buffer.append(outcome)
        self._idle.clear()
        self._kick.set()
        if len(self.buffer) >= self.settings.flush_size:
            self._full.set()

    @property
    def backlog(self) -> int:
        """Outcomes not yet written."""
        return len(self.buffer)

    async def run(self, stop: asyncio.Event) -> None:
        """Flush until `stop` is set and the buffer is empty."""
        while not (stop.is_set() and not self.buffer):
            if not self.buffer:
                self._idle.set()
                await race_stop(self._kick.wait(), stop)
                self._kick.clear()
                continue
            if len(self.buffer) < self.settings.flush_size and not stop.is_set():
                await race_stop(self._full.wait(), stop, self.settings.flush_s)
            await self.flush_once()

    async def flush_once(self) -> None:
        """Write the current buffer (up to 4 x flush_size) in one transaction."""
        self._full.clear()
        batch = self.buffer[: self.settings.flush_size * 4]
        try:
            async with self.pool.acquire() as conn:
                await write_back(conn, self.owner, batch, events=self.settings.events)
        except DATABASE_ERRORS:
            log.exception("writeback_failed", messages=len(batch))
            await asyncio.sleep(1.0)
            return
        del self.buffer[: len(batch)]
        self.flushed += len(batch)
        if self.metrics is not None:
            self.metrics.writeback_batch.observe(len(batch))
            for o in batch:
                self.metrics.child(self.metrics.messages, _outcome_label(o.status)).inc()

    async def wait_idle(self) -> None:
        """Return once everything added so far has been written."""
        await self._idle.wait()


def _outcome_label(status: str) -> str:
    return "retry" if status == OutboundStatus.QUEUED else status
