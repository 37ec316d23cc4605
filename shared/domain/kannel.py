"""Kannel compatibility for `dlr-url`: DLR types, dlr-mask filtering and every escape, exactly as
Kannel 1.4.5 fills them in for a delivery report.

Applications written for Kannel give `dlr-mask` and a `dlr-url` template with `%` escapes to
`/cgi-bin/sendsms`. The receiver stores the template in `outbound.callback_url` (with `dlr_mask`
and `meta->>'callback_style' = 'kannel'`); the sender builds, for each report Kannel would send,
the `DlrMsg` Kannel would hand to smsbox and renders the template with `fill_escape_codes`, the
port of `urltrans_fill_escape_codes` (gw/urltrans.c). The GET is queued as a `callbacks` row
(`shared/domain/status_callbacks.py`).

Which reports Kannel sends, and what its DLR message holds (read from Kannel 1.4.5's source and
checked against Debian's kannel 1.4.5 binaries):

- **SMSC ACK** (type 8), when `submit_sm_resp` accepted every part (`bb_smscconn_sent`, gw/
  bb_smscconn.c): if `dlr-mask & 8`. Its text is `ACK/`. One per message, also when it was split
  (`handle_split`).
- **SMSC NACK** (type 16), when a submit failed for good (`bb_smscconn_send_failed`): if
  `dlr-mask & (16 | 2 | 32 | 64)` (`DLR_IS_SMSC_FAIL || DLR_IS_FAIL`, so a mask of 2 alone gets a
  16 too). Its text is `NACK/` + the reason: `0x%08lx/<smpp_error_to_string>` for a
  `submit_sm_resp` error of a one-part message (gw/smsc/smsc_smpp.c, `handle_pdu`),
  nothing for a split message (`handle_split` passes no reason), `validity expired`, `Retries
  Exceeded`, `receiver in black-list` for the gateway's own refusals (gw/bb_smscconn.c).
- **Receipts** (`dlr_find`, gw/dlr.c; `handle_dlr`, gw/smsc/smsc_smpp.c): type 1 (DELIVRD), 4
  (ACCEPTD, ENROUTE, BUFFRED, ACKED), 2 (anything else), 34 (`DLR_EXPIRED` = 0x20|0x02, when the
  `message_state` TLV says EXPIRED); sent if `type & dlr-mask`. The text is the receipt's
  short_message. **Only the first part of a split message asks for and reports receipts**: gw/
  sms.c `sms_split` clears `dlr_mask` and `dlr_url` of parts 2..n ("only ask DLR for the first
  one"), so Kannel sends one receipt DLR per message, following part 1.

`DlrMsg` documents which `Msg` fields each report carries; the escapes read them as
`urltrans_fill_escape_codes` does (URL-encoding with `octstr_url_encode`: letters, digits and
`-_.!~*'()` kept, space → `+`, every other byte `%XX` upper case). `KNOWN_DIFFERENCES` lists what
smsgw cannot reproduce, and why.
"""

from __future__ import annotations

import functools
import re
import time as _time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote_from_bytes

# --- DLR types and masks (gw/dlr.h) ----------------------------------------------------------

DLR_SUCCESS = 0x01  # delivered to phone
DLR_FAIL = 0x02  # non-delivered to phone
DLR_BUFFERED = 0x04  # queued on SMSC
DLR_SMSC_SUCCESS = 0x08  # accepted by the SMSC (submit_sm_resp OK)
DLR_SMSC_FAIL = 0x10  # refused by the SMSC or the gateway
DLR_EXPIRED = 0x20 | DLR_FAIL  # 34: `#define DLR_EXPIRED 0x20|DLR_FAIL`
DLR_UNKNOWN = 0x40 | DLR_FAIL  # 66: defined, never produced by smsc_smpp.c in 1.4.5
# Kept for callers of the old names.
DLR_DELIVERED = DLR_SUCCESS
DLR_UNDELIVERED = DLR_FAIL
DLR_MASK_ALL = 31
DLR_MASK_FINAL = DLR_SUCCESS | DLR_FAIL | DLR_SMSC_FAIL  # 19

