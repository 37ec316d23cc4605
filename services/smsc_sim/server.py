"""The SMSC simulator: a real SMPP 3.4 server on the project's codec.

It stands in for the operator's SMSC in tests, demos and benchmarks (docs/ARCHITECTURE.md
"Testing": a fake of something we do not own). It accepts binds, answers submit_sm with unique
message ids, sends
delivery receipts after a delay with a configurable stat mix, generates MO traffic, and injects
faults on demand: throttling, error statuses, slow or missing responses, dropped connections,
garbage bytes. It records every submit with its own monotonic timestamp, so rate tests count
what arrived at the SMSC rather than what the client believes it sent.

Built on asyncio.Protocol rather than streams: one `data_received` decodes every complete PDU
and answers them with a single `transport.write`, which keeps the simulator far from being the
bottleneck (it must take well over 20,000 submit_sm/s from one pipelined client).
"""

import asyncio
import itertools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ssl import SSLContext
from typing import Any, Literal, Self

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.receipts import format_receipt_text

log = logging.getLogger("smsgw.smsc_sim")

__all__ = ["Faults", "SimConfig", "SimCounters", "Simulator", "SubmitRecord"]

_STAT_STATE = {"DELIVRD": 2, "EXPIRED": 3, "DELETED": 4, "UNDELIV": 5, "ACCEPTD": 6,
               "UNKNOWN": 7, "REJECTD": 8, "ENROUTE": 1}  # fmt: skip


@dataclass(slots=True)
class SimConfig:
    """Simulator settings.

    `system_id`/`password` None accept any credentials; `id_format` "hex" or "dec" for
    submit_sm_resp ids and `receipt_id_format` ("same", "hex", "dec") for the ids inside
    receipts (an SMSC reporting decimal receipts for hex ids is common); `receipt_delay_s`
    None disables receipts, otherwise they follow submits that ask for one
    (registered_delivery bit 0) after that delay, with a stat drawn from `receipt_stats`
    (weights); `mo_rate` MO messages per second per rx/trx bind (0: none); `max_binds`
    limits concurrent binds; `keep_submits` records every submit in `Simulator.submits`;
    `ssl` (a server context) makes it an SMPP-over-TLS endpoint. As a real SMSC does, a
    connection that has not bound within `bind_timeout_s`, or a bound one that sends nothing
    (not even enquire_link) for `idle_timeout_s`, is closed (None: never).
    """

    host: str = "127.0.0.1"
    port: int = 0
    system_id: str | None = None
    password: str | None = None
    id_format: Literal["hex", "dec"] = "hex"
    receipt_id_format: Literal["same", "hex", "dec"] = "same"
    first_id: int = 1
    receipt_delay_s: float | None = None
    receipt_stats: dict[str, float] = field(default_factory=lambda: {"DELIVRD": 1.0})
    receipt_tlvs: bool = True
    receipt_retries: int = 10  # redeliveries of a receipt not answered with ESME_ROK
    receipt_retry_s: float = 2.0
    mo_rate: float = 0.0
    mo_source: str = "447700900001"
    mo_destination: str = "12345"
    mo_text: str = "Hello from the simulator"
    max_binds: int | None = None
    keep_submits: bool = True
    seed: int | None = None
    ssl: SSLContext | None = None
    bind_timeout_s: float | None = 30.0
    idle_timeout_s: float | None = 180.0


@dataclass(slots=True)
class Faults:
    """Faults to inject; change them at any time through `Simulator.inject`.

    `throttle_fraction`/`error_fraction` apply to each submit at random; `throttle_next`/
    `error_next` to the next N submits (a burst); `error_status` is the status used for
    errors; `response_delay_s` delays every submit_sm_resp; `no_response_next` leaves the
    next N submits unanswered (the client times out); `drop_after` closes the connection
    on the Nth next submit, without answering it; `ignore_enquire_link` plays a dead peer.
    """

    throttle_fraction: float = 0.0
    throttle_next: int = 0
    error_status: int = P.SMPP_ESME_RSYSERR
    error_fraction: float = 0.0
    error_next: int = 0
    response_delay_s: float = 0.0
    no_response_next: int = 0
    drop_after: int | None = None
    ignore_enquire_link: bool = False


