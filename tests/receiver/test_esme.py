"""The SMPP server for customer ESMEs, in process over the test database: binds and their
refusals, PDUs in the wrong state, malformed PDUs, submit_sm committed before its response,
the idempotency hint, the window, query_sm, and receipts delivered back (held while the
account has no receiver bind). An independent client (python-smpplib) binds and submits; a
raw client on the project's codec sends what smpplib cannot (malformed and out-of-state PDUs).

The end-to-end runs (real daemons, the simulator, the npm `smpp` client, kill -9) are in
tests/receiver/test_esme_e2e.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import struct
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import smpplib.client
import smpplib.consts
import smpplib.exceptions
from prometheus_client import CollectorRegistry

from smsgw.services.bench.fuzz_esme import fuzz_listener, still_serves
from smsgw.services.receiver.esme_app import EsmeService, build_esme
from smsgw.services.receiver.options import SmppServerOptions
from smsgw.shared.domain import esme as E
from smsgw.shared.domain.apikeys import DisabledAccounts
from smsgw.shared.smpp import pdu as P

from ..harness import query_rows
from .conftest import SERVER_SECRET, AccountFactory, ReceiverFactory


class Raw:
    """A bare SMPP client on the project's codec (to send what real clients never send)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.decoder = P.Decoder()
        self.seq = 0

    @classmethod
    async def open(cls, port: int) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, pdu: Any) -> int:
        self.seq += 1
        self.writer.write(P.encode(pdu, self.seq))
        return self.seq

    def send_bytes(self, data: bytes) -> None:
        self.writer.write(data)

    async def recv(self, timeout_s: float = 5.0) -> Any:
        async with asyncio.timeout(timeout_s):
            while True:
                pdu = self.decoder.next_pdu()
                if pdu is not None:
                    return pdu
                data = await self.reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                self.decoder.feed(data)

    async def bind(self, system_id: str, password: str, cls: Any = P.BindTransceiver) -> int:
        self.send(cls(system_id=system_id, password=password))
        return (await self.recv()).command_status

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