# `DLR_IS_ENABLED_DEVICE`: the bits that make bearerbox store the DLR entry (`dlr_add` in
# smsc_smpp.c's submit_sm_resp branch). The macro expands DLR_EXPIRED/DLR_UNKNOWN unbracketed:
# 1|2|4|0x20|2|0x40|2 = 0x67.
DEVICE_BITS = DLR_SUCCESS | DLR_FAIL | DLR_BUFFERED | 0x20 | 0x40
# `DLR_IS_FAIL`: DLR_FAIL|DLR_EXPIRED|DLR_UNKNOWN = 0x62.
FAIL_BITS = DLR_FAIL | 0x20 | 0x40
# `DLR_IS_ENABLED`: any bit a report can carry.
ENABLED_BITS = DEVICE_BITS | DLR_SMSC_SUCCESS | DLR_SMSC_FAIL

ACK = b"ACK/"
NACK = b"NACK/"
# the reasons bearerbox gives its own refusals (gw/bb_smscconn.c `smsc2_rout`,
# `bb_smscconn_send_failed`)
REASON_EXPIRED = "validity expired"
REASON_RETRIES = "Retries Exceeded"
REASON_BLACK_LIST = "receiver in black-list"
# Kannel cannot cancel a queued message; smsgw's `cancelled` (an operator, or an ESME's
# cancel_sm) is reported like a gateway refusal, as `bb_smscconn_send_failed(NULL, msg,
# SMSCCONN_FAILED_DISCARDED, reason)` would report it: an SMSC NACK (16), text `NACK/Cancelled`
REASON_CANCELLED = "Cancelled"

# smsgw's part / receipt states (docs/ARCHITECTURE.md "SMPP status classes and receipts") → the
# type Kannel's `handle_dlr` gives the stat word they come from: DELIVRD → 1; ACCEPTD, ENROUTE,
# BUFFRED, BUFFERD, ACKED → 4; every other word → 2.
_RECEIPT_TYPE: dict[str, int] = {
    "delivered": DLR_SUCCESS,
    "enroute": DLR_BUFFERED,
    "accepted": DLR_BUFFERED,
    "undeliverable": DLR_FAIL,
    "expired": DLR_FAIL,
    "rejected": DLR_FAIL,
    "unknown_receipt": DLR_FAIL,
}
# message_state TLV (SMPP 3.4 5.3.2.35) → type, `handle_dlr`'s switch for SMPP 3.4 binds:
# 1 ENROUTE, 6 ACCEPTED → 4; 2 → 1; 3 EXPIRED → DLR_EXPIRED; 4, 5, 7, 8 → 2; 0 and 9 are SMPP
# 5.0 only (-1: the text decides); anything else → 2.
_STATE_TLV_TYPE: dict[int, int] = {1: DLR_BUFFERED, 6: DLR_BUFFERED, 2: DLR_SUCCESS,
                                   3: DLR_EXPIRED, 4: DLR_FAIL, 5: DLR_FAIL, 7: DLR_FAIL,
                                   8: DLR_FAIL}

# What smsgw's dlr-url cannot make exactly as Kannel does, escape by escape (the differential
# suite and the migration guide read this).
KNOWN_DIFFERENCES: Mapping[str, str] = {
    "I": "Kannel fills a fresh random UUID per DLR (dlr_find/create_dlr_from_msg call "
         "msg_create, which calls uuid_generate), so it identifies nothing; smsgw fills the "
         "smsgw message id in the same 36-character form (message_uuid).",
    "t": "the instant differs (Kannel: when bearerbox made the DLR; smsgw: when the receipt or "
         "the submit_sm_resp was stored); the format is Kannel's.",
    "T": "as %t.",
    "p": "the number as smsgw stored it (E.164 with '+', guarantee 8); Kannel keeps the "
         "sendsms 'to' as the application wrote it (00…, digits only). %q likewise.",
    "P": "as %p, for 'from'. %Q likewise.",
    "D": "keys of one meta-data group come in the order they were set; Kannel's follow its "
         "hash table (one key per group in every report smsgw makes, so only a sendsms "
         "meta-data with several keys in one group can differ).",
    "A": "a receipt in a data_coding other than Latin-1/GSM is stored as text and sent back "
         "as its Latin-1 bytes (Kannel: the octets as received); NUL bytes cannot be stored.",
}


