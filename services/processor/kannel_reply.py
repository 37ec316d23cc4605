"""Kannel sms-service replies: an application's HTTP answer to a forwarded MO → reply MT rows.

A `forward` rule action with `reply_from_body` (services/processor/rules.py `ReplyFromBody`)
behaves as a Kannel 1.4.5 `get-url`/`post-url` sms-service does with the answer of the
application (gw/smsbox.c `url_result_thread`, `get_x_kannel_from_headers`, `fill_message`,
`send_message`; gw/sms.c `sms_split`): this module is that part, pure (no I/O), so each step
is testable alone. The callback delivery (`callbacks.py`) reads the answer (at most
`max_body_bytes`) and writes the rows this module returns in the transaction that marks the
callback done.

The steps, in Kannel's order:
1. `max_messages` 0: no reply at all (`send_message`: "No reply sent, denied").
2. Content-Type (`http_header_get_content_type`): none is `application/octet-stream`; a `text/*`
   type without a charset is read as `default_charset` (ISO-8859-1, RFC 2616 3.7.1, as Kannel).
   `text/plain` is the body as it is; `text/html` and `text/vnd.wap.wml` lose their tags,
   comments and entities and their blanks are squeezed (`html_to_sms`), after the `prefix` …
   `suffix` cut when both are set; `application/octet-stream` is 8-bit data (binary, sent as
   it is) unless `X-Kannel-Coding` says otherwise; `text/xml` is Kannel's XML reply
   (`parse_xml_reply`: `<message><submit>` with `ud`, `oa/number`, `dcs/…`,
   `statusrequest/…`, … standing for the X-Kannel headers, which are then not read); any other
   type, or XML that is not such a document, is answered with `unrepresentable_message`, as
   Kannel answers with its `reply_couldnotrepresent` text.
3. The charset: text that does not decode in it is answered with `unrepresentable_message`
   (Kannel's `sms_charset_processing` failing). 8-bit data is never converted.
4. `X-Kannel-*` headers (`get_x_kannel_from_headers`) apply only with
   `accept_x_kannel_headers`; without it they are ignored and named in the result's `denied`
   (Kannel logs "Tried to change …, denied"). `HEADERS` says what each one sets; their values
   are checked as sendsms checks the same parameters (services/receiver/sendsms.py), and a
   value smsgw cannot honour refuses the reply (never sent without it).
5. Empty content: nothing with `omit_empty`, else `empty_message` (Kannel's
   `reply-emptymessage`).
6. Split (`sms_split`): `header`/`footer` on every part, `split_suffix` on every part but the
   last, cut after the last of `split_chars` that fits, at most `max_messages` parts (the rest
   is dropped, as in Kannel), part sizes next to the application's UDH as Kannel counts them.
   With `concatenation` the parts are joined again into ONE MT that the sender sends as a
   concatenated message (Kannel joins them for the bearerbox to concatenate); without it each
   part is an MT of its own, and only the first asks for a DLR.
7. Numbers as Kannel swaps them: from the number the MO was sent to (or the action's `from`,
   Kannel's `faked-sender`) to the MO's sender, unless `X-Kannel-From`/`X-Kannel-To` say
   otherwise (both normalised and checked like any MT's numbers).

Deliberate differences from Kannel (each one keeps a message that Kannel would mangle):
- Text is stored as text and the sender picks GSM 7-bit or UCS-2 as for every MT; Kannel's
  `coding=0` turns characters outside GSM 03.38 into '?'. `X-Kannel-Coding: 0` is therefore
  "text, automatic" as for sendsms `coding=0`, and the split uses the encoding the text needs.
- When the remainder of a text fits the last part, Kannel still cuts it `split_suffix` short
  (and drops those characters); here the last part, which carries no suffix, takes them.
- Header, footer and suffix are counted in the units of the encoding (a GSM extension
  character is two septets); Kannel counts their UTF-8 octets.
- A UDH that carries its own concatenation element limits the reply to one part (Kannel would
  add a second concatenation element to each part).
- A refusal (a header that cannot be honoured, a number that is not one) sends nothing rather
  than a text: `outcome` "refused" with the reason, logged and in the callback's events.

Not supported (a refusal naming the header): `X-Kannel-Compress` (`dcs/compress`) other than 0.
"""

