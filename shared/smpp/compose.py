"""Message composition: one outbound message → the submit_sm PDUs a connector gets.

Pure and SMPP-level (no I/O): the sender calls `build_parts` for each message it queues on a
connector's lane. The encoding is the message's own when the connector allows it, else the
cheapest the connector allows (`shared.smpp.text`); a binary message (`payload`) is 8-bit
data. The content is split with the connector's concatenation method under a reference
derived from the message id (`concat_ref`, stable across retries), after the client's UDH
when it has one (the concatenation element is added to it); the sender id gets its TON/NPI
from its form (`source_ton_npi`). Parts an earlier attempt already got accepted are skipped.

Every part carries the message's SMPP fields (`shared.smpp.fields`): validity_period from
`valid_until` (unless the connector's `send_validity` is off), schedule_delivery_time from a
future `send_at` when the connector's `schedule_mode` is "send" (absolute or relative per
`time_format`), registered_delivery from the request (`registered_delivery`), esm_class
(the connector's mode, UDHI, reply path), protocol_id, priority_flag, service_type (the
message's, else the connector's), data_coding with the message class / message waiting
group as Kannel's `fields_to_dcs`, and the client's TLVs.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.fields import fields_dcs, registered_delivery_for_mask, smpp_time
from smsgw.shared.smpp.text import (
    Encoding,
    Part,
    choose_encoding,
    data_coding_for,
    encode_text,
    split,
    split_bytes,
    split_udh,
    transliterate,
)

# Basic GSM 03.38 characters that cost one septet (no escapes), for the one-part fast path.
_PLAIN_GSM = re.compile(
    "[@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,\\-./0-9:;<=>?¡A-ZÄÖÑÜ§¿a-zäöñüà]*")


class Composable(Protocol):
    """What composition reads of a message (the sender's claimed row has these fields)."""

    @property
    def id(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def body(self) -> str | None: ...
    @property
    def encoding(self) -> str | None: ...
    @property
    def from_addr(self) -> str: ...
    @property
    def to_addr(self) -> str: ...
    @property
    def callback_url(self) -> str | None: ...
    @property
    def dlr_mask(self) -> int | None: ...
    @property
    def valid_until(self) -> datetime | None: ...
    @property
    def send_at(self) -> datetime | None: ...
    @property
    def payload(self) -> bytes | None: ...
    @property
    def udh(self) -> bytes | None: ...
    @property
    def smpp(self) -> Any: ...
    @property
    def done_parts(self) -> tuple[int, ...]: ...


_NO_FIELDS: Final[dict[str, Any]] = {}
_DCS_KEYS: Final = ("mclass", "mwi", "alt_dcs")
_KANNEL_CODING: Final = {"gsm7": 0, "gsm7_packed": 0, "binary": 1, "ucs2": 2}


def _is_alnum(addr: str) -> bool:
    return not addr.lstrip("+").isdigit()


def source_ton_npi(addr: str, connector: ConnectorSettings) -> tuple[int, int, str]:
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


def registered_delivery(row: Composable, connector: ConnectorSettings) -> int:
    """What a message asks the SMSC for: a Kannel sendsms its dlr-mask's
    (`fields.registered_delivery_for_mask`, 0 without a mask, as Kannel's `msg_to_pdu`);
    a message whose request said `receipt: false` nothing; any other the connector's value
    (the JSON API tracks every message's delivery). A connector with 0 never asks."""
    if not connector.registered_delivery:
        return 0
    if row.source == "sendsms":
        return registered_delivery_for_mask(row.dlr_mask)
    if (row.smpp or _NO_FIELDS).get("receipt") is False:
        return 0
    return connector.registered_delivery


_MORE_MESSAGES: Final = (P.Tag.MORE_MESSAGES_TO_SEND, b"\x01")


def _identity_chars() -> str:
    """The ASCII characters whose GSM 7-bit septet is their own code and that transliteration
    leaves alone: a text of only these is its own unpacked GSM encoding."""
    found = []
    for c in map(chr, (*range(0x20, 0x7F), 0x0A, 0x0D)):
        try:
            if encode_text(c, "gsm7") == c.encode("ascii") and transliterate(c) == c:
                found.append(c)
        except UnicodeEncodeError:
            continue
    return "".join(found)


# One part of such characters (the common MT): built without the general walk (`_plain`).
_PLAIN_ASCII = re.compile(f"[{re.escape(_identity_chars())}]{{1,160}}")
_PLAIN_CONNECTORS: dict[int, tuple[ConnectorSettings, bool]] = {}


def _plain_connector(connector: ConnectorSettings) -> bool:
    """Whether `connector` sends such a text as-is in one GSM 7-bit part with data_coding 0
    and no fields of its own (cached per connector object: a reload makes new ones)."""
    entry = _PLAIN_CONNECTORS.get(id(connector))
    if entry is not None and entry[0] is connector:
        return entry[1]
    ok = (connector.encodings[0] == "gsm7" and not connector.gsm7_packed
          and connector.data_coding_0 == "gsm7" and not connector.service_type)
    if len(_PLAIN_CONNECTORS) >= 256:
        _PLAIN_CONNECTORS.clear()
    _PLAIN_CONNECTORS[id(connector)] = (connector, ok)
    return ok


def _plain(row: Composable, connector: ConnectorSettings) -> P.SubmitSm | None:
    """The one submit_sm of a message `build_parts` would make the same way, cheaper: no
    fields, times, binary content, UDH or parts done; text of at most 160 characters that
    encode as themselves (`_PLAIN_ASCII`) and the message's encoding unset or gsm7, on a
    connector that sends that as plain GSM 7-bit (`_plain_connector`). Else None."""
    text = row.body
    if (row.smpp or row.payload is not None or row.udh is not None or row.done_parts
            or row.valid_until is not None or row.send_at is not None or text is None
            or row.source == "sendsms" or (row.encoding is not None and row.encoding != "gsm7")
            or not _PLAIN_ASCII.fullmatch(text) or not _plain_connector(connector)):
        return None
    ston, snpi, source = source_ton_npi(row.from_addr, connector)
    return P.SubmitSm(
        source_addr_ton=ston, source_addr_npi=snpi, source_addr=source,
        dest_addr_ton=connector.dest_addr_ton, dest_addr_npi=connector.dest_addr_npi,
        destination_addr=row.to_addr.lstrip("+"), esm_class=connector.esm_class_mode,
        registered_delivery=connector.registered_delivery, data_coding=0,
        short_message=text.encode("ascii"))


def build_parts(row: Composable, connector: ConnectorSettings,
                now: datetime | None = None) -> tuple[int, list[tuple[int, P.SubmitSm]]]:
    """Split a message for `connector`: (parts in total, [(part_no, submit_sm)]), skipping
    the parts an earlier attempt already got accepted. `now` (default: the clock) counts
    relative times.

    Raises ValueError/TextTooLong/UnicodeEncodeError when the message cannot be sent (the
    caller rejects it).
    """
    plain = _plain(row, connector)
    if plain is not None:
        return 1, [(1, plain)]
    return _build_general(row, connector, now)


def _build_general(row: Composable, connector: ConnectorSettings,
                   now: datetime | None) -> tuple[int, list[tuple[int, P.SubmitSm]]]:
    """`build_parts` for any message (the reference `_plain` must equal)."""
    fields = row.smpp or _NO_FIELDS
    dcs_fields = bool(fields) and any(k in fields for k in _DCS_KEYS)
    enc, empty, pieces = _pieces(row, connector, dcs_fields)
    if dcs_fields:
        dc = fields_dcs(_KANNEL_CODING[enc], mclass=fields.get("mclass"),
                        mwi=fields.get("mwi"), alt_dcs=fields.get("alt_dcs"), empty=empty)
    else:
        dc = data_coding_for(enc, connector.data_coding_0)
    ston, snpi, source = source_ton_npi(row.from_addr, connector)
    dest = row.to_addr.lstrip("+")
    esm = connector.esm_class_mode
    user_tlvs: P.Tlvs = ()
    if fields or row.source == "sendsms":
        rd = registered_delivery(row, connector)
    else:  # the common case, without a call
        rd = connector.registered_delivery
    if fields or row.valid_until is not None or row.send_at is not None \
            or connector.service_type:
        extra = _extra_fields(row, connector, fields, now)
        user_tlvs = extra.pop("tlvs", ())
        if fields.get("rpi"):
            esm |= 0x80
    else:
        extra = _NO_FIELDS
    out = []
    last = len(pieces) if connector.more_messages_to_send else 0
    for no, piece in enumerate(pieces, 1):
        if no in row.done_parts:
            continue
        tlvs = piece.tlvs + user_tlvs if user_tlvs else piece.tlvs
        if no < last:  # more parts follow (a split message; Kannel's msg_to_pdu)
            tlvs = (*tlvs, _MORE_MESSAGES)
        # a plain message passes only what it sets (the PDU's defaults are SMPP's NULLs):
        # the claim loop composes every message, so this stays as cheap as it was
        out.append((no, P.SubmitSm(
            source_addr_ton=ston, source_addr_npi=snpi, source_addr=source,
            dest_addr_ton=connector.dest_addr_ton, dest_addr_npi=connector.dest_addr_npi,
            destination_addr=dest, esm_class=(esm | 0x40) if piece.udhi else esm,
            registered_delivery=rd, data_coding=dc, short_message=piece.short_message,
            tlvs=tlvs, **extra)))
    return len(pieces), out


def _extra_fields(row: Composable, connector: ConnectorSettings, fields: dict[str, Any],
                  now: datetime | None) -> dict[str, Any]:
    """The submit_sm fields beyond a plain message's, only those set: service_type,
    protocol_id, priority_flag, validity_period, schedule_delivery_time, and the client's
    TLVs (under "tlvs", sorted by tag)."""
    extra: dict[str, Any] = {}
    if connector.service_type or "service_type" in fields:
        extra["service_type"] = fields.get("service_type", connector.service_type)
    if row.valid_until is not None or row.send_at is not None:
        validity, schedule = _times(row, connector, now)
        if validity:
            extra["validity_period"] = validity
        if schedule:
            extra["schedule_delivery_time"] = schedule
    if not fields:
        return extra
    if "pid" in fields:
        extra["protocol_id"] = fields["pid"]
    if "priority_flag" in fields:
        extra["priority_flag"] = fields["priority_flag"]
    if fields.get("tlvs"):
        if not connector.send_tlvs:
            raise ValueError(f"connector {connector.name} takes no TLVs (send_tlvs = false)")
        extra["tlvs"] = tuple((int(k, 16), bytes.fromhex(v))
                              for k, v in sorted(fields["tlvs"].items()))
    return extra


def _pieces(row: Composable, connector: ConnectorSettings,
            dcs_fields: bool) -> tuple[Encoding, bool, list[Part]]:
    """(encoding, whether the content is empty, the parts) of a message's content."""
    method = connector.long_message
    ref = concat_ref(row.id, method)
    if row.payload is not None:
        pieces = (split_udh(row.payload, "binary", row.udh, method, ref) if row.udh
                  else split_bytes(row.payload, method, ref))
        return "binary", not row.payload, pieces
    text = row.body or ""
    if connector.transliterate:
        text = transliterate(text)
    allowed = connector.encodings
    enc: Encoding
    if dcs_fields:
        # a class / message waiting data_coding holds GSM 7-bit or UCS-2 only, whatever
        # data_coding 0 means on this SMSC (Kannel: "0xFX is always GSM 03.38")
        enc = (row.encoding if row.encoding in ("gsm7", "ucs2")  # type: ignore[assignment]
               else choose_encoding(text, ("gsm7", "ucs2"), method))
    elif row.encoding in allowed:
        enc = row.encoding  # type: ignore[assignment]
    elif allowed[0] == "gsm7" and len(text) <= 160 and _PLAIN_GSM.fullmatch(text):
        enc = "gsm7"  # one part of basic GSM characters: nothing can beat it
    else:
        enc = choose_encoding(text, allowed, method)
    if enc == "gsm7" and connector.gsm7_packed:
        enc = "gsm7_packed"
    pieces = (split_udh(text, enc, row.udh, method, ref) if row.udh
              else split(text, enc, method, ref))
    return enc, not text, pieces


def _times(row: Composable, connector: ConnectorSettings,
           now: datetime | None) -> tuple[str, str]:
    """(validity_period, schedule_delivery_time) of a message on `connector`."""
    validity = schedule = ""
    now = now or datetime.now(UTC)
    relative = connector.time_format == "relative"
    if row.valid_until is not None and connector.send_validity:
        validity = smpp_time(row.valid_until, now, relative)
    if row.send_at is not None and connector.schedule_mode == "send" and row.send_at > now:
        schedule = smpp_time(row.send_at, now, relative)
    return validity, schedule
