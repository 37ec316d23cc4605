"""Kannel dlr-url end to end: a real `/cgi-bin/sendsms` with a dlr-url using every escape, the
real daemons (`smsgw up`'s supervisor via the benchmark stack), the simulator's receipt, and a
real HTTP application receiving the GETs; each query compared field by field with the value
worked out from Kannel 1.4.5's source and the rows the gateway stored (receipt text, SMSC ids).

The oracle for the encoding is the standard library (`quote_plus` with Kannel's safe set,
gwlib/octstr.c urlcode_init), not `shared.domain.kannel`. Both the URL the sender queued (the
`callbacks` row) and the query the application received are compared byte for byte (the
processor sends a rendered URL as it is, as Kannel's HTTP client does).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import quote_plus

import aiohttp
import asyncpg
import pytest
import pytest_asyncio
from aiohttp import web

from smsgw.services.bench.stack import BENCH_ACCOUNT, Stack, StackOptions
from smsgw.shared.core import db
from smsgw.shared.smpp import pdu as P

pytestmark = pytest.mark.asyncio(loop_scope="module")
ESCAPES = "aAbBcCdDeFfiIkmMnoOpPqQrRsStTuvV"
SAFE = "-_.!~*'()"  # octstr_url_encode keeps letters, digits and these; ' ' → '+'


def enc(value: str | bytes) -> str:
    return quote_plus(value, safe=SAFE)


class Sink:
    """The application: records the raw query string of every GET to /dlr/<case>."""

    def __init__(self) -> None:
        self.calls: dict[str, list[str]] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls.setdefault(request.match_info["case"], []).append(
            request.rel_url.raw_query_string)
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/dlr/{case}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def template(self, case: str) -> str:
        return (f"http://127.0.0.1:{self.port}/dlr/{case}?"
                + "&".join(f"{c}=%{c}" for c in ESCAPES) + "&g=%#orig_msg#dlr_mask#&pc=%%")

    async def wait(self, case: str, n: int, timeout: float = 30.0) -> list[str]:  # noqa: ASYNC109
        deadline = time.monotonic() + timeout
        while len(self.calls.get(case, [])) < n:
            assert time.monotonic() < deadline, f"{case}: {self.calls.get(case)}"
            await asyncio.sleep(0.05)
        return self.calls[case]


def fields(query: str) -> dict[str, str]:
    """The raw (still encoded) value of each parameter, as the application received it."""
    return dict(pair.split("=", 1) for pair in query.split("&"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(module_db_url: str) -> AsyncIterator[tuple[Stack, Sink, asyncpg.Pool]]:
    """One stack for the module: each test keeps to its own texts and dlr-url case."""
    sink = Sink()
    await sink.start()
    stack = Stack(StackOptions(database_url=module_db_url, receipt_delay_s=0.2,
                               connector={"system_id": "smsgw-sys"}, log_level="info"))
    await stack.start()
    pool = await db.create_pool(module_db_url, min_size=1, max_size=4)
    try:
        yield stack, sink, pool
    finally:
        await pool.close()
        await stack.stop()
        if sink.runner is not None:
            await sink.runner.cleanup()


async def sendsms(stack: Stack, sink: Sink, case: str, text: str, mask: int) -> None:
    params = {"username": BENCH_ACCOUNT, "password": stack.api_key, "from": "Brand",
              "to": "+447700900123", "text": text, "dlr-mask": str(mask),
              "dlr-url": sink.template(case)}
    async with aiohttp.ClientSession() as s, s.get(f"{stack.api_url}/cgi-bin/sendsms",
                                                  params=params) as r:
        assert r.status == 202, await r.text()


async def message(pool: asyncpg.Pool, text: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM outbound WHERE body = $1", text)
    assert row is not None
    return row


def common(row: asyncpg.Record, template: str) -> dict[str, str]:
    """The escapes every DLR of this message carries, worked out from Kannel's source."""
    mid = row["id"]
    return {
        "B": "",  # create_dlr_from_msg / dlr_find never copy binfo
        "c": "-1", "m": "-1", "M": "-1",  # msg_create: MSG_PARAM_UNDEFINED
        "C": "UTF-8",  # no charset, coding DC_UNDEF (urltrans.c case 'C')
        "f": "", "u": "", "v": "", "V": "",  # never set in a DLR
        "I": f"00000000-0000-0000-0000-{mid:012x}",  # smsgw: the message id as a UUID
        "n": BENCH_ACCOUNT,  # the sendsms-user (msg->sms.service)
        "O": "00",  # fields_to_dcs: coding defaulted to 7-bit, nothing else set
        "p": "%2B447700900123", "q": "%2B447700900123",  # no "00" prefix: as %p
        "P": "Brand", "Q": "Brand",
        "R": enc(template),
        "pc": "%",  # "%%"
    }