@dataclass(slots=True)
class SimCounters:
    """The simulator's own counts (`current_binds` is a gauge)."""

    connections: int = 0
    binds: int = 0
    bind_rejected: int = 0
    current_binds: int = 0
    unbinds: int = 0
    submits: int = 0
    submit_ok: int = 0
    throttled: int = 0
    errors: int = 0
    unanswered: int = 0
    dropped: int = 0
    enquire_links: int = 0
    generic_nacks_sent: int = 0
    protocol_errors: int = 0
    idle_closed: int = 0  # connections closed for not binding or for going quiet
    receipts_sent: int = 0
    receipts_redelivered: int = 0
    receipts_given_up: int = 0
    mo_sent: int = 0
    deliver_resp_ok: int = 0
    deliver_resp_error: int = 0
    max_pipelined: int = 0  # most submits decoded from one read (a window lower bound)
    unanswered_now: int = 0  # gauge: submits whose (delayed) response is not yet written
    max_unanswered: int = 0  # high-water mark of unanswered_now: the client's real window


@dataclass(frozen=True, slots=True)
class SubmitRecord:
    """One received submit_sm: simulator-side monotonic time, the id given, the PDU."""

    t: float
    message_id: str | None
    connection: int
    pdu: P.SubmitSm


_BINDS = {
    P.BindTransmitter: ("transmitter", P.BindTransmitterResp),
    P.BindReceiver: ("receiver", P.BindReceiverResp),
    P.BindTransceiver: ("transceiver", P.BindTransceiverResp),
}


