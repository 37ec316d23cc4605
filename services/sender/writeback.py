"""Write-back: a message's outcome, its status callback and its trace events, in batches.

When every part of a message is answered, the submitter hands the policy's `Outcome` to the
`Flusher`, which buffers outcomes and writes each batch in one transaction fenced by the lease
owner (`outbound.write_back`): a row another instance has taken over is not touched. Status
callbacks (`status_change`) and events for unusual outcomes go in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import asyncpg
import orjson
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
from smsgw.shared.queue import outbound, receipts
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


def _write_back_docs(outcomes: Sequence[Outcome]) -> tuple[list[dict[str, Any]],
                                                          list[dict[str, Any]]]:
    """The write-back's messages and parts as `outbound.write_back_docs` reads them (the
    parts in outcome order, each outcome's parts together)."""
    msgs = [{"id": o.msg_id, "status": o.status, "error_code": o.error_code, "error": o.error,
             "delay_s": o.delay_s, "attempts_inc": o.attempts_inc,
             "parts_total": o.parts_total, "connector": o.connector} for o in outcomes]
    parts = [{"outbound_id": o.msg_id, "part_no": no, "parts_total": o.parts_total or 1,
              "connector": o.connector or "", "smsc_id": sid, "command_status": cs,
              "status": st, "kannel_dlr": dlr}
             for o in outcomes for dlr in (_kannel_dlr(o),) for (no, sid, cs, st) in o.parts]
    return msgs, parts


_FINAL_PART_STATES = frozenset({"delivered", "undeliverable", "expired", "rejected",
                                "unknown_receipt"})


def _quiet_one_part(o: Outcome) -> bool:
    """Whether a receipt for this outcome needs nothing but its part and message updated: an
    accepted one-part message that owes no report — no status callback, no Kannel dlr-url, no
    intermediate ESME receipt (the write-back takes it from sending to its final state in one
    update) — the cases `receipts.store` matches itself."""
    row = o.row  # no callback_url: then no Kannel dlr-url either (`_kannel_dlr` is False)
    if (row is None or o.status != OutboundStatus.SUBMITTED or (o.parts_total or 1) != 1
            or len(o.parts) != 1 or row.callback_url or not o.connector):
        return False
    meta = row.meta
    return not (isinstance(meta, dict) and int(meta.get("esme_rd") or 0) & 16)


async def _raced_receipts(conn: asyncpg.Connection, outcomes: Sequence[Outcome],
                          siblings: Mapping[str, tuple[str, ...]], msgs: list[dict[str, Any]],
                          parts: list[dict[str, Any]]) -> dict[int, list[int]]:
    """The receipts that arrived before their part was recorded, for the quiet one-part
    outcomes of this batch: read and locked (`receipts.waiting`), the winner of each part
    picked as the matcher picks it (a final receipt beats an intermediate one, then the
    newest), its outcome added to the message's and the part's document. Returns message id
    → the receipt ids to mark matched once the write-back owned the message."""
    # smsc id -> (message index, part index, connectors whose receipts may match)
    cands: dict[str, tuple[int, int, tuple[str, ...]] | None] = {}
    j = 0
    for i, o in enumerate(outcomes):
        if _quiet_one_part(o):
            sid, st = o.parts[0][1], o.parts[0][3]
            if sid and st == OutboundStatus.SUBMITTED:
                assert o.connector is not None
                # an id twice in one batch (reused): the matcher decides between the parts
                cands[sid] = None if sid in cands else (
                    i, j, siblings.get(o.connector) or (o.connector,))
        j += len(o.parts)
    wanted = [sid for sid, c in cands.items() if c is not None]
    if not wanted:
        return {}
    found: dict[int, list[int]] = {}
    best: dict[str, Any] = {}
    for r in await receipts.waiting(conn, wanted):
        cand = cands.get(r["smsc_id"])
        if cand is None or r["connector"] not in cand[2]:
            continue
        found.setdefault(outcomes[cand[0]].msg_id, []).append(r["id"])
        w = best.get(r["smsc_id"])
        if w is None or (r["final"], r["id"]) > (w["final"], w["id"]):
            best[r["smsc_id"]] = r
    for sid, w in best.items():
        i, j, _ = cands[sid]  # type: ignore[misc]
        part = parts[j]
        part["receipt_err"], part["receipt_done"] = w["err"], bool(w["final"])
        if w["final"] and w["state"] in _FINAL_PART_STATES:
            part["receipt_status"] = w["state"]
            msgs[i]["receipt_final"] = w["state"] if w["state"] in ("delivered", "expired") \
                else "undeliverable"
            msgs[i]["receipt_err"] = w["err"]
    return found


class WriteBackResult(NamedTuple):
    """One write-back: the messages it still owned (and updated), and the receipts it matched
    to the parts it recorded (the ones that had arrived before)."""

    owned: set[int]
    receipts_matched: int


