"""The SMPP 3.4 server customer ESMEs bind to (`[receiver.smpp_server]`).

One `asyncio.Protocol` per connection on the project's codec (`shared.smpp.pdu`), like the
SMSC simulator: `data_received` decodes every complete PDU; responses that become ready in one
loop iteration (a group commit answers many submits at once) go out in one write.

States: OPEN (connected) → BOUND_TX / BOUND_RX / BOUND_TRX → closed. Before a bind only
bind_* and enquire_link are answered normally; every other request gets its response with
ESME_RINVBNDSTS (generic_nack for a command we do not know); submit-type requests on a receiver
bind get ESME_RINVBNDSTS too. A malformed PDU gets its own response (or generic_nack) with the
decoder's status and the stream goes on; a broken frame (command_length out of range) closes
the connection.

Window: at most `window` requests of one bind are in flight (waiting for their commit); the
next one is answered at once with ESME_RTHROTTLED (0x58, transient: "slow down"), and the
responses go out in any order as commits finish. Memory per connection stays bounded: the
decoder refuses frames above `max_pdu_length`, the window bounds the requests in flight, and
when the ESME stops reading (the transport's write buffer passes its high-water mark) reading
stops too; a connection whose buffer stays full for `idle_timeout_s` is closed.

Binds (`esme_binds.BindGate`): credentials, the account's networks, modes and bind limit, and
the failed-bind limiter. Requests (`esme_submit.EsmeIntake`): submit_sm, data_sm, query_sm.
Receipts and MO go out through `deliver()` (`esme_deliver.EsmeDeliverer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

import structlog

from smsgw.services.receiver.esme_binds import BindGate, BindOutcome
from smsgw.services.receiver.esme_metrics import EsmeMetrics
from smsgw.services.receiver.esme_submit import AccountDisabled, EsmeIntake
from smsgw.services.receiver.options import SmppServerOptions
from smsgw.shared.domain.apikeys import Account
from smsgw.shared.smpp import pdu as P

log = structlog.get_logger("smsgw.receiver.esme")

SYSTEM_ID = "smsgw"  # what bind_*_resp names us


class EsmeState(StrEnum):
    """A connection's SMPP state."""

    OPEN = "open"
    BINDING = "binding"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    CLOSED = "closed"


_BIND_MODE = {P.BindTransmitter: ("transmitter", EsmeState.BOUND_TX, P.BindTransmitterResp),
              P.BindReceiver: ("receiver", EsmeState.BOUND_RX, P.BindReceiverResp),
              P.BindTransceiver: ("transceiver", EsmeState.BOUND_TRX, P.BindTransceiverResp)}
CAN_SUBMIT = frozenset({EsmeState.BOUND_TX, EsmeState.BOUND_TRX})
CAN_RECEIVE = frozenset({EsmeState.BOUND_RX, EsmeState.BOUND_TRX})
# requests that go through the window (answered after a database round trip)
_WINDOWED = (P.SubmitSm, P.DataSm, P.QuerySm, P.SubmitMulti, P.CancelSm)