def url_encode(data: bytes) -> bytes:
    """`octstr_url_encode` (gwlib/octstr.c): RFC 2396 unreserved bytes kept, space → '+',
    everything else `%XX` with upper-case hex digits. (`quote_from_bytes` keeps exactly those
    bytes with `safe="!*'()"`, writes upper-case hex, and `%20` can only come from a space.)"""
    return quote_from_bytes(data, safe="!*'()").replace("%20", "+").encode("ascii")


def url_decode(data: bytes) -> bytes:
    """`octstr_url_decode`: `%XX` → the byte, '+' → space; a bad `%` sequence is kept."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x25 and i + 2 < n and _is_hex(data[i + 1]) and _is_hex(data[i + 2]):
            out.append(int(data[i + 1: i + 3], 16))
            i += 3
        elif c == 0x2B:
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def _is_hex(c: int) -> bool:
    return c in b"0123456789abcdefABCDEF"


# --- meta-data (gw/meta_data.c) --------------------------------------------------------------

MetaGroups = list[tuple[str, dict[str, bytes]]]


def meta_unpack(data: str | None) -> MetaGroups:
    """`?group?key=value&key=value?group2?…` → [(group, {key: value})], keys and values
    URL-decoded (meta_data_unpack). Malformed text gives what could be read."""
    groups: MetaGroups = []
    if not data:
        return groups
    for chunk in re.finditer(r"\?([^?]*)\?([^?]*)", data):
        values: dict[str, bytes] = {}
        for pair in chunk.group(2).split("&"):
            if "=" in pair:
                key, value = pair.split("=", 1)
                values[url_decode(key.encode()).decode("latin-1")] = url_decode(value.encode())
        groups.append((url_decode(chunk.group(1).encode()).decode("latin-1"), values))
    return groups


def meta_pack(groups: MetaGroups) -> str:
    """meta_data_pack: `?%E?` per group, then `%E=%E&` per key (URL-encoded)."""
    out = bytearray()
    for group, values in groups:
        out += b"?" + url_encode(group.encode("latin-1")) + b"?"
        for key, value in values.items():
            out += url_encode(key.encode("latin-1")) + b"=" + url_encode(value) + b"&"
    return out.decode("ascii")


def meta_set(groups: MetaGroups, group: str, key: str | None = None,
             value: bytes | None = None) -> None:
    """meta_data_set_value(…, replace=1) / meta_data_set_values: a group not there yet goes
    second (`curr->next = mdata->next; mdata->next = curr`), or first into an empty list; the
    group is found case-insensitively. `key` None adds the (empty) group only."""
    values = next((v for name, v in groups if name.lower() == group.lower()), None)
    if values is None:
        values = {}
        groups.insert(1 if groups else 0, (group, values))
    if key is not None and value is not None:
        values.pop(key, None)
        values[key] = value


def meta_get(data: str | None, group: str, key: str) -> bytes | None:
    """meta_data_get_value: the value of `key` in `group` (case-insensitive), or None."""
    for name, values in meta_unpack(data):
        if name.lower() == group.lower():
            return values.get(key)
    return None


# --- the DLR message --------------------------------------------------------------------------


@dataclass(slots=True)  # not frozen: a frozen __init__ sets 22 fields at ~3x the cost
class DlrMsg:
    """The fields of Kannel's DLR `Msg` (gw/msg-decl.h) that `urltrans_fill_escape_codes`
    reads, as smsbox holds them when it calls the dlr-url.

    A DLR is a new `msg_create(sms)`: integers -1 (MSG_PARAM_UNDEFINED), strings NULL, a new
    UUID. `create_dlr_from_msg` (ACK/NACK) copies service, smsc_id, sender, receiver, dlr_url,
    foreign_id and meta_data and sets msgdata to the reply; `dlr_find` (receipts) sets service,
    smsc_id, receiver, sender, dlr_url, foreign_id (the SMSC id) and meta_data, and
    `handle_dlr` adds msgdata (the receipt text) and account (the bind's system-id). Coding,
    mclass, mwi, charset, udh, billing, validity, deferred and smsc_number are never set.
    """

    dlr_type: int  # sms.dlr_mask: %d
    receiver: str  # %p %q
    sender: str  # %P %Q
    msgdata: bytes  # %a %A %b %k %s %S %r %e
    time: int  # unix seconds: %t %T
    smsc_id: str | None = None  # %i
    foreign_id: str | None = None  # %F
    service: str | None = None  # %n (the sendsms-user's name)
    account: str | None = None  # %o
    meta_data: str | None = None  # %D, %#group#key#
    dlr_url: str | None = None  # %R
    id: str = ""  # %I (uuid_unparse)
    coding: int = -1  # %c %C %O
    mclass: int = -1  # %m %O
    mwi: int = -1  # %M %O
    compress: int = -1  # %O
    alt_dcs: int = -1  # %O
    charset: str | None = None  # %C
    udhdata: bytes = b""  # %u, %O
    binfo: str | None = None  # %B
    smsc_number: str | None = None  # %f
    validity: int = -1  # %v (absolute unix time)
    deferred: int = -1  # %V


def fields_to_dcs(coding: int, mclass: int, mwi: int, compress: int, udh: bytes,
                  msgdata: bytes, mode: int) -> tuple[int, int]:
    """gw/sms.c `fields_to_dcs`: (dcs, coding). It defaults the message's coding (7-bit, or
    8-bit with a UDH) as a side effect, which the caller keeps: a `%c` after `%O` reads 0."""
    if coding == -1:
        coding = 1 if udh else 0
    dcs = 0
    if mwi != -1:
        dcs = mwi
        if dcs & 0x04:
            dcs = (dcs & 0x03) | 0xC0
        else:
            dcs = (dcs & 0x03) | 0x08
            if not msgdata:
                dcs |= 0xC0
            elif coding == 0:
                dcs |= 0xD0
            else:
                dcs |= 0xE0
    elif mode in (0, -1) or coding == 2 or compress == 1:
        if compress == 1:
            dcs |= 0x20
        if mclass != -1:
            dcs |= 0x10 | mclass
        if coding != -1:
            dcs |= coding << 2
    else:
        dcs |= 0xF0
        if coding != -1:
            dcs |= coding << 2
        dcs |= 1 if mclass == -1 else mclass
    return dcs, coding


def _plus_00(number: bytes) -> bytes:
    # %q/%Q: a number starting "00" becomes "%2B" + the rest, URL-encoded
    if number.startswith(b"00"):
        return b"%2B" + url_encode(number[2:])
    return url_encode(number)


def _enc(value: str | None) -> bytes:
    return url_encode((value or "").encode())


class _Fill:
    """One run of urltrans_fill_escape_codes: the message, its words, the `%s` cursor
    (`nextarg`) and the coding `%O` may default (both change while the template is read)."""

    __slots__ = ("coding", "msg", "nextarg", "now", "words")

    def __init__(self, msg: DlrMsg, now: float | None) -> None:
        self.msg = msg
        self.words = msg.msgdata.split()  # octstr_split_words: isspace() separated
        self.nextarg = 1
        self.coding = msg.coding
        self.now = now

    def charset(self) -> bytes:
        if self.msg.charset:
            return self.msg.charset.encode()
        return {-1: b"UTF-8", 0: b"UTF-8", 1: b"8-BIT", 2: b"UTF-16BE"}.get(self.coding, b"")

    def dcs(self) -> bytes:
        m = self.msg
        dcs, self.coding = fields_to_dcs(self.coding, m.mclass, m.mwi, m.compress, m.udhdata,
                                         m.msgdata, m.alt_dcs)
        return b"%02d" % dcs

    def next_word(self, raw: bool) -> bytes:
        if self.nextarg >= len(self.words):
            return b""
        word = self.words[self.nextarg]
        self.nextarg += 1
        return word.replace(b"*", b"~") if raw else url_encode(word)

    def minutes_left(self, value: int) -> bytes:
        if value == -1:
            return b""
        at = int(_time.time() if self.now is None else self.now)
        return str(_c_div(value - at, 60)).encode()

    def gmtime(self) -> bytes:  # gw_gmtime, "%04d-%02d-%02d+%02d:%02d:%02d" (a literal '+')
        return datetime.fromtimestamp(self.msg.time, UTC).strftime("%Y-%m-%d+%H:%M:%S").encode()


# escape letter → its value, in the order of urltrans_fill_escape_codes' switch
_ESCAPES: dict[str, Callable[[_Fill], bytes]] = {
    "a": lambda f: b"+".join(url_encode(w) for w in f.words),  # every word, '+'-joined
    "A": lambda f: url_encode(f.msg.msgdata),  # the whole text
    "b": lambda f: url_encode(f.msg.msgdata),
    "B": lambda f: _enc(f.msg.binfo),
    "c": lambda f: str(f.coding).encode(),
    "C": _Fill.charset,
    "d": lambda f: url_encode(str(f.msg.dlr_type).encode()),
    "D": lambda f: _enc(f.msg.meta_data),
    "e": lambda f: f.msg.msgdata.hex().upper().encode(),  # octstr_binary_to_hex(…, 1)
    "f": lambda f: _enc(f.msg.smsc_number),
    "F": lambda f: _enc(f.msg.foreign_id),
    "i": lambda f: _enc(f.msg.smsc_id),
    "I": lambda f: f.msg.id.encode(),
    "k": lambda f: url_encode(f.words[0]) if f.words else b"",
    "m": lambda f: url_encode(str(f.msg.mclass).encode()),
    "M": lambda f: url_encode(str(f.msg.mwi).encode()),
    "n": lambda f: _enc(f.msg.service),
    "o": lambda f: _enc(f.msg.account),
    "O": _Fill.dcs,
    "P": lambda f: url_encode(f.msg.sender.encode()),
    "p": lambda f: url_encode(f.msg.receiver.encode()),
    "q": lambda f: _plus_00(f.msg.receiver.encode()),
    "Q": lambda f: _plus_00(f.msg.sender.encode()),
    # the words from the next unused one on, without using them up
    "r": lambda f: b"+".join(url_encode(w) for w in f.words[f.nextarg:]),
    "R": lambda f: _enc(f.msg.dlr_url),
    "s": lambda f: f.next_word(raw=False),  # the next unused word
    "S": lambda f: f.next_word(raw=True),  # the same, raw, '*' → '~'
    "t": _Fill.gmtime,
    "T": lambda f: b"" if f.msg.time == -1 else str(f.msg.time).encode(),
    "u": lambda f: url_encode(f.msg.udhdata),
    "v": lambda f: f.minutes_left(f.msg.validity),
    "V": lambda f: f.minutes_left(f.msg.deferred),
    "%": lambda f: b"%",
}


def fill_escape_codes(pattern: str, msg: DlrMsg, now: float | None = None) -> str:
    """`urltrans_fill_escape_codes` (gw/urltrans.c, Kannel 1.4.5) for a DLR message: the
    dlr-url with every `%x` escape replaced, byte for byte as Kannel builds it.

    Unknown escapes stay as they are (`%x`); `%%` is `%`; `%#group#key#` is one meta-data
    value. `now` is only read by `%v`/`%V` (minutes left of validity/deferred, never set in a
    DLR). Non-ASCII bytes (from the template itself or from `%S`) come back as UTF-8 text.
    """
    pat = pattern.encode("utf-8")
    fill = _Fill(msg, now)
    out = bytearray()
    n = len(pat)
    pos = 0
    while True:
        end = pat.find(b"%", pos, n - 1)  # a '%' with a character after it
        if end < 0:
            out += pat[pos:]
            break
        out += pat[pos:end]
        pos = end
        letter = chr(pat[pos + 1])
        escape = _ESCAPES.get(letter)
        if escape is not None:
            out += escape(fill)
        elif letter == "#":
            pos = _meta_escape(pat, pos, msg.meta_data, out)
        else:
            out += pat[pos: pos + 2]
        pos += 2
    return out.decode("utf-8", "replace")


def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def _meta_escape(pat: bytes, pos: int, meta: str | None, out: bytearray) -> int:
    """`%#group#key#`, with Kannel's index arithmetic (returns the new `pos`, to which the
    caller adds 2): a `%#` without a second '#' yields nothing; one without a third skips on."""
    k = pat.find(b"#", pos + 2)
    if k < 0:
        return pos
    pos += 2
    group = pat[pos:k]
    pos = k + 1
    k = pat.find(b"#", pos)
    if k < 0:
        return pos + 1
    key = pat[pos:k]
    pos = k - 1
    if meta is not None:
        value = meta_get(meta, group.decode("latin-1"), key.decode("latin-1"))
        if value:
            out += url_encode(value)
    return pos


# --- what goes into a DLR ---------------------------------------------------------------------


def wants_ack(dlr_mask: int | None) -> bool:
    """`DLR_IS_SMSC_SUCCESS`: the application asked for SMSC ACKs (8)."""
    return bool(dlr_mask and dlr_mask != -1 and dlr_mask & DLR_SMSC_SUCCESS)


def wants_nack(dlr_mask: int | None) -> bool:
    """`DLR_IS_SMSC_FAIL || DLR_IS_FAIL`: a refused submit reports 16 (bits 16, 2, 32, 64)."""
    return bool(dlr_mask and dlr_mask != -1 and dlr_mask & (DLR_SMSC_FAIL | FAIL_BITS))


def stores_receipts(dlr_mask: int | None) -> bool:
    """`DLR_IS_ENABLED_DEVICE`: bearerbox keeps the DLR entry receipts are matched against."""
    return bool(dlr_mask and dlr_mask != -1 and dlr_mask & DEVICE_BITS)


def wants_receipt(dlr_mask: int | None, dlr_type: int) -> bool:
    """`dlr_find`: a receipt of `dlr_type` is reported when `dlr_type & mask`."""
    return bool(stores_receipts(dlr_mask) and dlr_type & (dlr_mask or 0))


def receipt_type(state: str, message_state: int | None = None) -> int:
    """The type `handle_dlr` gives a receipt: from the message_state TLV when the receipt had
    it (with receipted_message_id, on an SMPP 3.4 bind), else from the stat word, which smsgw
    has mapped to `state` (with the default stat table the two agree word for word)."""
    if message_state is not None and message_state in _STATE_TLV_TYPE:
        return _STATE_TLV_TYPE[message_state]
    return _RECEIPT_TYPE.get(state, DLR_FAIL)


# Kannel's `smpp_error_to_string` (gw/smsc/smpp_pdu.c), for `NACK/0x%08lx/<text>`.
SMPP_ERROR_TEXT: Mapping[int, str] = {
    0x00: "OK", 0x01: "Message Length is invalid", 0x02: "Command Length is invalid",
    0x03: "Invalid Command ID", 0x04: "Incorrect BIND Status for given command",
    0x05: "ESME Already in Bound State", 0x06: "Invalid Priority Flag",
    0x07: "Invalid Registered Delivery Flag", 0x08: "System Error",
    0x0A: "Invalid Source Address", 0x0B: "Invalid Destination Address",
    0x0D: "Bind Failed", 0x0E: "Invalid Password", 0x0F: "Invalid System ID",
    0x11: "Cancel SM Failed", 0x13: "Replace SM Failed", 0x14: "Message Queue Full",
    0x15: "Invalid Service Type", 0x33: "Invalid number of destinations",
    0x34: "Invalid Distribution List Name", 0x40: "Destination flag is invalid",
    0x42: "Submit w/replace not supported/allowed", 0x43: "Invalid esm_class field data",
    0x44: "Cannot Submit to Distribution List", 0x45: "Submit failed",
    0x48: "Invalid Source address TON", 0x49: "Invalid Source address NPI",
    0x50: "Invalid Destination address TON", 0x51: "Invalid Destination address NPI",
    0x53: "Invalid system_type field", 0x54: "Invalid replace_if_present flag",
    0x55: "Invalid number of messages", 0x58: "Throttling error",
    0x61: "Invalid Scheduled Delivery Time", 0x62: "Invalid message validity period",
    0x63: "Predefined Message ID is Invalid or specific predefined message was not found",
    0x64: "ESME Receiver Temporary App Error Code",
    0x65: "ESME Receiver Permanent App Error Code",
    0x66: "ESME Receiver Reject Message Error Code", 0x67: "query_sm request failed",
    0xC0: "Error in optional part of the PDU Body", 0xC1: "TLV not allowed",
    0xC2: "Invalid Parameter Length", 0xC3: "Expected TLV missing", 0xC4: "Invalid TLV value",
    0xFE: "Transaction Delivery Failure", 0xFF: "Unknown Error",
    0x100: "ESME Not authorized to use specified service_type",
    0x101: "ESME Prohibited from using specified operation",
    0x102: "Specified service_type is unavailable", 0x103: "Specified service_type is denied",
    0x104: "Invalid Data Coding Scheme", 0x105: "Source Address Sub unit is invalid",
    0x106: "Destination Address Sub unit is invalid",
    0x107: "Broadcast Frequency Interval is invalid",
    0x108: "Broadcast Alias Name is invalid", 0x109: "Broadcast Area Format is invalid",
    0x10A: "Number of Broadcast Areas is invalid", 0x10B: "Broadcast Content Type is invalid",
    0x10C: "Broadcast Message Class is invalid", 0x10D: "broadcast_sm operation failed",
    0x10E: "broadcast_query_sm operation failed", 0x10F: "broadcast_cancel_sm operation failed",
    0x110: "Number of Repeated Broadcasts is invalid", 0x111: "Broadcast Service Group is invalid",
    0x112: "Broadcast Channel Indicator is invalid",
}  # fmt: skip


def smpp_error_to_string(status: int) -> str:
    """Kannel's text for a command_status (vendor range 0x400-0x4FF has its own)."""
    text = SMPP_ERROR_TEXT.get(status)
    if text is not None:
        return text
    if 0x400 <= status <= 0x4FF:
        return "Vendor-specific error, please refer to your SMPP provider"
    return "Unknown/Reserved"