from __future__ import annotations

import codecs
import contextlib
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import unquote_to_bytes
from xml.etree import ElementTree

from smsgw.services.processor.rules import ReplyFromBody
from smsgw.shared.domain.numbers import (
    InvalidNumber,
    normalise,
    normalise_recipient,
    normalise_sender,
)
from smsgw.shared.domain.urlguard import UnsafeUrl, check_http_url
from smsgw.shared.smpp.fields import (
    MAX_TLVS,
    TlvCatalog,
    parse_meta_data,
    registered_delivery_for_mask,
)
from smsgw.shared.smpp.text import check_udh, gsm_septets, is_gsm

Outcome = Literal["queued", "omitted", "refused"]

MAX_UD: Final = 140  # octets of user data in one SMS (Kannel's sms_max_length)
CATENATE_UDH_LEN: Final = 5  # gw/sms.c: the concatenation element, its IEI and length included

# Bounds as sendsms takes them (services/receiver/sendsms.py), in minutes.
_VALIDITY_MAX_MIN: Final = 7 * 24 * 60
_DEFERRED_MAX_MIN: Final = 30 * 24 * 60

HEADERS: Final[Mapping[str, str]] = {
    # X-Kannel header → what it sets on the reply (as the sendsms parameter of the same name)
    "X-Kannel-From": "the sender (E.164, a short code or an alphanumeric id)",
    "X-Kannel-To": "the recipient (E.164 or a short code)",
    "X-Kannel-SMSC": "the connector (one of [[connectors]]), as sendsms `smsc`",
    "X-Kannel-Coding": "0 text (GSM 7-bit or UCS-2 as needed), 1 8-bit data, 2 UCS-2",
    "X-Kannel-UDH": "the user data header (hex, or URL-encoded octets)",
    "X-Kannel-MClass": "the message class 0-3 (0: flash)",
    "X-Kannel-MWI": "the message waiting indication 0-7",
    "X-Kannel-PID": "the protocol id 0-255",
    "X-Kannel-Alt-DCS": "the 0xFX data coding form (0, 1)",
    "X-Kannel-RPI": "the reply path (1 set, 2 cleared)",
    "X-Kannel-DLR-Mask": "the dlr-mask (0-63)",
    "X-Kannel-DLR-URL": "the dlr-url (Kannel escapes, as sendsms `dlr-url`)",
    "X-Kannel-Validity": "validity in minutes from now",
    "X-Kannel-Deferred": "send after this many minutes",
    "X-Kannel-Priority": "priority 0-3: the SMPP priority_flag and the queue order",
    "X-Kannel-Account": "kept with the reply as `account` (dlr-url %o)",
    "X-Kannel-BInfo": "the SMPP service_type (up to 5 characters), as Kannel sends it",
    "X-Kannel-Meta-Data": "TLVs of the ?smpp? group",
    "X-Kannel-Compress": "only 0 (GSM 03.42 compression is not supported)",
}
# Header names are case-insensitive; Kannel's spelling, by lower case.
_NAMES: Final[Mapping[str, str]] = {n.lower(): n for n in HEADERS}
_SMPP_INTS: Final = (("X-Kannel-MClass", "mclass", 0, 3), ("X-Kannel-MWI", "mwi", 0, 7),
                     ("X-Kannel-PID", "pid", 0, 255), ("X-Kannel-Alt-DCS", "alt_dcs", 0, 1),
                     ("X-Kannel-RPI", "rpi", 0, 2))
_HTML_TYPES: Final = frozenset({"text/html", "text/vnd.wap.wml"})
_COMMENT_RE: Final = re.compile(r"<!--.*?(?:-->|\Z)", re.S)
_TAG_RE: Final = re.compile(r"<[^>]*(?:>|\Z)")
_BLANKS_RE: Final = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the application answered: status, headers (in order, repeats kept), body."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class ReplyPlan:
    """The reply MTs of one answer (`outbound` rows without `to_hash`), or why there are none.

    `outcome`: "queued" (rows), "omitted" (nothing, by the settings: max_messages 0, an empty
    body with omit_empty), "refused" (nothing: the answer asks for what cannot be sent;
    `reason` says what). `denied`: the X-Kannel headers ignored for want of
    `accept_x_kannel_headers`.
    """

    outcome: Outcome
    rows: tuple[dict[str, Any], ...] = ()
    reason: str | None = None
    denied: tuple[str, ...] = ()

    def detail(self) -> dict[str, Any]:
        """The callback event's detail (no body text, no number)."""
        out: dict[str, Any] = {"outcome": self.outcome, "parts": len(self.rows)}
        if self.reason:
            out["reason"] = self.reason
        if self.denied:
            out["denied"] = list(self.denied)
        return out


