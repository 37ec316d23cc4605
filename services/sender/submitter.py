"""The submit stage: claim outbound messages, route, split, submit_sm, write the outcomes back.

Flow, with the bounds that keep memory flat and the SMSC window full:

1. **Claim** (`claim_once`): at most the free window slots plus one batch, counted in parts
   (every claimed message is at least one part; parts already queued in memory count against
   the budget), in one statement that also expires, suppresses and schedules (see
   `queries.CLAIM_OUTBOUND`). Transactional first, fair across accounts.
2. **Prepare**: marketing inside quiet hours (recipient's zone) is deferred to the end of the
   quiet period; the route picks a bound connector (none bound: deferred and counted, never
   failed); the text is split with `shared.smpp.text` into parts (parts an earlier attempt
   already got accepted are skipped).
3. **Submit**: one bounded queue per connector, drained by `window x binds` workers; each
   worker submits on the least busy bound session (the session enforces window, per-slot TPS
   and throttling pauses).
4. **Write back** (`Flusher`): when every part of a message is answered, its outcome joins a
   buffer flushed in one fenced statement on size or time (`queries.WRITE_BACK`); status
   callbacks and error events go in the same transaction.

Outcome rules: all parts accepted → `submitted`; a permanent (or ambiguous) status →
`rejected` with the status in `error_code`; no response (timeout, lost connection after the
write, generic_nack) → policy `resubmit` (default: back to queued once the lease would have
expired, counted in `smsgw_possible_duplicates_total`) or `submit_unknown`; throttling / queue
full / never sent → queued again without counting an attempt; other transient statuses →
queued with exponential backoff and jitter, `dead` after `max_attempts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from functools import lru_cache, partial
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg
import phonenumbers
import structlog
from phonenumbers import timezone as pn_timezone

from smsgw.services.sender import queries as Q
from smsgw.services.sender.metrics import SenderMetrics
from smsgw.services.sender.routing import Router, pick
from smsgw.services.sender.status_callbacks import StatusChange, insert_callbacks
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.receipts import normalise_id
from smsgw.shared.smpp.session import SubmitOutcome, SubmitResult
from smsgw.shared.smpp.text import (
    TextTooLong,
    choose_encoding,
    data_coding_for,
    split,
    transliterate,
)

log = structlog.get_logger("smsgw.sender")

NoResponsePolicy = Literal["resubmit", "submit_unknown"]
_THROTTLE = frozenset({P.SMPP_ESME_RTHROTTLED, P.SMPP_ESME_RMSGQFUL})
_TERMINAL_CALLBACK = frozenset({"submitted", "rejected", "submit_unknown", "dead"})
# Basic GSM 03.38 characters that cost one septet (no escapes), for the one-part fast path.
_PLAIN_GSM = re.compile(
    "[@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,\\-./0-9:;<=>?¡A-ZÄÖÑÜ§¿a-zäöñüà]*")
MAX_LANE_WORKERS = 4096  # submit coroutines per connector (each holds one window slot)
MAX_LANE_QUEUE = 100_000  # parts waiting in memory per connector (the budget stays below)


@dataclass(frozen=True, slots=True)
class SubmitSettings:
    """What the submit stage needs from `[sender]` (see `settings.py` for each key)."""

    owner: str
    lease_s: float = 120.0
    batch: int = 100
    max_accounts: int = 100
    flush_size: int = 500
    flush_s: float = 0.05
    max_attempts: int = 10
    retry_base_s: float = 1.0
    retry_max_s: float = 300.0
    throttle_retry_s: float = 2.0
    not_sent_retry_s: float = 1.0
    no_bind_wait_s: float = 5.0
    no_response_policy: NoResponsePolicy = "resubmit"
    quiet_hours: tuple[dtime, dtime] | None = None
    default_time_zone: str = "UTC"
    events: bool = True


@dataclass(frozen=True, slots=True)
class Claimed:
    """One leased (or finished-at-claim) outbound row, as the claim returns it."""

    id: int
    account_id: int | None
    source: str
    from_addr: str
    to_addr: str
    body: str | None
    category: str
    priority: int
    encoding: str | None
    connector: str | None
    route_hint: str | None
    client_ref: str | None
    callback_url: str | None
    dlr_mask: int | None
    meta: Any
    attempts: int
    status: str
    lease_until: datetime | None
    valid_until: datetime | None
    reclaimed: bool
    unhashed: bool  # a leased marketing row without its recipient hash (see Q.HASH_CLAIMED)
    done_parts: tuple[int, ...]

    @classmethod
    def from_record(cls, r: Any) -> Claimed:
        """From a claim_outbound row (positional: the RETURNING list has the field order,
        checked once against the column names)."""
        if not _CLAIM_COLUMNS_CHECKED:
            _check_claim_columns(list(r.keys()))
        values = tuple(r)
        return cls(*values[:-1], tuple(values[-1] or ()))


_CLAIM_COLUMNS_CHECKED: list[bool] = []


def _check_claim_columns(names: list[str]) -> None:
    expected = [f.name for f in fields(Claimed)]
    if names != expected:
        raise RuntimeError(f"claim_outbound returns {names}, Claimed expects {expected}")
    _CLAIM_COLUMNS_CHECKED.append(True)


@dataclass(slots=True, eq=False)
class InFlight:
    """A message whose parts are queued or outstanding in this process."""

    row: Claimed
    connector: str
    parts_total: int
    pending: int
    results: dict[int, SubmitResult] = field(default_factory=dict)
    smsc_ids: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartJob:
    """One submit_sm to send: which message, which part, the PDU."""

    msg: InFlight
    part_no: int
    pdu: P.SubmitSm


@dataclass(frozen=True, slots=True)
class Outcome:
    """A message's write-back: new status, error, retry delay, and its answered parts."""

    msg_id: int
    status: str
    error_code: int | None = None
    error: str | None = None
    delay_s: float = 0.0
    attempts_inc: int = 0
    parts_total: int | None = None
    connector: str | None = None
    parts: tuple[tuple[int, str | None, int | None, str], ...] = ()  # (no, smsc_id, cs, status)
    row: Claimed | None = None
    possible_duplicate: bool = False