class EsmeConnection(asyncio.Protocol):
    """One ESME connection (see the module docstring)."""

    def __init__(self, server: EsmeServer, conn_id: int) -> None:
        self.server = server
        self.id = conn_id
        self.opts = server.opts
        self.transport: asyncio.Transport | None = None
        self.decoder = P.Decoder(self.opts.max_pdu_length)
        self.state = EsmeState.OPEN
        self.mode: str | None = None
        self.account: Account | None = None
        self.peer = ""
        self.slot: int | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        # requests counted against the window: freed just before the response is queued, so
        # an ESME that sends its next request the moment it reads a response finds the slot
        # free (a task's done callback may run an I/O poll later)
        self.busy = 0
        self.pending: dict[int, asyncio.Future[Any]] = {}  # our deliver_sm → its response
        self.deliver_slots = asyncio.Semaphore(self.opts.delivery_window)
        self.seq = itertools.count(1)
        self.out: list[bytes] = []
        self.flush_scheduled = False
        self.last_rx = self.connected_at = time.monotonic()
        self.write_paused_at: float | None = None
        self.writing_paused = False
        self.partial_since: float | None = None  # a frame's first bytes arrived, not all yet
        self.reading_paused = False
        self.timer: asyncio.TimerHandle | None = None
        self.closed = asyncio.Event()

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if not self.server.admit(self):
            self.server.metrics.refused_connections.inc()
            transport.close()
            return
        self.timer = asyncio.get_running_loop().call_later(
            min(self.opts.bind_timeout_s, self.opts.pdu_timeout_s, self.opts.idle_timeout_s,
                5.0), self._check_timers)

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = EsmeState.CLOSED
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the ESME connection closed"))
        self.pending.clear()
        self.server.forget(self)
        self.closed.set()

    def pause_writing(self) -> None:
        # the ESME does not read: stop reading its requests until it does. The clock of a
        # peer that stopped reading runs from the first pause until our buffer is empty
        # again (`_check_timers`), not merely below the low-water mark: one that never reads
        # would otherwise restart it with every drip the kernel takes.
        self.writing_paused = True
        if self.write_paused_at is None:
            self.write_paused_at = time.monotonic()
        self._pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        self._resume_reading()

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self.decoder.feed(data)
        while self.state is not EsmeState.CLOSED:
            try:
                pdu = self.decoder.next_pdu()
            except P.SmppPduError as exc:
                self._count(exc.command_id, exc.status)
                answer = P.error_response(exc)
                if answer is not None:
                    self.send(answer)
                continue
            except P.SmppFramingError as exc:
                self.server.metrics.protocol_errors.inc()
                log.info("esme_framing_error", peer=self.peer, error=str(exc))
                self.close()
                return
            if pdu is None:
                if self.decoder.buffered == 0:
                    self.partial_since = None
                elif self.partial_since is None:
                    self.partial_since = self.last_rx
                return
            self.partial_since = None
            self.on_pdu(pdu)
            if self.reading_paused:
                return  # the rest stays in the decoder until reading resumes

    # -- requests -------------------------------------------------------------------------------

    def on_pdu(self, pdu: Any) -> None:
        """Dispatch one decoded PDU by type and state."""
        cls = type(pdu)
        if cls in _WINDOWED:
            self._windowed(pdu)
        elif cls is P.EnquireLink:
            self.reply(P.EnquireLinkResp(pdu.sequence_number), pdu)
        elif cls in _BIND_MODE:
            self._bind(pdu)
        elif cls is P.Unbind:
            self._unbind(pdu)
        elif pdu.is_response:
            self._response(pdu)
        elif cls is P.UnknownPdu:
            self.reply(P.GenericNack(pdu.sequence_number, P.SMPP_ESME_RINVCMDID), pdu)
        elif self.state in (EsmeState.OPEN, EsmeState.BINDING):
            self.reply(P.response_for(pdu, P.SMPP_ESME_RINVBNDSTS), pdu)
        else:  # deliver_sm, outbind …: not what an ESME sends to its SMSC
            self.reply(P.response_for(pdu, P.SMPP_ESME_RINVCMDID), pdu)

    def _windowed(self, pdu: Any) -> None:
        if self.state not in CAN_SUBMIT:
            self.reply(P.response_for(pdu, P.SMPP_ESME_RINVBNDSTS), pdu)
            return
        if self.busy >= self.opts.window:
            self.server.metrics.window_full.inc()
            self.reply(P.response_for(pdu, P.SMPP_ESME_RTHROTTLED), pdu)
            return
        task = asyncio.get_running_loop().create_task(self._handle(pdu))
        self.inflight.add(task)
        self.busy += 1
        self.server.metrics.window_in_use.inc()
        task.add_done_callback(self._done)

    def _free(self) -> None:
        self.busy -= 1
        self.server.metrics.window_in_use.dec()

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("esme_request_failed", peer=self.peer, exc_info=task.exception())

    async def _handle(self, pdu: Any) -> None:
        assert self.account is not None
        try:
            resp = await self.server.intake.handle(self.account, pdu)
        except AccountDisabled:
            log.warning("esme_account_disabled", account=self.account.name, peer=self.peer)
            self._free()
            self.reply(P.response_for(pdu, P.SMPP_ESME_RSUBMITFAIL), pdu)
            self.close()
            return
        except Exception:
            # a bug must not leave the request unanswered: the ESME retries a transient status
            log.exception("esme_request_error", peer=self.peer)
            resp = P.response_for(pdu, P.SMPP_ESME_RSYSERR)
        except BaseException:  # cancelled: the slot is free all the same
            self._free()
            raise
        self._free()
        self.reply(resp, pdu)

    def _bind(self, pdu: Any) -> None:
        mode, state, resp_cls = _BIND_MODE[type(pdu)]
        if self.state is not EsmeState.OPEN:
            status = P.SMPP_ESME_RALYBND if self.state is not EsmeState.BINDING \
                else P.SMPP_ESME_RINVBNDSTS
            self.reply(resp_cls(pdu.sequence_number, status, system_id=SYSTEM_ID), pdu)
            return
        self.state = EsmeState.BINDING
        self._pause_reading()  # nothing else is read until the bind is decided
        task = asyncio.get_running_loop().create_task(self._bind_task(pdu, mode, state,
                                                                      resp_cls))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _bind_task(self, pdu: Any, mode: str, state: EsmeState, resp_cls: Any) -> None:
        try:
            outcome: BindOutcome = await self.server.gate.bind(
                pdu.system_id, pdu.password, mode, self.peer)
        except Exception:
            log.exception("esme_bind_error", peer=self.peer)
            outcome = BindOutcome(P.SMPP_ESME_RSYSERR, None, None, "error")
        if self.state is EsmeState.CLOSED:
            if outcome.account is not None and outcome.slot is not None:
                await self.server.gate.unbound(outcome.account.id, outcome.slot)
            return
        if outcome.status != P.SMPP_ESME_ROK:
            self.state = EsmeState.OPEN
            self.reply(resp_cls(pdu.sequence_number, outcome.status, system_id=SYSTEM_ID), pdu)
            self._resume_reading()
            return
        self.state = state
        self.mode = mode
        self.account = outcome.account
        self.slot = outcome.slot
        self.server.bound(self)
        log.info("esme_bound", account=pdu.system_id, bind=mode, peer=self.peer)
        self.reply(resp_cls(pdu.sequence_number, P.SMPP_ESME_ROK, system_id=SYSTEM_ID), pdu)
        self._resume_reading()

    def _unbind(self, pdu: Any) -> None:
        if self.state not in (CAN_SUBMIT | CAN_RECEIVE):
            self.reply(P.UnbindResp(pdu.sequence_number, P.SMPP_ESME_RINVBNDSTS), pdu)
            return
        self._pause_reading()
        asyncio.get_running_loop().create_task(self._unbind_after_inflight(pdu))

    async def _unbind_after_inflight(self, pdu: Any) -> None:
        # what is in flight is answered first: an acknowledged submit is committed
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=self.opts.response_timeout_s)
        self.reply(P.UnbindResp(pdu.sequence_number), pdu)
        log.info("esme_unbound", account=self.account.name if self.account else None,
                 bind=self.mode, peer=self.peer)
        self.close()

    def _response(self, pdu: Any) -> None:
        fut = self.pending.pop(pdu.sequence_number, None)
        self._count(pdu.command_id, pdu.command_status)
        if fut is not None and not fut.done():
            fut.set_result(pdu)
        elif type(pdu) is P.UnbindResp:
            self.close()

    # -- output ---------------------------------------------------------------------------------

    def reply(self, resp: Any, request: Any) -> None:
        """Queue the response to `request` (counted by command and status)."""
        self._count(request.command_id, resp.command_status)
        self.send(resp)

    def send(self, pdu: Any, seq: int | None = None) -> None:
        """Queue a PDU; everything queued in this loop iteration goes out in one write."""
        if self.transport is None or self.transport.is_closing():
            return
        self.out.append(P.encode(pdu, seq))
        if not self.flush_scheduled:
            self.flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    async def deliver(self, pdu: P.DeliverSm, timeout_s: float) -> Any:
        """Send a deliver_sm and return the ESME's response PDU (deliver_sm_resp or
        generic_nack). Raises ConnectionError (closed) or TimeoutError (no answer)."""
        async with self.deliver_slots:
            if self.state not in CAN_RECEIVE or self.transport is None \
                    or self.transport.is_closing():
                raise ConnectionError("not bound as a receiver")
            seq = next(self.seq)
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.pending[seq] = fut
            self.send(pdu, seq)
            try:
                async with asyncio.timeout(timeout_s):
                    return await fut
            finally:
                self.pending.pop(seq, None)

    async def unbind(self, timeout_s: float) -> None:
        """Drain: let in-flight requests answer, send unbind, close on its response (or after
        `timeout_s`)."""
        self._pause_reading()
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=timeout_s)
        if self.state in (CAN_SUBMIT | CAN_RECEIVE):
            self.send(P.Unbind(), next(self.seq))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self.closed.wait()
        self.close()

    def close(self) -> None:
        """Flush what is queued and close the connection."""
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- helpers --------------------------------------------------------------------------------

    def _pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None \
                and not self.transport.is_closing():
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self.reading_paused and not self.writing_paused \
                and self.state not in (EsmeState.BINDING, EsmeState.CLOSED):
            self.reading_paused = False
            if self.transport is not None and not self.transport.is_closing():
                self.transport.resume_reading()
                # PDUs already buffered in the decoder are handled now
                self.data_received(b"")

    def _check_timers(self) -> None:
        """Bind timeout, idle timeout (nothing received), a peer that stopped reading."""
        self.timer = None
        if self.transport is None or self.transport.is_closing():
            return
        now = time.monotonic()
        if self.state is EsmeState.OPEN and now - self.connected_at >= self.opts.bind_timeout_s:
            log.info("esme_bind_timeout", peer=self.peer)
            self.close()
            return
        if self.write_paused_at is not None and not self.transport.get_write_buffer_size():
            self.write_paused_at = None  # it read everything: not stuck
        stuck = self.write_paused_at is not None and \
            now - self.write_paused_at >= self.opts.idle_timeout_s
        torn = self.partial_since is not None and not self.reading_paused and \
            now - self.partial_since >= self.opts.pdu_timeout_s
        if torn:
            self.server.metrics.idle_closed.inc()
            log.info("esme_pdu_timeout", peer=self.peer, buffered=self.decoder.buffered)
            self.close()
            return
        if stuck or now - self.last_rx >= self.opts.idle_timeout_s:
            self.server.metrics.idle_closed.inc()
            log.info("esme_idle_closed", peer=self.peer, not_reading=stuck)
            if self.transport.get_write_buffer_size():
                self.transport.abort()  # close() would wait for a peer that does not read
            else:
                self.close()
            return
        self.timer = asyncio.get_running_loop().call_later(
            min(self.opts.idle_timeout_s, self.opts.pdu_timeout_s, 5.0), self._check_timers)

    def _count(self, command_id: int, status: int) -> None:
        self.server.metrics.pdu(command_id, status)


