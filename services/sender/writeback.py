"""Write-back: a message's outcome, its status callback and its trace events, in batches.

When every part of a message is answered, the submitter hands the policy's `Outcome` to the
`Flusher`, which buffers outcomes and writes each batch in one transaction fenced by the lease
owner (`outbound.write_back`): a row another instance has taken over is not touched. Status
callbacks (`status_change`) and events for unusual outcomes go in the same transaction.

Receipts come soon after their submit (the simulator's after 50 ms, many SMSCs' sooner), often
while their part's outcome still waits here for its batch. The sender's receipt store asks
`Flusher.write_through` first: when it holds the outcome of a part a receipt names, the buffer
is written at once (the ordinary fenced write-back, just earlier), so the receipt finds its
part and is matched in the statement that stores it (`services/sender/matching.py`). The
outcome is committed before the receipt that depends on it, never after.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
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
        # write-through for receipts: SMSC id → the add count of its outcome (buffered, or
        # being written), for one-part messages that owe no report (the ones a receipt can
        # be matched for at once); `_written` wakes `write_through` after each flush
        self._added = 0
        self._sids: dict[str, int] = {}
        self._written = asyncio.Event()
        self._failures = 0

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome (never blocks)."""
        self.buffer.append(outcome)
        self._added += 1
        if len(outcome.parts) == 1 and outcome.row is not None \
                and not outcome.row.callback_url:
            sid = outcome.parts[0][1]
            if sid:
                self._sids[sid] = self._added
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
            self._failures += 1
            self._signal_written()  # receipts waiting for it go to the matcher instead
            await asyncio.sleep(1.0)
            return
        del self.buffer[: len(batch)]
        self.flushed += len(batch)
        for o in batch:
            if len(o.parts) == 1:
                sid = o.parts[0][1]
                if sid and self._sids.get(sid, 0) <= self.flushed:
                    self._sids.pop(sid, None)
        self._signal_written()
        if self.metrics is not None:
            self.metrics.writeback_batch.observe(len(batch))
            for o in batch:
                self.metrics.child(self.metrics.messages, _outcome_label(o.status)).inc()

    async def wait_idle(self) -> None:
        """Return once everything added so far has been written."""
        await self._idle.wait()

    def _signal_written(self) -> None:
        self._written.set()
        self._written = asyncio.Event()

    async def write_through(self, smsc_ids: Iterable[str], timeout_s: float = 1.0) -> bool:
        """Write now the buffered outcomes of the parts with any of `smsc_ids` (and all
        buffered before them); return once they are committed (True), or False when none was
        buffered, a flush failed, or after `timeout_s`. Never raises: receipts whose parts
        are still not written are matched later by the matcher, as before."""
        sids = self._sids
        target = max((sids.get(s, 0) for s in smsc_ids), default=0)
        if target <= self.flushed:
            return False
        failures = self._failures
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.flushed < target:
            if self._failures != failures:
                return False
            self._full.set()  # flush now, without waiting for flush_s
            self._kick.set()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._written.wait()
            except TimeoutError:
                return False
        return True


def _outcome_label(status: str) -> str:
    return "retry" if status == OutboundStatus.QUEUED else status