# --- message preparation -----------------------------------------------------------------------


def _is_alnum(addr: str) -> bool:
    return not addr.lstrip("+").isdigit()


def source_ton_npi(addr: str, connector: Any) -> tuple[int, int, str]:
    """TON/NPI and on-the-wire form of a sender id.

    Alphanumeric → the connector's alphanumeric TON/NPI (5/0); a short code (listed in the
    connector's `short_codes`, or 3-8 digits without '+') → 3/0 (network specific); an
    international number (+E.164) → 1/1 without the '+'; anything else → the connector's
    default source TON/NPI.
    """
    if _is_alnum(addr):
        return connector.alphanumeric_ton, connector.alphanumeric_npi, addr[:11]
    digits = addr.lstrip("+")
    if addr in connector.short_codes or (not addr.startswith("+") and 3 <= len(digits) <= 8):
        return 3, 0, digits
    if addr.startswith("+"):
        return 1, 1, digits
    return connector.source_addr_ton, connector.source_addr_npi, digits


def concat_ref(msg_id: int, method: str) -> int:
    """The concatenation reference of a message: stable across retries (from its id)."""
    return msg_id & (0xFF if method == "udh8" else 0xFFFF)


def build_parts(row: Claimed, connector: Any) -> tuple[int, list[tuple[int, P.SubmitSm]]]:
    """Split a message for `connector`: (parts in total, [(part_no, submit_sm)]), skipping
    the parts an earlier attempt already got accepted.

    Raises ValueError/TextTooLong/UnicodeEncodeError when the text cannot be sent (the
    caller rejects the message).
    """
    text = row.body or ""
    if connector.transliterate:
        text = transliterate(text)
    allowed = connector.encodings
    if row.encoding in allowed:
        enc = row.encoding
    elif allowed[0] == "gsm7" and len(text) <= 160 and _PLAIN_GSM.fullmatch(text):
        enc = "gsm7"  # one part of basic GSM characters: nothing can beat it
    else:
        enc = choose_encoding(text, allowed, connector.long_message)
    if enc == "gsm7" and connector.gsm7_packed:
        enc = "gsm7_packed"
    pieces = split(text, enc, connector.long_message, concat_ref(row.id, connector.long_message))
    dc = data_coding_for(enc, connector.data_coding_0)
    ston, snpi, source = source_ton_npi(row.from_addr, connector)
    dest = row.to_addr.lstrip("+")
    out = []
    for no, piece in enumerate(pieces, 1):
        if no in row.done_parts:
            continue
        out.append((no, P.SubmitSm(
            source_addr_ton=ston, source_addr_npi=snpi, source_addr=source,
            dest_addr_ton=connector.dest_addr_ton, dest_addr_npi=connector.dest_addr_npi,
            destination_addr=dest, esm_class=0x40 if piece.udhi else 0,
            registered_delivery=connector.registered_delivery, data_coding=dc,
            short_message=piece.short_message, tlvs=piece.tlvs)))
    return len(pieces), out