class EsmeServer:
    """The listener and its connections (see the module docstring)."""

    def __init__(self, opts: SmppServerOptions, *, gate: BindGate, intake: EsmeIntake,
                 metrics: EsmeMetrics, on_bind: Callable[[EsmeConnection], None] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.opts = opts
        self.gate = gate
        self.intake = intake
        self.metrics = metrics
        self.on_bind = on_bind
        self.ssl = ssl_context
        self.connections: set[EsmeConnection] = set()
        self.receivers: dict[int, list[EsmeConnection]] = {}  # account → rx/trx binds
        self._ids = itertools.count(1)
        self._rr = itertools.count()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        """Listen; return the real port (0 = any free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: EsmeConnection(self, next(self._ids)), host, port, ssl=self.ssl,
            ssl_handshake_timeout=self.opts.bind_timeout_s if self.ssl else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def admit(self, conn: EsmeConnection) -> bool:
        """Take a new connection unless `max_binds` connections are open."""
        if len(self.connections) >= self.opts.max_binds:
            log.warning("esme_connection_refused", peer=conn.peer, reason="max_binds")
            return False
        self.connections.add(conn)
        return True

    def bound(self, conn: EsmeConnection) -> None:
        """A connection bound: count it; a receiver/transceiver joins its account's list."""
        assert conn.account is not None and conn.mode is not None
        self.metrics.binds.labels(account=conn.account.name, bind=conn.mode).inc()
        if conn.state in CAN_RECEIVE:
            self.receivers.setdefault(conn.account.id, []).append(conn)
            if self.on_bind is not None:
                self.on_bind(conn)

    def forget(self, conn: EsmeConnection) -> None:
        """A connection closed: drop it, give its bind slot back."""
        self.connections.discard(conn)
        if conn.account is None or conn.mode is None:
            return
        self.metrics.binds.labels(account=conn.account.name, bind=conn.mode).dec()
        rx = self.receivers.get(conn.account.id)
        if rx is not None and conn in rx:
            rx.remove(conn)
            if not rx:
                del self.receivers[conn.account.id]
        if conn.slot is not None:
            slot, conn.slot = conn.slot, None
            account_id = conn.account.id
            asyncio.get_running_loop().create_task(self.gate.unbound(account_id, slot))

    def receiver_for(self, account_id: int) -> EsmeConnection | None:
        """One of the account's receiver/transceiver binds (round robin), or None."""
        binds = [c for c in self.receivers.get(account_id, ()) if c.state in CAN_RECEIVE]
        if not binds:
            return None
        return binds[next(self._rr) % len(binds)]

    def accounts_with_receivers(self) -> list[int]:
        """The accounts with at least one receiver/transceiver bind here."""
        return [a for a, binds in self.receivers.items() if binds]

    def bound_count(self) -> int:
        """Bound connections on this listener."""
        return sum(1 for c in self.connections if c.mode is not None)

    async def close(self, timeout_s: float) -> None:
        """Stop listening, unbind every connection (in-flight requests answered first)."""
        if self._server is not None:
            self._server.close()
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.unbind(timeout_s) for c in conns),
                                 return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._server.wait_closed()
            self._server = None

    def close_all(self) -> None:
        """Close every bound connection at once (their bind slots were lost)."""
        for conn in list(self.connections):
            if conn.mode is not None:
                conn.close()