async def queued(pool: asyncpg.Pool, outbound_id: int) -> list[dict[str, str]]:
    """The query of each GET the sender queued for a message, in order."""
    urls = await pool.fetch("SELECT url FROM callbacks WHERE outbound_id = $1 ORDER BY id",
                            outbound_id)
    return [fields(r["url"].split("?", 1)[1]) for r in urls]


def check(got: dict[str, str], want: dict[str, str], at_least: float) -> None:
    """Every escape, byte for byte."""
    for key, value in want.items():
        assert got[key] == value, (key, got[key], value)
    # %T: "%ld" of the DLR's time; %t the same instant as "YYYY-MM-DD+HH:MM:SS" (gw_gmtime)
    t = int(got["T"])
    assert at_least - 1 <= t <= time.time() + 1
    assert got["t"] == datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d+%H:%M:%S")
    assert set(got) == set(ESCAPES) | {"g", "pc"}


def check_all(queued_calls: list[dict[str, str]], arrived: list[str],
              wants: list[dict[str, str]], at_least: float) -> None:
    assert len(queued_calls) == len(arrived) == len(wants)
    for q, got, want in zip(queued_calls, arrived, wants, strict=True):
        check(q, want, at_least)
        check(fields(got), want, at_least)


def words(text: bytes) -> list[str]:
    return [enc(w) for w in text.split()]


async def test_ack_and_receipt_of_a_one_part_message(
        world: tuple[Stack, Sink, asyncpg.Pool]) -> None:
    """sendsms with dlr-mask=31: one ACK (type 8, "ACK/", the SMSC id, ?smpp_resp? and
    ?orig_msg?) when submit_sm_resp arrives, then one receipt DLR (type 1, the receipt text,
    the bind's system-id in %o, ?smpp?dlr_err=) when the simulator's receipt arrives."""
    stack, sink, pool = world
    started = time.time()
    text = "hello world *star* one"
    await sendsms(stack, sink, "one", text, 31)
    calls = await sink.wait("one", 2)
    row = await message(pool, text)
    part = await pool.fetchrow("SELECT * FROM outbound_part WHERE outbound_id = $1", row["id"])
    receipt = await pool.fetchrow("SELECT * FROM receipts WHERE outbound_part_id = $1",
                                  part["id"])
    base = common(row, sink.template("one"))
    # bb_smscconn_sent: reply "" → "ACK/"; create_dlr_from_msg copies foreign_id (the
    # submit_sm_resp id) and the message's meta-data (+ handle_pdu's ?smpp_resp?)
    ack = {**base, "d": "8", "a": "ACK%2F", "A": "ACK%2F", "b": "ACK%2F", "k": "ACK%2F",
                "e": "41434B2F", "s": "", "S": "", "r": "", "F": enc(part["smsc_id"]),
                "i": "sim", "o": "", "g": "31",
                "D": enc("?smpp_resp??orig_msg?dlr_mask=31&")}
    # dlr_find + handle_dlr: msgdata = the receipt's short_message, account = the bind's
    # system-id, meta-data ?orig_msg?dlr_mask=31& then ?smpp?dlr_err=<3 bytes>&
    body = receipt["body"].encode("latin-1")
    w = words(body)
    err = int(receipt["err"])
    dlr_err = "".join(f"%{b:02X}" for b in (3, err >> 8, err & 0xFF))
    rcpt = {**base, "d": "1", "A": enc(body), "b": enc(body), "a": "+".join(w),
                 "k": w[0], "s": w[1], "S": body.split()[2].decode().replace("*", "~"),
                 "r": "+".join(w[1:]), "e": body.hex().upper(), "F": enc(part["smsc_id"]),
                 "i": "sim", "o": "smsgw-sys", "g": "31",
                 "D": enc(f"?orig_msg?dlr_mask=31&?smpp?dlr_err={dlr_err}&")}
    check_all(await queued(pool, row["id"]), calls, [ack, rcpt], started)