@lru_cache(maxsize=4096)
def _zone_for_prefix(prefix: str, default: str) -> ZoneInfo:
    try:
        number = phonenumbers.parse(prefix.ljust(12, "0") if prefix.startswith("+") else
                                    "+" + prefix.ljust(11, "0"))
        zones = [z for z in pn_timezone.time_zones_for_number(number) if z != "Etc/Unknown"]
        return ZoneInfo(zones[0] if zones else default)
    except (phonenumbers.NumberParseException, ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def recipient_zone(to_addr: str, default: str = "UTC") -> ZoneInfo:
    """The recipient's time zone from the number (first zone of its range; else `default`).

    Cached by the first digits: the zone depends on country and area code, not the line.
    """
    return _zone_for_prefix(to_addr[:7], default)


def quiet_delay_s(now: datetime, zone: ZoneInfo, quiet: tuple[dtime, dtime]) -> float:
    """Seconds until the quiet period ends in `zone`, or 0 when `now` is outside it.

    `quiet` = (start, end) local times; start > end spans midnight (21:00-08:00).
    """
    start, end = quiet
    local = now.astimezone(zone)
    t = local.timetz().replace(tzinfo=None)
    inside = (start <= t < end) if start < end else (t >= start or t < end)
    if not inside:
        return 0.0
    end_day = local.date() if t < end else local.date() + timedelta(days=1)
    end_at = datetime.combine(end_day, end, tzinfo=zone)
    return max(0.0, (end_at - local).total_seconds())


# --- outcomes ------------------------------------------------------------------------------------


def _backoff(settings: SubmitSettings, attempts: int) -> float:
    cap = min(settings.retry_max_s, settings.retry_base_s * 2 ** min(attempts, 30))
    return settings.retry_base_s + random.random() * max(0.0, cap - settings.retry_base_s)


def _part_rows(msg: InFlight) -> tuple[tuple[int, str | None, int | None, str], ...]:
    rows = []
    for no, res in sorted(msg.results.items()):
        if res.outcome is SubmitOutcome.OK:
            rows.append((no, msg.smsc_ids.get(no), res.command_status, "submitted"))
        elif res.outcome is SubmitOutcome.REJECTED and _is_permanent(res):
            rows.append((no, None, res.command_status, "rejected"))
    return tuple(rows)


def _is_permanent(res: SubmitResult) -> bool:
    return res.status_class in ("permanent", "ambiguous")


def decide(msg: InFlight, settings: SubmitSettings, now: datetime) -> Outcome:
    """The write-back for a message whose parts are all answered (or given up)."""
    if len(msg.results) == 1 and msg.parts_total == 1:
        (no, res), = msg.results.items()
        if res.outcome is SubmitOutcome.OK:  # the common case, without the general walk
            return Outcome(msg_id=msg.row.id, status="submitted", parts_total=1,
                           connector=msg.connector, row=msg.row,
                           parts=((no, msg.smsc_ids.get(no), res.command_status, "submitted"),))
    mk = partial(Outcome, msg_id=msg.row.id, parts_total=msg.parts_total,
                 connector=msg.connector, parts=_part_rows(msg), row=msg.row)
    results = list(msg.results.values())
    rejected = next((r for r in results if r.outcome is SubmitOutcome.REJECTED
                     and _is_permanent(r)), None)
    if rejected is not None:
        return mk(status="rejected", error_code=rejected.command_status,
                  error=rejected.reason, attempts_inc=1)
    if any(r.outcome is SubmitOutcome.UNKNOWN for r in results):
        reason = next(r.reason for r in results if r.outcome is SubmitOutcome.UNKNOWN)
        if settings.no_response_policy == "submit_unknown":
            return mk(status="submit_unknown", error=reason, attempts_inc=1)
        lease_left = (msg.row.lease_until - now).total_seconds() if msg.row.lease_until else 0
        out = _retry(msg, settings, mk, f"no response: {reason}", max(0.0, lease_left), 1)
        return replace(out, possible_duplicate=True)
    transient = [r for r in results if r.outcome is not SubmitOutcome.OK]
    if not transient:
        return mk(status="submitted")
    if all(r.outcome is SubmitOutcome.NOT_SENT for r in transient):
        return _retry(msg, settings, mk, transient[0].reason or "not sent",
                      settings.not_sent_retry_s, 0)
    if all(r.outcome is SubmitOutcome.NOT_SENT or r.command_status in _THROTTLE
           for r in transient):
        return _retry(msg, settings, mk, "throttled", settings.throttle_retry_s, 0)
    first = next(r for r in transient if r.outcome is SubmitOutcome.REJECTED)
    return _retry(msg, settings, mk, first.reason or "transient error",
                  _backoff(settings, msg.row.attempts), 1, first.command_status)


def _retry(msg: InFlight, settings: SubmitSettings, mk: Callable[..., Outcome], error: str,
           delay_s: float, attempts_inc: int, error_code: int | None = None) -> Outcome:
    if attempts_inc and msg.row.attempts + attempts_inc >= settings.max_attempts:
        return mk(status="dead", error=error, error_code=error_code, attempts_inc=attempts_inc)
    return mk(status="queued", error=error, error_code=error_code, delay_s=delay_s,
              attempts_inc=attempts_inc)


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


def claim_change(row: Claimed) -> StatusChange | None:
    """The callback-worthy change of a row the claim finished (expired, suppressed)."""
    if not row.callback_url or row.status not in ("expired", "suppressed"):
        return None
    return StatusChange(outbound_id=row.id, status=row.status, account_id=row.account_id,
                        from_addr=row.from_addr, to_addr=row.to_addr, client_ref=row.client_ref,
                        callback_url=row.callback_url, dlr_mask=row.dlr_mask, meta=row.meta,
                        parts_total=None, delivered_parts=0, connector=None, error_code=None,
                        error=row.status)


# --- write-back ------------------------------------------------------------------------------


def _write_back_args(owner: str, outcomes: Sequence[Outcome]) -> list[Any]:
    parts = [(o.msg_id, no, o.parts_total or 1, o.connector or "", sid, cs, st)
             for o in outcomes for (no, sid, cs, st) in o.parts]
    pcols: list[list[Any]] = [list(c) for c in zip(*parts, strict=True)] if parts else \
        [[] for _ in range(7)]
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
        row = await conn.fetchrow(Q.WRITE_BACK, *_write_back_args(owner, outcomes))
        assert row is not None
        owned = set(row["owned"])
        changes = [c for o in outcomes if o.msg_id in owned
                   for c in (status_change(o),) if c is not None]
        if changes:
            await insert_callbacks(conn, changes)
        if events:
            evs = [(o.msg_id, "possible_duplicate" if o.possible_duplicate else o.status,
                    {"error": o.error, "error_code": o.error_code, "connector": o.connector})
                   for o in outcomes if o.msg_id in owned and o.status != "submitted"]
            if evs:
                await conn.execute(Q.LOG_EVENTS, [e[0] for e in evs], [e[1] for e in evs],
                                   [e[2] for e in evs], daemon)
    return owned


class Flusher:
    """Buffers outcomes and writes them in batches, on size (`flush_size`) or time (`flush_s`).

    The buffer is bounded by the submitter's claim budget (it stops claiming while the buffer
    holds more than `4 x flush_size`). A failed flush keeps the batch and retries after a
    second: the rows stay leased meanwhile, and the write-back stays fenced.
    """

    def __init__(self, pool: asyncpg.Pool, settings: SubmitSettings,
                 metrics: SenderMetrics | None) -> None:
        self.pool = pool
        self.settings = settings
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
                await _wait_any(self._kick, stop, None)
                self._kick.clear()
                continue
            if len(self.buffer) < self.settings.flush_size and not stop.is_set():
                await _wait_any(self._full, stop, self.settings.flush_s)
            await self.flush_once()

    async def flush_once(self) -> None:
        """Write the current buffer (up to 4 x flush_size) in one transaction."""
        self._full.clear()
        batch = self.buffer[: self.settings.flush_size * 4]
        try:
            async with self.pool.acquire() as conn:
                await write_back(conn, self.settings.owner, batch, events=self.settings.events)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
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
    return "retry" if status == "queued" else status


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, max_s: float | None) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=max_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


