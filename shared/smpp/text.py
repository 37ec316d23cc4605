"""Text on SMPP: GSM 03.38 7-bit, Latin-1, UCS-2; choosing the cheapest; splitting; MO decoding.

Encodings are named by strings: "gsm7" (one septet per octet, as SMPP carries it by default),
"gsm7_packed" (septets packed 8-in-7, only where a connector asks), "latin1" (ISO-8859-1,
data_coding 3), "ascii" (IA5, data_coding 1), "ucs2" (UTF-16BE with surrogate pairs,
data_coding 8) and "binary" (8-bit data, data_coding 4).

Per-part limits (3GPP TS 23.040 9.2.3.24.1 / 23.038): GSM 160 septets single, 153 with an
8-bit reference concatenation UDH, 152 with a 16-bit one (an escaped character counts 2);
8-bit 140 / 134 / 133 octets; UCS-2 70 / 67 / 66 code units. Splitting works on whole
characters, so an escape sequence or a surrogate pair is never cut. National language shift
tables are out of scope.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from smsgw.shared.smpp.pdu import Tag, Tlvs

Encoding = Literal["gsm7", "gsm7_packed", "latin1", "ascii", "ucs2", "binary"]
Method = Literal["udh8", "udh16", "sar", "payload"]

__all__ = [
    "Concat",
    "DecodedText",
    "Part",
    "TextTooLong",
    "capacity",
    "check_udh",
    "choose_encoding",
    "concat_info",
    "count_parts_udh",
    "data_coding_for",
    "decode_message",
    "decode_text",
    "encode_text",
    "estimate",
    "estimate_content",
    "gsm_septets",
    "is_gsm",
    "split",
    "split_bytes",
    "split_udh",
    "transliterate",
    "udh_elements",
]

# GSM 03.38 default alphabet, index = septet value (3GPP TS 23.038 6.2.1). 0x1B is the escape.
_GSM_DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
# Extension table (23.038 6.2.1.1): septet after ESC → character.
_GSM_EXT = {0x0A: "\f", 0x14: "^", 0x28: "{", 0x29: "}", 0x2F: "\\", 0x3C: "[", 0x3D: "~",
            0x3E: "]", 0x40: "|", 0x65: "€"}  # fmt: skip
assert len(_GSM_DEFAULT) == 128

# translate() tables: char → septet(s) as a Latin-1 string, so encoding is translate + encode.
_ENC_TABLE: dict[int, str] = {ord(c): chr(i) for i, c in enumerate(_GSM_DEFAULT) if i != 0x1B}
_ENC_TABLE.update({ord(c): "\x1b" + chr(i) for i, c in _GSM_EXT.items()})
_EXT_CHARS = frozenset(_GSM_EXT.values())
_GSM_CHARS = frozenset(chr(k) for k in _ENC_TABLE)
_NON_GSM = re.compile("[^" + re.escape("".join(sorted(_GSM_CHARS))) + "]")
_EXT_RE = re.compile("[" + re.escape("".join(sorted(_EXT_CHARS))) + "]")
_DEC_TABLE = {i: c for i, c in enumerate(_GSM_DEFAULT) if i != 0x1B}
_ESCAPED = re.compile("\x1b(.?)", re.S)

# Look-alikes that turn a GSM message into UCS-2 (one smart quote triples the cost).
_TRANSLIT: dict[int, str] = {
    ord(k): v
    for k, v in {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "\u00b4": "'",
        "`": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"',
        "\u00ab": '"', "\u00bb": '"', "\u2010": "-", "\u2011": "-", "\u2012": "-",
        "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2212": "-", "\u2026": "...",
        "\u00a0": " ", "\u2002": " ", "\u2003": " ", "\u2009": " ", "\u202f": " ",
        "\u200b": "", "\ufeff": "", "\u2022": "-", "\u00b7": ".", "\u02c6": "^", "\u02dc": "~",
        "\u00e7": "Ç",
    }.items()
}  # fmt: skip

# (single, with 8-bit ref UDH, with 16-bit ref UDH) per unit: septets, octets, code units.
_LIMITS: dict[str, tuple[int, int, int]] = {
    "gsm7": (160, 153, 152),
    "gsm7_packed": (160, 153, 152),
    "latin1": (140, 134, 133),
    "ascii": (140, 134, 133),
    "binary": (140, 134, 133),
    "ucs2": (70, 67, 66),
}
MAX_PARTS = 255
MAX_PAYLOAD = 0xFFFF


class TextTooLong(ValueError):
    """The message needs more than 255 parts (the concatenation counter is one octet)."""


@dataclass(frozen=True, slots=True)
class Part:
    """One submit_sm's worth of a message.

    `short_message` is the encoded payload (UDH included when `udhi` is set, in which case the
    sender ORs 0x40 into esm_class); `tlvs` carries SAR parameters or message_payload;
    `text` is the part's text (None for binary data), kept for logging and tests.
    """

    short_message: bytes
    udhi: bool = False
    tlvs: Tlvs = ()
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Concat:
    """Concatenation info of one MO fragment: `reference`, `total` parts, `seq` (1-based)."""

    reference: int
    total: int
    seq: int


@dataclass(frozen=True, slots=True)
class DecodedText:
    """An MO payload decoded as far as possible.

    `raw` is the user data without UDH (store it: it is the truth); `text` is the best-effort
    decoding (None for binary data); `udh` the raw header if any; `concat` the concatenation
    info from the UDH or SAR TLVs; `encoding` the name of the decoding used.
    """

    raw: bytes
    text: str | None
    encoding: str
    udh: bytes | None = None
    concat: Concat | None = None


# --- GSM 7-bit -----------------------------------------------------------------------------


def is_gsm(text: str) -> bool:
    """True if every character of `text` is in the GSM default alphabet or its extension."""
    return _NON_GSM.search(text) is None


def gsm_septets(text: str) -> int:
    """Septets `text` needs in GSM 7-bit (an extension character counts 2)."""
    return len(text) + len(_EXT_RE.findall(text))


def transliterate(text: str) -> str:
    """Replace typographic look-alikes (smart quotes, dashes, ellipsis, NBSP) by GSM ones."""
    return text.translate(_TRANSLIT)


def _gsm_encode(text: str) -> bytes:
    if not is_gsm(text):
        bad = _NON_GSM.search(text)
        raise UnicodeEncodeError("gsm7", text, bad.start() if bad else 0, 0, "not in GSM 03.38")
    return text.translate(_ENC_TABLE).encode("latin-1")


def _gsm_decode(data: bytes) -> str:
    """Unpacked GSM septets → text; ESC + unknown septet shows the default character."""
    s = data.decode("latin-1")
    if "\x1b" in s:
        s = _ESCAPED.sub(_unescape, s)
        return "".join(_DEC_TABLE.get(ord(c), c) if ord(c) < 0x80 else c for c in s)
    return s.translate(_DEC_TABLE_OR_REPLACE)


def _unescape(match: re.Match[str]) -> str:
    nxt = match.group(1)
    if not nxt:
        return ""
    ext = _GSM_EXT.get(ord(nxt))
    # Escaped result is returned as a character ≥ 0x80 or a GSM-decoded one, so the
    # following default-table pass leaves it alone.
    if ext is not None:
        return ext if ord(ext) >= 0x80 else _PROTECT[ext]
    return nxt


# Extension characters below 0x80 are protected through the default-table pass by mapping
# them to private-use code points and back.
_PROTECT = {c: chr(0xE000 + ord(c)) for c in _EXT_CHARS if ord(c) < 0x80}
_UNPROTECT = {0xE000 + ord(c): c for c in _PROTECT}
_DEC_TABLE_OR_REPLACE = {**_DEC_TABLE, **{i: "\ufffd" for i in range(0x80, 0x100)}}


def pack_septets(septets: bytes, fill_bits: int = 0) -> bytes:
    """Pack septets (one per octet) 8-in-7, after `fill_bits` zero bits (UDH alignment).

    When exactly 7 bits would remain unused the spare septet is a CR, as 23.038 6.1.2.3.1
    requires, so the receiver does not read a stray '@'.
    """
    bits = fill_bits + 7 * len(septets)
    if bits % 8 == 1 and septets:
        septets = septets + b"\r"
    acc = 0
    for i, s in enumerate(septets):
        acc |= (s & 0x7F) << (fill_bits + 7 * i)
    nbytes = (fill_bits + 7 * len(septets) + 7) // 8
    return acc.to_bytes(nbytes, "little") if nbytes else b""


def unpack_septets(data: bytes, fill_bits: int = 0) -> bytes:
    """Inverse of pack_septets; drops the CR pad added for 7 spare bits."""
    acc = int.from_bytes(data, "little") >> fill_bits
    count = (len(data) * 8 - fill_bits) // 7
    out = bytes((acc >> (7 * i)) & 0x7F for i in range(count))
    # Every bit used and a CR last: that CR is the pad for 7 spare bits (a message that
    # really ends with CR on an octet boundary is ambiguous in 23.038 itself).
    if (len(data) * 8 - fill_bits) % 7 == 0 and out.endswith(b"\r"):
        out = out[:-1]
    return out


# --- generic encode / decode ---------------------------------------------------------------


def encode_text(text: str, encoding: Encoding) -> bytes:
    """Encode `text` for short_message/message_payload (no UDH). Raises UnicodeEncodeError."""
    if encoding == "gsm7":
        return _gsm_encode(text)
    if encoding == "gsm7_packed":
        return pack_septets(_gsm_encode(text))
    if encoding == "ucs2":
        return text.encode("utf-16-be", "surrogatepass")
    if encoding == "latin1":
        return text.encode("latin-1")
    if encoding == "ascii":
        return text.encode("ascii")
    raise ValueError(f"cannot encode text as {encoding!r}")


def decode_text(data: bytes, encoding: str) -> str:
    """Decode `data` (no UDH) with `encoding`; never raises (bad input → U+FFFD)."""
    if encoding == "gsm7":
        return _gsm_decode(data).translate(_UNPROTECT)
    if encoding == "gsm7_packed":
        return _gsm_decode(unpack_septets(data)).translate(_UNPROTECT)
    if encoding == "ucs2":
        return data.decode("utf-16-be", "replace")
    if encoding == "latin1":
        return data.decode("latin-1")
    return data.decode(encoding, "replace")


def data_coding_for(encoding: Encoding, data_coding_0: str = "gsm7") -> int:
    """SMPP data_coding value for `encoding` given what 0 means on the connector.

    `data_coding_0` is the connector's meaning of data_coding 0 ("gsm7", "latin1", "ascii").
    GSM 7-bit has no code of its own besides 0, so it needs data_coding_0 == "gsm7".
    """
    if encoding in ("gsm7", "gsm7_packed"):
        if data_coding_0 != "gsm7":
            raise ValueError("GSM 7-bit needs a connector where data_coding 0 means gsm7")
        return 0
    if encoding == data_coding_0:
        return 0
    return {"latin1": 3, "ascii": 1, "ucs2": 8, "binary": 4}[encoding]


def _units(text: str, encoding: str) -> int:
    if encoding in ("gsm7", "gsm7_packed"):
        return gsm_septets(text)
    if encoding == "ucs2":
        if not text or max(text) <= "\uffff":  # no surrogate pairs: the common case, in C
            return len(text)
        return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)
    return len(text)


def _can_encode(text: str, encoding: str) -> bool:
    if encoding in ("gsm7", "gsm7_packed"):
        return is_gsm(text)
    if encoding == "latin1":
        return not text or max(text) <= "\xff"
    if encoding == "ascii":
        return text.isascii()
    return encoding == "ucs2"


def _count_parts(units: int, encoding: str, method: Method) -> int:
    single, udh8, udh16 = _LIMITS[encoding]
    if units <= single:
        return 1
    per = {"udh8": udh8, "udh16": udh16, "sar": single, "payload": udh8}[method]
    return -(-units // per)


def choose_encoding(
    text: str,
    allowed: Sequence[Encoding] = ("gsm7", "ucs2"),
    method: Method = "udh8",
) -> Encoding:
    """Pick the encoding in `allowed` that holds `text` in the fewest parts.

    `allowed` is the connector's policy in order of preference (ties go to the earlier one);
    "ucs2" holds any text. Raises ValueError if none of `allowed` can hold it.
    """
    best: tuple[int, int, Encoding] | None = None
    for rank, enc in enumerate(allowed):
        if _can_encode(text, enc):
            cost = (_count_parts(_units(text, enc), enc, method), rank, enc)
            best = cost if best is None or cost < best else best
    if best is None:
        raise ValueError(f"no encoding among {list(allowed)} can hold the text")
    return best[2]


def estimate(
    text: str,
    allowed: Sequence[Encoding] = ("gsm7", "ucs2"),
    method: Method = "udh8",
    translit: bool = False,
) -> tuple[Encoding, int]:
    """Return (encoding, parts on the air) for `text` under a connector's policy.

    `translit` applies look-alike transliteration first (as the sender would). With
    method "payload" the SMSC splits; the count assumes it uses 8-bit reference UDH.
    """
    if translit:
        text = transliterate(text)
    if allowed:
        # the first choice holding the text in one part is the answer (nothing is cheaper, and
        # ties go to it): a short text needs no comparison of the others
        first = allowed[0]
        if _can_encode(text, first) and _count_parts(_units(text, first), first, method) == 1:
            return first, 1
    enc = choose_encoding(text, allowed, method)
    return enc, _count_parts(_units(text, enc), enc, method)


# --- splitting -----------------------------------------------------------------------------


def _chunks(text: str, encoding: str, limit: int) -> list[str]:
    """Cut `text` into pieces of at most `limit` units, only between characters."""
    if encoding in ("gsm7", "gsm7_packed"):
        cost = [2 if c in _EXT_CHARS else 1 for c in text]
    elif encoding == "ucs2":
        cost = [2 if ord(c) > 0xFFFF else 1 for c in text]
    else:
        return [text[i : i + limit] for i in range(0, len(text), limit)]
    pieces, start, used = [], 0, 0
    for i, c in enumerate(cost):
        if used + c > limit:
            pieces.append(text[start:i])
            start, used = i, 0
        used += c
    pieces.append(text[start:])
    return pieces


def _udh(method: Method, ref: int, total: int, seq: int) -> bytes:
    if method == "udh8":
        return bytes((5, 0x00, 3, ref & 0xFF, total, seq))
    return bytes((6, 0x08, 4, (ref >> 8) & 0xFF, ref & 0xFF, total, seq))


def _sar(ref: int, total: int, seq: int) -> Tlvs:
    return (
        (Tag.SAR_MSG_REF_NUM, (ref & 0xFFFF).to_bytes(2, "big")),
        (Tag.SAR_TOTAL_SEGMENTS, bytes((total,))),
        (Tag.SAR_SEGMENT_SEQNUM, bytes((seq,))),
    )


def _encode_part(piece: str, encoding: Encoding, udh: bytes) -> bytes:
    if encoding == "gsm7_packed":
        # Packed septets start on a septet boundary counted from the start of the UDH
        # (23.040 9.2.3.24), so `fill` zero bits follow the header.
        fill = (7 - (len(udh) * 8) % 7) % 7
        return udh + pack_septets(_gsm_encode(piece), fill)
    return udh + encode_text(piece, encoding)


def split(text: str, encoding: Encoding, method: Method = "udh8", ref: int = 0) -> list[Part]:
    """Split `text` into parts that each fit one submit_sm on the air.

    `encoding` comes from choose_encoding (or the connector); `method` is the connector's
    long-message method: "udh8"/"udh16" put a concatenation header in short_message (set
    esm_class UDHI), "sar" uses the sar_* TLVs, "payload" sends one PDU with message_payload
    (the SMSC splits). `ref` is the concatenation reference (8-bit for udh8, 16-bit otherwise);
    pick it per message, e.g. from a counter. Raises TextTooLong above 255 parts and
    UnicodeEncodeError when `text` does not fit `encoding`.
    """
    units = _units(text, encoding)
    single, udh8, udh16 = _LIMITS[encoding]
    if method == "payload":
        data = encode_text(text, encoding)
        if units <= single:
            return [Part(data, text=text)]
        if len(data) > MAX_PAYLOAD:
            raise TextTooLong(f"{len(data)} octets exceed message_payload")
        return [Part(b"", tlvs=((Tag.MESSAGE_PAYLOAD, data),), text=text)]
    if units <= single:
        return [Part(encode_text(text, encoding), text=text)]
    limit = {"udh8": udh8, "udh16": udh16, "sar": single}[method]
    pieces = _chunks(text, encoding, limit)
    total = len(pieces)
    if total > MAX_PARTS:
        raise TextTooLong(f"{total} parts exceed {MAX_PARTS}")
    parts = []
    for seq, piece in enumerate(pieces, 1):
        if method == "sar":
            parts.append(Part(encode_text(piece, encoding), tlvs=_sar(ref, total, seq), text=piece))
        else:
            udh = _udh(method, ref, total, seq)
            parts.append(Part(_encode_part(piece, encoding, udh), udhi=True, text=piece))
    return parts


def split_bytes(data: bytes, method: Method = "udh8", ref: int = 0) -> list[Part]:
    """Split 8-bit binary `data` (140 / 134 / 133 octets per part) like `split`."""
    single, udh8, udh16 = _LIMITS["binary"]
    if len(data) <= single:
        return [Part(data)]
    if method == "payload":
        return [Part(b"", tlvs=((Tag.MESSAGE_PAYLOAD, data),))]
    limit = {"udh8": udh8, "udh16": udh16, "sar": single}[method]
    pieces = [data[i : i + limit] for i in range(0, len(data), limit)]
    if len(pieces) > MAX_PARTS:
        raise TextTooLong(f"{len(pieces)} parts exceed {MAX_PARTS}")
    if method == "sar":
        return [Part(p, tlvs=_sar(ref, len(pieces), i)) for i, p in enumerate(pieces, 1)]
    return [Part(_udh(method, ref, len(pieces), i) + p, udhi=True) for i, p in enumerate(pieces, 1)]


# --- a client's user data header ----------------------------------------------------------
# An MT may carry the client's own UDH (Kannel `udh`, the JSON API's "udh"): port addressing,
# WAP push, OTA, their own concatenation. It leads every part; when the message needs several
# parts the concatenation element is appended to it and its length octet raised, as Kannel's
# `sms_split` / `prepend_catenation_udh` (gw/sms.c) do. Capacities are what is left of the 140
# octets of TP-User-Data (3GPP TS 23.040 9.2.3.24): (140 - UDH) octets, their septets for GSM
# 7-bit (the fill bits round down), their pairs for UCS-2.

MAX_UD = 140
_CONCAT_IE = {"udh8": 5, "udh16": 6}  # octets a concatenation element adds: IEI, IEDL, data


def udh_elements(udh: bytes) -> list[tuple[int, bytes]]:
    """The (IEI, data) information elements of a UDH (its length octet first).

    Raises ValueError naming what is wrong: the length octet does not match, an element is cut
    off, or the header is longer than 140 octets."""
    if not udh:
        raise ValueError("is empty")
    if len(udh) > MAX_UD:
        raise ValueError(f"is {len(udh)} octets, more than {MAX_UD}")
    if udh[0] + 1 != len(udh):
        raise ValueError(f"its length octet says {udh[0]} octets follow, {len(udh) - 1} do")
    out, i = [], 1
    while i < len(udh):
        if i + 2 > len(udh) or i + 2 + udh[i + 1] > len(udh):
            raise ValueError(f"the information element at octet {i} is cut off")
        out.append((udh[i], udh[i + 2 : i + 2 + udh[i + 1]]))
        i += 2 + udh[i + 1]
    return out


def check_udh(udh: bytes) -> bool:
    """Validate a client's UDH (see `udh_elements`); True when it carries its own
    concatenation element (IEI 0x00 or 0x08), so the message must fit one part."""
    return any(iei in (0x00, 0x08) for iei, _ in udh_elements(udh))


def capacity(encoding: str, udh_len: int = 0) -> int:
    """Units (septets, octets, UCS-2 code units) one part holds next to a UDH of `udh_len`
    octets, its length octet included (0: no UDH)."""
    octets = MAX_UD - udh_len
    if encoding in ("gsm7", "gsm7_packed"):
        return max(0, octets * 8 // 7)
    if encoding == "ucs2":
        return max(0, octets // 2)
    return max(0, octets)


def count_parts_udh(units: int, encoding: str, udh: bytes, method: Method = "udh8") -> int:
    """Parts a content of `units` needs next to the client's `udh` with `method` (what
    `split_udh` makes). Raises TextTooLong when it cannot be sent."""
    own_concat = check_udh(udh)
    if units <= capacity(encoding, len(udh)) or method == "payload":
        return 1
    if own_concat:
        raise TextTooLong("the UDH carries its own concatenation element, so the content "
                          "must fit one message")
    if method == "sar":
        per = capacity(encoding, len(udh))
    else:
        per = capacity(encoding, len(udh) + _CONCAT_IE[method])
    if per <= 0:
        raise TextTooLong("the UDH leaves no room for the content")
    total = -(-units // per)
    if total > MAX_PARTS:
        raise TextTooLong(f"{total} parts exceed {MAX_PARTS}")
    return total


def estimate_content(content: str | bytes, allowed: Sequence[Encoding] = ("gsm7", "ucs2"),
                     udh: bytes | None = None, method: Method = "udh8") -> tuple[Encoding, int]:
    """(encoding, parts) of a text or 8-bit `content` next to the client's `udh` (the
    receiver's answer and its parts limit). Raises ValueError / TextTooLong."""
    if isinstance(content, bytes):
        if udh:
            return "binary", count_parts_udh(len(content), "binary", udh, method)
        return "binary", _count_parts(len(content), "binary", method)
    if not udh:
        return estimate(content, allowed, method)
    enc = choose_encoding(content, allowed, method)
    return enc, count_parts_udh(_units(content, enc), enc, udh, method)


