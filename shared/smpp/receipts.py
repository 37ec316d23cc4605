"""Delivery receipts: tell them from MO, parse them tolerantly, map them to part states.

The receipt text format is "SMSC vendor specific" (SMPP 3.4 Appendix B); the parser accepts
the deviations listed in docs/ARCHITECTURE.md "SMPP status classes and receipts": ids up to 65
characters, hex or decimal ids, 10- or 12-digit dates, `text:`/`Text:`, missing `sub`/`dlvrd`.
The TLVs receipted_message_id (0x001E), message_state (0x0427) and network_error_code (0x0423)
win over the text when present (as Kannel does). Dates carry no zone: they are read in the
connector's configured zone.
"""

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from smsgw.shared.smpp.pdu import Tag, Tlvs

PartState = Literal[
    "delivered", "undeliverable", "expired", "rejected", "unknown_receipt", "enroute", "accepted"
]
INTERMEDIATE_STATES: frozenset[str] = frozenset({"enroute", "accepted"})

__all__ = [
    "DEFAULT_STAT_MAP",
    "ID_MODES",
    "INTERMEDIATE_STATES",
    "ParsedReceipt",
    "is_intermediate_notification",
    "is_receipt",
    "map_stat",
    "normalise_id",
    "parse_receipt",
    "parse_receipt_text",
    "receipt_core",
]

# stat text → our part state (docs/ARCHITECTURE.md; SMPP 3.4 5.2.28 message_state,
# Kannel `handle_dlr`, Vumi's processor). ACCEPTD is intermediate here (Kannel: buffered) and
# UNKNOWN ends unknown_receipt; both are commonly overridden per connector.
DEFAULT_STAT_MAP: Mapping[str, PartState] = {
    "DELIVRD": "delivered",
    "DELIVERED": "delivered",
    "EXPIRED": "expired",
    "DELETED": "undeliverable",
    "UNDELIV": "undeliverable",
    "UNDELIVERABLE": "undeliverable",
    "FAILED": "undeliverable",
    "SKIPPED": "undeliverable",
    "REJECTD": "rejected",
    "REJECTED": "rejected",
    "UNKNOWN": "unknown_receipt",
    "ENROUTE": "enroute",
    "SCHEDULED": "enroute",
    "BUFFRED": "enroute",
    "BUFFERD": "enroute",
    "BUFFERED": "enroute",
    "ACKED": "enroute",
    "ACCEPTD": "accepted",
    "ACCEPTED": "accepted",
}

# message_state TLV values (SMPP 3.4 5.3.2.35; 0 and 9 are SMPP 5.0) → stat text.
_MESSAGE_STATES = {
    0: "SCHEDULED", 1: "ENROUTE", 2: "DELIVRD", 3: "EXPIRED", 4: "DELETED",
    5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD", 9: "SKIPPED",
}  # fmt: skip

# esm_class message-type bits (5..2), SMPP 3.4 5.2.12.
_MT_MASK = 0x3C
_MT_SMSC_RECEIPT = 0x04
_MT_SME_DELIVERY_ACK = 0x08
_MT_INTERMEDIATE = 0x20


def is_receipt(esm_class: int) -> bool:
    """True when a deliver_sm/data_sm is a receipt by its esm_class message type.

    SMSC delivery receipt (0x04), SME delivery acknowledgement (0x08) and intermediate
    delivery notification (0x20) are receipts; anything else is MO, whatever its text says.
    """
    return (esm_class & _MT_MASK) in (_MT_SMSC_RECEIPT, _MT_SME_DELIVERY_ACK, _MT_INTERMEDIATE)


def is_intermediate_notification(esm_class: int) -> bool:
    """True for esm_class 'intermediate delivery notification' (never a final receipt)."""
    return (esm_class & _MT_MASK) == _MT_INTERMEDIATE