# --- connector lanes -----------------------------------------------------------------------------


class Lane:
    """One connector's submit queue and its workers (window x binds of them).

    `sessions()` returns the bound sessions (objects with `.client.submit` and
    `.client.session.outstanding`); each worker takes the next part and submits it on the
    least busy one. The queue is bounded by the submitter's claim budget.
    """

    def __init__(self, connector: Any, sessions: Callable[[], Sequence[Any]],
                 on_result: Callable[[PartJob, SubmitResult, float], None]) -> None:
        self.connector = connector
        self.name: str = connector.name
        self.sessions = sessions
        self.on_result = on_result
        # Bounded as a safety net: the claim budget keeps it far below this.
        self.queue: asyncio.Queue[PartJob] = asyncio.Queue(maxsize=MAX_LANE_QUEUE)
        self.draining = False
        self.in_flight = 0
        self._workers: list[asyncio.Task[None]] = []
        self._cached: Sequence[Any] = ()
        self._cached_at = -1.0

    def forget_sessions(self) -> None:
        """Drop the cached bound-session list (a bind just came up or went away)."""
        self._cached_at = float("-inf")

    @property
    def capacity(self) -> int:
        """Parts this connector can have outstanding now: window x bound sessions."""
        return int(self.connector.window) * len(self._bound())

    def up(self) -> bool:
        """True when at least one session of this connector is bound."""
        return bool(self._bound())

    def start(self) -> None:
        """Start the workers: window x configured binds (capped at MAX_LANE_WORKERS; a
        larger window needs a restart to get more workers, as does a larger `binds`)."""
        n = min(MAX_LANE_WORKERS, int(self.connector.window) * int(self.connector.binds))
        self._workers = [asyncio.create_task(self._work(), name=f"sender.lane.{self.name}.{i}")
                         for i in range(n)]

    async def stop(self) -> None:
        """Cancel the workers (after the drain has emptied the queue)."""
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def _bound(self) -> Sequence[Any]:
        # The bound-session list is rebuilt at most every 20 ms (it is read once per submit);
        # a session that died meanwhile answers NOT_SENT and the part is retried.
        now = time.monotonic()
        if now - self._cached_at > 0.02:
            self._cached, self._cached_at = self.sessions(), now
        return self._cached

    def _pick_session(self) -> Any | None:
        best, best_load = None, None
        for s in self._bound():
            session = s.client.session
            load = session.outstanding if session is not None else 0
            if best_load is None or load < best_load:
                best, best_load = s, load
        return best

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self.in_flight += 1
            started = time.monotonic()
            try:
                result = await self._submit(job)
            except asyncio.CancelledError:
                self.on_result(job, SubmitResult(SubmitOutcome.NOT_SENT, reason="cancelled"),
                               0.0)
                raise
            finally:
                self.in_flight -= 1
            self.on_result(job, result, time.monotonic() - started)

    async def _submit(self, job: PartJob) -> SubmitResult:
        if self.draining:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="draining")
        session = self._pick_session()
        if session is None:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="no bound session")
        result: SubmitResult = await session.client.submit(job.pdu)
        return result