def _with_concat(udh: bytes, method: Method, ref: int, total: int, seq: int) -> bytes:
    ie = _udh(method, ref, total, seq)[1:]  # the element without the length octet
    return bytes((len(udh) - 1 + len(ie),)) + udh[1:] + ie


def split_udh(content: str | bytes, encoding: Encoding, udh: bytes, method: Method = "udh8",
              ref: int = 0) -> list[Part]:
    """Split `content` (text in `encoding`, or 8-bit data with encoding "binary") into parts
    that each lead with the client's `udh`, plus the concatenation element when there are
    several (`udh8`/`udh16`; `sar` puts it in TLVs, `payload` sends one message_payload).
    Raises TextTooLong / UnicodeEncodeError like `split`."""
    binary = isinstance(content, bytes)
    units = len(content) if binary else _units(content, encoding)  # type: ignore[arg-type]
    total = count_parts_udh(units, encoding, udh, method)

    def encode(piece: str | bytes, header: bytes) -> bytes:
        if isinstance(piece, bytes):
            return header + piece
        return _encode_part(piece, encoding, header)

    if total == 1:
        data = encode(content, udh)
        if method == "payload" and len(data) > MAX_UD:
            if len(data) > MAX_PAYLOAD:
                raise TextTooLong(f"{len(data)} octets exceed message_payload")
            return [Part(b"", udhi=True, tlvs=((Tag.MESSAGE_PAYLOAD, data),),
                         text=None if binary else content)]  # type: ignore[arg-type]
        return [Part(data, udhi=True, text=None if binary else content)]  # type: ignore[arg-type]
    if method == "sar":
        limit = capacity(encoding, len(udh))
    else:
        limit = capacity(encoding, len(udh) + _CONCAT_IE[method])
    if binary:
        pieces: list[str] | list[bytes] = [content[i : i + limit]  # type: ignore[misc]
                                           for i in range(0, len(content), limit)]
    else:
        pieces = _chunks(content, encoding, limit)  # type: ignore[arg-type]
    total = len(pieces)  # a GSM escape is never cut, which may take one part more
    if total > MAX_PARTS:
        raise TextTooLong(f"{total} parts exceed {MAX_PARTS}")
    parts = []
    for seq, piece in enumerate(pieces, 1):
        text = None if binary else piece
        if method == "sar":
            parts.append(Part(encode(piece, udh), udhi=True, tlvs=_sar(ref, total, seq),
                              text=text))  # type: ignore[arg-type]
        else:
            parts.append(Part(encode(piece, _with_concat(udh, method, ref, total, seq)),
                              udhi=True, text=text))  # type: ignore[arg-type]
    return parts