@dataclass(frozen=True, slots=True)
class ParsedReceipt:
    """A parsed receipt.

    `message_id` is the SMSC id as received (TLV preferred), `normalised_id` after the
    connector's normalisation; `stat` the status word (from the TLV's message_state when
    present); `state` our part state; `final` False for intermediate receipts; `err` the text
    error code; `network_error` (network type, error code) from the TLV; `submit_date` and
    `done_date` are aware datetimes in the connector's zone; `text` the text field.
    """

    message_id: str
    normalised_id: str
    stat: str | None
    state: PartState
    final: bool
    err: str | None = None
    network_error: tuple[int, int] | None = None
    message_state: int | None = None
    submit_date: datetime | None = None
    done_date: datetime | None = None
    sub: int | None = None
    dlvrd: int | None = None
    text: str | None = None


# (message_id, normalised_id, stat, state, final, err, network_error, message_state, done_date):
# ParsedReceipt's first eight fields and its done_date, what the intake stores of a receipt
ReceiptCore = tuple[str, str, str | None, PartState, bool, str | None, tuple[int, int] | None,
                    int | None, datetime | None]

# Any receipt text: a known key at the start or after whitespace, then optional blanks and ':'.
_KEY_RE = re.compile(
    r"(?:^|(?<=\s))(id|sub|dlvrd|submit[ _]?date|done[ _]?date|stat|err|text)\s*:",
    re.IGNORECASE,
)
# Matched key (lower-cased) → field name; anything else (IGNORECASE also lets a few non-ASCII
# letters such as U+017F long s match) takes the old re.sub route, so the dict is as before.
_KEY_NAMES = {
    "id": "id", "sub": "sub", "dlvrd": "dlvrd", "stat": "stat", "err": "err", "text": "text",
    "submit date": "submit_date", "submit_date": "submit_date", "submitdate": "submit_date",
    "done date": "done_date", "done_date": "done_date", "donedate": "done_date",
}  # fmt: skip

# The SMPP 3.4 Appendix B layout exactly (single spaces, lower-case keys, `text:` or `Text:`,
# `text` optional): what the simulator and most SMSCs send. Values hold no whitespace, so no
# key can start inside one and this single match yields what parse_receipt_text would; any
# other text goes the general way. Groups: id sub dlvrd submit done stat err text.
_SPEC_RE = re.compile(
    r"id:(\S*) sub:(\S*) dlvrd:(\S*) submit date:(\S*) done date:(\S*) stat:(\S*) err:(\S*)"
    r"(?: [Tt]ext:(.*))?\Z",
    re.DOTALL,
)


def parse_receipt_text(text: str) -> dict[str, str]:
    """Split receipt text into {field: value} with lower-case keys and '_' for spaces.

    Values run to the next known key; `text` runs to the end. Unknown words are ignored, so
    vendor additions do not break parsing. The first occurrence of a key wins.
    """
    fields: dict[str, str] = {}
    key: str | None = None
    start = 0
    for m in _KEY_RE.finditer(text):
        if key is not None and key not in fields:
            fields[key] = text[start : m.start()].strip()
        raw = m.group(1).lower()
        key = _KEY_NAMES.get(raw) or re.sub(r"[ _]?date", "_date", raw)
        start = m.end()
        if key == "text":
            fields.setdefault(key, text[start:])
            return fields
    if key is not None and key not in fields:
        fields[key] = text[start:].strip()
    return fields


def _parse_date(value: str | None, tz: ZoneInfo) -> datetime | None:
    """`YYMMDDhhmm`, `YYMMDDhhmmss` or `YYYYMMDDhhmmss` (ASCII digits) in zone `tz`, else None.

    Split arithmetically, not by strptime (two thirds of a receipt's cost before). Same
    results as strptime's %y (69-99 → 19xx, 00-68 → 20xx) and datetime's range checks (which
    also reject the leap second 60 that strptime's pattern lets through).
    """
    if not value:
        return None
    digits = value.strip()
    n = len(digits)
    if n not in (10, 12, 14) or not digits.isascii() or not digits.isdigit():
        return None
    rest, second = int(digits), 0
    if n != 10:
        rest, second = divmod(rest, 100)
    rest, minute = divmod(rest, 100)
    rest, hour = divmod(rest, 100)
    rest, day = divmod(rest, 100)
    year, month = divmod(rest, 100)
    if n != 14:
        year += 2000 if year <= 68 else 1900
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=tz)
    except ValueError:  # month 13, 30 February, hour 24, year 0000 …
        return None


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # isdecimal, not isdigit: int() rejects digit-like characters such as '²' (latin-1 0xB2).
    return int(value) if value.isdecimal() else None


