"""What reached the SMSC and the applications, reduced to comparable views, and their differences.

A submit_sm becomes a dict of its fields (the UDH split from the text; a concatenation
reference, which each gateway picks for itself, masked; validity_period and
schedule_delivery_time turned into seconds after the PDU arrived, so they compare as instants);
a dlr-url or get-url request becomes its decoded escape parameters, with what is per-gateway by
nature (the SMSC's message ids, which each simulator numbers for itself; the gateway's own
message id; the time of the call) replaced by what it must mean (the id of part k; present;
an instant). Everything else is compared exactly, including the raw URL encoding of a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from smsgw.shared.smpp import pdu as P

TIME_TOLERANCE_S = 3.0  # instants (validity, schedule, %t, %T) within a couple of seconds


@dataclass(frozen=True, slots=True)
class Diff:
    """One field that differs: `field` like `submit.p1.data_coding` or `dlr.d8.eA`."""

    field: str
    kannel: Any
    smsgw: Any

    def short(self, width: int = 60) -> str:
        def cut(v: Any) -> str:
            s = repr(v)
            return s if len(s) <= width else s[: width - 3] + "..."

        return f"{self.field}: kannel={cut(self.kannel)} smsgw={cut(self.smsgw)}"


@dataclass(frozen=True, slots=True)
class Instant:
    """A time as seconds relative to a reference (arrival of the PDU, or the wall clock);
    equal to another within TIME_TOLERANCE_S."""

    seconds: float

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Instant) and abs(self.seconds - other.seconds) <= TIME_TOLERANCE_S

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return f"Instant({self.seconds:+.0f}s)"


# --- SMPP times ------------------------------------------------------------------------------

_SMPP_TIME = re.compile(r"^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d)(\d{2})([+\-R])$")


def smpp_time(value: str, arrival: float) -> Instant | str:
    """SMPP 3.4 §7.1.1 absolute (`YYMMDDhhmmsstnn±`) or relative (`…R`) time, as an offset in
    seconds from `arrival` (wall clock); "" stays ""; a malformed value is returned as text."""
    if not value:
        return ""
    m = _SMPP_TIME.match(value)
    if not m:
        return f"malformed:{value}"
    yy, mo, dd, hh, mi, ss, tenths, nn, p = m.groups()
    if p == "R":
        delta = timedelta(days=365 * int(yy) + 30 * int(mo) + int(dd), hours=int(hh),
                          minutes=int(mi), seconds=int(ss))
        return Instant(delta.total_seconds())
    local = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss),
                     int(tenths) * 100_000, tzinfo=UTC)
    offset = timedelta(minutes=15 * int(nn)) * (1 if p == "+" else -1)
    return Instant((local - offset).timestamp() - arrival)


# --- submit_sm -------------------------------------------------------------------------------

_FIELDS = ("service_type", "source_addr_ton", "source_addr_npi", "source_addr", "dest_addr_ton",
           "dest_addr_npi", "destination_addr", "esm_class", "protocol_id", "priority_flag",
           "registered_delivery", "replace_if_present_flag", "data_coding", "sm_default_msg_id")


def _mask_udh(udh: bytes) -> tuple[str, tuple[int, int] | None]:
    """The UDH as hex with concatenation references masked (`RR`/`RRRR`); (seq, total)."""
    out = [f"{udh[0]:02x}"] if udh else []
    seq = None
    i = 1
    while i + 1 < len(udh):
        iei, ln = udh[i], udh[i + 1]
        data = udh[i + 2: i + 2 + ln]
        if iei == 0x00 and ln == 3:
            out.append(f"0003RR{data[1]:02x}{data[2]:02x}")
            seq = (data[2], data[1])
        elif iei == 0x08 and ln == 4:
            out.append(f"0804RRRR{data[2]:02x}{data[3]:02x}")
            seq = (data[3], data[2])
        else:
            out.append(f"{iei:02x}{ln:02x}{data.hex()}")
        i += 2 + ln
    if i < len(udh):
        out.append(udh[i:].hex())
    return "".join(out), seq


def submit_view(record: Any) -> dict[str, Any]:
    """One recorded submit_sm (SubmitRecord) as comparable fields."""
    pdu = record.pdu
    view: dict[str, Any] = {f: getattr(pdu, f) for f in _FIELDS}
    view["esm_class"] = f"0x{pdu.esm_class:02x}"
    view["data_coding"] = f"0x{pdu.data_coding:02x}"
    view["validity_period"] = smpp_time(pdu.validity_period, record.t)
    view["schedule_delivery_time"] = smpp_time(pdu.schedule_delivery_time, record.t)
    body = bytes(pdu.short_message or b"")
    tlvs: dict[str, str] = {}
    for tag, value in pdu.tlvs or ():
        if tag == P.Tag.MESSAGE_PAYLOAD:
            body = bytes(value)
            view["message_payload"] = True
        elif tag == P.Tag.SAR_MSG_REF_NUM:
            tlvs[f"0x{tag:04x}"] = "RRRR"
        else:
            tlvs[f"0x{tag:04x}"] = bytes(value).hex()
    udh = b""
    if pdu.esm_class & 0x40 and body:
        udh, body = body[: body[0] + 1], body[body[0] + 1:]
    view["udh"], view["_seq"] = _mask_udh(udh)
    view["short_message"] = body.hex()
    view["tlvs"] = tlvs
    return view


def submits_view(records: list[Any]) -> list[dict[str, Any]]:
    """A message's parts in concatenation order (arrival order without a UDH sequence)."""
    views = [submit_view(r) for r in records]
    if all(v["_seq"] for v in views):
        views.sort(key=lambda v: v["_seq"])
    for v in views:
        v.pop("_seq")
    return views