async def test_two_parts_report_once_like_kannel(
        world: tuple[Stack, Sink, asyncpg.Pool]) -> None:
    """A split message (dlr-mask=31): Kannel reports one ACK for the whole message (from the
    original: no ?smpp_resp?, part 1's id through dlr_add) and receipts for part 1 only
    (gw/sms.c sms_split clears parts 2..n's dlr-mask) — two GETs, although both parts got a
    receipt; a third never comes (positive control: the message is delivered, so both
    receipts were matched, before the sink is read again)."""
    stack, sink, pool = world
    started = time.time()
    text = "two parts " + "x" * 200
    await sendsms(stack, sink, "two", text, 31)
    calls = await sink.wait("two", 2)
    row = await message(pool, text)
    deadline = time.monotonic() + 30
    while (await pool.fetchval("SELECT status FROM outbound WHERE id = $1", row["id"])
           ) != "delivered":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    parts = {r["part_no"]: r for r in await pool.fetch(
        "SELECT * FROM outbound_part WHERE outbound_id = $1", row["id"])}
    assert set(parts) == {1, 2}
    assert await pool.fetchval(
        "SELECT count(*) FROM receipts r JOIN outbound_part p ON p.id = r.outbound_part_id"
        " WHERE r.status = 'matched' AND p.outbound_id = $1", row["id"]) == 2
    # the callbacks are written with the match, in its transaction: all are queued by now
    assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE outbound_id = $1",
                               row["id"]) == 2
    await asyncio.sleep(0.5)
    assert len(sink.calls["two"]) == 2
    ack, rcpt = await queued(pool, row["id"])
    base = common(row, sink.template("two"))
    check(ack, {**base, "d": "8", "A": "ACK%2F", "F": enc(parts[1]["smsc_id"]),
                "D": enc("?orig_msg?dlr_mask=31&")}, started)
    assert rcpt["d"] == "1" and rcpt["F"] == enc(parts[1]["smsc_id"])
    assert [fields(c)["d"] for c in calls] == ["8", "1"]


async def test_rejected_submit_nack(world: tuple[Stack, Sink, asyncpg.Pool]) -> None:
    """The SMSC refuses the submit with ESME_RINVDSTADR: one NACK (type 16) with
    "NACK/0x0000000b/Invalid Destination Address" (handle_pdu, smpp_error_to_string), no
    SMSC id (%F empty), ?smpp_resp? and ?orig_msg? in %D; dlr-mask 2 alone asks for it too
    (DLR_IS_FAIL)."""
    stack, sink, pool = world
    started = time.time()
    await stack.sim("/inject", {"error_next": 1, "error_status": P.SMPP_ESME_RINVDSTADR})
    text = "refused please"
    await sendsms(stack, sink, "nack", text, 2)
    (call,) = await sink.wait("nack", 1)
    row = await message(pool, text)
    reply = "NACK/0x0000000b/Invalid Destination Address"
    w = words(reply.encode())
    check_all(await queued(pool, row["id"]), [call], [{
        **common(row, sink.template("nack")), "d": "16", "A": enc(reply),
                         "b": enc(reply), "a": "+".join(w), "k": w[0], "s": w[1], "S": "Address",
                         "r": "+".join(w[1:]), "e": reply.encode().hex().upper(), "F": "",
                         "i": "sim", "o": "", "g": "2",
                         "D": enc("?smpp_resp??orig_msg?dlr_mask=2&")}], started)
