"""The per-message SMPP fields of an MT: what a client may ask for beyond text and numbers,
checked at intake and turned into `submit_sm` fields by composition (`shared.smpp.compose`).

They are stored in `outbound.smpp` (migration 0011) as one JSON object; a key is present only
when the client asked for it, and a plain MT stores NULL:

| key | values | on the wire | from |
|---|---|---|---|
| `pid` | 0-255 | `protocol_id` | Kannel `pid`, JSON `pid` |
| `mclass` | 0-3 | data_coding message class, 0 = flash | Kannel `mclass`, JSON `flash` |
| `mwi` | 0-7 | data_coding message waiting group | Kannel `mwi` |
| `alt_dcs` | 0, 1 | data_coding 0xFX form | Kannel `alt-dcs` |
| `rpi` | 1, 2 | esm_class reply path (0x80) | Kannel `rpi` |
| `service_type` | up to 5 characters | `service_type`, else the connector's | `binfo`, JSON |
| `priority_flag` | 0-3 | `priority_flag` | Kannel `priority`, JSON `smpp_priority` |
| `receipt` | false | registered_delivery 0 (else the connector's) | JSON `receipt` |
| `tlvs` | {"0x1401": hex} | optional parameters | Kannel `meta-data` `?smpp?`, JSON `tlvs` |

Validity and schedule are not here: they keep their columns (`valid_until`, `send_at`) and are
formatted per connector (`smpp_time`). What is Kannel's follows Kannel 1.4.5: the data coding
is `fields_to_dcs` (gw/sms.c), the receipt request from the dlr-mask is `msg_to_pdu`
(gw/smsc/smsc_smpp.c), the meta-data format is `meta_data_unpack` (gw/meta_data.c) and a
named TLV is packed as `smpp_pdu_pack` packs a configured `smpp-tlv` (gw/smsc/smpp_pdu.c).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Final, Literal, NamedTuple
from urllib.parse import unquote_to_bytes

from smsgw.shared.smpp.pdu import Tag

__all__ = [
    "KEYS",
    "MAX_TLVS",
    "STANDARD_TLVS",
    "TlvCatalog",
    "TlvDef",
    "fields_dcs",
    "parse_meta_data",
    "parse_smpp_time",
    "registered_delivery_for_mask",
    "smpp_time",
    "tag_key",
]

KEYS: Final = frozenset({"pid", "mclass", "mwi", "alt_dcs", "rpi", "service_type",
                         "priority_flag", "receipt", "tlvs"})
MAX_TLVS: Final = 16  # optional parameters one message may carry
MAX_VENDOR_TLV: Final = 255  # octets of a vendor-specific TLV without a configured length
VENDOR_TAGS: Final = range(0x1400, 0x4000)  # SMPP 3.4 5.3.2: 0x1400-0x3FFF, SMSC vendors'

TlvType = Literal["integer", "octetstring", "nulterminated"]


class TlvDef(NamedTuple):
    """One optional parameter a client may set: its tag, how a Kannel meta-data value is
    packed (`type`), and the octets its value may have on the wire."""

    name: str
    tag: int
    type: TlvType
    min_len: int
    max_len: int


def _std(name: str, tag: int, type_: TlvType, lo: int, hi: int) -> tuple[str, TlvDef]:
    return name, TlvDef(name, tag, type_, lo, hi)


# The submit_sm optional parameters of SMPP 3.4 4.4.1 (sizes from 5.3.2) a client may set.
# Those smsgw sets itself are not among them: sar_* (concatenation), message_payload,
# more_messages_to_send.
STANDARD_TLVS: Final[Mapping[str, TlvDef]] = dict((
    _std("dest_addr_subunit", Tag.DEST_ADDR_SUBUNIT, "integer", 1, 1),
    _std("source_addr_subunit", Tag.SOURCE_ADDR_SUBUNIT, "integer", 1, 1),
    _std("payload_type", Tag.PAYLOAD_TYPE, "integer", 1, 1),
    _std("ms_msg_wait_facilities", 0x0030, "integer", 1, 1),
    _std("privacy_indicator", 0x0201, "integer", 1, 1),
    _std("source_subaddress", 0x0202, "octetstring", 2, 23),
    _std("dest_subaddress", 0x0203, "octetstring", 2, 23),
    _std("user_message_reference", Tag.USER_MESSAGE_REFERENCE, "integer", 2, 2),
    _std("user_response_code", 0x0205, "integer", 1, 1),
    _std("source_port", Tag.SOURCE_PORT, "integer", 2, 2),
    _std("destination_port", Tag.DESTINATION_PORT, "integer", 2, 2),
    _std("language_indicator", Tag.LANGUAGE_INDICATOR, "integer", 1, 1),
    _std("callback_num_pres_ind", 0x0302, "integer", 1, 1),
    _std("callback_num_atag", 0x0303, "octetstring", 0, 65),
    _std("number_of_messages", 0x0304, "integer", 1, 1),
    _std("callback_num", 0x0381, "octetstring", 4, 19),
    _std("ussd_service_op", 0x0501, "octetstring", 1, 1),
    _std("display_time", 0x1201, "integer", 1, 1),
    _std("sms_signal", 0x1203, "integer", 2, 2),
    _std("ms_validity", 0x1204, "integer", 1, 1),
    _std("alert_on_msg_delivery", 0x130C, "octetstring", 0, 0),
    _std("its_reply_type", 0x1380, "integer", 1, 1),
    _std("its_session_info", 0x1383, "octetstring", 2, 2),
))
RESERVED_TAGS: Final = frozenset({Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS,
                                  Tag.SAR_SEGMENT_SEQNUM, Tag.MESSAGE_PAYLOAD,
                                  Tag.MORE_MESSAGES_TO_SEND})


def tag_key(tag: int) -> str:
    """The stored form of a tag: `0x` and four lower-case hex digits."""
    return f"0x{tag:04x}"


class TlvCatalog:
    """The optional parameters clients may set: SMPP 3.4's (`STANDARD_TLVS`), the ones the
    operator names per connector (`[[connectors]] tlvs`, Kannel's `smpp-tlv` groups), and
    any vendor-specific tag (0x1400-0x3FFF) given by number."""

    def __init__(self, defs: Iterable[TlvDef] = ()) -> None:
        self.by_name: dict[str, TlvDef] = dict(STANDARD_TLVS)
        self.by_tag: dict[int, TlvDef] = {d.tag: d for d in STANDARD_TLVS.values()}
        self.conflicts: set[str] = set()
        for d in defs:
            known = self.by_name.get(d.name)
            if known is not None and known != d:
                self.conflicts.add(d.name)  # two connectors disagree: refused by name
            self.by_name[d.name] = d
            self.by_tag.setdefault(d.tag, d)

    def lookup(self, key: str) -> TlvDef:
        """The definition for a name or a tag (`0x1401`, or decimal). Raises ValueError."""
        if key in self.conflicts:
            raise ValueError(f"TLV {key} is defined differently on two connectors")
        found = self.by_name.get(key)
        if found is not None:
            return found
        try:
            tag = int(key, 16) if key[:2].lower() == "0x" else int(key, 10)
        except ValueError:
            raise ValueError("unknown TLV (an SMPP 3.4 name, a connector's `tlvs` name, or "
                             "a vendor tag 0x1400-0x3FFF)") from None
        if tag in RESERVED_TAGS:
            raise ValueError(f"TLV {tag_key(tag)} is set by smsgw itself")
        found = self.by_tag.get(tag)
        if found is not None:
            return found
        if tag in VENDOR_TAGS:
            return TlvDef(tag_key(tag), tag, "octetstring", 0, MAX_VENDOR_TLV)
        raise ValueError(f"TLV {tag_key(tag)} is not one a client may set")

    def from_octets(self, key: str, value: bytes) -> tuple[str, str]:
        """A JSON TLV (the wire octets): (stored tag, hex), checked. Raises ValueError."""
        d = self.lookup(key)
        extra = 1 if d.type == "nulterminated" else 0
        if not d.min_len <= len(value) <= d.max_len + extra:
            raise ValueError(f"TLV {d.name} takes {_sizes(d.min_len, d.max_len + extra)}, "
                             f"not {len(value)}")
        return tag_key(d.tag), value.hex()

    def from_text(self, key: str, value: bytes) -> tuple[str, str]:
        """A Kannel meta-data value, packed as Kannel packs its configured TLV type: an
        integer in decimal → `length` octets big-endian, an octet string as it is, a
        NUL-terminated string with its NUL. Values Kannel would drop or wrap are refused."""
        d = self.lookup(key)
        if d.type == "integer":
            text = value.decode("ascii", "replace").strip()
            if not text.isdigit() or int(text) >= 256 ** d.max_len:
                raise ValueError(f"TLV {d.name} takes an integer from 0 to "
                                 f"{256 ** d.max_len - 1}")
            return tag_key(d.tag), int(text).to_bytes(d.max_len, "big").hex()
        if not d.min_len <= len(value) <= d.max_len:
            raise ValueError(f"TLV {d.name} takes {_sizes(d.min_len, d.max_len)}, "
                             f"not {len(value)}")
        wire = value + b"\x00" if d.type == "nulterminated" else value
        return tag_key(d.tag), wire.hex()


def _sizes(lo: int, hi: int) -> str:
    return f"{lo} octets" if lo == hi else f"{lo} to {hi} octets"


def parse_meta_data(data: str) -> dict[str, dict[str, bytes]]:
    """Kannel's meta-data (`?group?key=value&key=value?group?…`, each part URL-encoded) as
    {group: {key: value}}, like `meta_data_unpack` (gw/meta_data.c). Raises ValueError where
    Kannel's parser fails."""
    out: dict[str, dict[str, bytes]] = {}
    if not data:
        return out
    if not data.startswith("?"):
        raise ValueError("must start with ?group?")
    pieces = data[1:].split("?")
    if len(pieces) % 2:
        raise ValueError("a group name has no closing ?")
    for group_raw, body in zip(pieces[::2], pieces[1::2], strict=True):
        group = _unquote(group_raw).decode("utf-8", "replace").lower()
        values = out.setdefault(group, {})
        for pair in body.split("&"):
            if not pair:
                continue
            key, sep, value = pair.partition("=")
            if not sep or "=" in value:
                raise ValueError(f"{pair[:40]!r} is not key=value")
            values[_unquote(key).decode("utf-8", "replace")] = _unquote(value)
    return out


def _unquote(part: str) -> bytes:
    # Kannel's octstr_url_decode: '+' is a space, %XX an octet
    return unquote_to_bytes(part.replace("+", " "))


def fields_dcs(coding: int, *, mclass: int | None = None, mwi: int | None = None,
               alt_dcs: int | None = None, empty: bool = False) -> int:
    """data_coding for a message with a class, a message-waiting indication or the 0xFX form,
    as Kannel's `fields_to_dcs` (gw/sms.c) and `msg_to_pdu` (a class forces the 0xFX form)
    compute it. `coding`: 0 GSM 7-bit, 1 8-bit data, 2 UCS-2 (Kannel's DC_*)."""
    if mwi is not None:
        if mwi & 0x04:  # indication inactive
            return (mwi & 0x03) | 0xC0
        dcs = (mwi & 0x03) | 0x08  # active
        if empty:
            return dcs | 0xC0  # discard message
        return dcs | (0xD0 if coding == 0 else 0xE0)  # store, GSM 7-bit / UCS-2
    mode = 1 if mclass is not None else (alt_dcs or 0)
    if mode == 0 or coding == 2:  # general data coding group
        dcs = coding << 2
        if mclass is not None:
            dcs |= 0x10 | mclass
        return dcs
    return 0xF0 | (coding << 2) | (1 if mclass is None else mclass)


def registered_delivery_for_mask(mask: int | None) -> int:
    """registered_delivery for a Kannel dlr-mask, as Kannel 1.4.5's `msg_to_pdu` sets it:
    failure only → 2, success (or success and failure) → 1, nothing of the handset → 0; the
    buffered bit (4) asks for intermediate notifications too (+16, SMPP 3.4 5.2.17 bit 4).
    SMSC-level bits (8, 16) need no receipt. The buffered rule is what Debian's kannel 1.4.5
    binary puts on the wire (mask 4 → 16, 31 → 17; tests/kannel), which differs from the
    0x20 test in a later source snapshot."""
    if mask is None or mask <= 0:
        return 0
    if mask & 0x02 and not mask & 0x01:
        rd = 2
    elif mask & 0x03:
        rd = 1
    else:
        rd = 0
    return rd + 16 if mask & 0x04 else rd


def smpp_time(at: datetime, now: datetime, relative: bool = False) -> str:
    """An SMPP 3.4 time (7.1.1) for `at`: absolute `YYMMDDhhmmss000+` in UTC, as Kannel's
    `msg_to_pdu` writes it, or relative `YYMMDDhhmmss000R` counted from `now` (whole
    seconds, rounded up)."""
    if not relative:
        return at.astimezone(UTC).strftime("%y%m%d%H%M%S") + "000+"
    secs = max(1, math.ceil((at - now).total_seconds()))
    days, rem = divmod(secs, 86400)
    if days > 99:
        raise ValueError("a relative SMPP time holds at most 99 days")
    hours, rem = divmod(rem, 3600)
    minutes, seconds = divmod(rem, 60)
    return f"0000{days:02d}{hours:02d}{minutes:02d}{seconds:02d}000R"


def check_keys(smpp: Mapping[str, Any]) -> None:
    """Refuse a stored field set with keys this release does not know (a typo in code)."""
    unknown = set(smpp) - KEYS
    if unknown:
        raise ValueError(f"unknown SMPP fields {sorted(unknown)}")


def parse_smpp_time(value: str, now: datetime) -> datetime | None:
    """An SMPP 3.4 time (7.1.1) as an aware datetime: absolute `YYMMDDhhmmsstnnp` (p `+`/`-`,
    nn the offset from UTC in quarter hours) or relative `YYMMDDhhmmss000R` counted from `now`;
    "" is None. Raises ValueError for anything else (the reverse of `smpp_time`)."""
    if not value:
        return None
    if len(value) != 16 or not value[:15].isdigit() or value[15] not in "+-R":
        raise ValueError("an SMPP time is 16 characters: YYMMDDhhmmsstnn and +, - or R")
    yy, mo, dd, hh, mi, ss = (int(value[i:i + 2]) for i in range(0, 12, 2))
    if value[15] == "R":
        return now + timedelta(days=yy * 365 + mo * 30 + dd, hours=hh, minutes=mi, seconds=ss)
    quarters = int(value[13:15])
    if quarters > 48:
        raise ValueError("an SMPP time's UTC offset is at most 48 quarter hours")
    offset = timedelta(minutes=15 * quarters) * (1 if value[15] == "+" else -1)
    local = datetime(2000 + yy, mo, dd, hh, mi, ss, int(value[12]) * 100_000,
                     tzinfo=timezone(offset))
    return local.astimezone(UTC)