_ZONES: dict[str, ZoneInfo] = {}


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    """The ZoneInfo for `tz`, cached by name (a handful of connector zones)."""
    if isinstance(tz, ZoneInfo):
        return tz
    zone = _ZONES.get(tz)
    if zone is None:
        if len(_ZONES) >= 256:  # bounded: names come from config, but never grow unbounded
            _ZONES.clear()
        zone = _ZONES[tz] = ZoneInfo(tz)
    return zone


def map_stat(
    stat: str | None, overrides: Mapping[str, str] | None = None
) -> tuple[PartState, bool]:
    """Map a stat word to (part state, final).

    `overrides` is the connector's table (stat word → state), consulted before the default;
    an unknown word maps to unknown_receipt (final). "enroute" and "accepted" are not final.
    """
    state: Any = None
    if not overrides and stat is not None:
        # The usual case: no overrides and a stat word already in canonical upper case.
        state = DEFAULT_STAT_MAP.get(stat)
        if state is not None:
            return state, state not in INTERMEDIATE_STATES
    key = (stat or "").strip().upper()
    if overrides:
        state = overrides.get(key) or overrides.get(stat or "")
    if state is None:
        state = DEFAULT_STAT_MAP.get(key, "unknown_receipt")
    return state, state not in INTERMEDIATE_STATES


ID_MODES = (
    "as_is", "lower", "upper", "strip_zeros", "hex_to_dec", "dec_to_hex", "dec_to_hex_upper",
)  # fmt: skip


def _apply_mode(value: str, mode: str) -> str:
    if mode == "as_is":
        return value
    if mode == "lower":
        return value.lower()
    if mode == "upper":
        return value.upper()
    if mode == "strip_zeros":
        return value.lstrip("0") or ("0" if value else value)
    try:
        if mode == "hex_to_dec":
            return str(int(value, 16))
        if mode == "dec_to_hex":
            return format(int(value, 10), "x")
        if mode == "dec_to_hex_upper":
            return format(int(value, 10), "X")
    except ValueError:
        # Not a number in the expected base: keep it; matching fails visibly (orphan).
        return value
    raise ValueError(f"unknown id normalisation mode {mode!r}")


@functools.lru_cache(maxsize=64)
def _mode_steps(mode: str) -> tuple[str, ...]:
    """The steps of an id mode string, parsed once per connector setting; as_is dropped."""
    return tuple(step for step in (part.strip() for part in mode.split(",")) if step != "as_is")


def normalise_id(raw: str, mode: str = "as_is") -> str:
    """Normalise an SMSC message id for matching.

    `mode` is one of ID_MODES or several joined by commas, applied in order (e.g.
    "hex_to_dec" on submit_sm_resp ids of an SMSC that reports decimal ids in receipts, or
    "strip_zeros,lower"). Surrounding whitespace and NULs are always removed.
    """
    value = raw.strip().strip("\0").strip()
    for step in _mode_steps(mode):
        value = _apply_mode(value, step)
    return value


def _tlv_map(tlvs: Tlvs) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    for tag, value in tlvs:
        found.setdefault(tag, value)
    return found


def _receipt_text(short_message: bytes, tlvs: dict[int, bytes], data_coding: int) -> str:
    payload = short_message or tlvs.get(Tag.MESSAGE_PAYLOAD, b"")
    if data_coding == 8:
        return payload.decode("utf-16-be", "replace")
    return payload.decode("latin-1")