def diff_submits(kannel: list[Any], smsgw: list[Any]) -> list[Diff]:
    """Field-by-field differences of two gateways' submits for the same request."""
    k, s = submits_view(kannel), submits_view(smsgw)
    diffs = []
    if len(k) != len(s):
        diffs.append(Diff("submit.parts", len(k), len(s)))
    for i, (kv, sv) in enumerate(zip(k, s, strict=False), 1):
        for name in sorted(set(kv) | set(sv)):
            if name == "tlvs":
                kt, st = kv.get("tlvs", {}), sv.get("tlvs", {})
                for tag in sorted(set(kt) | set(st)):
                    if kt.get(tag) != st.get(tag):
                        diffs.append(Diff(f"submit.p{i}.tlv.{tag}", kt.get(tag), st.get(tag)))
            elif kv.get(name) != sv.get(name):
                diffs.append(Diff(f"submit.p{i}.{name}", kv.get(name), sv.get(name)))
    return diffs


# --- dlr-url and get-url ---------------------------------------------------------------------

_RECEIPT_ID = re.compile(r"(id:)(\S+)")
_RECEIPT_DATE = re.compile(r"((?:submit|done)(?:\+|%20| )date:)(\d{10,12})")
_GW_PATH = re.compile(r"/(kannel|smsgw)/")
_KANNEL_TIME = "%Y-%m-%d %H:%M:%S"


def _raw_params(raw_query: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in raw_query.split("&"):
        name, _, value = pair.partition("=")
        out.setdefault(name, value)
    return out


def call_view(call: Any, smsc_ids: dict[str, int]) -> dict[str, tuple[Any, str | None]]:
    """A recorded request's parameters: name → (normalised value, raw value or None when the
    value was normalised and its raw form is not comparable)."""
    raw = _raw_params(call.raw_query)
    out: dict[str, tuple[Any, str | None]] = {}
    for name, value in call.params.items():
        norm: Any = value
        if name == "eF" and value in smsc_ids:
            norm = f"<smsc id of part {smsc_ids[value]}>"
        elif name == "eI":
            norm = "<present>" if value else ""
        elif name == "et" and value:
            try:
                at = datetime.strptime(value, _KANNEL_TIME).replace(tzinfo=UTC)
                norm = Instant(at.timestamp() - call.t)
            except ValueError:
                norm = f"malformed:{value}"
        elif name == "eT" and value:
            norm = Instant(float(value) - call.t) if value.isdigit() else f"malformed:{value}"
        elif name in ("eA", "ea", "eb", "ek", "er", "es", "eS", "eR"):
            norm = _RECEIPT_ID.sub(
                lambda m: m.group(1) + (f"<part {smsc_ids[m.group(2)]}>"
                                        if m.group(2) in smsc_ids else m.group(2)), value)
            norm = _RECEIPT_DATE.sub(lambda m: m.group(1) + "<date>", norm)
            norm = _GW_PATH.sub("/GW/", norm)
        out[name] = (norm, raw.get(name) if norm == value else None)
    return out


def _order_key(view: dict[str, tuple[Any, str | None]]) -> tuple[str, str]:
    return (str(view.get("ed", ("", None))[0]), str(view.get("eF", ("", None))[0]))


def diff_calls(prefix: str, kannel: list[Any], smsgw: list[Any], kannel_ids: dict[str, int],
               smsgw_ids: dict[str, int]) -> list[Diff]:
    """Differences of two gateways' dlr-url (or get-url) requests for the same message: the
    count, then each request's parameters, paired in (DLR type, part) order."""
    k = sorted((call_view(c, kannel_ids) for c in kannel), key=_order_key)
    s = sorted((call_view(c, smsgw_ids) for c in smsgw), key=_order_key)
    diffs = []
    if len(k) != len(s):
        diffs.append(Diff(f"{prefix}.count", len(k), len(s)))
    for kv, sv in zip(k, s, strict=False):
        # a DLR is labelled with its type (%d); a get-url request has one per MO
        label = f"{prefix}.d{kv.get('ed', ('?', None))[0]}" if prefix == "dlr" else prefix
        for name in sorted(set(kv) | set(sv)):
            kval, kraw = kv.get(name, ("<absent>", None))
            sval, sraw = sv.get(name, ("<absent>", None))
            if kval != sval:
                diffs.append(Diff(f"{label}.{name}", kval, sval))
            elif kraw is not None and sraw is not None and kraw != sraw:
                diffs.append(Diff(f"{label}.{name}:raw", kraw, sraw))
    return diffs


def smsc_id_map(records: list[Any]) -> dict[str, int]:
    """The SMSC message id the simulator gave each part → the part's number (1-based, in
    concatenation order)."""
    views = submits_view(records)
    by_body = {(v["udh"], v["short_message"]): i for i, v in enumerate(views, 1)}
    out = {}
    for r in records:
        if r.message_id is None:
            continue
        v = submit_view(r)
        v.pop("_seq", None)
        out[r.message_id] = by_body.get((v["udh"], v["short_message"]), 0)
    return out


# --- deliberate differences ------------------------------------------------------------------


def classify(case: str, diffs: list[Diff],
             deliberate: list[tuple[str, str, str]]) -> tuple[list[tuple[Diff, str]], list[Diff]]:
    """Split differences into deliberate ones (with their reason) and the rest. `deliberate`
    holds (case pattern, field pattern, reason), fnmatch patterns."""
    known, other = [], []
    for d in diffs:
        reason = next((r for cp, fp, r in deliberate
                       if fnmatchcase(case, cp) and fnmatchcase(d.field, fp)), None)
        if reason is None:
            other.append(d)
        else:
            known.append((d, reason))
    return known, other