class _Refused(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the snapshot a forward stores (callbacks.reply) ------------------------------------------

def snapshot(*, options: ReplyFromBody, sender: str, recipient: str, rule_id: int,
             service: str) -> dict[str, Any]:
    """What a forward stores in `callbacks.reply`: the swapped numbers, the rule and its
    sms-service settings (`options`)."""
    return {"from": options.from_ or sender, "to": recipient, "rule_id": rule_id,
            "service": service,
            "options": options.model_dump(mode="json", by_alias=True, exclude_none=True)}


def options_of(reply: Mapping[str, Any]) -> ReplyFromBody:
    """The settings of a stored snapshot (validated again: it may come from an older release)."""
    return ReplyFromBody.model_validate(reply.get("options") or {})


# --- Content-Type -------------------------------------------------------------------------------

def content_type(value: str | None, default_charset: str) -> tuple[str, str]:
    """(media type in lower case, charset or "") as Kannel's `http_header_get_content_type`
    reads them: none → application/octet-stream; a text/* type without a charset →
    `default_charset`."""
    if value is None:
        return "application/octet-stream", ""
    media, _, params = value.partition(";")
    media = media.strip().lower()
    charset = ""
    for param in params.split(";"):
        name, eq, val = param.partition("=")
        if eq and name.strip().lower() == "charset":
            charset = val.strip().strip('"').strip()
            break
    if not charset and media.startswith("text"):
        charset = default_charset
    return media, charset


def html_to_text(text: str) -> str:
    """Kannel's `html_to_sms`: comments and tags dropped, entities decoded, blanks squeezed."""
    text = _TAG_RE.sub("", _COMMENT_RE.sub("", text))
    return _BLANKS_RE.sub(" ", html.unescape(text)).strip()


def cut_prefix_suffix(text: str, prefix: str | None, suffix: str | None) -> str:
    """Kannel's `strip_prefix_and_suffix`: keep what lies between the first `prefix` and the
    first `suffix` after it (case-insensitive); the text unchanged when either is missing."""
    if not prefix or not suffix:
        return text
    folded = text.casefold()
    start = folded.find(prefix.casefold())
    if start < 0:
        return text
    start += len(prefix)
    end = folded.find(suffix.casefold(), start)
    return text if end < 0 else text[start:end]


# --- splitting (gw/sms.c sms_split) -------------------------------------------------------------

def units(text: str, encoding: str) -> int:
    """Length in the units a part is measured in: septets, UTF-16 code units or octets
    ("binary": a latin-1 string standing for the octets)."""
    if encoding == "gsm7":
        return gsm_septets(text)
    if encoding == "ucs2":
        return len(text) + sum(1 for c in text if ord(c) > 0xFFFF)
    return len(text)


def limits(encoding: str, udh_len: int = 0) -> tuple[int, int]:
    """Units per part (one SMS, one part of a concatenated SMS) next to a UDH of `udh_len`
    octets, as sms_split counts them from 140 octets: 7-bit (140 - udh) * 8 / 7, UCS-2 half
    the octets, 8-bit the octets; a concatenated part adds a 5-octet element (and the UDH's
    length octet when there was no UDH)."""
    single = MAX_UD - udh_len
    concat = MAX_UD - (udh_len or 1) - CATENATE_UDH_LEN

    def of(octets: int) -> int:
        if encoding == "gsm7":
            return octets * 8 // 7
        return octets // 2 if encoding == "ucs2" else octets

    return of(single), of(concat)


def _cut(text: str, encoding: str, limit: int) -> int:
    """The longest prefix of `text` (in characters) within `limit` units."""
    if encoding == "binary":
        return min(len(text), limit)
    used = 0
    for i, c in enumerate(text):
        used += units(c, encoding)
        if used > limit:
            return i
    return len(text)


def _extract(rest: str, encoding: str, split_chars: str, limit: int) -> tuple[str, str]:
    # Kannel's extract_msgdata_part: cut after the last split character that fits
    n = _cut(rest, encoding, limit)
    if n < len(rest) and split_chars:
        for i in range(n, 0, -1):
            if rest[i - 1] in split_chars:
                n = i
                break
    return rest[:n], rest[n:]


def split_reply(text: str, encoding: str, *, header: str = "", footer: str = "",
                split_chars: str = "", split_suffix: str = "", concatenation: bool = False,
                max_messages: int = 1, udh_len: int = 0) -> list[str]:
    """Kannel's `sms_split` for a reply: the parts' contents, decorations included.

    `encoding` ("gsm7", "ucs2", "binary" — a latin-1 string standing for octets) sizes the
    parts next to a UDH of `udh_len` octets; with `concatenation` a content longer than one SMS
    is cut in concatenated-part sizes. Raises ValueError when the decorations (or the UDH)
    leave no room.
    """
    single, concat = limits(encoding, udh_len)
    decoration = units(header, encoding) + units(footer, encoding)
    suffix = units(split_suffix, encoding)
    max_len = single - decoration
    if units(text, encoding) > max_len and concatenation:
        max_len = concat - decoration
    if max_len - suffix <= 0:
        raise ValueError("header, footer, split_suffix and UDH leave no room for the content")
    parts: list[str] = []
    rest = text
    while True:
        fits = units(rest, encoding) <= max_len
        last = fits or len(parts) + 1 >= max_messages
        piece, rest = _extract(rest, encoding, split_chars,
                               max_len if fits or last else max_len - suffix)
        parts.append(header + piece + footer + ("" if last else split_suffix))
        if last:
            return parts


# --- X-Kannel headers ---------------------------------------------------------------------------

def _kannel_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    # Kannel's spelling → value; the last of repeated headers wins, as in
    # get_x_kannel_from_headers' loop
    out: dict[str, str] = {}
    for name, value in headers:
        canonical = _NAMES.get(name.lower())
        if canonical is not None:
            out[canonical] = value.strip()
    return out


def _int(headers: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise _Refused(f"{name}: {raw[:40]!r} is not an integer") from None
    if not low <= value <= high:
        raise _Refused(f"{name}: {value} is outside {low}-{high}")
    return value


def _sender(raw: str) -> str:
    # Kannel-era applications write international numbers as bare digits, as at sendsms
    try:
        if any(c.isalpha() for c in raw):
            return normalise_sender(raw)
        return normalise(raw, assume_international=True)
    except InvalidNumber as exc:
        raise _Refused(f"X-Kannel-From: {exc}") from None


def _recipient(raw: str, header: bool) -> str:
    try:
        return normalise_recipient(raw, assume_international=True)
    except InvalidNumber as exc:
        where = "X-Kannel-To" if header else "the MO's sender"
        raise _Refused(f"{where}: {exc}") from None


def _udh(raw: str) -> bytes:
    # get_x_kannel_from_headers: hex, or else URL-encoded octets
    try:
        udh = bytes.fromhex(raw)
    except ValueError:
        udh = unquote_to_bytes(raw)
    try:
        check_udh(udh)
    except ValueError as exc:
        raise _Refused(f"X-Kannel-UDH: {exc}") from None
    return udh


# --- the whole answer ---------------------------------------------------------------------------

@dataclass(slots=True)
class _Fields:
    """What the answer sets on the reply (Kannel's Msg fields for an mt_reply)."""

    sender: str
    recipient: str
    to_from_header: bool = False
    coding: int | None = None
    udh: bytes | None = None
    smpp: dict[str, Any] = field(default_factory=dict)
    route_hint: str | None = None
    dlr_url: str | None = None
    dlr_mask: int | None = None
    validity: int | None = None
    deferred: int | None = None
    priority: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Context:
    connectors: frozenset[str]
    tlvs: TlvCatalog


def _apply_headers(f: _Fields, headers: Mapping[str, str], ctx: _Context) -> None:
    """fill_message, for the headers accepted (see `HEADERS`)."""
    if "X-Kannel-From" in headers:
        f.sender = _sender(headers["X-Kannel-From"])
    if "X-Kannel-To" in headers:
        f.recipient, f.to_from_header = headers["X-Kannel-To"], True
    smsc = headers.get("X-Kannel-SMSC")
    if smsc is not None:
        if smsc not in ctx.connectors:
            raise _Refused(f"X-Kannel-SMSC: {smsc[:40]!r} is not a configured connector")
        f.route_hint = smsc
    coding = _int(headers, "X-Kannel-Coding", 0, 2)
    f.coding = coding if coding is not None else f.coding
    if _int(headers, "X-Kannel-Compress", 0, 1):
        raise _Refused("X-Kannel-Compress: compressed SMS (GSM 03.42) is not supported")
    if "X-Kannel-UDH" in headers:
        f.udh = _udh(headers["X-Kannel-UDH"])
    _apply_smpp(f, headers, ctx)
    _apply_delivery(f, headers)


def _apply_smpp(f: _Fields, headers: Mapping[str, str], ctx: _Context) -> None:
    # the fields sendsms stores in outbound.smpp (shared/smpp/fields.py)
    for name, key, low, high in _SMPP_INTS:
        value = _int(headers, name, low, high)
        if value is not None and (key != "rpi" or value > 0):
            f.smpp[key] = value
    binfo = headers.get("X-Kannel-BInfo")
    if binfo:  # SMPP 3.4: Kannel sends binfo as the service_type (msg_to_pdu)
        if len(binfo) > 5 or not all(" " <= c <= "~" for c in binfo):
            raise _Refused("X-Kannel-BInfo: is the SMPP service_type: up to 5 ASCII characters")
        f.smpp["service_type"] = binfo
        f.meta["binfo"] = binfo
    meta_data = headers.get("X-Kannel-Meta-Data")
    if meta_data:
        try:
            groups = parse_meta_data(meta_data)
            if set(groups) - {"smpp"}:
                raise ValueError("only the ?smpp? group is used here")
            tlvs = dict(ctx.tlvs.from_text(k, v) for k, v in groups.get("smpp", {}).items())
        except ValueError as exc:
            raise _Refused(f"X-Kannel-Meta-Data: {exc}") from None
        if len(tlvs) > MAX_TLVS:
            raise _Refused(f"X-Kannel-Meta-Data: at most {MAX_TLVS} TLVs")
        if tlvs:
            f.smpp["tlvs"] = tlvs
        f.meta["meta_data"] = meta_data[:1000]
    account = headers.get("X-Kannel-Account")
    if account:
        if len(account) > 64 or any(c in account for c in "[]\r\n"):
            raise _Refused("X-Kannel-Account: misformed or too long")
        f.meta["account"] = account


def _apply_delivery(f: _Fields, headers: Mapping[str, str]) -> None:
    dlr_url = headers.get("X-Kannel-DLR-URL")
    if dlr_url is not None:
        try:
            check_http_url(dlr_url)
        except UnsafeUrl as exc:
            raise _Refused(f"X-Kannel-DLR-URL: {exc}") from None
        f.dlr_url = dlr_url
    mask = _int(headers, "X-Kannel-DLR-Mask", 0, 63)
    f.dlr_mask = mask if mask is not None else f.dlr_mask
    f.validity = _int(headers, "X-Kannel-Validity", 1, _VALIDITY_MAX_MIN)
    f.deferred = _int(headers, "X-Kannel-Deferred", 0, _DEFERRED_MAX_MIN)
    if f.validity is not None and f.deferred is not None and f.validity <= f.deferred:
        raise _Refused("X-Kannel-Validity: ends before the deferred delivery")
    f.priority = _int(headers, "X-Kannel-Priority", 0, 3)
    if f.priority:  # Kannel's priority is SMPP's; it orders our queue too (as sendsms)
        f.smpp["priority_flag"] = f.priority


def _decode(body: bytes, charset: str) -> str:
    try:
        info = codecs.lookup(charset)
        if not getattr(info, "_is_text_encoding", True):  # rot13, base64 …: no charsets
            raise LookupError(charset)
        return body.decode(info.name)
    except (LookupError, UnicodeDecodeError) as exc:
        raise UnicodeError(str(exc)) from exc


def build(reply: Mapping[str, Any], answer: Answer, *, callback_id: int, inbound_id: int | None,
          now: datetime, connectors: Iterable[str] = (),
          tlvs: TlvCatalog | None = None) -> ReplyPlan:
    """The reply MTs of `answer` to a forward whose `callbacks.reply` snapshot is `reply`.

    `now` dates validity and deferral; `connectors` are the names X-Kannel-SMSC may take and
    `tlvs` the TLVs X-Kannel-Meta-Data may set. Never raises for anything the application
    sent: what cannot be sent is a "refused" plan.
    """
    o = options_of(reply)
    if o.max_messages == 0:
        return ReplyPlan("omitted", reason="max_messages is 0")
    media, charset = content_type(
        next((v for k, v in reversed(answer.headers) if k.lower() == "content-type"), None),
        o.default_charset)
    xml: XmlReply | None = None
    if media == "text/xml":  # the fields come from the document, not from the headers
        xml = parse_xml_reply(answer.body)
        x = dict(xml.fields) if xml is not None else {}
    else:
        x = _kannel_headers(answer.headers)
    denied: tuple[str, ...] = ()
    if x and not o.accept_x_kannel_headers:
        denied, x = tuple(sorted(x)), {}
    f = _Fields(sender=str(reply.get("from") or ""), recipient=str(reply.get("to") or ""),
                dlr_url=o.dlr_url, dlr_mask=o.dlr_mask)
    try:
        ctx = _Context(frozenset(connectors), tlvs or TlvCatalog())
        if media == "text/xml":
            content = _xml_content(xml, o, x, f, ctx)
        else:
            content = _content(answer, media, charset, o, x, f, ctx)
        if not content:
            if o.omit_empty:
                return ReplyPlan("omitted", reason="empty body (omit_empty)", denied=denied)
            content = o.empty_message
        to_addr = _recipient(f.recipient, f.to_from_header)
        bodies = _split(content, o, f)
    except _Refused as exc:
        return ReplyPlan("refused", reason=exc.reason, denied=denied)
    rows = tuple(_row(reply, o, f, body, to_addr=to_addr, callback_id=callback_id,
                      inbound_id=inbound_id, now=now, first=i == 0)
                 for i, body in enumerate(bodies))
    return ReplyPlan("queued", rows=rows, denied=denied)


def _content(answer: Answer, media: str, charset: str, o: ReplyFromBody,
             x: Mapping[str, str], f: _Fields, ctx: _Context) -> str | bytes:
    """url_result_thread: the reply's text (str) or 8-bit data (bytes) by content type, the
    headers applied."""
    if media not in _HTML_TYPES and media not in ("text/plain", "application/octet-stream"):
        return o.unrepresentable_message
    if media == "application/octet-stream":
        f.coding = 1  # Kannel: octet-stream is 8-bit data, unless X-Kannel-Coding says not
    _apply_headers(f, x, ctx)
    if f.coding == 1 and "mwi" in f.smpp:
        raise _Refused("X-Kannel-MWI: a message waiting indication cannot carry 8-bit data")
    html_body = media in _HTML_TYPES
    if f.coding == 1:  # sms_charset_processing converts 7-bit and UCS-2 text only
        if not html_body:
            return answer.body
        octets = answer.body.decode("latin-1")  # html_to_sms works on the octets
        return html_to_text(cut_prefix_suffix(octets, o.prefix, o.suffix)).encode(
            "latin-1", "replace")
    charset = charset or ("utf-16-be" if f.coding == 2 else "utf-8")
    try:
        text = _decode(answer.body, charset)
    except UnicodeError:
        return o.unrepresentable_message
    return html_to_text(cut_prefix_suffix(text, o.prefix, o.suffix)) if html_body else text


def _xml_content(xml: XmlReply | None, o: ReplyFromBody, x: Mapping[str, str], f: _Fields,
                 ctx: _Context) -> str | bytes:
    if xml is None:
        return o.unrepresentable_message
    if isinstance(xml.content, bytes) and "X-Kannel-Coding" not in x:
        f.coding = 1  # <ud type="binary">: 8-bit data
    _apply_headers(f, x, ctx)
    if isinstance(xml.content, bytes) and f.coding != 1:
        raise _Refused("<ud type=\"binary\"> needs coding 1 (8-bit data)")
    if f.coding == 1 and "mwi" in f.smpp:
        raise _Refused("X-Kannel-MWI: a message waiting indication cannot carry 8-bit data")
    if f.coding == 1 and isinstance(xml.content, str):
        return xml.content.encode("utf-8")
    return xml.content


# --- Kannel's XML reply (gw/smsbox.c get_x_kannel_from_xml) -----------------------------------

# element path under /message/submit → the X-Kannel header it stands for (fill_message treats
# them alike, accept_x_kannel_headers included)
_XML_FIELDS: Final = (
    ("oa/number", "X-Kannel-From"), ("da/number", "X-Kannel-To"), ("udh", "X-Kannel-UDH"),
    ("smsc", "X-Kannel-SMSC"), ("to", "X-Kannel-SMSC"), ("pid", "X-Kannel-PID"),
    ("rpi", "X-Kannel-RPI"), ("dcs/mclass", "X-Kannel-MClass"), ("dcs/mwi", "X-Kannel-MWI"),
    ("dcs/coding", "X-Kannel-Coding"), ("dcs/compress", "X-Kannel-Compress"),
    ("dcs/alt-dcs", "X-Kannel-Alt-DCS"), ("statusrequest/dlr-mask", "X-Kannel-DLR-Mask"),
    ("statusrequest/dlr-url", "X-Kannel-DLR-URL"), ("vp/delay", "X-Kannel-Validity"),
    ("timing/delay", "X-Kannel-Deferred"), ("priority", "X-Kannel-Priority"),
    ("meta-data", "X-Kannel-Meta-Data"), ("from/account", "X-Kannel-Account"),
    ("from/binfo", "X-Kannel-BInfo"),
)
_XML_NUMBERS: Final = frozenset({"X-Kannel-PID", "X-Kannel-RPI", "X-Kannel-MClass",
                                 "X-Kannel-MWI", "X-Kannel-Coding", "X-Kannel-Compress",
                                 "X-Kannel-Alt-DCS", "X-Kannel-DLR-Mask", "X-Kannel-Validity",
                                 "X-Kannel-Deferred", "X-Kannel-Priority"})


# a DTD (and so any entity declaration), in the encodings an XML document may start in
_DECLARATIONS: Final = tuple(word.encode(enc) for word in ("<!DOCTYPE", "<!ENTITY")
                             for enc in ("utf-8", "utf-16-le", "utf-16-be"))


_XML_ENCODING: Final = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)""")


@dataclass(frozen=True, slots=True)
class XmlReply:
    """A Kannel XML reply: its fields under their X-Kannel header names, and the `ud`."""

    fields: tuple[tuple[str, str], ...]
    content: str | bytes


def parse_xml_reply(body: bytes) -> XmlReply | None:
    """`get_x_kannel_from_xml` for an mt_reply: None when the body is no such document.

    A document type declaration is refused (no entity of any kind is expanded). `ud` is
    URL-encoded text in the document's charset (its `%XX` octets too), or hex octets with
    `type="binary"`; Kannel converts the text libxml2 already gives as UTF-8 once more from a
    non-UTF-8 document's charset, which garbles its literal non-ASCII characters: here both
    forms read as meant. Numbers are read as XPath reads them (`5.0` is 5). Kannel 1.4.5
    crashes on a `da/number` in a reply (it fills a list it was not given); here the first
    one is the recipient, as X-Kannel-To.
    """
    if any(mark in body for mark in _DECLARATIONS):
        return None
    try:
        root = ElementTree.fromstring(body)
    except (ElementTree.ParseError, ValueError):
        return None
    submit = root.find("submit") if root.tag == "message" else None
    if submit is None:
        return None
    fields: dict[str, str] = {}
    for path, name in _XML_FIELDS:
        if name in fields:  # `smsc` wins over `to`; the first `da/number`
            continue
        el = submit.find(path)
        if el is None:
            continue
        value = "".join(el.itertext()).strip()
        if name in _XML_NUMBERS:
            with contextlib.suppress(ValueError, OverflowError):  # else refused by name
                value = str(int(float(value)))
        fields[name] = value
    ud = submit.find("ud")
    text = "".join(ud.itertext()).strip() if ud is not None else ""
    content: str | bytes
    if ud is not None and (ud.get("type") or "").lower() == "binary":
        try:
            content = bytes.fromhex(text)
        except ValueError:
            return None
    else:  # octstr_url_decode: '+' is a space, %XX an octet, in the document's charset
        charset = _XML_ENCODING.search(body[:200])
        enc = charset.group(1).decode("ascii") if charset else "utf-8"
        try:
            octets = unquote_to_bytes(text.replace("+", " ").encode(enc, "replace"))
            content = octets.decode(enc, "replace")
        except LookupError:  # the parser read it, so Python knows it; never expected
            return None
    return XmlReply(tuple(fields.items()), content)


def _split(content: str | bytes, o: ReplyFromBody, f: _Fields) -> list[str | bytes]:
    """The bodies (text) or payloads (bytes) of the reply MTs."""
    binary = isinstance(content, bytes)
    if binary:
        encoding = "binary"
        # header/footer/suffix go in as their UTF-8 octets, as Kannel appends its octstr
        deco = [s.encode().decode("latin-1") for s in (o.header, o.footer, o.split_suffix)]
        text = content.decode("latin-1")  # type: ignore[union-attr]
    else:
        text = str(content)
        deco = [o.header, o.footer, o.split_suffix]
        encoding = "ucs2" if f.coding == 2 or not is_gsm("".join([*deco, text])) else "gsm7"
    # a UDH with its own concatenation element: the content must fit one SMS
    own_concat = f.udh is not None and check_udh(f.udh)
    try:
        parts = split_reply(text, encoding, header=deco[0], footer=deco[1],
                            split_chars=o.split_chars, split_suffix=deco[2],
                            concatenation=o.concatenation and not own_concat,
                            max_messages=1 if own_concat else o.max_messages,
                            udh_len=len(f.udh or b""))
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    joined = ["".join(parts)] if o.concatenation and not own_concat else parts
    return [p.encode("latin-1") for p in joined] if binary else list(joined)


def _row(reply: Mapping[str, Any], o: ReplyFromBody, f: _Fields, body: str | bytes, *,
         to_addr: str, callback_id: int, inbound_id: int | None, now: datetime,
         first: bool) -> dict[str, Any]:
    send_at = now + timedelta(minutes=f.deferred) if f.deferred else None
    # fill_message: validity counts from now (`validity * 60 + time(NULL)`), not from send_at
    valid_until = now + timedelta(minutes=f.validity) if f.validity else None
    coding = f.coding or 0
    meta = {"reply": "forward", "callback_id": callback_id, "callback_style": "kannel",
            # Kannel's %n of a reply is msg->sms.service: the sms-service's name (the rule)
            "username": reply.get("service"), "coding": coding, **f.meta}
    binary = isinstance(body, bytes)
    smpp = dict(f.smpp)
    dlr_mask = f.dlr_mask if first else None  # sms_split: later parts ask for no DLR
    if registered_delivery_for_mask(dlr_mask) == 0:
        # Kannel's msg_to_pdu asks the SMSC for a receipt only for a dlr-mask with handset
        # bits; the sender otherwise uses the connector's registered_delivery
        smpp["receipt"] = False
    # sms_split: when a message is split, only the first part asks for a DLR
    return {"source": "rule", "from_addr": f.sender, "to_addr": to_addr,
            "body": None if binary else body, "payload": body if binary else None,
            "udh": f.udh, "smpp": smpp or None,
            "category": o.category, "priority": f.priority if f.priority is not None
            else o.priority, "encoding": "ucs2" if coding == 2 else None,
            "inbound_id": inbound_id, "rule_id": reply.get("rule_id"),
            "callback_url": f.dlr_url if first else None,
            "dlr_mask": dlr_mask,
            "send_at": send_at, "valid_until": valid_until, "route_hint": f.route_hint,
            "meta": meta}