def _parse_receipt_general(
    short_message: bytes,
    tlvs: Tlvs = (),
    esm_class: int = _MT_SMSC_RECEIPT,
    *,
    data_coding: int = 0,
    tz: str | ZoneInfo = "UTC",
    stat_map: Mapping[str, str] | None = None,
    id_mode: str = "as_is",
) -> ParsedReceipt:
    """parse_receipt for any text and TLVs: the readable reference the fast path must equal
    (tests/smpp/test_receipts_fast.py), and its fallback for text off the spec layout."""
    found = _tlv_map(tlvs)
    f = parse_receipt_text(_receipt_text(short_message, found, data_coding)).get
    return _build(f("id", ""), f("sub"), f("dlvrd"), f("submit_date"), f("done_date"), f("stat"),
                  f("err"), f("text"), found.get(Tag.RECEIPTED_MESSAGE_ID),
                  found.get(Tag.MESSAGE_STATE), found.get(Tag.NETWORK_ERROR_CODE), esm_class,
                  tz, stat_map, id_mode)


def _build(text_id: str, sub: str | None, dlvrd: str | None, submit_date: str | None,
           done_date: str | None, stat: str | None, err: str | None, body: str | None,
           rid: bytes | None, state_tlv: bytes | None, nec: bytes | None, esm_class: int,
           tz: str | ZoneInfo, stat_map: Mapping[str, str] | None, id_mode: str) -> ParsedReceipt:
    """The ParsedReceipt from the text's fields and the first value of each TLV (both parsers):
    receipted_message_id beats the text's id, message_state beats the text's stat."""
    zone = _zone(tz)
    core = _core(text_id, stat, err, done_date, rid, state_tlv, nec, esm_class, zone, stat_map,
                 id_mode)
    return ParsedReceipt(*core[:-1], submit_date=_parse_date(submit_date, zone),
                         done_date=core[-1], sub=_int_or_none(sub), dlvrd=_int_or_none(dlvrd),
                         text=body)


def _core(text_id: str, stat: str | None, err: str | None, done_date: str | None,
          rid: bytes | None, state_tlv: bytes | None, nec: bytes | None, esm_class: int,
          zone: ZoneInfo, stat_map: Mapping[str, str] | None, id_mode: str) -> ReceiptCore:
    """What a stored receipt needs (`ReceiptCore`), shared by `_build` and `receipt_core`."""
    message_id = text_id if rid is None else rid.split(b"\0", 1)[0].decode("latin-1")
    message_state = state_tlv[0] if state_tlv else None
    stat = _MESSAGE_STATES.get(message_state, stat or None)  # type: ignore[arg-type]
    state, final = map_stat(stat, stat_map)
    return (message_id, normalise_id(message_id, id_mode), stat, state,
            final and (esm_class & _MT_MASK) != _MT_INTERMEDIATE, err or None,
            (nec[0], int.from_bytes(nec[1:3], "big")) if nec and len(nec) == 3 else None,
            message_state, _parse_date(done_date, zone))


# Plain ints: comparing with IntEnum members costs an enum __eq__ per TLV.
_TAG_RECEIPTED_ID = int(Tag.RECEIPTED_MESSAGE_ID)
_TAG_MESSAGE_STATE = int(Tag.MESSAGE_STATE)
_TAG_NETWORK_ERROR = int(Tag.NETWORK_ERROR_CODE)
_TAG_PAYLOAD = int(Tag.MESSAGE_PAYLOAD)


