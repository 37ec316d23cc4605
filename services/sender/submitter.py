"""The submit stage's claim loop: claim outbound messages, route them, hand their parts to the
lanes, and pass each answered message to the policy and the write-back.

Flow, with the bounds that keep memory flat and the SMSC window full:

1. **Claim** (`claim_once`): at most the free window slots plus one batch, counted in parts
   (every claimed message is at least one part; parts already queued in memory count against
   the budget), in one statement that also expires, suppresses and schedules (see
   `outbound.claim`). Transactional first, fair across accounts.
2. **Prepare**: marketing inside quiet hours (recipient's zone, `policy.quiet_delay_s`) is
   deferred to the end of the quiet period; the route picks a bound connector (none bound:
   deferred and counted, never failed); a message scheduled for later (it comes early only
   when some connector has `schedule_mode = "send"`) goes to such a connector with its
   schedule_delivery_time, or is deferred to its `send_at` for any other;
   `shared.smpp.compose.build_parts` splits the content into submit_sm PDUs with the
   message's SMPP fields (parts an earlier attempt already got accepted are skipped).
3. **Submit** (`lanes.Lane`): one bounded backlog per connector, pumped in order onto the
   least busy bound session: a part is written at once while the session can take it (its
   answer comes back as a call and pumps the next one into the freed slot); a part that must
   wait for the rate or a throttling pause waits in a task of its own (the session enforces
   window, per-slot TPS and throttling pauses either way).
4. **Decide and write back**: when every part of a message is answered, `policy.decide` turns
   the answers into an `Outcome` (the rules are in `policy.py`), which joins the
   `writeback.Flusher`'s buffer, flushed in one fenced statement on size or time
   (`outbound.write_back`); status callbacks and error events go in the same transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog

from smsgw.services.sender.lanes import MAX_LANE_QUEUE, Lane
from smsgw.services.sender.metrics import SenderMetrics
from smsgw.services.sender.policy import THROTTLE, decide, quiet_delay_s, recipient_zone
from smsgw.services.sender.records import InFlight, Outcome, PartJob
from smsgw.services.sender.routing import Router, pick, xid_and_ported
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.sender.writeback import Flusher, claim_change
from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.db import CONNECTION_ERRORS, DATABASE_ERRORS
from smsgw.shared.domain.status_callbacks import insert_callbacks
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import outbound
from smsgw.shared.queue.records import ClaimedOutbound, OutboundStatus
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.compose import build_parts
from smsgw.shared.smpp.receipts import normalise_id
from smsgw.shared.smpp.session import SubmitOutcome, SubmitResult
from smsgw.shared.smpp.text import TextTooLong

log = structlog.get_logger("smsgw.sender")

HELD = frozenset({"stopped", "isolated"})  # lane states an operator set (not `removed`)


class Submitter:
    """Claims, routes, splits, submits and writes back (see the module docstring).

    Dependencies come in as arguments: `pool`, `lanes` (connector name → Lane), the
    `router` (swap `submitter.router` on SIGHUP), `settings` (the `[sender]` section), `owner`
    (the lease owner: this instance's worker id), `metrics` (optional), and
    `wait_for_work()` which returns after a NOTIFY on the outbound channel or the fallback
    timer. `account_names` maps account ids to names for per-account routes.
    """

    def __init__(self, pool: asyncpg.Pool, lanes: Mapping[str, Lane], router: Router,
                 settings: SenderSettings, *, owner: str, metrics: SenderMetrics | None = None,
                 wait_for_work: Callable[[], Awaitable[Any]] | None = None,
                 account_names: Mapping[int, str] | None = None,
                 hasher: NumberHasher | None = None, claim_pool: Any = None,
                 writeback_pool: Any = None) -> None:
        self.pool = pool
        # the claim and the write-back run on connections planned for index probes
        # (`engine.PlannedPool`); the sender's pool when none is given (tests, benchmarks)
        self.claim_pool = claim_pool if claim_pool is not None else pool
        self.lanes = dict(lanes)
        self.router = router
        self.settings = settings
        self.owner = owner  # lease owner: this instance's worker id
        self.quiet_hours = settings.quiet_hours  # parsed once, read per marketing message
        self.hasher = hasher  # keys the recipient hash of rows stored without one
        self.metrics = metrics
        self.wait_for_work = wait_for_work or (lambda: asyncio.sleep(1.0))
        self.account_names = dict(account_names or {})
        self.flusher = Flusher(writeback_pool if writeback_pool is not None else pool,
                               settings, owner, metrics)
        self.queued_parts = 0  # parts in lane queues or outstanding
        self.in_flight: dict[int, InFlight] = {}
        self.results_ok = 0  # parts accepted by an SMSC (benchmarks and status)
        self.ported_enabled = True  # look up ported_numbers per claimed batch
        # scheduled MTs come to this sender's claim early when one of its connectors passes
        # schedules to the SMSC; `_prepare` holds them for the others
        self.schedule_at_smsc = any(lane.connector.schedule_mode == "send"
                                    for lane in self.lanes.values())
        # the connectors this sender binds (config): a message forced elsewhere is rejected
        self.configured: frozenset[str] = frozenset(self.lanes)
        self.running = False  # set by run(): lanes added later start at once
        self._space = asyncio.Event()
        # xids of claims that failed with a connection error: maybe committed (release_unknown)
        self._unknown_claims: list[int] = []
        self._next_orphan_check = time.monotonic() + settings.lease_s
        # connector → its (submits{ok}, submit_duration) metric children, read per answer
        self._ok_metrics: dict[str, tuple[Any, Any]] = {}
        for lane in self.lanes.values():
            lane.on_result = self._on_result

    def add_lane(self, lane: Lane) -> None:
        """A connector added by a reload: its lane joins (workers start if we run)."""
        lane.on_result = self._on_result
        self.lanes[lane.name] = lane
        if self.running:
            lane.start()

    def connectors_changed(self, configured: frozenset[str]) -> None:
        """The config's connectors changed (SIGHUP) or a lane's state did: recompute what
        depends on them and re-check the budget."""
        self.configured = configured
        self.schedule_at_smsc = any(lane.connector.schedule_mode == "send"
                                    for name, lane in self.lanes.items() if name in configured)
        self.wake()

    # -- capacity -------------------------------------------------------------------------

    def wake(self) -> None:
        """Re-check the budget now (a session bound: there is window to claim into)."""
        for lane in self.lanes.values():
            lane.forget_sessions()
        self._space.set()

    def budget(self) -> int:
        """Parts we may claim now: free window slots of bound connectors plus one batch."""
        window = sum(lane.capacity for lane in self.lanes.values())
        if window == 0:
            return 0
        if self.flusher.backlog > 4 * self.settings.flush_size:
            return 0
        return window + self.settings.batch - self.queued_parts

    async def _wait_budget(self, stop: asyncio.Event) -> int:
        while not stop.is_set():
            budget = self.budget()
            if budget > 0:
                return budget
            self._space.clear()
            await race_stop(self._space.wait(), stop, 0.5)
        return 0

    # -- main loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and submit until `stop`; then drain: release unsent claims, flush, return.

        The lanes' workers and the flusher run inside; the caller unbinds afterwards.
        """
        self.running = True
        for lane in self.lanes.values():
            lane.start()
        flusher_stop = asyncio.Event()
        flusher = asyncio.create_task(self.flusher.run(flusher_stop), name="sender.flusher")
        try:
            await self._claim_loop(stop)
            await self.drain()
        finally:
            flusher_stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
            for lane in self.lanes.values():
                await lane.stop()
            await self.release_all()

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            budget = await self._wait_budget(stop)
            if budget <= 0:
                continue
            try:
                if self._unknown_claims:
                    await self._release_unknown()
                if time.monotonic() >= self._next_orphan_check:
                    await self._disown_orphans()
                claimed = await self.claim_once(budget)
            except CONNECTION_ERRORS as exc:
                log.warning("claim_failed_db_unavailable",
                            error=f"{type(exc).__name__}: {exc}"[:300],
                            unknown_claims=len(self._unknown_claims))
                await sleep_or_stop(stop, 1.0)
                continue
            except DATABASE_ERRORS:
                log.exception("claim_failed")
                await sleep_or_stop(stop, 1.0)
                continue
            if claimed == 0:
                await race_stop(self.wait_for_work(), stop)

    async def claim_once(self, budget: int) -> int:
        """Claim up to `budget` messages and hand them to the lanes; return how many rows."""
        limit = max(1, min(budget, self.settings.batch * 10))
        xid: int | None = None
        try:
            async with self.claim_pool.acquire() as conn, conn.transaction():
                rows = await outbound.claim(conn, owner=self.owner,
                                            lease_s=self.settings.lease_s, limit=limit,
                                            max_accounts=self.settings.max_accounts,
                                            schedule_at_smsc=self.schedule_at_smsc)
                if any(r.unhashed for r in rows):
                    rows = await self._hash_unhashed(conn, rows)
                changes = [c for c in map(claim_change, rows) if c is not None]
                if changes:
                    await insert_callbacks(conn, changes)
                if self.settings.events:
                    await self._claim_events(conn, rows)
                # the transaction's id, last: only a COMMIT whose answer is lost needs it, and
                # a claim that leased nothing leaves nothing to give back
                ported: Mapping[str, list[str]] = {}
                if rows and self.ported_enabled:  # with the ported lookup: one round trip
                    xid, ported = await xid_and_ported(
                        conn, [r.to_addr for r in rows if r.status == OutboundStatus.SENDING])
                elif rows:
                    xid = await outbound.current_xid(conn)
        except CONNECTION_ERRORS:
            # the COMMIT may have happened with its answer lost (a failover): the rows would
            # stay leased to us and unknown, and the claim never takes over our own leases
            if xid is not None:
                self._unknown_claims.append(xid)
            raise
        await self._dispatch(rows, ported)
        return len(rows)

    async def _release_unknown(self) -> None:
        """Requeue what claims with a lost COMMIT answer leased to us (see claim_once)."""
        async with self.pool.acquire() as conn:
            ids = await outbound.release_unknown(conn, self.owner, self._unknown_claims)
        log.warning("unknown_claims_resolved", claims=len(self._unknown_claims),
                    released=len(ids), msg_ids=ids[:20])
        self._unknown_claims.clear()

    async def _disown_orphans(self) -> None:
        """Every `lease_s`: rows leased to us that we do not hold, expired for a lease_s more,
        go to the stale-lease takeover (`outbound.disown_orphans`)."""
        self._next_orphan_check = time.monotonic() + self.settings.lease_s
        held = [*self.in_flight, *(o.msg_id for o in self.flusher.buffer)]
        async with self.pool.acquire() as conn:
            ids = await outbound.disown_orphans(conn, self.owner, held, self.settings.lease_s)
        if ids:
            log.warning("orphaned_leases_disowned", messages=len(ids), msg_ids=ids[:20])

    async def _hash_unhashed(self, conn: asyncpg.Connection,
                             rows: list[ClaimedOutbound]) -> list[ClaimedOutbound]:
        """Leased marketing rows stored without `to_hash` (an earlier release's receiver, a
        hand-written INSERT): hash them here and check the keyed suppressions in one
        statement; suppressed ones leave the batch as the claim would have finished them.
        Never runs for rows our own daemons stored (they carry the hash)."""
        if self.hasher is None:  # only a test harness builds a submitter without the key
            log.warning("recipient_hash_unavailable", count=sum(r.unhashed for r in rows))
            return rows
        todo = [r for r in rows if r.unhashed]
        found = await outbound.hash_claimed(conn, owner=self.owner, ids=[r.id for r in todo],
                                            hashes=[self.hasher(r.to_addr) for r in todo])
        finished = {i for i, status in found if status == OutboundStatus.SUPPRESSED}
        return [replace(r, status=OutboundStatus.SUPPRESSED, unhashed=False)
                if r.id in finished else r
                for r in rows]

    async def _claim_events(self, conn: asyncpg.Connection,
                            rows: Sequence[ClaimedOutbound]) -> None:
        evs = [(r.id, "possible_duplicate" if r.reclaimed else r.status,
                {"reason": "lease_taken_over"} if r.reclaimed else {"error": r.status})
               for r in rows if r.reclaimed or r.status in ("expired", "suppressed")]
        if evs:
            await outbound.log_events(conn, evs, "sender")

    async def _dispatch(self, rows: Sequence[ClaimedOutbound],
                        ported: Mapping[str, list[str]]) -> None:
        deferred: list[tuple[int, float, str, str]] = []
        now = datetime.now(UTC)
        reclaimed = 0
        for row in rows:
            if row.reclaimed:
                reclaimed += 1
            if row.status != "sending":
                self._count_finished(row)
                continue
            deferral = self._prepare(row, ported.get(row.to_addr), now)
            if deferral is not None:
                deferred.append((row.id, *deferral))
        m = self.metrics
        if m is not None and rows:  # once per claim, not per row
            if len(rows) > reclaimed:
                m.child(m.claimed, "fresh").inc(len(rows) - reclaimed)
            if reclaimed:
                m.child(m.claimed, "reclaimed").inc(reclaimed)
        if deferred:
            await self._defer(deferred)

    def _count_finished(self, row: ClaimedOutbound) -> None:
        if row.status in ("expired", "suppressed"):
            if self.metrics is not None:
                self.metrics.child(self.metrics.messages, row.status).inc()
            log.info("message_finished_at_claim", msg_id=row.id, outcome=row.status)

    def _prepare(self, row: ClaimedOutbound, ported: list[str] | None,
                 now: datetime) -> tuple[float, str, str] | None:
        """Queue a leased message's parts; or return (delay_s, reason, label) to defer it."""
        if row.reclaimed:
            self._possible_duplicate(row, row.connector, "lease_taken_over")
            if self.settings.no_response_policy == "submit_unknown":
                self.flusher.add(Outcome(msg_id=row.id, status=OutboundStatus.SUBMIT_UNKNOWN,
                                         row=row, error="lease expired before the response",
                                         connector=row.connector))
                return None
        # a message scheduled for later (claimed early for a connector that passes schedules
        # to the SMSC); a reclaimed one goes now, as the claim decides for held ones
        ahead = (row.send_at - now).total_seconds() \
            if row.send_at is not None and not row.reclaimed else 0.0
        if row.category == "marketing" and self.quiet_hours is not None:
            zone = recipient_zone(row.to_addr, self.settings.default_time_zone)
            at = row.send_at if ahead > 0 and row.send_at is not None else now
            delay = quiet_delay_s(at, zone, self.quiet_hours)
            if delay > 0:  # the quiet hours of the instant it would be delivered
                return ahead + delay if ahead > 0 else delay, "quiet hours", "quiet_hours"
        lane = self._route(row, ported)
        if not isinstance(lane, Lane):
            return lane  # a deferral, or None: the message was finished here
        if ahead > 0 and lane.connector.schedule_mode != "send":
            return ahead, "scheduled", "scheduled"  # held here until send_at, as before
        if not self._enqueue(row, lane):
            return self.settings.no_bind_wait_s, "connector queue full", "no_bind"
        return None

    def _route(self, row: ClaimedOutbound,
               ported: list[str] | None) -> Lane | tuple[float, str, str] | None:
        """The lane that takes the message now; else (delay_s, reason, label) to defer it, or
        None when it was finished here (forced onto a connector that is not configured)."""
        forced = row.connector or row.route_hint
        if forced and forced not in self.configured:
            # forced onto a connector this sender does not bind (removed by a reload): a clear
            # failure rather than a wait that can only end at its validity
            self.flusher.add(Outcome(msg_id=row.id, status=OutboundStatus.REJECTED, row=row,
                                     error=f"forced connector {forced!r} is not configured",
                                     connector=forced, attempts_inc=1))
            return None
        choice = self.router.choose(row.to_addr, account=self.account_names.get(
            row.account_id or 0), forced=forced, ported=ported)
        if choice is None:
            return self.settings.no_bind_wait_s, "no route for destination", "no_route"
        lanes = self.lanes
        if choice.wait_when_stopped:  # a stopped connector keeps its place in the route
            name = pick(choice, lambda c: (lane := lanes.get(c)) is not None
                        and (lane.state in HELD or lane.usable()))
            if name is not None and lanes[name].paused:
                return self.settings.no_bind_wait_s, f"connector {name} stopped", "stopped"
        elif choice.weights is None:  # `pick` without weights, inline: the first usable one
            name = None
            for c in choice.connectors:
                lane = lanes.get(c)
                if lane is not None and lane.usable():
                    name = c
                    break
        else:
            name = pick(choice, lambda c: (lane := lanes.get(c)) is not None and lane.usable())
        if name is None:
            if any(c in lanes and lanes[c].state in HELD for c in choice.connectors):
                return self.settings.no_bind_wait_s, "connectors on route stopped", "stopped"
            return self.settings.no_bind_wait_s, "no bound connector on route", "no_bind"
        return lanes[name]

    def _possible_duplicate(self, row: ClaimedOutbound, connector: str | None, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.possible_duplicates.labels(connector=connector or "unknown").inc()
        log.warning("possible_duplicate", msg_id=row.id, reason=reason, connector=connector)

    def _enqueue(self, row: ClaimedOutbound, lane: Lane) -> bool:
        """Queue the message's parts on `lane`; False when the lane's queue cannot take them
        (the caller defers the message). A message that cannot be composed for this connector
        (a text it cannot encode, TLVs it does not take) is rejected here."""
        try:
            total, parts = build_parts(row, lane.connector)
        except (ValueError, TextTooLong, UnicodeError) as exc:
            self.flusher.add(Outcome(msg_id=row.id, status=OutboundStatus.REJECTED, row=row,
                                     error=f"cannot encode: {exc}", connector=lane.name,
                                     error_code=P.SMPP_ESME_RINVMSGLEN, attempts_inc=1))
            return True
        if len(lane.backlog) + len(parts) > MAX_LANE_QUEUE:
            return False
        msg = InFlight(row=row, connector=lane.name, parts_total=total, pending=len(parts))
        if not parts:  # every part was accepted by an earlier attempt
            self.flusher.add(decide(msg, self.settings, datetime.now(UTC)))
            return True
        self.in_flight[row.id] = msg
        for no, pdu in parts:
            self.queued_parts += 1
            lane.offer(PartJob(msg, no, pdu))
        return True

    async def _defer(self, deferred: list[tuple[int, float, str, str]]) -> None:
        async with self.pool.acquire() as conn:
            await outbound.defer(conn, self.owner, [d[0] for d in deferred],
                                 [d[1] for d in deferred], [d[2] for d in deferred])
        if self.metrics is not None:
            for d in deferred:
                self.metrics.waiting.labels(reason=d[3]).inc()

    # -- results --------------------------------------------------------------------------

    def _on_result(self, job: PartJob, result: SubmitResult, duration_s: float) -> None:
        msg = job.msg
        lane = self.lanes[msg.connector]
        if result.outcome is SubmitOutcome.OK:
            self.results_ok += 1
            msg.smsc_ids[job.part_no] = normalise_id(result.message_id or "",
                                                     lane.connector.submit_id_mode)
        msg.results[job.part_no] = result
        msg.pending -= 1
        self.queued_parts -= 1
        self._space.set()
        self._count_result(lane.name, result, duration_s)
        if msg.pending == 0:
            self.in_flight.pop(msg.row.id, None)
            outcome = decide(msg, self.settings, datetime.now(UTC))
            if outcome.possible_duplicate:
                self._possible_duplicate(msg.row, msg.connector, "no_response")
            self.flusher.add(outcome)

    def _count_result(self, connector: str, result: SubmitResult, duration_s: float) -> None:
        m = self.metrics
        if m is None:
            return
        if result.outcome is SubmitOutcome.OK:
            ok = self._ok_metrics.get(connector)
            if ok is None:
                ok = self._ok_metrics[connector] = (m.child(m.submits, connector, "ok"),
                                                    m.child(m.submit_duration, connector))
            m.tally.inc(ok[0])
            m.tally.observe(ok[1], duration_s)
            return
        if result.outcome is SubmitOutcome.REJECTED:
            label = "throttled" if result.command_status in THROTTLE else "rejected"
        elif result.outcome is SubmitOutcome.UNKNOWN:
            label = "timeout"
        else:
            label = "not_sent"
        m.child(m.submits, connector, label).inc()

    # -- drain ----------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop sending queued parts (they resolve as not sent), wait for the outstanding
        ones, and flush every outcome. The caller bounds this with the drain deadline."""
        for lane in self.lanes.values():
            lane.draining = True
        while self.queued_parts > 0:
            self._space.clear()
            await sleep_or_stop(self._space, 0.2)  # a part resolved, or look again
        await self.flusher.wait_idle()

    async def release_all(self) -> int:
        """Give every row still leased to us back to the queue (drain, or after a crash of a
        worker); returns how many."""
        try:
            async with self.pool.acquire() as conn:
                rows = await outbound.release(conn, self.owner)
        except DATABASE_ERRORS:
            log.exception("release_failed")
            return 0
        if rows:
            log.info("claims_released", messages=len(rows))
        return len(rows)