def nack_text(reason: str | None = None, command_status: int | None = None) -> bytes:
    """The NACK reply: `NACK/` + `0x%08lx/<text>` for a submit_sm_resp error
    (smsc_smpp.c `handle_pdu`), or + the gateway's reason, or nothing."""
    if command_status is not None:
        return NACK + b"0x%08x/%s" % (command_status, smpp_error_to_string(command_status).encode())
    return NACK + (reason or "").encode()


_SSCANF = re.compile(rb"id:[^ ]{1,64} sub:[-+]?\d+ dlvrd:[-+]?\d+ submit date:[0-9]{1,14} done "
                     rb"date:[0-9]{1,14} stat:[^ ]{1,15} err:([^ ]{1,3})")
_TLV_ERR = re.compile(r"^(\d{1,3}):(\d{1,5})$")


def dlr_err(err: str | None, body: bytes | None) -> bytes | None:
    """The 3 bytes `handle_dlr` stores as meta-data `?smpp?dlr_err=`: the network_error_code
    TLV (smsgw stores it as "type:code" when the text had no err), else GSM (3) + the text err
    as a 16-bit number — read only when the text matches Kannel's sscanf layout, 0 otherwise."""
    if not err:
        return None
    m = _TLV_ERR.match(err)
    if m:
        code = int(m.group(2))
        return bytes((int(m.group(1)) & 0xFF, (code >> 8) & 0xFF, code & 0xFF))
    value = 0
    found = _SSCANF.match(body or b"")
    if found:
        digits = re.match(rb"[-+]?\d+", found.group(1))
        value = int(digits.group(0)) if digits else 0
    return bytes((3, (value >> 8) & 0xFF, value & 0xFF))