def parse_receipt(
    short_message: bytes,
    tlvs: Tlvs = (),
    esm_class: int = _MT_SMSC_RECEIPT,
    *,
    data_coding: int = 0,
    tz: str | ZoneInfo = "UTC",
    stat_map: Mapping[str, str] | None = None,
    id_mode: str = "as_is",
) -> ParsedReceipt:
    """Parse a receipt deliver_sm/data_sm (check `is_receipt(esm_class)` first).

    `short_message`, `tlvs`, `esm_class` and `data_coding` are the PDU's fields; `tz` the
    connector's zone for the undated receipt timestamps; `stat_map` the connector's stat
    overrides; `id_mode` its id normalisation (see normalise_id). Never raises on odd text:
    missing fields come back as None and an unknown stat as unknown_receipt.

    Hot path (every receipt the sender gets): one pass over the TLVs, one match of the spec
    layout; text in any other layout goes to the general parser, with identical results.
    """
    m, rid, state_tlv, nec, _payload = _scan(short_message, tlvs, data_coding)
    if m is None:
        return _parse_receipt_general(short_message, tlvs, esm_class, data_coding=data_coding,
                                      tz=tz, stat_map=stat_map, id_mode=id_mode)  # fmt: skip
    return _build(*m.groups(), rid, state_tlv, nec, esm_class, tz, stat_map, id_mode)


def _scan(short_message: bytes, tlvs: Tlvs, data_coding: int) -> tuple[
        re.Match[str] | None, bytes | None, bytes | None, bytes | None, bytes | None]:
    """One pass over the TLVs (the first of each tag wins, as in the general path) and one
    match of the spec layout: (match or None, receipted_message_id, message_state,
    network_error_code, message_payload)."""
    rid = state_tlv = nec = payload = None
    for tag, value in tlvs:  # first occurrence of a tag wins, as in the general path
        if tag == _TAG_RECEIPTED_ID:
            rid = value if rid is None else rid
        elif tag == _TAG_MESSAGE_STATE:
            state_tlv = value if state_tlv is None else state_tlv
        elif tag == _TAG_NETWORK_ERROR:
            nec = value if nec is None else nec
        elif tag == _TAG_PAYLOAD:
            payload = value if payload is None else payload
    raw = short_message or payload or b""
    m = _SPEC_RE.match(raw.decode("utf-16-be", "replace") if data_coding == 8 else
                       raw.decode("latin-1"))  # fmt: skip
    return m, rid, state_tlv, nec, payload


def receipt_core(
    short_message: bytes,
    tlvs: Tlvs,
    esm_class: int,
    *,
    data_coding: int,
    tz: str | ZoneInfo,
    stat_map: Mapping[str, str] | None,
    id_mode: str,
) -> tuple[ReceiptCore, bool, bytes | None]:
    """`parse_receipt` for the intake's hot path: (the fields a stored receipt needs — equal
    to the ParsedReceipt's, see `ReceiptCore` —, whether a receipted_message_id TLV came,
    the first message_payload TLV). Skips what nothing stores (submit date, sub, dlvrd, text)
    and the ParsedReceipt object: a third of a receipt's parse."""
    m, rid, state_tlv, nec, payload = _scan(short_message, tlvs, data_coding)
    if m is None:
        p = _parse_receipt_general(short_message, tlvs, esm_class, data_coding=data_coding,
                                   tz=tz, stat_map=stat_map, id_mode=id_mode)  # fmt: skip
        core: ReceiptCore = (p.message_id, p.normalised_id, p.stat, p.state, p.final, p.err,
                             p.network_error, p.message_state, p.done_date)
    else:
        text_id, _sub, _dlvrd, _submit, done, stat, err, _text = m.groups()
        core = _core(text_id, stat, err, done, rid, state_tlv, nec, esm_class, _zone(tz),
                     stat_map, id_mode)
    return core, rid is not None, payload


def format_receipt_text(
    message_id: str,
    stat: str,
    submit_date: datetime,
    done_date: datetime,
    err: str = "000",
    text: str = "",
) -> str:
    """Build receipt text in the SMPP 3.4 Appendix B layout (used by the simulator)."""
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if stat == 'DELIVRD' else '000'} "
        f"submit date:{submit_date:%y%m%d%H%M} done date:{done_date:%y%m%d%H%M} "
        f"stat:{stat} err:{err} text:{text[:20]}"
    )
