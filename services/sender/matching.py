"""Receipt matching: stored delivery receipts → message parts → message states → callbacks.

Receipts are stored first by the shared intake (any bind, any daemon), already normalised per
connector (`receipts.smsc_id`), then matched here, by the sender, in batches, in transaction
mode (no network I/O in between: `FOR UPDATE SKIP LOCKED`, match, write, commit — a crash rolls
it all back):

- A receipt matches the **newest** part with the same normalised SMSC id on its own connector
  or on a sibling connector of the same operator (`[[connectors]] operator`), among parts
  created no earlier than `window_s` before the receipt (ids get reused; the window keeps an
  old part from taking a new receipt).
- Whichever arrives first: a receipt may come before its `submit_sm_resp` was recorded. An
  receipt is first tried `min_age_s` after it arrived (by then the part's write-back has
  normally landed); an unmatched one is retried with exponential backoff
  (`retry_base_s` · 2^attempts). After
  `max_attempts` tries it ends `orphan`; `receipts.orphan` (the processor's periodic job) also
  orphans receipts older than a cut-off, whoever runs.
- Intermediate receipts (ENROUTE, ACCEPTD unless mapped final, esm_class intermediate) update
  the part's error text but never its state. A final receipt sets the part's state.
- A message is final when every part is: all delivered → `delivered`, all expired → `expired`,
  any other mix → `undeliverable` (each part keeps its own state).
- `outbound_part` outlives the retention move, so a late receipt still matches; the message
  row is updated wherever it is now (`outbound` or `outbound_history`).
- Every state change an application asked for becomes a `callbacks` row in the same
  transaction (`status_callbacks`); the processor delivers it. A JSON `callback_url` hears of
  the message's final state; a Kannel `dlr-url` gets one report per matched receipt its
  dlr-mask selects (part 1's only, or every part's with `kannel_dlr_parts = "each"`), until
  the part's first final receipt, as Kannel's `dlr_find` does.

Most receipts need none of this: `ReceiptStore` is the sender's receipt flush (its intake's
group committer), which stores the batch with `receipts.store`: a receipt whose part is written
back and still open, whose message is one part, still in `outbound` and owes no report (no
callback_url, no Kannel dlr-url), and for whose SMSC id no earlier receipt still waits, is stored
`matched`, its part updated and its message finalised in that one statement. The others are
stored `queued` and matched here, as before (a receipt that raced its own write-back, a message
with a callback or of several parts, a second receipt for a part already final, a late receipt
of a moved message).

The statements are the queue owners' (`shared.queue.receipts.match` and `kannel_dlrs`,
`shared.queue.outbound.finalize`, `shared.queue.callbacks.insert_status`); this module only
decides what runs when.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import structlog

from smsgw.services.sender.settings import SenderSettings
from smsgw.services.sender.writeback import ReceiptRace
from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.domain.status_callbacks import (
    DlrParts,
    callback_row,
    insert_rows,
    is_kannel,
    receipt_rows,
)
from smsgw.shared.queue import outbound, receipts
from smsgw.shared.queue.records import ReceiptStored, ReceiptWrite, StatusChange
from smsgw.shared.smpp.connector import ConnectorSettings

log = structlog.get_logger("smsgw.dlr")


# --- settings and results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchSettings:
    """How receipts are matched.

    `operators` maps connector name → operator group (siblings share a group; a connector
    missing from the map matches only its own parts); `window_s` bounds how old a matching
    part may be; a receipt is first tried `min_age_s` after it arrived (its part's write-back
    normally lands before); unmatched receipts retry after `retry_base_s` · 2^attempts until
    `max_attempts`, then end orphan. One pass matches up to `batch` receipts in one transaction.
    `kannel_dlr_parts` says which parts' receipts a Kannel dlr-url reports ("first", "each");
    `system_ids` maps connector → bind system_id (a Kannel receipt DLR's `%o`).
    """

    operators: Mapping[str, str]
    window_s: float
    retry_base_s: float
    max_attempts: int
    min_age_s: float
    batch: int
    kannel_dlr_parts: DlrParts = "first"
    system_ids: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, connectors: Iterable[ConnectorSettings],
                    settings: SenderSettings) -> MatchSettings:
        """From the `[[connectors]]` (their `operator_name`) and the `[sender]` section's
        `receipt_*` keys (their defaults are there)."""
        return cls(operators={c.name: c.operator_name for c in connectors},
                   window_s=settings.receipt_window_s,
                   retry_base_s=settings.receipt_retry_base_s,
                   max_attempts=settings.receipt_max_attempts,
                   min_age_s=settings.receipt_min_age_s,
                   batch=settings.receipt_batch,
                   kannel_dlr_parts=settings.kannel_dlr_parts,
                   system_ids={c.name: c.system_id for c in connectors})


@dataclass(frozen=True, slots=True)
class MatchResult:
    """One matching pass: receipts matched, retried and orphaned; messages finalised."""

    matched: int
    retried: int
    orphaned: int
    finalized: int
    callbacks: int

    @property
    def processed(self) -> int:
        """Receipts this pass took (0 means the due queue was empty)."""
        return self.matched + self.retried + self.orphaned


# --- matching ----------------------------------------------------------------------------------


def _operator_arrays(settings: MatchSettings) -> tuple[list[str], list[str]]:
    names = sorted(settings.operators)
    return names, [settings.operators[n] for n in names]


async def match_batch(conn: asyncpg.Connection, settings: MatchSettings) -> MatchResult:
    """Match up to `settings.batch` due receipts, finalise messages, queue callbacks; one
    transaction.

    `conn` must not be inside a transaction already (this opens one). Returns the counts;
    `processed == 0` means nothing was due.
    """
    names, groups = _operator_arrays(settings)
    async with conn.transaction():
        row = await receipts.match(conn, limit=settings.batch, connectors=names, groups=groups,
                                   window_s=settings.window_s,
                                   retry_base_s=settings.retry_base_s,
                                   max_attempts=settings.max_attempts,
                                   min_age_s=settings.min_age_s)
        finalized = 0
        changes: list[StatusChange] = []
        if row.finals:
            finalized, changes = await outbound.finalize(conn, row.finals)
        # JSON callbacks: the message's final state; Kannel dlr-urls: the receipts themselves
        rows = [cb for c in changes if not is_kannel(c.meta)
                for cb in (callback_row(c),) if cb is not None]
        if row.reported:
            rows += receipt_rows(await receipts.kannel_dlrs(conn, row.reported),
                                 parts=settings.kannel_dlr_parts,
                                 system_ids=settings.system_ids)
        n_callbacks = await insert_rows(conn, rows)
    return MatchResult(matched=row.matched, retried=row.retried, orphaned=row.orphaned,
                       finalized=finalized, callbacks=n_callbacks)


class Siblings:
    """Connector → the connectors whose parts its receipts may match (`receipts.sibling_map`
    of the current `MatchSettings`; recomputed only when SIGHUP swapped them). The receipt
    store and the write-back (`writeback.Flusher.siblings`) both ask it."""

    def __init__(self, settings: Callable[[], MatchSettings]) -> None:
        self.settings = settings
        self._cached: tuple[MatchSettings, dict[str, tuple[str, ...]]] | None = None

    def __call__(self) -> dict[str, tuple[str, ...]]:
        settings = self.settings()
        if self._cached is None or self._cached[0] is not settings:
            self._cached = (settings, receipts.sibling_map(*_operator_arrays(settings)))
        return self._cached[1]


class ReceiptStore:
    """The sender's receipt flush (for its intake's `GroupCommitter`, `transactional=False`):
    store receipts, matching the ones that need nothing else in the same statement (module
    docstring); one autocommitted statement, as the plain insert.

    `settings()` gives the current `MatchSettings` (SIGHUP swaps them);
    `on_stored(ReceiptStored)` feeds the metrics. Returns the ids in input order.
    """

    def __init__(self, settings: Callable[[], MatchSettings], *,
                 on_stored: Callable[[ReceiptStored], None] | None = None,
                 race: ReceiptRace | None = None) -> None:
        self.settings = settings
        self.on_stored = on_stored
        self.siblings = Siblings(settings)
        self.race = race  # orders a store after a running write-back of the same ids

    async def __call__(self, conn: asyncpg.Connection,
                       items: Sequence[ReceiptWrite]) -> list[int]:
        if self.race is None:
            res = await receipts.store(conn, items, siblings=self.siblings(),
                                       window_s=self.settings().window_s)
        else:
            token = await self.race.before_store(frozenset(r.smsc_id for r in items))
            try:
                res = await receipts.store(conn, items, siblings=self.siblings(),
                                           window_s=self.settings().window_s)
            finally:
                self.race.after_store(token)
        if self.on_stored is not None:
            self.on_stored(res)
        return list(res.ids)


async def run_matcher(pool: asyncpg.Pool, settings: MatchSettings, *, stop: asyncio.Event,
                      wait_for_work: Callable[[], Awaitable[Any]],
                      on_result: Callable[[MatchResult], None] | None = None) -> None:
    """Match receipts until `stop` (an asyncio.Event) is set.

    Runs `match_batch` while batches come back non-empty, then awaits `wait_for_work()` (a
    NOTIFY on the receipts channel, or the fallback timer that also picks up retries whose
    run_after has come). `on_result(MatchResult)` feeds the metrics. A database error is this
    loop's boundary: logged, then retried after a second.
    """
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                result = await match_batch(conn, settings)
        except DATABASE_ERRORS:
            log.exception("receipt_match_failed")
            result = None
        if result is not None and on_result is not None:
            on_result(result)
        if result is not None and result.processed >= settings.batch:
            continue  # more may be due right now
        finished, _ = await race_stop(wait_for_work(), stop,
                                      None if result is not None else 1.0)
        if finished and not stop.is_set() and settings.min_age_s > 0:
            # The receipts that woke us are first due `min_age_s` after they arrived: wait that
            # long (interruptibly) instead of missing them until the fallback timer.
            await sleep_or_stop(stop, settings.min_age_s)
