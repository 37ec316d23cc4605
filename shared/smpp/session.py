"""asyncio ESME session: one TCP (or TLS) connection, one bind, and a reconnecting Client.

`Session` owns the streams, a dict of sequence number → Future (or `_Callback`) for outstanding
requests, the window, the token bucket, an enquire_link timer and an explicit state
(OPEN → BOUND_TX/RX/TRX → UNBINDING → CLOSED). It answers the peer's enquire_link and unbind,
nacks what it does not understand, and hands deliver_sm/data_sm to an async handler whose
return value is the command_status of the response — so the gateway commits first and only
then acknowledges (docs/ARCHITECTURE.md, guarantee 1).

A submit never reports "failed" for something the SMSC may have accepted: when the response
times out or the connection drops after the PDU was written, the outcome is UNKNOWN. When the
PDU was never written (not bound, closing), it is NOT_SENT and safe to retry.

Two ways to submit: `await submit(pdu)` waits for a window slot, the rate and the answer;
`try_submit(pdu, on_done, token)` writes at once when a slot, a token and the link are free
and calls `on_done(token, result)` when the answer (or the timeout, or the loss) comes —
no task, future or queue hop per submit; when it cannot write now it returns False and the
caller takes the waiting path. Both keep the same window, rate, throttling and outcome rules.

`Client` keeps a session bound: it reconnects with exponential backoff and full jitter,
exposes `up` and counters, and drains on `close()`.

No metrics library is imported here: counters are plain attributes (`SessionCounters`) that
the daemons export.
"""

import asyncio
import collections
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from ssl import SSLContext
from typing import Any

from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.errors import SmppBindRejected, SmppError, SmppProtocolError
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.ratelimit import TokenBucket

log = logging.getLogger("smsgw.smpp.session")

__all__ = [
    "BindMode",
    "Client",
    "DeliverHandler",
    "Session",
    "SessionClosed",
    "SessionConfig",
    "SessionCounters",
    "SessionState",
    "SubmitOutcome",
    "SubmitResult",
]


class BindMode(StrEnum):
    """How the session binds."""

    TRANSMITTER = "transmitter"
    RECEIVER = "receiver"
    TRANSCEIVER = "transceiver"


class SessionState(StrEnum):
    """Session states; only BOUND_TX and BOUND_TRX may submit."""

    OPEN = "open"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"
    CLOSED = "closed"


_BIND_PDU = {
    BindMode.TRANSMITTER: (P.BindTransmitter, SessionState.BOUND_TX),
    BindMode.RECEIVER: (P.BindReceiver, SessionState.BOUND_RX),
    BindMode.TRANSCEIVER: (P.BindTransceiver, SessionState.BOUND_TRX),
}
_CAN_SUBMIT = frozenset({SessionState.BOUND_TX, SessionState.BOUND_TRX})
_DELIVERS = frozenset({P.DeliverSm, P.DataSm})  # requests that go to the deliver handler


class SubmitOutcome(StrEnum):
    """What became of one submit.

    OK: accepted, `message_id` set. REJECTED: the SMSC answered an error status (see
    `status_class` for retry policy). UNKNOWN: written but no usable answer (timeout,
    connection lost, generic_nack) — the SMSC may have accepted it. NOT_SENT: never written.
    """

    OK = "ok"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    NOT_SENT = "not_sent"


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """Outcome of `submit`: `command_status` and `status_class` are set for SMSC answers."""

    outcome: SubmitOutcome
    message_id: str | None = None
    command_status: int | None = None
    status_class: P.StatusClass | None = None
    reason: str | None = None


# SubmitResult(outcome, message_id, command_status, status_class, reason) without the frozen
# __init__ (0.7 → 0.3 µs): one per answered submit
_make_result = P.fast_constructor(SubmitResult)


class SessionClosed(SmppError):
    """The connection ended (peer closed, unbind, dead peer, protocol error, or close())."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Everything a Session needs; `ConnectorSettings.session_config()` builds it.

    `window` bounds outstanding submits; `tps`/`burst` feed the token bucket (None: no
    limit); `throttle_pause_s` is how long ESME_RTHROTTLED/ESME_RMSGQFUL stop sending and
    `throttle_retries` how often one submit is retried after such a pause; `enquire_link_s`
    is the keep-alive period (0: off); `response_timeout_s` bounds every request;
    `transient_mo_status` answers a deliver_sm whose handler failed; `handler_concurrency`
    bounds deliver_sm handlers in flight (then reading stops: TCP backpressure).
    """

    host: str
    port: int
    system_id: str
    password: str = field(default="", repr=False)
    system_type: str = ""
    bind_mode: BindMode = BindMode.TRANSCEIVER
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    window: int = 10
    tps: float | None = None
    burst: int = 1
    throttle_pause_s: float = 1.0
    throttle_retries: int = 3
    enquire_link_s: float = 30.0
    response_timeout_s: float = 10.0
    connect_timeout_s: float = 10.0
    transient_mo_status: int = P.SMPP_ESME_RX_T_APPN
    handler_concurrency: int = 64
    max_pdu_length: int = P.DEFAULT_MAX_PDU_LENGTH
    ssl: SSLContext | None = field(default=None, repr=False)
    name: str = ""