# --- MO decoding ---------------------------------------------------------------------------

_SMPP_CHARSETS = {1: "ascii", 3: "latin1", 5: "shift_jis", 6: "iso8859_5", 7: "iso8859_8",
                  8: "ucs2", 10: "iso2022_jp", 13: "euc_jis_2004", 14: "euc_kr"}  # fmt: skip


def _alphabet(data_coding: int, data_coding_0: str) -> str:
    """Which alphabet a data_coding value announces (SMPP 3.4 5.2.19 + 23.038 4)."""
    if data_coding == 0:
        return data_coding_0
    if data_coding < 0x10:
        return _SMPP_CHARSETS.get(data_coding, "binary")
    group = data_coding >> 4
    if group <= 0x3:  # general data coding; bits 3..2 give the alphabet
        return ("gsm7", "binary", "ucs2", "binary")[(data_coding >> 2) & 3]
    if group in (0xC, 0xD):  # message waiting, GSM 7-bit
        return "gsm7"
    if group == 0xE:  # message waiting, UCS-2
        return "ucs2"
    if group == 0xF:  # data coding / message class: bit 2 = 8-bit data
        return "binary" if data_coding & 0x04 else "gsm7"
    return "binary"


def _parse_udh(udh: bytes) -> Concat | None:
    i = 0
    while i + 2 <= len(udh):
        iei, length = udh[i], udh[i + 1]
        value = udh[i + 2 : i + 2 + length]
        if iei == 0x00 and len(value) == 3 and length == 3:
            return Concat(value[0], value[1], value[2])
        if iei == 0x08 and len(value) == 4 and length == 4:
            return Concat((value[0] << 8) | value[1], value[2], value[3])
        i += 2 + length
    return None