class Smpplib:
    """python-smpplib's (blocking) client, driven from a thread; records what it receives."""

    def __init__(self, port: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self.client = smpplib.client.Client("127.0.0.1", port, timeout=5,
                                            allow_unknown_opt_params=True,
                                            ssl_context=ssl_context)
        self.resps: list[Any] = []
        self.delivered: list[Any] = []
        self.errors: list[Any] = []
        self.client.set_message_sent_handler(lambda pdu: self.resps.append(pdu))
        self.client.set_message_received_handler(self._received)
        self.client.set_error_pdu_handler(lambda pdu: self.errors.append(pdu))
        self._stop = threading.Event()

    def _received(self, pdu: Any) -> int:
        self.delivered.append(pdu)
        return smpplib.consts.SMPP_ESME_ROK

    async def connect_bind(self, system_id: str, password: str, mode: str = "transceiver") -> None:
        def run() -> None:
            self.client.connect()
            getattr(self.client, f"bind_{mode}")(system_id=system_id, password=password)
        await asyncio.to_thread(run)

    async def read_until(self, cond: Any, timeout_s: float = 10.0) -> None:
        """Read PDUs in a thread until `cond()` holds."""
        def run() -> None:
            while not cond():
                self.client.read_once()
        async with asyncio.timeout(timeout_s):
            await asyncio.to_thread(run)

    async def submit(self, **fields: Any) -> Any:
        return await asyncio.to_thread(lambda: self.client.send_message(**fields))

    async def close(self) -> None:
        def run() -> None:
            with contextlib.suppress(Exception):
                self.client.unbind()
            with contextlib.suppress(Exception):
                self.client.disconnect()
        await asyncio.to_thread(run)


@pytest.fixture
async def esme_factory(pool: asyncpg.Pool, db_url: str,
                       receiver_factory: ReceiverFactory) -> AsyncIterator[Any]:
    """Start SMPP servers (in process, over a receiver context) with the given options."""
    started: list[EsmeService] = []

    async def start(**options: Any) -> EsmeService:
        rx = await receiver_factory()
        opts = SmppServerOptions(**{"enabled": True, "port": 0, **options})
        service = await build_esme(pool, rx.ctx, opts, secret=SERVER_SECRET,
                                   connect=lambda: asyncpg.connect(db_url),
                                   registry=CollectorRegistry(), actor="test", owner="test@1")
        started.append(service)
        return service
    yield start
    for service in started:
        await service.server.close(1.0)
        await service.close(2.0)


@pytest.fixture
async def esme(esme_factory: Any) -> EsmeService:
    return await esme_factory(window=4, failed_bind_delay_s=0.01, failed_bind_limit=3,
                              bind_timeout_s=5, response_timeout_s=2)


async def _account(pool: asyncpg.Pool, account_factory: AccountFactory, name: str,
                   **kw: Any) -> tuple[int, str]:
    account_id, _key = await account_factory(name, rate_per_s=1000.0, **kw)
    async with pool.acquire() as conn:
        password = await E.set_password(conn, SERVER_SECRET, name, actor="test")
    return account_id, password


async def test_binds_states_and_malformed_pdus(esme: EsmeService, pool: asyncpg.Pool,
                                               account_factory: AccountFactory,
                                               unique: Any) -> None:
    """1. Before a bind: submit_sm → ESME_RINVBNDSTS, enquire_link answered, an unknown
          command → generic_nack ESME_RINVCMDID.
       2. Bad password, unknown system_id → ESME_RBINDFAIL, audited; after the limit even the
          right password is refused from that address (rate limit).
       3. A malformed submit_sm (C-string without NUL) → its response with the decoder's
          status, and the stream goes on; a receiver bind may not submit (RINVBNDSTS); a
          second bind on a bound connection → ESME_RALYBND.
       4. A broken frame (command_length beyond the limit) closes the connection.
       5. The account's max binds (1) → ESME_RALYBND for the second; a network it does not
          allow → ESME_RBINDFAIL."""
    name = unique("e")[:15]
    account_id, password = await _account(pool, account_factory, name)
    port = esme.port
    raw = await Raw.open(port)
    raw.send(P.SubmitSm(source_addr="x", destination_addr="447700900001", short_message=b"hi"))
    assert (await raw.recv()).command_status == P.SMPP_ESME_RINVBNDSTS
    raw.send(P.EnquireLink())
    assert type(await raw.recv()) is P.EnquireLinkResp
    raw.send_bytes(struct.pack(">IIII", 16, 0x00000077, 0, 99))
    nack = await raw.recv()
    assert type(nack) is P.GenericNack and nack.command_status == P.SMPP_ESME_RINVCMDID
    assert await raw.bind(name, "wrong") == P.SMPP_ESME_RBINDFAIL
    assert await raw.bind("nosuch" + name[:5], password) == P.SMPP_ESME_RBINDFAIL
    audited = await pool.fetch("SELECT object_id, detail FROM audit_log WHERE action = "
                               "'smpp_bind_failed' ORDER BY id")
    assert [a["detail"]["reason"] for a in audited] == ["bad_password", "unknown_system_id"]
    assert audited[0]["object_id"] == str(account_id)
    assert await raw.bind(name, "wrong") == P.SMPP_ESME_RBINDFAIL  # the third failure
    assert await raw.bind(name, password) == P.SMPP_ESME_RBINDFAIL  # limited now
    await raw.close()
    esme.server.gate.by_address._seen.clear()  # a new window for the rest of the test
    esme.server.gate.by_system_id._seen.clear()

    raw = await Raw.open(port)
    assert await raw.bind(name, password, P.BindReceiver) == P.SMPP_ESME_ROK
    raw.send(P.SubmitSm(source_addr="x", destination_addr="447700900001", short_message=b"a"))
    assert (await raw.recv()).command_status == P.SMPP_ESME_RINVBNDSTS
    assert await raw.bind(name, password) == P.SMPP_ESME_RALYBND
    await raw.close()

    raw = await Raw.open(port)
    assert await raw.bind(name, password) == P.SMPP_ESME_ROK
    frame = bytearray(P.encode(P.SubmitSm(source_addr="x", destination_addr="1",
                                          short_message=b"a"), 7))
    frame[16:17] = b"X"  # service_type now runs into the next fields: no NUL within 6
    frame[17:23] = b"YYYYYY"
    raw.send_bytes(bytes(frame))
    bad = await raw.recv()
    assert type(bad) is P.SubmitSmResp and bad.sequence_number == 7
    assert bad.command_status == P.SMPP_ESME_RINVSERTYP
    raw.send(P.EnquireLink())
    assert type(await raw.recv()) is P.EnquireLinkResp
    raw.send_bytes(struct.pack(">IIII", 10_000_000, 4, 0, 8))
    with pytest.raises(ConnectionError):
        await raw.recv()
    await raw.close()

    async with pool.acquire() as conn:
        await conn.execute("UPDATE accounts SET smpp_max_binds = 1, smpp_allowed_networks = "
                           "'{10.0.0.0/8}' WHERE id = $1", account_id)
    raw = await Raw.open(port)
    assert await raw.bind(name, password) == P.SMPP_ESME_RBINDFAIL  # 127.0.0.1 not allowed
    async with pool.acquire() as conn:
        await conn.execute("UPDATE accounts SET smpp_allowed_networks = '{127.0.0.0/8}' "
                           "WHERE id = $1", account_id)
    assert await raw.bind(name, password) == P.SMPP_ESME_ROK
    second = await Raw.open(port)
    assert await second.bind(name, password) == P.SMPP_ESME_RALYBND
    raw.send(P.Unbind())
    assert type(await raw.recv()) is P.UnbindResp
    await raw.close()
    for _ in range(50):  # the slot is freed as the connection closes
        if await second.bind(name, password) == P.SMPP_ESME_ROK:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail("the slot of an unbound ESME was not freed")
    await second.close()


async def test_submit_dedupe_window_query_and_receipts(esme: EsmeService, pool: asyncpg.Pool,
                                                       account_factory: AccountFactory,
                                                       unique: Any) -> None:
    """1. smpplib submits (registered_delivery 1): submit_sm_resp carries the id of a row
          that is committed (`source = 'smpp'`, `meta.esme_rd`), data_coding 8 is UCS-2.
       2. The same user_message_reference and content again → the same id, one row; the same
          reference with other content → a new message.
       3. Beyond the window (4): ESME_RTHROTTLED, the first four answered with ids.
       4. query_sm of our id → ENROUTE (1); of an id not the account's → ESME_RQUERYFAIL.
       5. The message is delivered (the sender's state change): a receipt is queued for the
          ESME and, with no receiver bind, held; once smpplib binds as a transceiver it gets
          a deliver_sm with esm_class 0x04, the standard text with our id and the
          receipted_message_id / message_state TLVs; the row is deleted, its
          `esme_delivered` event kept."""
    name = unique("e")[:15]
    account_id, password = await _account(pool, account_factory, name)
    client = Smpplib(esme.port)
    await client.connect_bind(name, password, "transmitter")
    await client.submit(source_addr_ton=1, source_addr="447700900123", dest_addr_ton=1,
                        destination_addr="447700900456", short_message="héllo €".encode(
                            "utf-16-be"), data_coding=8, registered_delivery=1)
    await client.read_until(lambda: len(client.resps) == 1)
    mid = int(client.resps[0].message_id)
    row = await pool.fetchrow("SELECT source, body, to_addr, from_addr, meta, encoding FROM "
                              "outbound WHERE id = $1", mid)
    assert dict(row) == {"source": "smpp", "body": "héllo €", "to_addr": "+447700900456",
                         "from_addr": "+447700900123", "meta": {"esme_rd": 1},
                         "encoding": "ucs2"}
    umr = [(P.Tag.USER_MESSAGE_REFERENCE, b"\x00\x2a")]
    raw = await Raw.open(esme.port)
    assert await raw.bind(name, password, P.BindTransmitter) == P.SMPP_ESME_ROK
    same = P.SubmitSm(source_addr="Shop", source_addr_ton=5, destination_addr="447700900456",
                      dest_addr_ton=1, short_message=b"code 1234", tlvs=tuple(umr))
    raw.send(same)
    first = await raw.recv()
    raw.send(same)  # the response was "lost": the ESME submits again
    again = await raw.recv()
    assert first.command_status == again.command_status == P.SMPP_ESME_ROK
    assert first.message_id == again.message_id
    raw.send(P.SubmitSm(source_addr="Shop", source_addr_ton=5, destination_addr="447700900456",
                        dest_addr_ton=1, short_message=b"code 9999", tlvs=tuple(umr)))
    other = await raw.recv()
    assert other.message_id not in ("", first.message_id)
    assert await pool.fetchval("SELECT count(*) FROM outbound WHERE account_id = $1",
                               account_id) == 3

    for _ in range(6):  # one write: all six arrive before the first commit answers
        raw.send(P.SubmitSm(source_addr="Shop", source_addr_ton=5,
                            destination_addr="447700900456", dest_addr_ton=1,
                            short_message=b"burst"))
    answers = [await raw.recv() for _ in range(6)]
    statuses = sorted(a.command_status for a in answers)
    assert statuses.count(P.SMPP_ESME_ROK) >= 4
    assert P.SMPP_ESME_RTHROTTLED in statuses

    raw.send(P.QuerySm(message_id=str(mid)))
    q = await raw.recv()
    assert (q.command_status, q.message_state) == (P.SMPP_ESME_ROK, 1)
    raw.send(P.QuerySm(message_id=str(mid + 10_000)))
    assert (await raw.recv()).command_status == P.SMPP_ESME_RQUERYFAIL
    await raw.close()
    await client.close()

    await pool.execute("UPDATE outbound SET status = 'delivered' WHERE id = $1", mid)
    queued = await pool.fetchrow("SELECT status, stat, message_ref FROM esme_deliveries "
                                 "WHERE outbound_id = $1", mid)
    assert dict(queued) == {"status": "queued", "stat": "DELIVRD", "message_ref": str(mid)}
    assert await esme.deliverer.deliver_pass() == 0  # no receiver bind: held

    client = Smpplib(esme.port)
    await client.connect_bind(name, password, "transceiver")
    delivering = asyncio.create_task(esme.deliverer.deliver_pass())
    await client.read_until(lambda: client.delivered)
    assert await delivering == 1
    dlr = client.delivered[0]
    text = dlr.short_message.decode()
    assert text.startswith(f"id:{mid} sub:001 dlvrd:001 submit date:")
    assert " stat:DELIVRD err:000 text:" in text
    assert dlr.esm_class == 0x04
    assert dlr.receipted_message_id.rstrip(b"\0").decode() == str(mid)
    assert dlr.message_state == 2
    assert dlr.source_addr.decode() == "447700900456"
    await client.close()
    # delivered: the row is gone, its event stays for `smsgw trace`
    assert await pool.fetchval("SELECT count(*) FROM esme_deliveries WHERE outbound_id = $1",
                               mid) == 0
    assert [dict(r["detail"]) for r in await pool.fetch(
        "SELECT detail FROM events WHERE message_table = 'outbound' AND message_id = $1 "
        "AND event = 'esme_delivered'", mid)] == [{"kind": "receipt", "stat": "DELIVRD"}]


async def test_submit_multi_data_sm_and_cancel_sm(esme: EsmeService, pool: asyncpg.Pool,
                                                  account_factory: AccountFactory,
                                                  unique: Any) -> None:
    """1. submit_multi to two numbers, a malformed number and a distribution list: one id
          back, two messages stored (the second carrying the first's id), the other two in
          unsuccess_sme with ESME_RINVDSTADR / ESME_RINVDLNAME.
       2. cancel_sm with that id cancels both (status `cancelled`); each destination's
          receipt (registered_delivery 1) is queued with stat DELETED under the one id;
          a second cancel_sm → ESME_RCANCELFAIL.
       3. data_sm (message_payload) → data_sm_resp with an id; cancel_sm without an id, by
          source and destination, cancels it."""
    name = unique("e")[:15]
    account_id, password = await _account(pool, account_factory, name)
    raw = await Raw.open(esme.port)
    assert await raw.bind(name, password) == P.SMPP_ESME_ROK
    raw.send(P.SubmitMulti(source_addr="Shop", source_addr_ton=5, registered_delivery=1,
                           short_message=b"to many",
                           dests=((1, 1, 1, "447700900001"), (1, 1, 1, "447700900002"),
                                  (1, 0, 0, "12ab"), (2, 0, 0, "friends"))))
    resp = await raw.recv()
    assert type(resp) is P.SubmitMultiResp and resp.command_status == P.SMPP_ESME_ROK
    assert sorted(u[3] for u in resp.unsuccess) == [P.SMPP_ESME_RINVDSTADR,
                                                     P.SMPP_ESME_RINVDLNAME]
    first = int(resp.message_id)
    rows = await pool.fetch("SELECT id, to_addr, meta FROM outbound WHERE account_id = $1 "
                            "ORDER BY id", account_id)
    assert [(r["to_addr"], r["meta"].get("esme_id")) for r in rows] == [
        ("+447700900001", None), ("+447700900002", str(first))]
    assert rows[0]["id"] == first
    raw.send(P.CancelSm(message_id=str(first)))
    assert (await raw.recv()).command_status == P.SMPP_ESME_ROK
    assert {r["status"] for r in await pool.fetch(
        "SELECT status FROM outbound WHERE account_id = $1", account_id)} == {"cancelled"}
    receipts = await pool.fetch("SELECT message_ref, stat, from_addr FROM esme_deliveries "
                                "ORDER BY id")
    assert [(r["message_ref"], r["stat"]) for r in receipts] == [(str(first), "DELETED")] * 2
    raw.send(P.CancelSm(message_id=str(first)))
    assert (await raw.recv()).command_status == P.SMPP_ESME_RCANCELFAIL

    raw.send(P.DataSm(source_addr="Shop", source_addr_ton=5, destination_addr="447700900003",
                      dest_addr_ton=1, tlvs=((P.Tag.MESSAGE_PAYLOAD, b"data sm text"),)))
    data = await raw.recv()
    assert type(data) is P.DataSmResp and data.command_status == P.SMPP_ESME_ROK
    assert await pool.fetchval("SELECT body FROM outbound WHERE id = $1",
                               int(data.message_id)) == "data sm text"
    raw.send(P.CancelSm(source_addr="Shop", source_addr_ton=5, destination_addr="447700900003",
                        dest_addr_ton=1))
    assert (await raw.recv()).command_status == P.SMPP_ESME_ROK
    assert await pool.fetchval("SELECT status FROM outbound WHERE id = $1",
                               int(data.message_id)) == "cancelled"
    await raw.close()



async def test_tls_listener(pool: asyncpg.Pool, esme_factory: Any,
                            account_factory: AccountFactory, unique: Any,
                            tls_files: tuple[Path, Path]) -> None:
    """With tls_cert_file/tls_key_file the listener speaks SMPP over TLS only: smpplib with
    the certificate as its CA binds and submits; a plain-TCP bind gets no SMPP answer."""
    cert, key = tls_files
    service = await esme_factory(tls_cert_file=str(cert), tls_key_file=str(key),
                                 bind_timeout_s=2)
    name = unique("t")[:15]
    _, password = await _account(pool, account_factory, name)
    ctx = ssl.create_default_context(cafile=str(cert))
    ctx.check_hostname = False  # smpplib wraps without server_hostname; the CA still counts
    client = Smpplib(service.port, ssl_context=ctx)
    await client.connect_bind(name, password, "transmitter")
    await client.submit(source_addr_ton=5, source_addr="Shop", dest_addr_ton=1,
                        destination_addr="447700900001", short_message=b"over tls")
    await client.read_until(lambda: client.resps)
    assert client.resps[0].status == 0 and client.resps[0].message_id
    await client.close()
    raw = await Raw.open(service.port)
    with pytest.raises((ConnectionError, TimeoutError)):
        await raw.bind(name, password)
    await raw.close()


async def test_fuzzed_pdus_never_crash_or_hang(pool: asyncpg.Pool, esme_factory: Any,
                                               account_factory: AccountFactory,
                                               unique: Any) -> None:
    """`smsgw fuzz esme`'s run, shortened (2,000 streams over 4 connections, two bound):
    every probe is answered or the connection closed (no hang), and afterwards the listener
    still binds and takes a submit_sm; a frame whose bytes stop coming is closed after
    pdu_timeout_s. The full run (1,000,000, on the real daemon) is
    `smsgw fuzz esme`."""
    service = await esme_factory(failed_bind_limit=1_000_000, failed_bind_delay_s=0.0,
                                 max_pdu_length=4096, pdu_timeout_s=0.3)
    name = unique("f")[:15]
    _, password = await _account(pool, account_factory, name)
    stats = await fuzz_listener("127.0.0.1", service.port, streams=2000, seed=7,
                                connections=4, credentials=(name, password),
                                probe_timeout_s=5.0)
    assert stats.problems == [] and stats.hangs == 0
    assert stats.streams == 2000 and stats.probes_answered > 0 and stats.closed_by_server > 0
    assert await still_serves("127.0.0.1", service.port, (name, password)) is None
    raw = await Raw.open(service.port)  # a frame that stops halfway: closed by pdu_timeout_s
    raw.send_bytes(P.encode(P.EnquireLink(), 1)[:10])
    with pytest.raises(ConnectionError):
        await raw.recv(timeout_s=3.0)
    await raw.close()


async def test_esme_that_drops_or_never_reads(pool: asyncpg.Pool, esme_factory: Any,
                                              account_factory: AccountFactory,
                                              unique: Any) -> None:
    """1. An ESME drops its connection right after writing 50 submits (each with its own
          user_message_reference), binds again and resubmits all 50: 50 messages stored,
          every answer an id, none twice.
       2. A data_coding smsgw cannot take (0x05, JIS) → ESME_RSUBMITFAIL, nothing stored.
       3. An ESME that never reads: it pipelines enquire_links while the server's answers
          pile up; the server stops reading (its write buffer stays bounded) and closes the
          connection after idle_timeout_s."""
    service = await esme_factory(window=100, idle_timeout_s=1.0)
    name = unique("d")[:15]
    account_id, password = await _account(pool, account_factory, name)

    def submit(i: int, dc: int = 0) -> P.SubmitSm:
        return P.SubmitSm(source_addr="Shop", source_addr_ton=5, dest_addr_ton=1,
                          destination_addr="447700900555", short_message=b"drop %d" % i,
                          data_coding=dc, tlvs=((P.Tag.USER_MESSAGE_REFERENCE,
                                                 i.to_bytes(2, "big")),))
    raw = await Raw.open(service.port)
    assert await raw.bind(name, password) == P.SMPP_ESME_ROK
    for i in range(50):
        raw.send(submit(i))
    await raw.writer.drain()
    await raw.close()  # gone mid-window: some were committed, none acknowledged to it
    raw = await Raw.open(service.port)
    assert await raw.bind(name, password) == P.SMPP_ESME_ROK
    seqs = {raw.send(submit(i)): i for i in range(50)}
    ids = {}
    for _ in range(50):
        r = await raw.recv()
        assert r.command_status == P.SMPP_ESME_ROK
        ids[seqs[r.sequence_number]] = r.message_id
    rows = await pool.fetch("SELECT id, body FROM outbound WHERE account_id = $1", account_id)
    assert len(rows) == len({r["body"] for r in rows}) == 50
    assert {int(v) for v in ids.values()} == {r["id"] for r in rows}
    raw.send(submit(99, dc=0x05))
    assert (await raw.recv()).command_status == P.SMPP_ESME_RSUBMITFAIL
    assert await pool.fetchval("SELECT count(*) FROM outbound WHERE account_id = $1",
                               account_id) == 50
    await raw.close()

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # it fills sooner
    sock.connect(("127.0.0.1", service.port))
    raw = Raw(*await asyncio.open_connection(sock=sock))
    assert await raw.bind(name, password) == P.SMPP_ESME_ROK
    local = raw.writer.get_extra_info("sockname")[1]
    conn = next(c for c in service.server.connections if c.transport is not None
                and c.transport.get_extra_info("peername")[1] == local)
    link = P.encode(P.EnquireLink(), 5) * 256  # 4 KiB of requests per write, never read back
    highest = 0
    with contextlib.suppress(ConnectionError, OSError):
        for _ in range(5000):
            raw.send_bytes(link)
            await asyncio.sleep(0.001)
            if conn.transport is not None:
                highest = max(highest, conn.transport.get_write_buffer_size())
            if conn.reading_paused or conn.transport is None or conn.transport.is_closing():
                break
    assert conn.reading_paused or conn.state.value == "closed"
    assert highest < 1024 * 1024  # bounded by the transport's high-water mark, not the input
    await asyncio.wait_for(conn.closed.wait(), 10.0)  # idle_timeout_s: it never read
    await raw.close()


async def test_disabled_account_and_expired_receipts(pool: asyncpg.Pool, esme_factory: Any,
                                                     account_factory: AccountFactory,
                                                     unique: Any) -> None:
    """1. A disabled account's bind → ESME_RBINDFAIL, audited as account_disabled; its open
          receiver bind is closed by the delivery worker.
       2. A receipt no bind took within delivery_retention_s is deleted, with an
          `esme_delivery_expired` event on the message and the expired counter."""
    service = await esme_factory(delivery_retention_s=0.05, failed_bind_delay_s=0.0)
    name = unique("x")[:15]
    account_id, password = await _account(pool, account_factory, name)
    raw = await Raw.open(service.port)
    assert await raw.bind(name, password, P.BindTransmitter) == P.SMPP_ESME_ROK
    raw.send(P.SubmitSm(source_addr="Shop", source_addr_ton=5, dest_addr_ton=1,
                        destination_addr="447700900444", registered_delivery=2,
                        short_message=b"will fail"))
    mid = int((await raw.recv()).message_id)
    await raw.close()
    rx = await Raw.open(service.port)
    assert await rx.bind(name, password, P.BindReceiver) == P.SMPP_ESME_ROK
    await pool.execute("UPDATE accounts SET disabled = true WHERE id = $1", account_id)
    raw = await Raw.open(service.port)
    assert await raw.bind(name, password) == P.SMPP_ESME_RBINDFAIL
    await raw.close()
    service.deliverer.disabled = DisabledAccounts(pool, max_age_s=0)  # no cache: see it now
    assert await service.deliverer.deliver_pass() == 0
    with pytest.raises(ConnectionError):  # its receiver bind is closed
        await rx.recv(timeout_s=2.0)
    await rx.close()
    reasons = [r["detail"]["reason"] for r in await pool.fetch(
        "SELECT detail FROM audit_log WHERE action = 'smpp_bind_failed'")]
    assert reasons == ["account_disabled"]
    await pool.execute("UPDATE outbound SET status = 'delivered' WHERE id = $1", mid)
    assert await pool.fetchval("SELECT count(*) FROM esme_deliveries") == 0  # failure only
    await pool.execute("UPDATE outbound SET status = 'undeliverable' WHERE id = $1", mid)
    await asyncio.sleep(0.1)
    async with pool.acquire() as conn:
        await service.deliverer.housekeeping(conn)
    assert await pool.fetchval("SELECT count(*) FROM esme_deliveries WHERE outbound_id = $1",
                               mid) == 0  # expired: deleted, with its event and the metric
    assert await pool.fetchval("SELECT count(*) FROM events WHERE message_table = 'outbound' "
                               "AND message_id = $1 AND event = 'esme_delivery_expired'",
                               mid) == 1
    expired = service.deliverer.metrics.deliveries.labels(source="receipt", outcome="expired")
    assert expired._value.get() == 1


def test_accounts_cli_smpp_password_and_flags(db_url: str, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`smsgw accounts smpp-password NAME` prints an 8-character password once and stores
    only its keyed hash (audited); a name over 15 characters is refused with the reason;
    `update --smpp-allowed-network/--smpp-max-binds/--smpp-bind-mode` set the policy, and
    `--smpp-any-network` / `default` clear it."""
    from smsgw.services.admin import accounts

    monkeypatch.setenv("SMSGW_SECURITY__SERVER_SECRET_ENV", "ESME_TEST_SECRET")
    monkeypatch.setenv("ESME_TEST_SECRET", "esme-secret")
    monkeypatch.delenv("SMSGW_TEST_DATABASE_URL", raising=False)
    base = ["--database-url", db_url]

    def query(sql: str) -> list[Any]:
        return query_rows(db_url, sql)

    assert accounts.main(["create", "shop", *base]) == 0
    assert accounts.main(["create", "a-very-long-account-name", *base]) == 0
    capsys.readouterr()
    assert accounts.main(["smpp-password", "shop", "--json", *base]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["system_id"] == "shop" and len(shown["password"]) == 8
    row = query("SELECT id, smpp_password_hash FROM accounts WHERE name = 'shop'")[0]
    assert bytes(row["smpp_password_hash"]) == E.hash_password(b"esme-secret", row["id"],
                                                                shown["password"])
    assert shown["password"].encode() not in bytes(row["smpp_password_hash"])
    assert accounts.main(["smpp-password", "a-very-long-account-name", *base]) == 2
    assert "15" in capsys.readouterr().err
    assert accounts.main(["update", "shop", "--smpp-allowed-network", "192.0.2.7/24",
                          "--smpp-allowed-network", "2001:db8::/32", "--smpp-max-binds", "3",
                          "--smpp-bind-mode", "transceiver", *base]) == 0
    policy = query("SELECT smpp_allowed_networks::text[] AS nets, smpp_max_binds, "
                   "smpp_bind_modes FROM accounts WHERE name = 'shop'")[0]
    assert policy == {"nets": ["192.0.2.0/24", "2001:db8::/32"], "smpp_max_binds": 3,
                      "smpp_bind_modes": ["transceiver"]}
    assert accounts.main(["update", "shop", "--smpp-any-network", "--smpp-max-binds",
                          "default", "--smpp-any-bind-mode", *base]) == 0
    assert query("SELECT smpp_allowed_networks, smpp_max_binds, smpp_bind_modes FROM accounts "
                 "WHERE name = 'shop'")[0] == {"smpp_allowed_networks": None,
                                               "smpp_max_binds": None,
                                               "smpp_bind_modes": None}
    actions = [r["action"] for r in query("SELECT action FROM audit_log ORDER BY id")]
    assert actions.count("smpp_password_set") == 1 and actions.count("account_updated") == 2


async def test_delivery_queue_leases_retries_order_and_dead(pool: asyncpg.Pool,
                                                            account_factory: AccountFactory,
                                                            unique: Any) -> None:
    """The `esme_deliveries` queue at the statement level (migration 0018):
       1. A claim leases rows and leaves them `queued`; another receiver's claim skips them
          while the lease holds and takes them (one attempt counted) once it ran out.
       2. In order per message: a message's second receipt is not claimed while its first is
          unfinished (queued, in flight or waiting out a retry).
       3. `finish`: a delivered row is deleted with an `esme_delivered` event; a failed one is
          queued again after the retry delay (last_error kept), and deleted with an
          `esme_delivery_dead` event at the attempt limit; only the lease holder's rows
          change. The claim's update is heap-only (no index entry written)."""
    from smsgw.shared.queue import esme_deliveries as Q

    account_id, _ = await account_factory(unique("q"))

    async def add(outbound_id: int, stat: str) -> int:
        return int(await pool.fetchval(
            "INSERT INTO esme_deliveries (account_id, kind, outbound_id, message_ref, "
            "from_addr, to_addr, stat, message_state, final, err, submitted_at, done_at, body) "
            "VALUES ($1, 'receipt', $2::bigint, $2::bigint::text, '+447700900001', 'Shop', $3, "
            "2, true, 0, now(), now(), 'x') RETURNING id", account_id, outbound_id, stat))

    first, second = await add(1, "ENROUTE"), await add(1, "DELIVRD")
    other = await add(2, "DELIVRD")
    rows = await Q.claim(pool, [account_id], limit=10, owner="a", lease_s=0.3)
    assert [r.id for r in rows] == [first, other]  # `second` waits for `first`
    assert {r["status"] for r in await pool.fetch("SELECT status FROM esme_deliveries")} == {
        "queued"}
    assert await Q.claim(pool, [account_id], limit=10, owner="b", lease_s=30) == []
    await asyncio.sleep(0.35)  # receiver a "died": its leases run out
    again = await Q.claim(pool, [account_id], limit=10, owner="b", lease_s=30)
    assert [(r.id, r.attempts) for r in again] == [(first, 1), (other, 1)]
    # a's late outcome changes nothing: the rows are b's now
    assert await Q.finish(pool, owner="a", delivered=[first, other], failed=[], delay_s=0,
                          max_attempts=3, daemon="receiver") == {}
    counts = await Q.finish(pool, owner="b", delivered=[other],
                            failed=[(first, "deliver_sm_resp ESME_RX_T_APPNACK")], delay_s=0.2,
                            max_attempts=3, daemon="receiver")
    assert counts == {("delivered", "receipt"): 1, ("retried", "receipt"): 1}
    assert await pool.fetchval("SELECT count(*) FROM esme_deliveries WHERE id = $1", other) == 0
    row = await pool.fetchrow("SELECT attempts, last_error, lease_owner, run_after > now() AS "
                              "later FROM esme_deliveries WHERE id = $1", first)
    assert dict(row) == {"attempts": 2, "last_error": "deliver_sm_resp ESME_RX_T_APPNACK",
                         "lease_owner": None, "later": True}
    assert await Q.claim(pool, [account_id], limit=10, owner="b", lease_s=30) == []  # backoff
    await asyncio.sleep(0.25)
    assert [r.id for r in await Q.claim(pool, [account_id], limit=10, owner="b",
                                        lease_s=30)] == [first]
    counts = await Q.finish(pool, owner="b", delivered=[],
                            failed=[(first, "no deliver_sm_resp")], delay_s=0, max_attempts=3,
                            daemon="receiver")
    assert counts == {("dead", "receipt"): 1}
    assert [r.id for r in await Q.claim(pool, [account_id], limit=10, owner="b",
                                        lease_s=30)] == [second]  # its predecessor is gone
    events = [(r["message_id"], r["event"], dict(r["detail"])) for r in await pool.fetch(
        "SELECT message_id, event, detail FROM events WHERE message_table = 'outbound' "
        "AND event LIKE 'esme_%' AND daemon = 'receiver' ORDER BY id")]
    assert events == [(2, "esme_delivered", {"kind": "receipt", "stat": "DELIVRD"}),
                      (1, "esme_delivery_dead", {"kind": "receipt",
                                                 "error": "no deliver_sm_resp"})]
    # heap-only: the six claimed rows' updates wrote no index entry; only the retry's (it
    # moves run_after, which the claim index names) did. A backend reports its counts within
    # about a second of going idle.
    stats = None
    for _ in range(50):
        stats = await pool.fetchrow("SELECT n_tup_upd AS upd, n_tup_hot_upd AS hot FROM "
                                    "pg_stat_user_tables WHERE relname = 'esme_deliveries'")
        if stats["upd"] >= 7:
            break
        await asyncio.sleep(0.1)
    assert stats is not None and dict(stats) == {"upd": 7, "hot": 6}


async def test_submit_whose_commit_fails(esme: EsmeService, pool: asyncpg.Pool,
                                         account_factory: AccountFactory, unique: Any) -> None:
    """A submit the database refuses to store is answered by the kind of error: a data or
    constraint error (it would fail again) → ESME_RSUBMITFAIL, which clients do not resubmit;
    a transient one (here a deadlock) → ESME_RSYSERR, which Kannel and Jasmin resubmit. A
    neighbour in the same commit batch is stored and answered ESME_ROK."""
    await pool.execute("""
        CREATE FUNCTION test_refuse_insert() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.body = 'poison' THEN
                RAISE EXCEPTION 'refused' USING ERRCODE = 'check_violation';
            ELSIF NEW.body = 'busy' THEN
                RAISE EXCEPTION 'deadlock' USING ERRCODE = 'deadlock_detected';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER test_refuse BEFORE INSERT ON outbound
            FOR EACH ROW EXECUTE FUNCTION test_refuse_insert();""")
    name = unique("c")[:15]
    account_id, password = await _account(pool, account_factory, name)
    raw = await Raw.open(esme.port)
    assert await raw.bind(name, password, P.BindTransmitter) == P.SMPP_ESME_ROK
    seqs = {raw.send(P.SubmitSm(source_addr="Shop", source_addr_ton=5, dest_addr_ton=1,
                                destination_addr="447700900777", short_message=body)): body
            for body in (b"poison", b"fine", b"busy")}  # one write: usually one batch
    answers = {}
    for _ in range(3):
        r = await raw.recv()
        answers[seqs[r.sequence_number]] = r.command_status
    assert answers == {b"poison": P.SMPP_ESME_RSUBMITFAIL, b"fine": P.SMPP_ESME_ROK,
                       b"busy": P.SMPP_ESME_RSYSERR}
    assert [r["body"] for r in await pool.fetch(
        "SELECT body FROM outbound WHERE account_id = $1", account_id)] == ["fine"]
    await raw.close()


async def test_bind_right_after_the_slots_connection_died(esme: EsmeService, pool: asyncpg.Pool,
                                                          account_factory: AccountFactory,
                                                          unique: Any) -> None:
    """The bind slots' connection is ended by the server (here pg_terminate_backend) and a
    bind arrives before the receiver has read that end (asyncpg then fails the query with
    "cannot switch to state" when its last statement freed a slot): the slot is taken on a
    new connection — ESME_ROK, where it was ESME_RSYSERR — and the bind held before is
    closed, its slot gone with the old connection. Three times: the race is the receiver's
    to lose."""
    name = unique("s")[:15]
    _, password = await _account(pool, account_factory, name)
    for _ in range(3):
        before = await Raw.open(esme.port)
        assert await before.bind(name, password) == P.SMPP_ESME_ROK
        gone = await Raw.open(esme.port)  # a bind that ends: its slot is freed
        assert await gone.bind(name, password) == P.SMPP_ESME_ROK
        await gone.close()
        await asyncio.sleep(0.1)
        old = esme.slots._conn
        assert old is not None
        await pool.execute("SELECT pg_terminate_backend($1)", old.get_server_pid())
        after = await Raw.open(esme.port)
        assert await after.bind(name, password) == P.SMPP_ESME_ROK
        assert esme.slots._conn is not None and esme.slots._conn is not old
        with pytest.raises(ConnectionError):
            await before.recv(timeout_s=2.0)
        after.send(P.EnquireLink())
        assert type(await after.recv()) is P.EnquireLinkResp  # the new bind stays
        await before.close()
        await after.close()


def test_submit_message_copy_equals_model_construct() -> None:
    """A submit's MessageIn is a copy of one blank instance (faster than model_construct):
    the same values and fields_set as model_construct, which holds only while no field's
    default is mutable (a copy would share it between messages)."""
    from smsgw.services.receiver import esme_submit
    from smsgw.services.receiver.models import MessageIn

    for name, field in MessageIn.model_fields.items():
        assert field.default_factory is None, name
        if not field.is_required():
            assert isinstance(field.default, (type(None), bool, int, float, str)), name
    fields = {"to": "+447700900123", "from_": "Shop", "udh": None, "mclass": 1, "text": "hi",
              "encoding": "gsm7", "tlvs": {"0x1400": "00"}}
    made = esme_submit._BLANK_MESSAGE.model_copy(update=fields)
    expected = MessageIn.model_construct(**fields)
    assert made.__dict__ == expected.__dict__
    assert made.model_fields_set == expected.model_fields_set