@dataclass(slots=True)
class SessionCounters:
    """Plain counters a daemon exports as metrics (monotonic unless noted)."""

    submits_sent: int = 0
    submit_ok: int = 0
    submit_rejected: int = 0
    submit_unknown: int = 0
    submit_not_sent: int = 0
    timeouts: int = 0
    throttled: int = 0
    late_responses: int = 0
    generic_nacks_received: int = 0
    generic_nacks_sent: int = 0
    deliver_received: int = 0
    deliver_handler_errors: int = 0
    enquire_links_sent: int = 0
    enquire_links_received: int = 0
    binds: int = 0
    bind_failures: int = 0
    connects: int = 0
    disconnects: int = 0
    reconnects: int = 0
    protocol_errors: int = 0
    outstanding: int = 0  # gauge
    max_outstanding: int = 0  # high-water mark of the window in use
    status_counts: dict[int, int] = field(default_factory=dict)


DeliverHandler = Callable[[Any], Awaitable[int]]


class _Lost(Exception):
    """Internal: set on pending futures when the connection goes away."""


class _Window:
    """The submit window: `free` slots, handed to waiters in arrival order.

    `take_nowait` succeeds only while nobody waits, so a submit that can go at once never
    overtakes one that waits; `release` gives the slot straight to the oldest waiter.
    """

    __slots__ = ("_waiters", "free")

    def __init__(self, size: int) -> None:
        self.free = size
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_nowait(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.take_nowait():
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # granted as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot goes to this waiter
                return
        self.free += 1


class _Callback:
    """A submit written by `try_submit`, in `_pending` where `_send_submit` keeps a future:
    it is settled the same way (`set_result` by the read loop, `set_exception` by the timeout
    timer or the loss of the connection) and then calls `on_done(token, result)`."""

    __slots__ = ("_done", "_on_done", "_pdu", "_seq", "_session", "_token")

    def __init__(self, session: "Session", seq: int, pdu: Any,
                 on_done: Callable[[Any, "SubmitResult"], None], token: Any) -> None:
        self._session = session
        self._seq = seq
        self._pdu = pdu
        self._on_done = on_done
        self._token = token
        self._done = False

    def done(self) -> bool:
        return self._done

    def exception(self) -> None:
        return None

    def _settle(self) -> "Session | None":
        """The first settlement frees the sequence number and the slot; later ones (a late
        answer after the timeout) do nothing."""
        if self._done:
            return None
        self._done = True
        self._session._settle(self._seq)
        return self._session

    def set_result(self, resp: Any) -> None:
        s = self._settle()
        if s is None:
            return
        result = s._result_from(resp)
        if (result.outcome is SubmitOutcome.REJECTED and result.command_status in _THROTTLED
                and s.config.throttle_retries > 0):
            s._retry_throttled(self._pdu, self._on_done, self._token)
            return
        s._finish(result, self._on_done, self._token)

    def set_exception(self, exc: BaseException) -> None:
        s = self._settle()
        if s is None:
            return
        if isinstance(exc, TimeoutError):
            s.counters.timeouts += 1
            result = SubmitResult(SubmitOutcome.UNKNOWN, reason="response timeout")
        else:
            result = SubmitResult(SubmitOutcome.UNKNOWN, reason=f"connection lost: {exc}")
        s._finish(result, self._on_done, self._token)


_THROTTLED = frozenset({P.SMPP_ESME_RTHROTTLED, P.SMPP_ESME_RMSGQFUL})


class Session:
    """One bound SMPP connection. Create, `await open()`, use, `await close()`.

    `handler(pdu)` is awaited for every deliver_sm/data_sm and returns the command_status to
    answer with (ESME_ROK only after the message is committed). `counters` may be shared by
    the sessions of one Client. `clock` is the monotonic clock for the rate limiter.
    """

    def __init__(
        self,
        config: SessionConfig,
        handler: DeliverHandler | None = None,
        counters: SessionCounters | None = None,
        clock: Callable[[], float] = time.monotonic,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.config = config
        self.counters = counters if counters is not None else SessionCounters()
        self.state = SessionState.CLOSED
        self.close_reason: str | None = None
        self.peer_system_id: str | None = None
        self._handler = handler
        # a handler may also take a list of deliver_sm/data_sm at once (`many`, see
        # `_drain_decoder`): one task per read instead of one per PDU
        self._handle_many: Callable[[list[Any]], Awaitable[list[Any]]] | None = getattr(
            handler, "many", None)
        self._batch: list[Any] = []
        # the batch path's handler slots: PDUs handed to `many` and not yet answered (a plain
        # count: asyncio.Semaphore's acquire/release cost ~1 µs a PDU), woken when they fall
        self._batch_held = 0
        self._batch_freed = asyncio.Event()
        if bucket is None:
            bucket = TokenBucket(config.tps, config.burst, clock)
        self._bucket = bucket
        self._window = _Window(config.window)
        self._handler_slots = asyncio.Semaphore(config.handler_concurrency)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._seq = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._out: list[bytes] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        # throttled `try_submit`s being retried: not cancelled by close(), each ends with its
        # outcome (NOT_SENT once the session is gone)
        self._retries: set[asyncio.Task[Any]] = set()
        self._closed = asyncio.Event()
        self._stopping = asyncio.Event()  # set by close() and on loss: rate waiters give up
        self._not_throttled = asyncio.Event()
        self._not_throttled.set()
        self._resume_handle: asyncio.TimerHandle | None = None
        self._idle = asyncio.Event()  # set when nothing is outstanding
        self._idle.set()
        # (deadline, future) of each submit written, in send order (the timeout is fixed, so
        # also deadline order), and one timer for the oldest still waiting (`_expire_due`)
        self._deadlines: collections.deque[tuple[float, asyncio.Future[Any]]] = \
            collections.deque()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._expiring = False  # inside `_expire_due`: it arms the next timer itself

    # --- properties ------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """True while bound (any mode)."""
        return self.state in (SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX)

    @property
    def can_submit(self) -> bool:
        """True while bound as transmitter or transceiver and not draining."""
        return self.state in _CAN_SUBMIT

    @property
    def outstanding(self) -> int:
        """Requests written and not yet answered."""
        return len(self._pending)

    @property
    def bucket(self) -> TokenBucket:
        """The token bucket (call `set_rate` on SIGHUP)."""
        return self._bucket

    async def wait_closed(self) -> None:
        """Return when the connection has ended, for whatever reason."""
        await self._closed.wait()

    # --- open / bind -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and bind. Raises OSError/TimeoutError, SmppBindRejected, SmppProtocolError."""
        cfg = self.config
        async with asyncio.timeout(cfg.connect_timeout_s):
            self._reader, self._writer = await asyncio.open_connection(
                cfg.host, cfg.port, ssl=cfg.ssl, limit=cfg.max_pdu_length
            )
        self.counters.connects += 1
        self.state = SessionState.OPEN
        self._closed.clear()
        self._spawn(self._read_loop(), "smpp.read_loop")
        try:
            await self._bind()
        except BaseException:
            self._abort("bind failed")
            for task in self._tasks:
                task.cancel()  # the read loop; nothing else runs before a bind
            raise
        if cfg.enquire_link_s > 0:
            self._spawn(self._enquire_loop(), "smpp.enquire_link")

    async def _bind(self) -> None:
        cfg = self.config
        cls, bound_state = _BIND_PDU[cfg.bind_mode]
        req = cls(
            system_id=cfg.system_id,
            password=cfg.password,
            system_type=cfg.system_type,
            addr_ton=cfg.addr_ton,
            addr_npi=cfg.addr_npi,
            address_range=cfg.address_range,
        )
        try:
            resp = await self._request(req)
        except (_Lost, TimeoutError) as exc:
            self.counters.bind_failures += 1
            raise SmppProtocolError(f"no bind response: {exc or type(exc).__name__}") from exc
        if isinstance(resp, P.GenericNack) or resp.command_status != P.SMPP_ESME_ROK:
            self.counters.bind_failures += 1
            err = SmppBindRejected(f"bind rejected: {P.status_name(resp.command_status)}")
            err.command_status = resp.command_status  # type: ignore[attr-defined]
            raise err
        self.peer_system_id = getattr(resp, "system_id", None)
        self.state = bound_state
        self.counters.binds += 1
        log.info(
            "smpp_bound",
            extra={"connector": cfg.name, "bind": cfg.bind_mode.value, "peer": self.peer_system_id},
        )

    # --- requests --------------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 if self._seq < 0x7FFFFFFF else 1
        return self._seq

    def _write(self, data: bytes) -> None:
        """Queue `data`; everything queued in one loop iteration goes out in one write.

        With a window of 100 that is one syscall for many PDUs instead of one each.
        """
        writer = self._writer
        if writer is None or writer.is_closing():
            raise _Lost("not connected")
        out = self._out
        out.append(data)
        if len(out) == 1:
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(data)

    async def _request(self, pdu: Any, response_timeout_s: float | None = None) -> Any:
        """Send a request and wait for its response (raises _Lost or TimeoutError)."""
        seq = self._next_seq()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[seq] = fut
        self._idle.clear()
        try:
            self._write(P.encode(pdu, seq))
            async with asyncio.timeout(response_timeout_s or self.config.response_timeout_s):
                return await fut
        finally:
            self._forget(seq)

    async def request(self, pdu: Any, response_timeout_s: float | None = None) -> Any:
        """Send any other request (e.g. query_sm) outside the window; return its response.

        Raises SessionClosed when not bound or when the connection ends first, and
        TimeoutError when no response arrives in time.
        """
        if not self.bound:
            raise SessionClosed(f"state {self.state.value}")
        try:
            return await self._request(pdu, response_timeout_s)
        except _Lost as exc:
            raise SessionClosed(str(exc)) from exc

    def _forget(self, seq: int) -> None:
        self._pending.pop(seq, None)
        if not self._pending:
            self._idle.set()

    async def submit(self, pdu: P.SubmitSm | P.DataSm) -> SubmitResult:
        """Send a submit_sm (or data_sm) within window and rate; return its outcome.

        Never raises for SMSC answers, timeouts or a lost connection (see SubmitOutcome);
        ESME_RTHROTTLED / ESME_RMSGQFUL pause all sending for `throttle_pause_s` and the same
        PDU is retried up to `throttle_retries` times.
        """
        result = await self._submit_once(pdu)
        retries = 0
        while (
            result.outcome is SubmitOutcome.REJECTED
            and result.command_status in _THROTTLED
            and retries < self.config.throttle_retries
        ):
            retries += 1
            result = await self._submit_once(pdu)
        self._count_result(result)
        return result

    def _count_result(self, result: SubmitResult) -> None:
        c = self.counters
        if result.outcome is SubmitOutcome.OK:
            c.submit_ok += 1
        elif result.outcome is SubmitOutcome.REJECTED:
            c.submit_rejected += 1
        elif result.outcome is SubmitOutcome.UNKNOWN:
            c.submit_unknown += 1
        else:
            c.submit_not_sent += 1

    async def _submit_once(self, pdu: Any) -> SubmitResult:
        if not self.can_submit:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason=f"state {self.state.value}")
        await self._window.take()
        try:
            if not self._not_throttled.is_set():
                await self._wait_throttle()
            granted = await self._bucket.acquire(self._stopping)
            if not granted or not self.can_submit:
                return SubmitResult(SubmitOutcome.NOT_SENT, reason=f"state {self.state.value}")
            return await self._send_submit(pdu)
        finally:
            self._window.release()

    def try_submit(self, pdu: P.SubmitSm | P.DataSm,
                   on_done: Callable[[Any, SubmitResult], None], token: Any) -> bool:
        """Write a submit_sm (or data_sm) now, if the link, a window slot and the rate allow it
        without waiting, and nobody waits before it; then `on_done(token, result)` is called
        once with its outcome (as `submit` would return it, throttle retries included) and
        True is returned. False: nothing was written and nothing will be called back.

        `on_done` runs inside the read loop (or the timeout timer): it must not block."""
        if self.state not in _CAN_SUBMIT or not self._not_throttled.is_set():
            return False
        if not self._window.take_nowait():
            return False
        if not self._bucket.try_acquire():
            self._window.release()
            return False
        c = self.counters
        seq = self._next_seq()
        try:
            self._write(P.encode_submit_sm(pdu, seq) if type(pdu) is P.SubmitSm
                        else P.encode(pdu, seq))
        except _Lost:
            self._bucket.refund()
            self._window.release()
            return False
        waiter = _Callback(self, seq, pdu, on_done, token)
        pending = self._pending
        pending[seq] = waiter
        self._idle.clear()
        n = len(pending)
        c.outstanding = n
        if n > c.max_outstanding:
            c.max_outstanding = n
        c.submits_sent += 1
        self._watch(waiter)
        return True

    def _watch(self, fut: Any) -> None:
        """Fail `fut` with TimeoutError if no answer comes within response_timeout_s. Not
        `asyncio.timeout` (3.5 µs per submit under uvloop) nor a timer per submit (1.3 µs
        with its cancel): one timer for the oldest deadline fails the futures whose
        response_timeout_s has passed (`_expire_due`)."""
        deadlines = self._deadlines
        while deadlines and deadlines[0][1].done():  # forget the answered oldest ones
            deadlines.popleft()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.response_timeout_s
        deadlines.append((deadline, fut))
        if self._deadline_timer is None and not self._expiring:
            self._deadline_timer = loop.call_at(deadline, self._expire_due)

    def _settle(self, seq: int) -> None:
        """A `try_submit` was answered (or failed): free its sequence number and slot."""
        self._forget(seq)
        self.counters.outstanding = len(self._pending)
        self._window.release()

    def _finish(self, result: SubmitResult, on_done: Callable[[Any, SubmitResult], None],
                token: Any) -> None:
        self._count_result(result)
        try:
            on_done(token, result)
        except Exception:  # a caller's bug must not take the read loop (and the bind) down
            log.exception("smpp_submit_callback_failed",
                          extra={"connector": self.config.name})

    def _retry_throttled(self, pdu: Any, on_done: Callable[[Any, SubmitResult], None],
                         token: Any) -> None:
        """A `try_submit` answered ESME_RTHROTTLED / ESME_RMSGQFUL: retry it as `submit`
        does (after the pause, up to throttle_retries times) in a task of its own."""

        async def retry() -> None:
            result = SubmitResult(SubmitOutcome.NOT_SENT, reason="cancelled")
            try:
                retries = 0
                while True:
                    retries += 1
                    result = await self._submit_once(pdu)
                    if (result.outcome is not SubmitOutcome.REJECTED
                            or result.command_status not in _THROTTLED
                            or retries >= self.config.throttle_retries):
                        break
            finally:
                self._finish(result, on_done, token)

        task = asyncio.get_running_loop().create_task(retry(), name="smpp.throttle_retry")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _wait_throttle(self) -> None:
        # Wait for the pause to end or the session to close, whichever comes first.
        await race_stop(self._not_throttled.wait(), self._closed)

    def _expire_due(self) -> None:
        """The timer of the oldest submit deadline: fail every submit whose response_timeout_s
        has passed unanswered (→ UNKNOWN, counted as a timeout), then wait for the next."""
        self._deadline_timer = None
        deadlines = self._deadlines
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Each entry leaves the deque before it is failed: failing a `_Callback` calls back,
        # and the caller may submit again (`_watch` appends, and drops answered entries from
        # the left) — the loop reads the head afresh every time.
        self._expiring = True
        try:
            while deadlines:
                deadline, fut = deadlines[0]
                if not fut.done() and deadline > now:
                    break
                deadlines.popleft()
                if not fut.done():
                    fut.set_exception(TimeoutError())
        finally:
            self._expiring = False
        if deadlines:
            self._deadline_timer = loop.call_at(deadlines[0][0], self._expire_due)

    async def _send_submit(self, pdu: Any) -> SubmitResult:
        c = self.counters
        seq = self._next_seq()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._pending[seq] = fut
        self._idle.clear()
        n = len(self._pending)
        c.outstanding = n
        if n > c.max_outstanding:
            c.max_outstanding = n
        try:
            data = P.encode_submit_sm(pdu, seq) if type(pdu) is P.SubmitSm else P.encode(pdu, seq)
            try:
                self._write(data)
            except _Lost as exc:
                return SubmitResult(SubmitOutcome.NOT_SENT, reason=str(exc))
            c.submits_sent += 1
            self._watch(fut)
            try:
                resp = await fut
            except TimeoutError:
                c.timeouts += 1
                return SubmitResult(SubmitOutcome.UNKNOWN, reason="response timeout")
            except _Lost as exc:
                return SubmitResult(SubmitOutcome.UNKNOWN, reason=f"connection lost: {exc}")
        finally:
            self._forget(seq)
            c.outstanding = len(self._pending)
        return self._result_from(resp)

    def _result_from(self, resp: Any) -> SubmitResult:
        status = resp.command_status
        counts = self.counters.status_counts
        counts[status] = counts.get(status, 0) + 1
        if isinstance(resp, P.GenericNack):
            return SubmitResult(SubmitOutcome.UNKNOWN, None, status, None, "generic_nack")
        if status == P.SMPP_ESME_ROK:
            return _make_result(SubmitOutcome.OK, resp.message_id, status, "ok", None)
        if status in _THROTTLED:
            self._throttle()
        return SubmitResult(
            SubmitOutcome.REJECTED, None, status, P.classify_status(status), P.status_name(status)
        )

    def _throttle(self) -> None:
        """Stop sending for throttle_pause_s (extended if throttled again meanwhile)."""
        self.counters.throttled += 1
        pause = self.config.throttle_pause_s
        self._not_throttled.clear()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        self._resume_handle = asyncio.get_running_loop().call_later(pause, self._not_throttled.set)
        log.info("smpp_throttled", extra={"connector": self.config.name, "pause_s": pause})

    # --- reading ---------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        decoder = P.Decoder(self.config.max_pdu_length)
        reason = "connection closed by peer"
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                decoder.feed(data)
                if not await self._drain_decoder(decoder):
                    reason = "framing error"
                    break
        except (ConnectionError, OSError) as exc:
            reason = f"read error: {exc}"
        except asyncio.CancelledError:
            reason = self.close_reason or "cancelled"
            raise
        finally:
            self._abort(reason)

    async def _drain_decoder(self, decoder: P.Decoder) -> bool:
        """Dispatch every complete PDU; False when the stream is broken beyond repair.

        With a handler that takes several PDUs (`many`), the deliver_sm/data_sm of one read
        go to it together, in one task (`_handle_delivers`): each still holds a handler slot
        and gets its own answer after its commit. The batch is handed over before any other
        request is handled, before waiting for a slot, and when the read is used up.
        """
        many = self._handle_many
        limit = self.config.handler_concurrency
        try:
            while True:
                try:
                    pdu = decoder.next_pdu()
                except P.SmppPduError as exc:
                    self.counters.protocol_errors += 1
                    self._answer_bad_pdu(exc)
                    continue
                except P.SmppFramingError as exc:
                    self.counters.protocol_errors += 1
                    log.warning(
                        "smpp_framing_error",
                        extra={"connector": self.config.name, "error": str(exc)},
                    )
                    return False
                if pdu is None:
                    return True
                if pdu.is_response:
                    self._on_response(pdu)
                elif many is not None and type(pdu) in _DELIVERS:
                    self.counters.deliver_received += 1
                    if self._batch_held >= limit:  # the batch holds slots too: hand it over
                        self._flush_delivers()
                        # waited for here, in the read loop, so a slow handler stops reading
                        while self._batch_held >= limit:
                            self._batch_freed.clear()
                            await self._batch_freed.wait()
                    self._batch_held += 1
                    self._batch.append(pdu)
                else:
                    self._flush_delivers()
                    await self._on_request(pdu)
        finally:
            self._flush_delivers()

    def _flush_delivers(self) -> None:
        batch = self._batch
        if batch:
            self._batch = []
            self._spawn(self._handle_delivers(batch), "smpp.deliver_handler")

    def _answer_bad_pdu(self, exc: P.SmppPduError) -> None:
        log.warning("smpp_bad_pdu", extra={"connector": self.config.name, "error": str(exc)})
        answer = P.error_response(exc)
        if isinstance(answer, P.GenericNack):
            self.counters.generic_nacks_sent += 1
        if answer is not None:
            self._send_quiet(answer)

    def _send_nack(self, seq: int, status: int) -> None:
        self.counters.generic_nacks_sent += 1
        self._send_quiet(P.GenericNack(seq, status))

    def _send_quiet(self, pdu: Any) -> None:
        with contextlib.suppress(_Lost):
            self._write(P.encode(pdu))

    def _on_response(self, pdu: Any) -> None:
        fut = self._pending.get(pdu.sequence_number)
        if isinstance(pdu, P.GenericNack):
            self.counters.generic_nacks_received += 1
        if fut is None or fut.done():
            self.counters.late_responses += 1
            log.info(
                "smpp_late_response",
                extra={
                    "connector": self.config.name,
                    "seq": pdu.sequence_number,
                    "command": type(pdu).__name__,
                    "status": pdu.command_status,
                    "message_id": getattr(pdu, "message_id", None),
                },
            )
            return
        fut.set_result(pdu)

    async def _on_request(self, pdu: Any) -> None:
        cls = type(pdu)
        if cls is P.DeliverSm or cls is P.DataSm:
            self.counters.deliver_received += 1
            # The slot is taken here, in the read loop, so a slow handler stops reading.
            await self._handler_slots.acquire()
            self._spawn(self._handle_deliver(pdu), "smpp.deliver_handler")
        elif cls is P.EnquireLink:
            self.counters.enquire_links_received += 1
            self._send_quiet(P.EnquireLinkResp(pdu.sequence_number))
        elif cls is P.Unbind:
            self._send_quiet(P.UnbindResp(pdu.sequence_number))
            self.close_reason = "unbind by peer"
            self.state = SessionState.UNBINDING
            self._close_transport()
        elif cls is P.UnknownPdu:
            self._send_nack(pdu.sequence_number, P.SMPP_ESME_RINVCMDID)
        elif cls is P.Outbind:
            pass  # we dial out ourselves; an outbind on a bound session means nothing
        else:
            # A request an ESME never receives (submit_sm, bind, query_sm…): wrong bind state.
            self._send_quiet(P.response_for(pdu, P.SMPP_ESME_RINVBNDSTS))

    async def _handle_deliver(self, pdu: Any) -> None:
        status = self.config.transient_mo_status
        try:
            if self._handler is None:
                status = P.SMPP_ESME_ROK
            else:
                status = await self._handler(pdu)
        except asyncio.CancelledError:
            raise  # the connection is going away; the SMSC will redeliver
        except Exception:
            # Loop boundary: one bad message must not take the bind down; answer transient.
            self.counters.deliver_handler_errors += 1
            log.exception("smpp_deliver_handler_failed", extra={"connector": self.config.name})
        finally:
            self._handler_slots.release()
        if not isinstance(status, int) or not 0 <= status <= 0xFFFFFFFF:
            log.error(
                "smpp_deliver_handler_bad_status",
                extra={"connector": self.config.name, "status": repr(status)},
            )
            status = self.config.transient_mo_status
        self._send_quiet(P.response_for(pdu, status))

    async def _handle_delivers(self, pdus: list[Any]) -> None:
        """`_handle_deliver` for the PDUs of one read, through the handler's `many`: it returns
        a status (or the exception a one-PDU handler would have raised) per PDU."""
        assert self._handle_many is not None
        transient = self.config.transient_mo_status
        results: list[Any]
        try:
            results = await self._handle_many(pdus)
            if len(results) != len(pdus):
                raise ValueError(f"{len(results)} statuses for {len(pdus)} PDUs")
        except asyncio.CancelledError:
            raise  # the connection is going away; the SMSC will redeliver
        except Exception as exc:  # noqa: BLE001 - logged per PDU below
            # Loop boundary: one bad batch must not take the bind down; answer transient.
            results = [exc] * len(pdus)
        finally:
            self._batch_held -= len(pdus)
            self._batch_freed.set()
        answers = []
        for pdu, status in zip(pdus, results, strict=True):
            if isinstance(status, BaseException):
                self.counters.deliver_handler_errors += 1
                log.error("smpp_deliver_handler_failed", exc_info=status,
                          extra={"connector": self.config.name})
                status = transient
            elif not isinstance(status, int) or not 0 <= status <= 0xFFFFFFFF:
                log.error(
                    "smpp_deliver_handler_bad_status",
                    extra={"connector": self.config.name, "status": repr(status)},
                )
                status = transient
            answers.append(P.encode_deliver_resp(pdu, status))
        with contextlib.suppress(_Lost):  # the connection went away: the SMSC redelivers
            self._write(b"".join(answers))

    # --- keep-alive ------------------------------------------------------------------------

    async def _enquire_loop(self) -> None:
        period = self.config.enquire_link_s
        while self.bound or self.state is SessionState.UNBINDING:
            await asyncio.sleep(period)
            if not self.bound:
                return
            self.counters.enquire_links_sent += 1
            try:
                await self._request(P.EnquireLink())
            except (TimeoutError, _Lost):
                if self.state is SessionState.CLOSED:
                    return
                log.warning("smpp_dead_peer", extra={"connector": self.config.name})
                self.close_reason = "dead peer (no enquire_link_resp)"
                self._close_transport()
                return

    # --- closing ---------------------------------------------------------------------------

    def _close_transport(self) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._flush()  # answers queued this iteration (unbind_resp…) still go out
            self._writer.close()

    def _abort(self, reason: str) -> None:
        """Connection is gone: fail outstanding requests (→ UNKNOWN) and wake everyone."""
        if self.state is SessionState.CLOSED and self._closed.is_set():
            return
        self.close_reason = self.close_reason or reason
        self.state = SessionState.CLOSED
        self._stopping.set()
        self.counters.disconnects += 1
        # a copy: a `_Callback` leaves `_pending` as it is settled
        for fut in list(self._pending.values()):
            if not fut.done():
                fut.set_exception(_Lost(self.close_reason))
                fut.exception()  # mark retrieved: an abandoned future must not warn
        self._close_transport()
        if self._resume_handle is not None:
            self._resume_handle.cancel()
        if self._deadline_timer is not None:  # every future it watches has failed above
            self._deadline_timer.cancel()
            self._deadline_timer = None
        self._deadlines.clear()
        self._not_throttled.set()
        self._closed.set()
        log.info("smpp_closed", extra={"connector": self.config.name, "reason": self.close_reason})

    async def close(self, deadline_s: float = 5.0) -> bool:
        """Drain and unbind: stop submitting, wait for answers, unbind, close.

        `deadline_s` bounds the whole drain; returns True when every outstanding request was
        answered and the unbind completed, False when the deadline cut it short (requests
        still outstanding end UNKNOWN).
        """
        if self.state is SessionState.CLOSED:
            await self._cancel_tasks()
            return True
        self.state = SessionState.UNBINDING
        self.close_reason = "closed by us"
        self._stopping.set()
        clean = False
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        try:
            async with asyncio.timeout_at(end):
                await self._idle.wait()
                await self._wait_handlers()
                await self._request(P.Unbind(), max(end - loop.time(), 0.001))
                clean = True
        except (TimeoutError, _Lost):
            log.warning(
                "smpp_drain_incomplete",
                extra={"connector": self.config.name, "outstanding": len(self._pending)},
            )
        self._abort("closed by us")
        await self._cancel_tasks()
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
                await self._writer.wait_closed()
        return clean

    async def _wait_handlers(self) -> None:
        handlers = [t for t in self._tasks if t.get_name() == "smpp.deliver_handler"]
        if handlers:
            await asyncio.wait(handlers)

    async def _cancel_tasks(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def abort(self) -> None:
        """Drop the connection now, without unbinding (tests, fatal errors)."""
        self._abort("aborted")


class Client:
    """Keeps one session bound: reconnects with exponential backoff and full jitter.

    `config` and `handler` are as for Session; `backoff_min_s`/`backoff_max_s` bound the
    reconnect delay (a rejected bind waits the maximum: hammering a refusing SMSC helps
    nobody); `rng` returns [0, 1) for the jitter (inject a fixed one in tests). Start with
    `start()`, stop with `close()`. `submit` returns NOT_SENT while the link is down.
    """

    def __init__(
        self,
        config: SessionConfig,
        handler: DeliverHandler | None = None,
        *,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 60.0,
        rng: Callable[[], float] = random.random,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self.config = config
        self.on_change = on_change  # called with True when bound, False when the bind is lost
        self.counters = SessionCounters()
        self.bucket = TokenBucket(config.tps, config.burst, clock)
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.delays: list[float] = []  # reconnect delays chosen so far (for logs and tests)
        self.last_error: str | None = None
        self._handler = handler
        self._rng = rng
        self._session: Session | None = None
        self._stop = asyncio.Event()
        self._up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """True while a session is bound."""
        return self._session is not None and self._session.bound

    @property
    def session(self) -> Session | None:
        """The current session, if any (for inspection)."""
        return self._session

    def start(self) -> None:
        """Start the connect/bind/reconnect loop in a task owned by this Client."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="smpp.client")

    async def wait_up(self, wait_s: float | None = None) -> bool:
        """Wait until bound (or `wait_s` seconds); returns `up`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._up.wait()
        return self.up

    async def submit(self, pdu: P.SubmitSm | P.DataSm) -> SubmitResult:
        """Submit on the current session; NOT_SENT when the link is down."""
        session = self._session
        if session is None or not session.can_submit:
            self.counters.submit_not_sent += 1
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="link down")
        return await session.submit(pdu)

    def _changed(self, up: bool) -> None:
        if self.on_change is not None:
            try:
                self.on_change(up)
            except Exception:  # an observer's bug must not end the reconnect loop
                log.exception("smpp_on_change_failed", extra={"connector": self.config.name})

    def _backoff(self, attempt: int, bind_rejected: bool) -> float:
        ceiling = self.backoff_max_s
        if not bind_rejected:
            ceiling = min(self.backoff_max_s, self.backoff_min_s * 2 ** min(attempt, 30))
        # "Full jitter" (AWS architecture blog): uniform in [min, ceiling] spreads reconnects
        # of many binds after an SMSC restart.
        return self.backoff_min_s + (ceiling - self.backoff_min_s) * self._rng()

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            session = Session(self.config, self._handler, self.counters, bucket=self.bucket)
            bind_rejected = False
            try:
                await session.open()
            except SmppBindRejected as exc:
                bind_rejected = True
                self.last_error = str(exc)
            except (OSError, TimeoutError, SmppProtocolError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            else:
                attempt = 0
                self._session = session
                self._up.set()
                self._changed(True)
                await race_stop(session.wait_closed(), self._stop)
                self._up.clear()
                self._changed(False)
                if self._stop.is_set():
                    return
                self.last_error = session.close_reason
            attempt += 1
            delay = self._backoff(attempt - 1, bind_rejected)
            self.delays.append(delay)
            self.counters.reconnects += 1
            log.warning(
                "smpp_reconnect_scheduled",
                extra={
                    "connector": self.config.name,
                    "delay_s": round(delay, 3),
                    "error": self.last_error,
                },
            )
            await sleep_or_stop(self._stop, delay)

    async def close(self, deadline_s: float = 5.0) -> bool:
        """Stop reconnecting, drain and unbind the current session within `deadline_s`."""
        self._stop.set()
        # The loop task goes first, so it cannot bind a new session after we looked.
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            return await self._session.close(deadline_s)
        return True
