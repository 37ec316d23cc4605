"""Kannel 1.4.5 and smsgw given the same requests: what reaches the SMSC, the dlr-url and the
get-url service must be the same, field by field, except for the deliberate differences below.

Each sendsms case goes, byte for byte the same (the password is the smsgw API key, which is
also the Kannel sendsms-user's password), to Kannel's smsbox and to smsgw's receiver. Each
gateway submits to its own recording simulator; the suite compares every submit_sm field
(`compare.submit_view`), the HTTP answer, and every dlr-url request with every escape Kannel
knows (`world.ESCAPES`). Each MO case is sent by each simulator to its gateway; the get-url
request (every escape) and the reply the application's body becomes are compared the same way.

A difference fails its case unless it is listed in DELIBERATE with the reason (each reason is
also in README "Migrating from Kannel"). The table of cases → results is printed at the end
(conftest: `pytest_terminal_summary`). Run: `pytest -m kannel tests/kannel`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from smsgw.shared.smpp import pdu as P

from .compare import Diff, classify, diff_calls, diff_submits, smsc_id_map
from .world import (
    ACCOUNT,
    INSTALL_LINE,
    SHORT_CODE,
    TLV_LEN,
    TLV_NAME,
    TLV_TAG,
    Reply,
    escape_query,
    find_binary,
    wait_until,
)

pytestmark = [pytest.mark.kannel, pytest.mark.timeout(180)]
# the gateways live for the module: every case runs on the module's event loop
on_module_loop = pytest.mark.asyncio(loop_scope="module")

# What a Kannel operator migrating sets on the smsgw side so that the two configurations mean
# the same (README "Migrating from Kannel"). A key this build does not know yet is left out
# and the cases it matters to show the difference.
SMSGW_CONNECTOR: dict[str, Any] = {
    "esm_class_mode": 3,  # Kannel's esm-class default: store and forward
    "schedule_mode": "send",  # deferred goes to the SMSC as schedule_delivery_time, as Kannel
    # Kannel's smpp-tlv group for meta-data (world.KannelGateway.conf)
    "tlvs": [{"name": TLV_NAME, "tag": TLV_TAG, "type": "octetstring", "length": TLV_LEN}],
}
# The forward rule standing in for the sms-service (max-messages 3, concatenation,
# accept-x-kannel-headers, omit-empty false: see world.KannelGateway.conf).
SMSGW_FORWARD: dict[str, Any] = {
    "reply_from_body": {"max_messages": 3, "concatenation": True,
                        "accept_x_kannel_headers": True},
}

# (case pattern, field pattern, reason): differences that are on purpose. fnmatch patterns over
# the case name and the Diff.field (`submit.p1.esm_class`, `dlr.d1.eA`, `geturl.d0.eI`, ...).
# label → reason; README "Migrating from Kannel" explains each one too
REASONS: dict[str, str] = {
    "no '?' substitution": (
        "smsgw never replaces a character GSM 03.38 lacks: Kannel's charset_utf8_to_gsm (gw/"
        "smsc/smsc_smpp.c, msg_to_pdu) turns it into '?' (and `ç` into GSM 0x09, which TS "
        "23.038 defines as `Ç`); smsgw sends such a text as UCS-2, whole, in 70-character "
        "parts"),
    "short code TON 3/0": (
        "smsgw sends a short-code sender as TON 3 / NPI 0 (network specific, shared/smpp/"
        "compose.py source_ton_npi); Kannel's source-addr-autodetect sends any digits-only "
        "sender with its default national TON 2 / NPI 1"),
    "receipt on every part": (
        "smsgw asks the SMSC for a receipt on every part of a split message, because a "
        "message's state is built from each part's (delivered only when every part is); "
        "Kannel's sms_split (gw/sms.c) clears the dlr-mask after part 1, so its parts 2..N "
        "carry registered_delivery 0 and only part 1's receipt reaches the dlr-url — which "
        "smsgw's default `[sender] kannel_dlr_parts = \"first\"` reproduces"),
}
# (case pattern, field pattern, REASONS label): differences that are on purpose
DELIBERATE: list[tuple[str, str, str]] = [
    *((case, f"submit.p1.{f}", "no '?' substitution")
      for case in ("latin1_not_gsm", "emoji_auto", "gsm_c_cedilla")
      for f in ("data_coding", "short_message")),
    *(("mo_ucs2", f"reply.p1.{f}", "no '?' substitution")
      for f in ("data_coding", "short_message")),
    *(("mo_*", f"reply.p*.source_addr_{f}", "short code TON 3/0") for f in ("ton", "npi")),
    ("*long*", "submit.p[2-9].registered_delivery", "receipt on every part"),
]


@dataclass(frozen=True, slots=True)
class SendCase:
    """One sendsms request and what it should cause."""

    name: str
    sends: str  # for the table
    params: dict[str, str | bytes]
    parts: int = 1  # submit_sm per gateway (0: none, the request is refused)
    dlrs: int = 0  # dlr-url requests Kannel makes
    receipt: str = "DELIVRD"  # the simulator's receipt stat
    reject: int | None = None  # the simulator answers the submit with this status
    post: bool = False  # POST with X-Kannel-* headers and the text as the body
    auth: tuple[str, str] = ("username", "password")


LONG_GSM = ("This is a long message to check concatenation: every part must carry the same "
            "text, the same UDH layout and the same fields on both gateways. ") * 3
LONG_UCS2 = "Длинное сообщение по-русски, чтобы проверить разбиение UCS-2 на части. " * 2
BINARY = bytes(range(0x00, 0x40)) + bytes(range(0xC0, 0x100))
WAP_UDH = bytes.fromhex("0605040b8423f0")

def _case(name: str, sends: str, text: str | bytes, *, sender: str = "Acme",
          extra: dict[str, str | bytes] | None = None, **kw: Any) -> SendCase:
    return SendCase(name, sends, {"from": sender, "text": text, **(extra or {})}, **kw)


UTF8 = {"charset": "UTF-8"}
UCS2 = {"coding": "2", "charset": "UTF-8"}
LATIN1 = {"charset": "ISO-8859-1"}
BIN = {"coding": "1", "udh": WAP_UDH}

SEND_CASES: list[SendCase] = [
    _case("plain", "GSM text, alphanumeric sender", "Hello from the migration test"),
    _case("gsm_escapes", "`@£$¥` and the extension table", "@£$¥ {x} [y] €5 ~^|\\",
          sender="+4930901820"),
    _case("latin1_charset", "`charset=ISO-8859-1` GSM-able Latin-1",
          "Grüße aus Köln, señor? é à".encode("latin-1"), extra=LATIN1),
    _case("latin1_not_gsm", "Latin-1 outside GSM 03.38 (â ô), no coding",
          "Crème brûlée, château".encode("latin-1"), extra=LATIN1),
    _case("gsm_c_cedilla", "`ç` (GSM 03.38 has only `Ç` at 0x09)", "ça va"),
    _case("utf8_charset", "`charset=UTF-8` accented GSM text", "Grüße, Åse", extra=UTF8),
    _case("ucs2", "`coding=2&charset=UTF-8` Cyrillic", "Привет, мир", extra=UCS2),
    _case("ucs2_utf16", "`coding=2` UTF-16BE text, no charset", "Привет".encode("utf-16-be"),
          extra={"coding": "2"}),
    _case("emoji_ucs2", "emoji with `coding=2&charset=UTF-8`", "Party 🎉 time", extra=UCS2),
    _case("emoji_auto", "emoji, no coding", "Party 🎉 time"),
    _case("long_gsm", "463 GSM characters (4 parts)", LONG_GSM, parts=4),
    _case("long_ucs2", "144 Cyrillic characters, `coding=2` (3 parts)", LONG_UCS2, extra=UCS2,
          parts=3),
    _case("binary_udh", "`coding=1&udh=…` WAP push port UDH + 128 binary octets", BINARY,
          extra=BIN),
    _case("binary_long_udh", "`coding=1` 256 octets + user UDH (split, UDH kept)", BINARY * 2,
          extra=BIN, parts=2),
    _case("flash", "`mclass=0` (flash)", "Flash!", extra={"mclass": "0"}),
    _case("flash_ucs2", "`mclass=0&coding=2`", "Вспышка", extra={"mclass": "0", **UCS2}),
    _case("mclass1_altdcs", "`mclass=1&alt-dcs=1`", "Class 1",
          extra={"mclass": "1", "alt-dcs": "1"}),
    _case("mwi", "`mwi=0` (voicemail indicator on)", "You have voicemail", extra={"mwi": "0"}),
    _case("pid", "`pid=64` (type 0)", "ping", extra={"pid": "64"}),
    _case("rpi", "`rpi=1` (reply path)", "reply path", extra={"rpi": "1"}),
    _case("validity", "`validity=90` (minutes)", "valid 90 min", extra={"validity": "90"}),
    _case("deferred", "`deferred=10` (minutes)", "later", extra={"deferred": "10"}),
    _case("priority", "`priority=2`", "urgent", extra={"priority": "2"}),
    _case("binfo", "`binfo=ABC` (service_type)", "billed", extra={"binfo": "ABC"}),
    _case("meta_data", f"`meta-data=?smpp?{TLV_NAME}=hello` (TLV 0x1400)", "with TLV",
          extra={"meta-data": f"?smpp?{TLV_NAME}=hello"}),
    _case("dlr_1", "`dlr-mask=1`, receipt DELIVRD", "dlr 1", extra={"dlr-mask": "1"}, dlrs=1),
    _case("dlr_2", "`dlr-mask=2`, receipt UNDELIV", "dlr 2", extra={"dlr-mask": "2"}, dlrs=1,
          receipt="UNDELIV"),
    _case("dlr_4", "`dlr-mask=4`, receipt ENROUTE (intermediate)", "dlr 4",
          extra={"dlr-mask": "4"}, dlrs=1, receipt="ENROUTE"),
    _case("dlr_8", "`dlr-mask=8` (SMSC accepted)", "dlr 8", extra={"dlr-mask": "8"}, dlrs=1),
    _case("dlr_16", "`dlr-mask=16`, submit rejected 0x0B", "dlr 16", extra={"dlr-mask": "16"},
          dlrs=1, reject=P.SMPP_ESME_RINVDSTADR),
    _case("dlr_31", "`dlr-mask=31`, receipt DELIVRD", "dlr 31", extra={"dlr-mask": "31"},
          dlrs=2),
    # Kannel 1.4.5 asks for a receipt on the first part only, so a split message gets one DLR
    # per state, not one per part (gw/sms.c, sms_split: "only ask DLR for the first one")
    _case("dlr_31_long", "`dlr-mask=31`, 2 parts (DLRs of the first part only)", LONG_GSM[:200],
          extra={"dlr-mask": "31"}, parts=2, dlrs=2),
    _case("dlr_account", "`dlr-mask=8&account=acct42` (%o)", "account",
          extra={"dlr-mask": "8", "account": "acct42"}, dlrs=1),
    _case("user_pass", "`user=`/`pass=` aliases", "aliases", auth=("user", "pass")),
    _case("post_xkannel", "POST, X-Kannel-* headers, text as the body", "posted", post=True),
    _case("bad_password", "wrong password", "x", extra={"password": "wrong"}, parts=0),
    _case("missing_to", "no `to`", "x", extra={"to": ""}, parts=0),
]


@dataclass(frozen=True, slots=True)
class MoCase:
    """One MO to the short code and what the application answers."""

    name: str
    sends: str
    text: str
    reply: Reply
    data_coding: int = 0
    parts: int = 1  # reply submit_sm per gateway
    extra: dict[str, str] = field(default_factory=dict)


MO_CASES: list[MoCase] = [
    MoCase("mo_reply", "MO `HELLO world`, body `Thanks …` sent back", "HELLO world from me",
           Reply(b"Thanks for your HELLO")),
    MoCase("mo_ucs2", "UCS-2 MO, UTF-8 body with ✓", "Привет мир", Reply("Ответ ✓".encode()),
           data_coding=8),
    MoCase("mo_latin1_body", "body in ISO-8859-1 (Content-Type charset)", "LATIN please",
           Reply("Grüße".encode("latin-1"),
                 headers={"Content-Type": "text/plain; charset=ISO-8859-1"})),
    MoCase("mo_long_reply", "a 300-character body (2 parts, max-messages 3)", "LONG reply",
           Reply(b"R" * 300), parts=2),
    MoCase("mo_empty", "empty body", "EMPTY reply", Reply(b""), parts=1),
    MoCase("mo_xkannel", "X-Kannel-From / X-Kannel-Coding headers", "HEADERS please",
           Reply("Headers ✓".encode(), headers={
               "Content-Type": "text/plain; charset=utf-8", "X-Kannel-From": "Acme",
               "X-Kannel-Coding": "2"})),
]


def _number(base: str, index: int) -> str:
    return f"{base}{index:05d}"


async def _sendsms(gw: Any, case: SendCase, to: str, dlr_url: str | None,
                   password: str) -> tuple[int, str]:
    params: dict[str, Any] = {case.auth[0]: ACCOUNT, case.auth[1]: password, "to": to}
    params.update(case.params)
    if "password" in case.params:  # bad_password: the case's own value wins
        params[case.auth[1]] = case.params["password"]
    if dlr_url is not None:
        params["dlr-url"] = dlr_url
    async with aiohttp.ClientSession() as s:
        if case.post:
            text = params.pop("text")
            headers = {f"X-Kannel-{k.capitalize()}": str(v) for k, v in params.items()}
            headers["Content-Type"] = "text/plain; charset=utf-8"
            req = s.post(gw.sendsms_url, data=str(text).encode(), headers=headers)
        else:
            req = s.get(gw.sendsms_url + "?" + urlencode(params))
        async with req as r:
            return r.status, (await r.text()).strip()


def _record(table: list[dict[str, Any]], case: str, sends: str, diffs: list[Diff],
            skipped: list[str]) -> list[Diff]:
    known, other = classify(case, diffs, DELIBERATE)
    if other:
        result = f"DIFFERS ({len(other)})"
    elif known:
        result = "deliberate"
    else:
        result = "match"
    labels: dict[str, list[str]] = {}
    for d, label in known:
        labels.setdefault(label, []).append(d.field)
    details = [d.short() for d in other] + [f"deliberate ({label}): {', '.join(fields)}"
                                            for label, fields in labels.items()]
    table.append({"case": case, "sends": sends.replace("|", "\\|"), "result": result,
                  "details": [x.replace("|", "\\|") for x in details]})
    return other


def test_kannel_is_installed() -> None:
    """Selected without Kannel, the suite fails here (and in every case's setup), never skips."""
    missing = [b for b in ("bearerbox", "smsbox") if find_binary(b) is None]
    assert not missing, f"{' and '.join(missing)} not found: {INSTALL_LINE}"


@on_module_loop
@pytest.mark.parametrize("case", SEND_CASES, ids=[c.name for c in SEND_CASES])
async def test_sendsms(world: Any, table: list[dict[str, Any]], case: SendCase) -> None:
    index = SEND_CASES.index(case)
    to = _number("+4917010", index)
    for sim in world.sims.values():
        sim.config.receipt_stats = {case.receipt: 1.0}
        if case.reject is not None:
            sim.inject(error_next=1, error_status=case.reject)
    try:
        answers = {}
        wants_dlr = case.dlrs or "dlr-mask" in case.params
        for name, gw in world.gateways.items():
            url = (world.recorder.url("dlr", name, case.name) + "?" + escape_query()
                   if wants_dlr else None)
            answers[name] = await _sendsms(gw, case, to if "to" not in case.params else "",
                                           url, world.smsgw.api_key)
        sims = world.sims
        if case.parts:
            await wait_until(lambda: all(len(s.submits_to(to)) >= case.parts
                                         for s in sims.values()), 20)
        await asyncio.sleep(1.0)  # extra parts, a late duplicate
        if case.dlrs:
            rec = world.recorder
            await wait_until(lambda: all(len(rec.of("dlr", g, case.name)) >= case.dlrs
                                         for g in ("kannel", "smsgw")), 20)
            await asyncio.sleep(1.0)
    finally:
        for sim in world.sims.values():
            sim.clear_faults()
            sim.config.receipt_stats = {"DELIVRD": 1.0}
    diffs: list[Diff] = []
    for i, what in enumerate(("status", "body")):
        if answers["kannel"][i] != answers["smsgw"][i]:
            diffs.append(Diff(f"answer.{what}", answers["kannel"][i], answers["smsgw"][i]))
    ksubs, ssubs = sims["kannel"].submits_to(to), sims["smsgw"].submits_to(to)
    diffs += diff_submits(ksubs, ssubs)
    diffs += diff_calls("dlr", world.recorder.of("dlr", "kannel", case.name),
                        world.recorder.of("dlr", "smsgw", case.name),
                        smsc_id_map(ksubs), smsc_id_map(ssubs))
    other = _record(table, case.name, case.sends, diffs, world.smsgw.skipped)
    assert not other, "\n".join(d.short(200) for d in other)


@on_module_loop
@pytest.mark.parametrize("case", MO_CASES, ids=[c.name for c in MO_CASES])
async def test_sms_service(world: Any, table: list[dict[str, Any]], case: MoCase) -> None:
    index = MO_CASES.index(case)
    source = _number("4477009", index)
    world.recorder.mo_cases[source] = case.name
    world.recorder.replies[case.name] = case.reply
    statuses = {}
    for name, sim in world.sims.items():
        statuses[name] = await sim.send_mo(case.text, source_addr=source,
                                           destination_addr=SHORT_CODE,
                                           data_coding=case.data_coding)
    rec, sims = world.recorder, world.sims
    await wait_until(lambda: all(rec.of("mo", g, case.name) for g in ("kannel", "smsgw")), 20)
    if case.parts:
        await wait_until(lambda: all(len(s.submits_to(source)) >= case.parts
                                     for s in sims.values()), 20)
    await asyncio.sleep(1.0)
    diffs: list[Diff] = []
    if statuses["kannel"] != statuses["smsgw"]:
        diffs.append(Diff("mo.deliver_sm_resp", statuses["kannel"], statuses["smsgw"]))
    diffs += diff_calls("geturl", rec.of("mo", "kannel", case.name),
                        rec.of("mo", "smsgw", case.name), {}, {})
    diffs += [Diff(d.field.replace("submit.", "reply.", 1), d.kannel, d.smsgw)
              for d in diff_submits(sims["kannel"].submits_to(source),
                                    sims["smsgw"].submits_to(source))]
    other = _record(table, case.name, case.sends, diffs, world.smsgw.skipped)
    assert not other, "\n".join(d.short(200) for d in other)