async def write_back(conn: asyncpg.Connection, owner: str, outcomes: Sequence[Outcome], *,
                     events: bool = True, daemon: str = "sender",
                     siblings: Mapping[str, tuple[str, ...]] | None = None) -> WriteBackResult:
    """Record outcomes in one transaction (fenced by `owner`); return the ids it owned and
    the receipts it matched.

    Status callbacks for the owned messages and events for the unusual outcomes are written
    in the same transaction. With `siblings` (`receipts.sibling_map`: connector → the
    connectors whose receipts may match its parts), a receipt that arrived before its part
    was recorded (a fast SMSC's receipt racing this write-back), of a message that owes no
    report, is matched and its message finalised in the same transaction — else the matcher
    does it later, in two more statements and a commit.
    """
    async with conn.transaction():
        msgs, parts = _write_back_docs(outcomes)
        raced = await _raced_receipts(conn, outcomes, siblings, msgs, parts) if siblings \
            else {}
        owned = set(await outbound.write_back_docs(conn, owner, orjson.dumps(msgs).decode(),
                                                   orjson.dumps(parts).decode()))
        pairs = [(rid, mid) for mid, rids in raced.items() if mid in owned for rid in rids]
        matched = await receipts.matched_to_parts(
            conn, [p[0] for p in pairs], [p[1] for p in pairs]) if pairs else 0
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
    return WriteBackResult(owned, matched)


class ReceiptRace:
    """Orders, within this sender, a receipt's store and its part's write-back, so that a
    fast SMSC's receipt is matched by one or the other instead of waiting for the matcher.

    A receipt stored while the write-back of its part is running sees no part (the
    write-back has not committed) and the write-back does not see the receipt (stored after
    its snapshot): both miss it. So a write-back first waits for the receipt stores in
    progress that carry one of its SMSC ids, and a receipt store first waits for a running
    write-back that carries one of its ids; whichever runs second sees the other's commit.
    Both waits are bounded (`bound_s`): past it, the work goes on and the matcher matches
    what was missed, as it always can. Receipts that come on another sender's binds are not
    ordered (the matcher's case)."""

    def __init__(self, bound_s: float = 1.0) -> None:
        self.bound_s = bound_s
        self._flushing: frozenset[str] = frozenset()
        self._flush_idle = asyncio.Event()
        self._flush_idle.set()
        self._stores: dict[int, frozenset[str]] = {}
        self._store_done = asyncio.Event()
        self._next = 0

    async def before_flush(self, smsc_ids: frozenset[str]) -> None:
        """Wait for the stores in progress of any of `smsc_ids`, then mark them flushing."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.bound_s
        while any(not ids.isdisjoint(smsc_ids) for ids in self._stores.values()):
            self._store_done.clear()
            try:
                await asyncio.wait_for(self._store_done.wait(), max(0.0, end - loop.time()))
            except TimeoutError:
                break
        self._flushing = smsc_ids
        self._flush_idle.clear()

    def after_flush(self) -> None:
        """The write-back committed (or failed)."""
        self._flushing = frozenset()
        self._flush_idle.set()

    async def before_store(self, smsc_ids: frozenset[str]) -> int:
        """Wait while a running write-back carries any of `smsc_ids`; register the store."""
        if not self._flushing.isdisjoint(smsc_ids):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_idle.wait(), self.bound_s)
        token = self._next
        self._next += 1
        self._stores[token] = smsc_ids
        return token

    def after_store(self, token: int) -> None:
        """The store committed (or failed)."""
        del self._stores[token]
        self._store_done.set()


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
        # connector → the connectors whose receipts may match its parts (None: the write-back
        # matches no receipt; the engine sets it from its receipt-matching settings)
        self.siblings: Callable[[], Mapping[str, tuple[str, ...]]] | None = None
        self.race: ReceiptRace | None = None  # set with `siblings`
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
        race = self.race
        if race is not None:
            await race.before_flush(frozenset(sid for o in batch for (_no, sid, _cs, _st)
                                              in o.parts if sid))
        try:
            async with self.pool.acquire() as conn:
                res = await write_back(conn, self.owner, batch, events=self.settings.events,
                                       siblings=self.siblings() if self.siblings else None)
        except DATABASE_ERRORS:
            log.exception("writeback_failed", messages=len(batch))
            await asyncio.sleep(1.0)
            return
        finally:
            if race is not None:
                race.after_flush()
        del self.buffer[: len(batch)]
        self.flushed += len(batch)
        if self.metrics is not None:
            self.metrics.writeback_batch.observe(len(batch))
            if res.receipts_matched:
                self.metrics.dlr_matched.labels(outcome="matched").inc(res.receipts_matched)
            outcomes: dict[str, int] = {}
            for o in batch:
                label = _outcome_label(o.status)
                outcomes[label] = outcomes.get(label, 0) + 1
            for label, n in outcomes.items():  # one update per outcome, not per message
                self.metrics.child(self.metrics.messages, label).inc(n)

    async def wait_idle(self) -> None:
        """Return once everything added so far has been written."""
        await self._idle.wait()


def _outcome_label(status: str) -> str:
    return "retry" if status == OutboundStatus.QUEUED else status