class _Connection(asyncio.Protocol):
    """One ESME connection to the simulator."""

    def __init__(self, sim: "Simulator", conn_id: int) -> None:
        self.sim = sim
        self.id = conn_id
        self.transport: asyncio.Transport | None = None
        self.decoder = P.Decoder()
        self.bind_mode: str | None = None
        self.system_id = ""
        self.seq = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.mo_task: asyncio.Task[None] | None = None
        self.out: list[bytes] = []
        self.last_rx = 0.0  # loop time of the last byte from the ESME
        self.idle_timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self.sim.connections.add(self)
        self.sim.counters.connections += 1
        loop = asyncio.get_running_loop()
        self.last_rx = loop.time()
        first = self.sim.config.bind_timeout_s or self.sim.config.idle_timeout_s
        if first is not None:
            self.idle_timer = loop.call_later(first, self._check_idle)

    def _check_idle(self) -> None:
        """Close a connection that never bound, or went quiet; otherwise look again later."""
        self.idle_timer = None
        if self.transport is None or self.transport.is_closing():
            return
        cfg = self.sim.config
        loop = asyncio.get_running_loop()
        if self.bind_mode is None and cfg.bind_timeout_s is not None:
            due = loop.time()  # armed at connect + bind_timeout_s and still not bound
        elif cfg.idle_timeout_s is not None:
            due = self.last_rx + cfg.idle_timeout_s
        else:
            return
        if loop.time() >= due:
            self.sim.counters.idle_closed += 1
            self.close()
            return
        self.idle_timer = loop.call_at(due, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.sim.connections.discard(self)
        if self.bind_mode is not None:
            self.sim.counters.current_binds -= 1
            self.bind_mode = None
        if self.mo_task is not None:
            self.mo_task.cancel()
        # A deliver_sm without its response: the sender of it gets ConnectionError and may
        # deliver it again (a real SMSC redelivers), never a CancelledError that would end the
        # caller's task (the MO load driver's worker) as if it had been cancelled itself.
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("connection lost before the response"))

    def data_received(self, data: bytes) -> None:
        self.last_rx = asyncio.get_running_loop().time()
        self.decoder.feed(data)
        submits = 0
        while True:
            try:
                pdu = self.decoder.next_pdu()
            except P.SmppPduError as exc:
                # The bad frame is consumed; answer it (never a response) and read on.
                self.sim.counters.protocol_errors += 1
                answer = P.error_response(exc)
                if answer is not None:
                    self.queue(answer)
                continue
            except P.SmppFramingError:
                self.sim.counters.protocol_errors += 1
                self.close()
                return
            if pdu is None:
                break
            if type(pdu) is P.SubmitSm:
                submits += 1
                self.on_submit(pdu)
            else:
                self.on_pdu(pdu)
            if self.transport is None or self.transport.is_closing():
                return
        if submits > self.sim.counters.max_pipelined:
            self.sim.counters.max_pipelined = submits
        self.flush()

    # output --------------------------------------------------------------------------------

    def queue(self, pdu: Any, seq: int | None = None) -> None:
        self.out.append(P.encode(pdu, seq))

    def flush(self) -> None:
        if self.out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def close(self) -> None:
        self.flush()
        if self.transport is not None:
            self.transport.close()

    # requests ------------------------------------------------------------------------------

    def on_pdu(self, pdu: Any) -> None:
        cls = type(pdu)
        if cls in _BINDS:
            self.on_bind(pdu)
        elif cls is P.EnquireLink:
            self.sim.counters.enquire_links += 1
            if not self.sim.faults.ignore_enquire_link:
                self.queue(P.EnquireLinkResp(pdu.sequence_number))
        elif cls is P.Unbind:
            self.sim.counters.unbinds += 1
            self.queue(P.UnbindResp(pdu.sequence_number))
            self.close()
        elif pdu.is_response:
            self.on_response(pdu)
        elif cls is P.UnknownPdu:
            self.sim.counters.generic_nacks_sent += 1
            self.queue(P.GenericNack(pdu.sequence_number, P.SMPP_ESME_RINVCMDID))
        elif cls is P.DataSm:
            self.on_submit(pdu)
        elif cls is P.QuerySm:
            self.queue(self.sim.query(pdu))
        else:
            self.queue(P.response_for(pdu, P.SMPP_ESME_RINVBNDSTS))

    def on_bind(self, pdu: Any) -> None:
        mode, resp_cls = _BINDS[type(pdu)]
        status = self.sim.check_bind(self, pdu)
        if status != P.SMPP_ESME_ROK:
            self.sim.counters.bind_rejected += 1
            self.queue(resp_cls(pdu.sequence_number, status, system_id="SMSCSIM"))
            return
        self.bind_mode = mode
        self.system_id = pdu.system_id
        self.sim.counters.binds += 1
        self.sim.counters.current_binds += 1
        self.queue(resp_cls(pdu.sequence_number, 0, system_id="SMSCSIM"))
        if self.sim.config.mo_rate > 0 and mode != "transmitter":
            self.mo_task = asyncio.get_running_loop().create_task(
                self.sim.mo_loop(self), name="smsc_sim.mo_loop"
            )

    def on_response(self, pdu: Any) -> None:
        fut = self.pending.pop(pdu.sequence_number, None)
        if type(pdu) in (P.DeliverSmResp, P.DataSmResp, P.GenericNack):
            if pdu.command_status == P.SMPP_ESME_ROK and type(pdu) is not P.GenericNack:
                self.sim.counters.deliver_resp_ok += 1
            else:
                self.sim.counters.deliver_resp_error += 1
        if fut is None:
            self.sim.stray_responses.append(pdu)
        elif not fut.done():
            fut.set_result(pdu)

    def on_submit(self, pdu: Any) -> None:
        if self.bind_mode not in ("transmitter", "transceiver"):
            self.queue(P.response_for(pdu, P.SMPP_ESME_RINVBNDSTS))
            return
        decision = self.sim.decide(self)
        if decision == "drop":
            self.sim.counters.dropped += 1
            self.close()
            return
        if decision == "silent":
            self.sim.counters.unanswered += 1
            return
        status = decision
        message_id = self.sim.next_message_id() if status == P.SMPP_ESME_ROK else None
        self.sim.record(self, pdu, message_id)
        resp = P.response_for(pdu, status, message_id=message_id or "")
        delay = self.sim.faults.response_delay_s
        if delay > 0:
            c = self.sim.counters
            c.unanswered_now += 1
            c.max_unanswered = max(c.max_unanswered, c.unanswered_now)
            asyncio.get_running_loop().call_later(delay, self.send_later, resp)
        else:
            self.queue(resp)
        if message_id is not None and pdu.registered_delivery & 0x03:
            self.sim.schedule_receipt(self, pdu, message_id)

    def send_later(self, pdu: Any) -> None:
        self.sim.counters.unanswered_now -= 1
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(P.encode(pdu))

    async def deliver(self, pdu: P.DeliverSm | P.DataSm, wait_s: float = 10.0) -> Any:
        """Send a deliver_sm/data_sm to this ESME and wait for its response PDU."""
        seq = next(self.seq)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[seq] = fut
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.transport.write(P.encode(pdu, seq))
        try:
            async with asyncio.timeout(wait_s):
                return await fut
        finally:
            self.pending.pop(seq, None)


