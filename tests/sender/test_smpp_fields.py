"""Per-message SMPP fields end to end: a request to the real receiver API (JSON or Kannel
sendsms) over a socket, stored in Postgres, claimed by the real sender parts, submitted to the
simulator — and what reaches the SMSC checked field by field (`sim.submits`, every decoded
submit_sm). Also the 4xx for each field that cannot be honoured, binary content split with the
client's UDH, schedules held or passed on per connector, and `smsgw trace` showing hex.

Expected values come from the specifications (TS 23.038 data coding groups, TS 23.040 UDH,
SMPP 3.4 7.1.1 times) and Kannel 1.4.5's smsbox.c / smsc_smpp.c, written out by hand.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_from_bytes

import aiohttp
import asyncpg
import pytest

from smsgw.services.admin.accounts import create_account
from smsgw.services.admin.trace import render_trace, trace_outbound
from smsgw.services.receiver.context import build_context
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.web import create_api_app
from smsgw.services.smsc_sim.server import Simulator, SubmitRecord
from smsgw.shared.smpp.connector import ConnectorSettings

from ..harness import serve
from ..receiver.conftest import SERVER_SECRET, Receiver, webhook_settings
from .conftest import connector, running, statuses, wait_until

PORTS = "06050415811581"  # UDH: IEI 05 (16-bit application ports), 0x1581 → 0x1581
TLVS = [{"name": "my_ref", "tag": 0x1401, "type": "integer", "length": 2},
        {"name": "my_tag", "tag": 0x1402, "type": "nulterminated", "length": 8}]


@contextlib.asynccontextmanager
async def receiver_on(pool: asyncpg.Pool,
                      connectors: Sequence[ConnectorSettings]) -> AsyncIterator[Receiver]:
    """The receiver API on 127.0.0.1:0 configured with `connectors` (their TLV names and
    schedule modes), as the daemon builds it."""
    ctx = build_context(pool, ReceiverOptions(default_country="GB"), webhook_settings(),
                        server_secret=SERVER_SECRET, connectors=connectors)
    try:
        async with serve(create_api_app(ctx)) as port, aiohttp.ClientSession() as http:
            yield Receiver(ctx, f"http://127.0.0.1:{port}", http)
    finally:
        await ctx.close(timeout_s=2)


async def account(pool: asyncpg.Pool, name: str = "acme", **kw: Any) -> str:
    async with pool.acquire() as conn:
        return (await create_account(conn, SERVER_SECRET, name, **kw))[1]


async def submits(sim: Simulator, n: int) -> list[SubmitRecord]:
    await wait_until(lambda: len(sim.submits) >= n)
    return list(sim.submits)


def near(smpp_time: str, instant: datetime, slack_s: float = 3.0) -> bool:
    """An absolute SMPP time (`YYMMDDhhmmss000+`, UTC) within `slack_s` of `instant`."""
    assert smpp_time.endswith("000+"), smpp_time
    got = datetime.strptime(smpp_time[:12], "%y%m%d%H%M%S").replace(tzinfo=UTC)
    return abs((got - instant).total_seconds()) <= slack_s


def sendsms_url(key: str, **params: bytes | str) -> str:
    """A sendsms query, every value percent-encoded from its bytes (as a Kannel client does)."""
    base = {"username": "acme", "password": key, "from": "MyBrand", "to": "+447700900123"}
    pairs = {**base, **params}
    return "/cgi-bin/sendsms?" + "&".join(
        f"{k}={quote_from_bytes(v if isinstance(v, bytes) else v.encode(), safe='')}"
        for k, v in pairs.items())


async def test_json_fields_reach_the_wire(db_url: str, pool: asyncpg.Pool) -> None:
    """1. POST /v1/messages with flash, pid, service_type, smpp_priority, tlvs (a name, a
       connector's name, a vendor tag), validity and receipt false; a second plain one.
    2. The SMSC gets each field as asked: data_coding 0xF0 (class 0), protocol_id,
       service_type, priority_flag, the TLVs, validity_period = now + 1 h as an instant,
       registered_delivery 0. The plain one carries the connector's defaults."""
    async with Simulator() as sim:
        c = connector("sim", sim.port, service_type="CMT", tlvs=TLVS)
        key = await account(pool)
        async with receiver_on(pool, [c]) as api, running(db_url, pool, [c]) as stack:
            await stack.wait_bound()
            sent_at = datetime.now(UTC)
            status, body = await api.post("/v1/messages", key=key, json={
                "to": "+447700900123", "from": "MyBrand", "text": "flash!", "flash": True,
                "pid": 65, "service_type": "VMA", "smpp_priority": 2, "validity": 3600,
                "receipt": False, "tlvs": {"user_message_reference": "0007",
                                           "my_ref": "002a", "0x3000": "ff00"}})
            assert status == 202, body
            status, plain = await api.post("/v1/messages", key=key, json={
                "to": "+447700900123", "from": "MyBrand", "text": "plain"})
            assert status == 202, plain
            first, second = sorted((r.pdu for r in await submits(sim, 2)),
                                   key=lambda p: p.short_message != b"flash!")
    assert first.short_message == b"flash!"
    assert (first.data_coding, first.protocol_id, first.service_type, first.priority_flag,
            first.registered_delivery, first.esm_class) == (0xF0, 65, "VMA", 2, 0, 0)
    assert sorted(first.tlvs) == [(0x0204, b"\x00\x07"), (0x1401, b"\x00\x2a"),
                                  (0x3000, b"\xff\x00")]
    assert near(first.validity_period, sent_at + timedelta(hours=1))
    assert first.schedule_delivery_time == ""
    assert (second.data_coding, second.protocol_id, second.service_type, second.priority_flag,
            second.registered_delivery, second.validity_period, second.tlvs) == (
        0, 0, "CMT", 0, 1, "", ())


async def test_json_binary_with_udh_is_split_and_traced_as_hex(db_url: str,
                                                               pool: asyncpg.Pool) -> None:
    """1. POST 300 octets of binary content with a port-addressing UDH.
    2. Three submit_sm, each esm_class UDHI and data_coding 0x04, each UDH the client's with
       the concatenation element added (length 0x0B): 128 + 128 + 44 octets of content that
       join back to the original.
    3. `smsgw trace` shows the UDH and the content as hex."""
    data = bytes(range(256)) + bytes(range(44))
    async with Simulator() as sim:
        c = connector("sim", sim.port)
        key = await account(pool)
        async with receiver_on(pool, [c]) as api, running(db_url, pool, [c]) as stack:
            await stack.wait_bound()
            status, body = await api.post("/v1/messages", key=key, json={
                "to": "+447700900123", "from": "MyBrand", "binary": data.hex(), "udh": PORTS})
            assert status == 202 and (body["parts"], body["encoding"]) == (3, "binary"), body
            pdus = [r.pdu for r in await submits(sim, 3)]
            await wait_until(lambda: _status_is(pool, body["id"], "submitted"))
    pdus.sort(key=lambda p: p.short_message[11])
    ref = pdus[0].short_message[9]
    for seq, pdu in enumerate(pdus, 1):
        assert (pdu.esm_class, pdu.data_coding) == (0x40, 0x04)
        assert pdu.short_message[:12] == bytes.fromhex("0b050415811581") + bytes(
            (0x00, 0x03, ref, 3, seq))
    assert b"".join(p.short_message[12:] for p in pdus) == data
    async with pool.acquire() as conn:
        traced = await trace_outbound(conn, body["id"])
    assert traced is not None
    text = render_trace(traced)
    assert f"udh={PORTS}" in text
    assert f"payload={data[:64].hex()}…(300 octets)" in text
    assert traced["message"]["payload"] == data.hex()


async def _status_is(pool: asyncpg.Pool, msg_id: int, status: str) -> bool:
    return (await statuses(pool, [msg_id])).get(msg_id) == status


async def test_sendsms_parameters_reach_the_wire(db_url: str, pool: asyncpg.Pool) -> None:
    """1. Kannel sendsms with coding=1, a URL-encoded udh, 8-bit text sent with
       charset=ISO-8859-1 (bytes, not Latin-1 text), mclass=1, pid, rpi, priority,
       dlr-mask=2, validity, binfo and meta-data naming a connector TLV.
    2. The SMSC gets the bytes as sent after the UDH, data_coding 0xF5 (class 1, 8-bit),
       protocol_id, esm_class UDHI + reply path, priority_flag 3, registered_delivery 2
       (failure only, as Kannel's msg_to_pdu), validity_period = now + 10 min, service_type
       from binfo, the TLV packed as its definition says.
    3. A plain sendsms without dlr-mask asks for no receipt; dlr-mask=63 asks 1 + 16;
       mwi=0 with text gives data_coding 0xD8; alt-dcs=1 gives 0xF1."""
    octets = bytes((0x00, 0xFF, 0x80, 0x41, 0x0A))
    async with Simulator() as sim:
        c = connector("sim", sim.port, tlvs=TLVS)
        key = await account(pool)
        async with receiver_on(pool, [c]) as api, running(db_url, pool, [c]) as stack:
            await stack.wait_bound()
            sent_at = datetime.now(UTC)
            status, text = await api.get(sendsms_url(
                key, coding="1", udh=bytes.fromhex(PORTS), text=octets,
                charset="ISO-8859-1", mclass="1", pid="127", rpi="1", priority="3",
                **{"dlr-mask": "2", "dlr-url": "http://127.0.0.1:9/dlr?s=%d", "validity": "10",
                   "binfo": "SIMOT", "meta-data": "?smpp?my_tag=abc&my_ref=258"}))
            assert (status, text) == (202, "0: Accepted for delivery")
            for params in ({"text": "plain"}, {"text": "all", "dlr-mask": "63"},
                           {"text": "voicemail", "mwi": "0"},
                           {"text": "alt", "alt-dcs": "1"}):
                status, text = await api.get(sendsms_url(key, **params))
                assert status == 202, text
            by_text = {r.pdu.short_message: r.pdu for r in await submits(sim, 5)}
    binary = by_text[bytes.fromhex(PORTS) + octets]
    assert (binary.data_coding, binary.protocol_id, binary.esm_class, binary.priority_flag,
            binary.registered_delivery, binary.service_type) == (0xF5, 127, 0xC0, 3, 2,
                                                                 "SIMOT")
    assert sorted(binary.tlvs) == [(0x1401, b"\x01\x02"), (0x1402, b"abc\x00")]
    assert near(binary.validity_period, sent_at + timedelta(minutes=10))
    assert (by_text[b"plain"].registered_delivery, by_text[b"plain"].data_coding) == (0, 0)
    assert by_text[b"all"].registered_delivery == 17
    assert by_text[b"voicemail"].data_coding == 0xD8
    assert by_text[b"alt"].data_coding == 0xF1


async def test_schedules_held_or_passed_on_per_connector(db_url: str,
                                                         pool: asyncpg.Pool) -> None:
    """1. Two connectors: `later` passes schedules to the SMSC (relative times), `held`
       keeps them (the default); an account may force either.
    2. A message scheduled 2 h ahead forced to `later` is submitted now with
       schedule_delivery_time 2 h (relative) and its validity relative too.
    3. The same forced to `held` is not submitted: it waits queued with run_after = send_at
       (positive control: a plain message to `held` sent after it is submitted)."""
    async with Simulator() as sim_later, Simulator() as sim_held:
        later = connector("later", sim_later.port, schedule_mode="send",
                          time_format="relative")
        held = connector("held", sim_held.port)
        key = await account(pool, allowed_connectors=["later", "held"])
        send_at = datetime.now(UTC) + timedelta(hours=2)
        async with receiver_on(pool, [later, held]) as api, \
                running(db_url, pool, [later, held]) as stack:
            await stack.wait_bound()
            msg = {"to": "+447700900123", "from": "MyBrand", "text": "tomorrow",
                   "send_at": send_at.isoformat(), "validity": 4 * 3600}
            status, a = await api.post("/v1/messages", key=key,
                                       json={**msg, "connector": "later"})
            assert status == 202, a
            status, b = await api.post("/v1/messages", key=key, json={**msg, "connector": "held"})
            assert status == 202, b
            (rec,) = await submits(sim_later, 1)
            status, c = await api.post("/v1/messages", key=key, json={
                "to": "+447700900123", "from": "MyBrand", "text": "now", "connector": "held"})
            assert status == 202, c
            (control,) = await submits(sim_held, 1)
    assert control.pdu.short_message == b"now"
    sched = rec.pdu.schedule_delivery_time
    assert sched.endswith("000R") and sched[:6] == "000000"
    seconds = int(sched[6:8]) * 3600 + int(sched[8:10]) * 60 + int(sched[10:12])
    assert 2 * 3600 - 5 <= seconds <= 2 * 3600
    validity = rec.pdu.validity_period
    assert validity.endswith("000R") and validity[6:8] == "06"  # send_at + 4 h, from now
    row = await pool.fetchrow("SELECT status, run_after, send_at FROM outbound WHERE id = $1",
                              b["id"])
    assert row["status"] == "queued" and row["run_after"] == row["send_at"]
    assert len(sim_held.submits) == 1


async def test_a_connector_without_tlvs_refuses_the_message(db_url: str,
                                                            pool: asyncpg.Pool) -> None:
    """A message with TLVs routed to a connector with `send_tlvs = false` ends rejected,
    naming the option; it is never sent without them (positive control: a plain one is)."""
    async with Simulator() as sim:
        c = connector("sim", sim.port, send_tlvs=False)
        key = await account(pool)
        async with receiver_on(pool, [c]) as api, running(db_url, pool, [c]) as stack:
            await stack.wait_bound()
            status, a = await api.post("/v1/messages", key=key, json={
                "to": "+447700900123", "from": "MyBrand", "text": "t",
                "tlvs": {"user_message_reference": "0001"}})
            assert status == 202, a
            await wait_until(lambda: _status_is(pool, a["id"], "rejected"))
            status, _ = await api.post("/v1/messages", key=key, json={
                "to": "+447700900123", "from": "MyBrand", "text": "plain"})
            assert status == 202
            (rec,) = await submits(sim, 1)
    assert rec.pdu.short_message == b"plain"
    err = await pool.fetchval("SELECT last_error FROM outbound WHERE id = $1", a["id"])
    assert "send_tlvs" in err


# --- what cannot be honoured: 4xx naming the field --------------------------------------------

JSON_ERRORS = [
    ({"udh": "0605041581"}, "udh"),  # length octet says 6, 4 follow
    ({"udh": "050003aa0201", "text": "x" * 200}, "udh"),  # own concatenation, 2 parts needed
    ({"udh": "zz"}, "udh"),
    ({"binary": "0102"}, "text"),  # text and binary both
    ({"text": None, "binary": ""}, "binary"),  # empty binary without a UDH
    ({"text": None, "binary": "01", "encoding": "ucs2"}, "encoding"),
    ({"flash": True, "mclass": 2}, "mclass"),
    ({"flash": True, "encoding": "latin1"}, "encoding"),
    ({"mclass": 4}, "mclass"), ({"pid": 256}, "pid"), ({"pid": "5"}, "pid"),
    ({"flash": "yes"}, "flash"), ({"smpp_priority": 4}, "smpp_priority"),
    ({"service_type": "TOOLONG"}, "service_type"), ({"receipt": 1}, "receipt"),
    ({"tlvs": {"nope": "01"}}, "tlvs"),  # unknown name
    ({"tlvs": {"0x0424": "01"}}, "tlvs"),  # message_payload: smsgw's own
    ({"tlvs": {"user_message_reference": "000102"}}, "tlvs"),  # 2 octets, not 3
    ({"tlvs": {"0x1401": "0"}}, "tlvs"),  # not hex octets
    ({"tlvs": {"user_message_reference": "0001", "0x0204": "0002"}}, "tlvs"),  # twice
    ({"tlvs": {f"0x14{i:02x}": "00" for i in range(17)}}, "tlvs"),  # more than 16
    ({"text": None, "binary": "00" * 134 * 11}, "binary"),  # more than max_parts (10)
]


@pytest.mark.parametrize(("extra", "field"), JSON_ERRORS)
async def test_json_fields_that_cannot_be_honoured(pool: asyncpg.Pool, extra: dict[str, Any],
                                                   field: str) -> None:
    key = await account(pool)
    async with receiver_on(pool, []) as api:
        body = {"to": "+447700900123", "from": "MyBrand", "text": "hi", **extra}
        status, answer = await api.post("/v1/messages", key=key,
                                        json={k: v for k, v in body.items() if v is not None})
    assert status == 422, answer
    assert [e["field"] for e in answer["errors"]] == [field], answer


SENDSMS_ERRORS = [
    ({"mclass": "4"}, "mclass"), ({"mwi": "8"}, "mwi"), ({"pid": "300"}, "pid"),
    ({"alt-dcs": "2"}, "alt-dcs"), ({"rpi": "3"}, "rpi"), ({"coding": "3"}, "coding"),
    ({"priority": "4"}, "priority"), ({"dlr-mask": "64"}, "dlr-mask"),
    ({"compress": "1"}, "compress"),
    ({"udh": b"\x05\x00\x03"}, "udh"),  # misformed (Kannel: "UDH field misformed")
    ({"udh": bytes([5, 0, 3, 1, 2, 1]), "coding": "0", "text": "x" * 200}, "udh"),
    ({"mwi": "1", "coding": "1"}, "mwi"),
    ({"validity": "5", "deferred": "10"}, "validity"),
    ({"binfo": "TOOLONG"}, "binfo"),
    ({"meta-data": "?other?a=1"}, "meta-data"), ({"meta-data": "?smpp?nope=1"}, "meta-data"),
    ({"meta-data": "?smpp?user_message_reference=70000"}, "meta-data"),
    ({"meta-data": "smpp?a=1"}, "meta-data"),
    ({"account": "a[b]"}, "account"),
    ({"coding": "1", "text": b"\x00" * 1500}, "text"),  # more than max_parts (10)
]


@pytest.mark.parametrize(("params", "name"), SENDSMS_ERRORS)
async def test_sendsms_parameters_that_cannot_be_honoured(pool: asyncpg.Pool,
                                                          params: dict[str, Any],
                                                          name: str) -> None:
    key = await account(pool)
    async with receiver_on(pool, []) as api:
        status, text = await api.get(sendsms_url(key, **{"text": "hi", **params}))
    assert status == 400, text
    assert text.startswith(f"Invalid parameter {name}: "), text
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0


async def test_sendsms_udh_without_text_and_mwi_without_text(pool: asyncpg.Pool) -> None:
    """Kannel takes a UDH-only message (coding defaults to 8-bit with a UDH) and a message
    waiting indication without text; the stored row keeps the octets exactly."""
    key = await account(pool)
    async with receiver_on(pool, []) as api:
        status, text = await api.get(sendsms_url(key, udh=bytes.fromhex(PORTS)))
        assert status == 202, text
        status, text = await api.get(sendsms_url(key, mwi="0"))
        assert status == 202, text
    rows = await pool.fetch("SELECT body, payload, udh, smpp, dlr_mask FROM outbound ORDER BY id")
    assert [(r["body"], r["payload"], r["udh"], r["smpp"]) for r in rows] == [
        (None, b"", bytes.fromhex(PORTS), None), ("", None, None, {"mwi": 0})]


def test_trace_renders_no_content_line_for_plain_text() -> None:
    t = {"kind": "mt", "id": 1, "message": {"status": "queued", "source": "api"}, "parts": [],
         "receipts": [], "callbacks": [], "events": []}
    assert "content" not in render_trace(t)