@functools.lru_cache(maxsize=1024)
def receipt_meta(dlr_mask: int, err: bytes | None) -> str:
    """A receipt DLR's meta-data: `dlr_find` starts it empty and sets `?orig_msg?dlr_mask=`,
    then `handle_dlr` sets `?smpp?dlr_err=` (when the receipt had an error code). Cached: a
    handful of masks and error codes make every receipt's."""
    groups: MetaGroups = []
    meta_set(groups, "orig_msg", "dlr_mask", str(dlr_mask).encode())
    if err is not None:
        meta_set(groups, "smpp", "dlr_err", err)
    return meta_pack(groups)


def ack_meta(app_meta: str | None, dlr_mask: int, *, submit_resp: bool) -> str:
    """An ACK/NACK DLR's meta-data: the message's own (the sendsms `meta-data`), plus the empty
    `smpp_resp` group a `submit_sm_resp` adds to a one-part message (`handle_pdu`; a split
    message's DLR is made from the original, which never saw a response), plus
    `?orig_msg?dlr_mask=` (`create_dlr_from_msg`)."""
    groups = meta_unpack(app_meta)
    if submit_resp:
        meta_set(groups, "smpp_resp")
    if dlr_mask != -1 and dlr_mask & ENABLED_BITS:
        meta_set(groups, "orig_msg", "dlr_mask", str(dlr_mask).encode())
    return meta_pack(groups)


def message_uuid(outbound_id: int) -> str:
    """smsgw's `%I`: the message id in uuid_unparse's 36-character form."""
    return str(uuid.UUID(int=outbound_id & ((1 << 128) - 1)))


def unix_time(at: datetime) -> int:
    """`time_t` of an aware (or UTC-naive) datetime."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return int(at.timestamp())