class Simulator:
    """An in-process SMSC. `async with Simulator(SimConfig(...)) as sim:` listens on
    `sim.port` (127.0.0.1, port 0 by default) until the block ends.

    Control and inspection: `inject(**faults)`, `counters`, `submits` (SubmitRecord list),
    `bind_count`, `await send_mo(...)`, `await drop_connections()`, `await send_garbage(...)`.
    """

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = config or SimConfig()
        for key, value in overrides.items():
            setattr(self.config, key, value)
        self.faults = Faults()
        self.counters = SimCounters()
        self.submits: list[SubmitRecord] = []
        self.stray_responses: list[Any] = []  # responses to nothing we sent (client answers)
        self.connections: set[_Connection] = set()
        self.receipt_handles: set[asyncio.TimerHandle] = set()
        self._next_id = self.config.first_id
        self._conn_ids = itertools.count(1)
        self._rng = random.Random(self.config.seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._clock: Callable[[], float] = time.monotonic

    # lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on config.host:config.port (0: a free port, see `.port`)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self, next(self._conn_ids)),
            self.config.host,
            self.config.port,
            ssl=self.config.ssl,
        )
        log.info("smsc_sim_listening", extra={"host": self.config.host, "port": self.port})

    async def stop(self) -> None:
        """Stop listening, close every connection, cancel timers and MO loops."""
        if self._server is not None:
            self._server.close()
        for handle in self.receipt_handles:
            handle.cancel()
        self.receipt_handles.clear()
        for conn in list(self.connections):
            conn.close()
        tasks = [t for t in self._tasks if not t.done()]
        for conn in list(self.connections):
            if conn.mo_task is not None:
                tasks.append(conn.mo_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port actually bound."""
        assert self._server is not None, "simulator not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def bind_count(self) -> int:
        """Connections currently bound."""
        return self.counters.current_binds

    # control -------------------------------------------------------------------------------

    def inject(self, **faults: Any) -> None:
        """Set fault parameters (see Faults), e.g. `inject(throttle_next=5)`."""
        for key, value in faults.items():
            if not hasattr(self.faults, key):
                raise AttributeError(f"unknown fault {key!r}")
            setattr(self.faults, key, value)

    def clear_faults(self) -> None:
        """Back to no faults."""
        self.faults = Faults()

    def timestamps(self) -> list[float]:
        """Simulator-side arrival times of every recorded submit, in order."""
        return [r.t for r in self.submits]

    async def drop_connections(self) -> None:
        """Close every connection at once, without unbinding (a crash or a cut cable)."""
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        await asyncio.sleep(0)

    async def send_garbage(self, data: bytes) -> None:
        """Write raw bytes to every connection (protocol fuzzing of the client)."""
        for conn in list(self.connections):
            if conn.transport is not None and not conn.transport.is_closing():
                conn.transport.write(data)
        await asyncio.sleep(0)

    def _bound_receivers(self) -> list[_Connection]:
        return [c for c in self.connections if c.bind_mode in ("receiver", "transceiver")]

    async def send_mo(
        self,
        text: str | bytes = "Hello",
        *,
        source_addr: str | None = None,
        destination_addr: str | None = None,
        data_coding: int = 0,
        esm_class: int = 0,
        tlvs: P.Tlvs = (),
        wait_s: float = 10.0,
    ) -> int:
        """Send one MO deliver_sm to a bound receiver; return the ESME's command_status.

        `text` str is encoded as GSM 7-bit unpacked (data_coding 0) or UCS-2 (8); bytes are
        sent as they are. Raises ConnectionError when no rx/trx bind is up.
        """
        payload = _encode_mo(text, data_coding)
        pdu = P.DeliverSm(
            source_addr_ton=1, source_addr_npi=1,
            source_addr=source_addr or self.config.mo_source,
            dest_addr_ton=0, dest_addr_npi=0,
            destination_addr=destination_addr or self.config.mo_destination,
            esm_class=esm_class, data_coding=data_coding, short_message=payload, tlvs=tlvs,
        )  # fmt: skip
        return await self.deliver(pdu, wait_s=wait_s)

    async def deliver(self, pdu: P.DeliverSm | P.DataSm, wait_s: float = 10.0) -> int:
        """Send any deliver_sm/data_sm to one bound receiver; return its response status."""
        receivers = self._bound_receivers()
        if not receivers:
            raise ConnectionError("no receiver or transceiver bind")
        conn = self._rng.choice(receivers)
        resp = await conn.deliver(pdu, wait_s)
        self.counters.mo_sent += 1
        return int(resp.command_status)

    # decisions -----------------------------------------------------------------------------

    def check_bind(self, conn: _Connection, pdu: Any) -> int:
        """command_status for a bind request (credentials, already bound, bind limit)."""
        cfg = self.config
        if conn.bind_mode is not None:
            return P.SMPP_ESME_RALYBND
        if cfg.system_id is not None and pdu.system_id != cfg.system_id:
            return P.SMPP_ESME_RINVSYSID
        if cfg.password is not None and pdu.password != cfg.password:
            return P.SMPP_ESME_RINVPASWD
        if cfg.max_binds is not None and self.counters.current_binds >= cfg.max_binds:
            return P.SMPP_ESME_RBINDFAIL
        return P.SMPP_ESME_ROK

    def decide(self, conn: _Connection) -> int | str:
        """Status for the next submit, or "drop"/"silent" (faults applied here)."""
        f = self.faults
        self.counters.submits += 1
        if f.drop_after is not None:
            f.drop_after -= 1
            if f.drop_after <= 0:
                f.drop_after = None
                return "drop"
        if f.no_response_next > 0:
            f.no_response_next -= 1
            return "silent"
        rng = self._rng
        if f.throttle_next > 0 or (f.throttle_fraction and rng.random() < f.throttle_fraction):
            f.throttle_next = max(f.throttle_next - 1, 0)
            self.counters.throttled += 1
            return P.SMPP_ESME_RTHROTTLED
        if f.error_next > 0 or (f.error_fraction and self._rng.random() < f.error_fraction):
            f.error_next = max(f.error_next - 1, 0)
            self.counters.errors += 1
            return f.error_status
        self.counters.submit_ok += 1
        return P.SMPP_ESME_ROK

    def query(self, pdu: P.QuerySm) -> P.QuerySmResp:
        """Answer query_sm: ids this simulator issued are DELIVERED, others unknown."""
        base = 16 if self.config.id_format == "hex" else 10
        try:
            issued = self.config.first_id <= int(pdu.message_id, base) < self._peek_next_id()
        except ValueError:
            issued = False
        if not issued:
            return P.QuerySmResp(pdu.sequence_number, P.SMPP_ESME_RINVMSGID, pdu.message_id)
        final = datetime.now(UTC).strftime("%y%m%d%H%M%S000+")
        return P.QuerySmResp(pdu.sequence_number, 0, pdu.message_id, final, 2, 0)

    def _peek_next_id(self) -> int:
        return self._next_id

    def next_message_id(self) -> str:
        """A unique id in the configured base."""
        n = self._next_id
        self._next_id += 1
        return format(n, "x") if self.config.id_format == "hex" else str(n)

    def record(self, conn: _Connection, pdu: P.SubmitSm, message_id: str | None) -> None:
        """Keep the submit with the simulator's own arrival time."""
        if self.config.keep_submits:
            self.submits.append(SubmitRecord(self._clock(), message_id, conn.id, pdu))

    # receipts and MO -----------------------------------------------------------------------

    def schedule_receipt(self, conn: _Connection, submit: P.SubmitSm, message_id: str) -> None:
        """Send a receipt for `submit` after receipt_delay_s (when receipts are on)."""
        delay = self.config.receipt_delay_s
        if delay is None:
            return
        loop = asyncio.get_running_loop()
        submitted = datetime.now(UTC)
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self.receipt_handles.discard(handle)  # type: ignore[arg-type]
            self._spawn(self._send_receipt(conn, submit, message_id, submitted))

        handle = loop.call_later(delay, fire)
        self.receipt_handles.add(handle)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="smsc_sim.task")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def receipt_for(
        self, submit: P.SubmitSm, message_id: str, submitted: datetime, stat: str | None = None
    ) -> P.DeliverSm:
        """Build the receipt deliver_sm for one submit (stat drawn from the mix if None)."""
        cfg = self.config
        stats = list(cfg.receipt_stats)
        stat = stat or self._rng.choices(stats, weights=[cfg.receipt_stats[s] for s in stats])[0]
        rid = _receipt_id(message_id, cfg.id_format, cfg.receipt_id_format)
        err = "000" if stat == "DELIVRD" else "001"
        text = format_receipt_text(rid, stat, submitted, datetime.now(UTC), err)
        tlvs: P.Tlvs = ()
        if cfg.receipt_tlvs:
            tlvs = (
                (P.Tag.RECEIPTED_MESSAGE_ID, rid.encode() + b"\0"),
                (P.Tag.MESSAGE_STATE, bytes((_STAT_STATE.get(stat, 7),))),
            )
            if stat != "DELIVRD":
                tlvs += ((P.Tag.NETWORK_ERROR_CODE, b"\x03\x00\x01"),)
        return P.DeliverSm(
            source_addr_ton=submit.dest_addr_ton, source_addr_npi=submit.dest_addr_npi,
            source_addr=submit.destination_addr[:20],
            dest_addr_ton=submit.source_addr_ton, dest_addr_npi=submit.source_addr_npi,
            destination_addr=submit.source_addr[:20],
            esm_class=0x04, short_message=text.encode("ascii")[:254], tlvs=tlvs,
        )  # fmt: skip

    async def _send_receipt(
        self, conn: _Connection, submit: P.SubmitSm, message_id: str, submitted: datetime
    ) -> None:
        # Like a real SMSC, a receipt that was not acknowledged with ESME_ROK (an error status,
        # no answer, no bind) is delivered again later, up to `receipt_retries` times: an ESME
        # answers a transient error while its database is down and relies on this.
        pdu = self.receipt_for(submit, message_id, submitted)
        for attempt in range(self.config.receipt_retries + 1):
            if attempt:
                self.counters.receipts_redelivered += 1
                await asyncio.sleep(self.config.receipt_retry_s)
            # Prefer the connection that submitted; any rx/trx bind will do (as SMSCs do).
            target = conn if conn.bind_mode == "transceiver" else None
            if target is None:
                receivers = self._bound_receivers()
                if not receivers:
                    continue
                target = self._rng.choice(receivers)
            try:
                resp = await target.deliver(pdu)
            except (ConnectionError, TimeoutError):
                continue
            if int(resp.command_status) == 0:
                self.counters.receipts_sent += 1
                return
        self.counters.receipts_given_up += 1

    async def mo_loop(self, conn: _Connection) -> None:
        """Send MO at config.mo_rate to one bind until it goes away."""
        interval = 1.0 / self.config.mo_rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while conn.bind_mode is not None:
            next_at += interval
            await asyncio.sleep(max(next_at - loop.time(), 0))
            pdu = P.DeliverSm(
                source_addr_ton=1, source_addr_npi=1, source_addr=self.config.mo_source,
                destination_addr=self.config.mo_destination,
                short_message=_encode_mo(self.config.mo_text, 0),
            )  # fmt: skip
            try:
                await conn.deliver(pdu)
                self.counters.mo_sent += 1
            except (ConnectionError, TimeoutError):
                return


def _encode_mo(text: str | bytes, data_coding: int) -> bytes:
    from smsgw.shared.smpp.text import encode_text  # local: keeps the codec import light

    if isinstance(text, bytes):
        return text
    if data_coding == 8:
        return encode_text(text, "ucs2")
    if data_coding == 3:
        return encode_text(text, "latin1")
    return encode_text(text, "gsm7")


def _receipt_id(message_id: str, id_format: str, receipt_format: str) -> str:
    if receipt_format == "same" or receipt_format == id_format:
        return message_id
    if receipt_format == "dec":
        return str(int(message_id, 16))
    return format(int(message_id), "x")


def parse_stats(spec: str) -> dict[str, float]:
    """Parse "DELIVRD=0.9,UNDELIV=0.1" into a weight table."""
    table: dict[str, float] = {}
    for item in spec.split(","):
        if item.strip():
            name, _, weight = item.partition("=")
            table[name.strip().upper()] = float(weight or 1)
    return table