def _sar_concat(tlvs: Iterable[tuple[int, bytes]]) -> Concat | None:
    found = {tag: value for tag, value in tlvs}
    ref = found.get(Tag.SAR_MSG_REF_NUM)
    total = found.get(Tag.SAR_TOTAL_SEGMENTS)
    seq = found.get(Tag.SAR_SEGMENT_SEQNUM)
    if ref is None or not total or not seq:
        return None
    return Concat(int.from_bytes(ref, "big"), total[0], seq[0])


def concat_info(short_message: bytes, esm_class: int, tlvs: Tlvs = ()) -> Concat | None:
    """Concatenation info of a deliver_sm: from its UDH (IEI 0x00/0x08) or its SAR TLVs."""
    if esm_class & 0x40 and short_message:
        udhl = short_message[0]
        found = _parse_udh(short_message[1 : 1 + udhl])
        if found is not None:
            return found
    return _sar_concat(tlvs)


def decode_message(
    short_message: bytes,
    data_coding: int,
    esm_class: int = 0,
    tlvs: Tlvs = (),
    data_coding_0: str = "gsm7",
) -> DecodedText:
    """Decode an MO deliver_sm/data_sm payload, keeping the raw bytes.

    The payload is `short_message`, or the message_payload TLV when short_message is empty.
    `esm_class` bit 0x40 (UDHI) says a UDH leads the payload; `data_coding_0` is the
    connector's meaning of data_coding 0. Never raises on bad input.
    """
    payload = short_message
    if not payload:
        payload = next((v for t, v in tlvs if t == Tag.MESSAGE_PAYLOAD), b"")
    udh = None
    if esm_class & 0x40 and payload:
        end = 1 + payload[0]
        udh, payload = payload[:end], payload[end:]
    concat = concat_info(udh or b"", 0x40 if udh else 0, tlvs)
    alphabet = _alphabet(data_coding, data_coding_0)
    if alphabet == "binary":
        text = _best_effort(payload)
    elif alphabet == "gsm7_packed" and udh:
        fill = (7 - (len(udh) * 8) % 7) % 7
        text = _gsm_decode(unpack_septets(payload, fill)).translate(_UNPROTECT)
    else:
        text = decode_text(payload, alphabet)
    if text and "\x00" in text:
        # U+0000 is valid UCS-2/Latin-1 but no Postgres text can hold it: an MO carrying one
        # would fail its insert and be redelivered by the SMSC forever. Store U+FFFD instead,
        # as a decoder does with bad bytes (the payload keeps the original bytes).
        text = text.replace("\x00", "\ufffd")
    return DecodedText(payload, text, alphabet, udh, concat)


def _best_effort(payload: bytes) -> str | None:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