# --- the submitter -----------------------------------------------------------------------------


class Submitter:
    """Claims, routes, splits, submits and writes back (see the module docstring).

    Dependencies come in as arguments: `pool`, `lanes` (connector name → Lane), the
    `router` (swap `submitter.router` on SIGHUP), `settings`, `metrics` (optional), and
    `wait_for_work()` which returns after a NOTIFY on the outbound channel or the fallback
    timer. `account_names` maps account ids to names for per-account routes.
    """

    def __init__(self, pool: asyncpg.Pool, lanes: Mapping[str, Lane], router: Router,
                 settings: SubmitSettings, *, metrics: SenderMetrics | None = None,
                 wait_for_work: Callable[[], Awaitable[Any]] | None = None,
                 account_names: Mapping[int, str] | None = None,
                 hasher: NumberHasher | None = None) -> None:
        self.pool = pool
        self.lanes = dict(lanes)
        self.router = router
        self.settings = settings
        self.hasher = hasher  # keys the recipient hash of rows stored without one
        self.metrics = metrics
        self.wait_for_work = wait_for_work or (lambda: asyncio.sleep(1.0))
        self.account_names = dict(account_names or {})
        self.flusher = Flusher(pool, settings, metrics)
        self.queued_parts = 0  # parts in lane queues or outstanding
        self.in_flight: dict[int, InFlight] = {}
        self.results_ok = 0  # parts accepted by an SMSC (benchmarks and status)
        self.ported_enabled = True  # look up ported_numbers per claimed batch
        self._space = asyncio.Event()
        for lane in self.lanes.values():
            lane.on_result = self._on_result

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
            await _wait_any(self._space, stop, 0.5)
        return 0

    # -- main loop ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and submit until `stop`; then drain: release unsent claims, flush, return.

        The lanes' workers and the flusher run inside; the caller unbinds afterwards.
        """
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
                claimed = await self.claim_once(budget)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                log.exception("claim_failed")
                await _wait_any(asyncio.Event(), stop, 1.0)
                continue
            if claimed == 0:
                await self._wait_work(stop)

    async def _wait_work(self, stop: asyncio.Event) -> None:
        waiter = asyncio.ensure_future(self.wait_for_work())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def claim_once(self, budget: int) -> int:
        """Claim up to `budget` messages and hand them to the lanes; return how many rows."""
        limit = max(1, min(budget, self.settings.batch * 10))
        async with self.pool.acquire() as conn, conn.transaction():
            rows = [Claimed.from_record(r) for r in await conn.fetch(
                Q.CLAIM_OUTBOUND, self.settings.owner, self.settings.lease_s, limit,
                self.settings.max_accounts)]
            if any(r.unhashed for r in rows):
                rows = await self._hash_unhashed(conn, rows)
            changes = [c for c in map(claim_change, rows) if c is not None]
            if changes:
                await insert_callbacks(conn, changes)
            if self.settings.events:
                await self._claim_events(conn, rows)
            ported = await self._ported(conn, rows)
        await self._dispatch(rows, ported)
        return len(rows)

    async def _hash_unhashed(self, conn: asyncpg.Connection,
                             rows: list[Claimed]) -> list[Claimed]:
        """Leased marketing rows stored without `to_hash` (an earlier release's receiver, a
        hand-written INSERT): hash them here and check the keyed suppressions in one
        statement; suppressed ones leave the batch as the claim would have finished them.
        Never runs for rows our own daemons stored (they carry the hash)."""
        if self.hasher is None:  # only a test harness builds a submitter without the key
            log.warning("recipient_hash_unavailable", count=sum(r.unhashed for r in rows))
            return rows
        todo = [r for r in rows if r.unhashed]
        found = await conn.fetch(Q.HASH_CLAIMED, self.settings.owner, [r.id for r in todo],
                                 [self.hasher(r.to_addr) for r in todo])
        finished = {r["id"] for r in found if r["status"] == "suppressed"}
        return [replace(r, status="suppressed", unhashed=False) if r.id in finished else r
                for r in rows]

    async def _claim_events(self, conn: asyncpg.Connection, rows: Sequence[Claimed]) -> None:
        evs = [(r.id, "possible_duplicate" if r.reclaimed else r.status,
                {"reason": "lease_taken_over"} if r.reclaimed else {"error": r.status})
               for r in rows if r.reclaimed or r.status in ("expired", "suppressed")]
        if evs:
            await conn.execute(Q.LOG_EVENTS, [e[0] for e in evs], [e[1] for e in evs],
                               [e[2] for e in evs], "sender")

    async def _ported(self, conn: asyncpg.Connection,
                      rows: Sequence[Claimed]) -> dict[str, list[str]]:
        # One lookup per batch; skipped entirely while the table is empty (the common case).
        if not rows or not self.ported_enabled:
            return {}
        found = await conn.fetch(Q.PORTED_LOOKUP, [r.to_addr for r in rows
                                                   if r.status == "sending"])
        return {r["number"]: list(r["connectors"]) for r in found}

    async def _dispatch(self, rows: Sequence[Claimed], ported: Mapping[str, list[str]]) -> None:
        deferred: list[tuple[int, float, str, str]] = []
        now = datetime.now(UTC)
        for row in rows:
            self._count_claim(row)
            if row.status != "sending":
                continue
            deferral = self._prepare(row, ported.get(row.to_addr), now)
            if deferral is not None:
                deferred.append((row.id, *deferral))
        if deferred:
            await self._defer(deferred)

    def _count_claim(self, row: Claimed) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.claimed,
                              "reclaimed" if row.reclaimed else "fresh").inc()
            if row.status in ("expired", "suppressed"):
                self.metrics.child(self.metrics.messages, row.status).inc()
        if row.status in ("expired", "suppressed"):
            log.info("message_finished_at_claim", msg_id=row.id, outcome=row.status)

    def _prepare(self, row: Claimed, ported: list[str] | None,
                 now: datetime) -> tuple[float, str, str] | None:
        """Queue a leased message's parts; or return (delay_s, reason, label) to defer it."""
        if row.reclaimed:
            self._possible_duplicate(row, row.connector, "lease_taken_over")
            if self.settings.no_response_policy == "submit_unknown":
                self.flusher.add(Outcome(msg_id=row.id, status="submit_unknown", row=row,
                                         error="lease expired before the response",
                                         connector=row.connector))
                return None
        if row.category == "marketing" and self.settings.quiet_hours is not None:
            zone = recipient_zone(row.to_addr, self.settings.default_time_zone)
            delay = quiet_delay_s(now, zone, self.settings.quiet_hours)
            if delay > 0:
                return delay, "quiet hours", "quiet_hours"
        choice = self.router.choose(row.to_addr, account=self.account_names.get(
            row.account_id or 0), forced=row.connector or row.route_hint, ported=ported)
        if choice is None:
            return self.settings.no_bind_wait_s, "no route for destination", "no_route"
        name = pick(choice, lambda c: c in self.lanes and self.lanes[c].up())
        if name is None:
            return self.settings.no_bind_wait_s, "no bound connector on route", "no_bind"
        if not self._enqueue(row, self.lanes[name]):
            return self.settings.no_bind_wait_s, "connector queue full", "no_bind"
        return None

    def _possible_duplicate(self, row: Claimed, connector: str | None, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.possible_duplicates.labels(connector=connector or "unknown").inc()
        log.warning("possible_duplicate", msg_id=row.id, reason=reason, connector=connector)

    def _enqueue(self, row: Claimed, lane: Lane) -> bool:
        """Queue the message's parts on `lane`; False when the lane's queue cannot take them
        (the caller defers the message). A text that cannot be encoded is rejected here."""
        try:
            total, parts = build_parts(row, lane.connector)
        except (ValueError, TextTooLong, UnicodeError) as exc:
            self.flusher.add(Outcome(msg_id=row.id, status="rejected", row=row,
                                     error=f"cannot encode: {exc}", connector=lane.name,
                                     error_code=P.SMPP_ESME_RINVMSGLEN, attempts_inc=1))
            return True
        if lane.queue.qsize() + len(parts) > MAX_LANE_QUEUE:
            return False
        msg = InFlight(row=row, connector=lane.name, parts_total=total, pending=len(parts))
        if not parts:  # every part was accepted by an earlier attempt
            self.flusher.add(decide(msg, self.settings, datetime.now(UTC)))
            return True
        self.in_flight[row.id] = msg
        for no, pdu in parts:
            self.queued_parts += 1
            lane.queue.put_nowait(PartJob(msg, no, pdu))
        return True

    async def _defer(self, deferred: list[tuple[int, float, str, str]]) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(Q.DEFER_OUTBOUND, self.settings.owner,
                               [d[0] for d in deferred], [d[1] for d in deferred],
                               [d[2] for d in deferred])
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
            label = "ok"
            m.child(m.submit_duration, connector).observe(duration_s)
        elif result.outcome is SubmitOutcome.REJECTED:
            label = "throttled" if result.command_status in _THROTTLE else "rejected"
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
            await _wait_any(self._space, asyncio.Event(), 0.2)
        await self.flusher.wait_idle()

    async def release_all(self) -> int:
        """Give every row still leased to us back to the queue (drain, or after a crash of a
        worker); returns how many."""
        try:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(Q.RELEASE_ALL, self.settings.owner, None)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            log.exception("release_failed")
            return 0
        if rows:
            log.info("claims_released", messages=len(rows))
        return len(rows)
