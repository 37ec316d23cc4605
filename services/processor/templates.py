"""Reply templates: `{name}` placeholders only, checked when a rule is imported.

Deliberately not `str.format`: a template comes from an operator's rule file, and `format`
would allow attribute and index access (`{from.__class__}`) and format specs. Here a
placeholder is `{identifier}`; `{{` and `}}` are literal braces; anything else is an error at
import time, so a rule that imports always renders.

Placeholders available to every template (`BUILTIN_FIELDS`):
  from, to        the subscriber's number and the number it wrote to (short code / long number)
  keyword         the first word of the message, as written (upper-cased)
  rest            the text after the first word
  text            the whole text
  rule            the rule's name
  campaign, entries, quota_max, quota_left   campaign data (empty outside a campaign action)
Plus the named groups of the rule's regex and the keys of a campaign action's `data` table.

Kannel `get-url` templates for forwarded MO use Kannel's `%` escapes instead (`render_get_url`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from smsgw.shared.core.errors import SmsGatewayError
from smsgw.shared.domain.kannel import DlrMsg, fill_escape_codes

BUILTIN_FIELDS: frozenset[str] = frozenset({
    "from", "to", "keyword", "rest", "text", "rule",
    "campaign", "entries", "quota_max", "quota_left",
})
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|\{|\}")


class TemplateError(SmsGatewayError):
    """A template uses an unknown placeholder or an unbalanced brace."""


def placeholders(template: str) -> list[str]:
    """The placeholder names a template uses, in order; raise `TemplateError` on bad syntax."""
    names = []
    for m in _TOKEN.finditer(template):
        tok = m.group(0)
        if tok in ("{{", "}}"):
            continue
        if m.group(1) is None:
            raise TemplateError(f"unbalanced {tok!r} at position {m.start()} "
                                f"(write {tok * 2} for a literal brace)")
        names.append(m.group(1))
    return names


def check(template: str, allowed: Iterable[str]) -> None:
    """Raise `TemplateError` unless every placeholder of `template` is in `allowed`."""
    known = set(allowed)
    unknown = sorted({n for n in placeholders(template) if n not in known})
    if unknown:
        raise TemplateError(f"unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                            f"known: {', '.join(sorted(known))}")


def render(template: str, values: Mapping[str, object]) -> str:
    """Fill the placeholders; a missing or None value renders as an empty string."""

    def sub(m: re.Match[str]) -> str:
        tok = m.group(0)
        if tok == "{{":
            return "{"
        if tok == "}}":
            return "}"
        name = m.group(1)
        if name is None:  # checked at import; render defensively anyway
            return tok
        value = values.get(name)
        return "" if value is None else str(value)

    return _TOKEN.sub(sub, template)


# Every escape Kannel 1.4.5's urltrans_fill_escape_codes (gw/urltrans.c) fills, `%#` being the
# start of `%#group#key#` (one meta-data value).
GET_URL_ESCAPES = "aAbBcCdDefFiIkmMnoOpPqQrRsStTuvV%#"
_GET_URL_TOKEN = re.compile(r"%(.)", re.S)


def check_get_url(template: str) -> None:
    """Raise `TemplateError` for a `%` escape Kannel does not know (Kannel would send it as
    it is, which is almost always a typo in a rule) or a lone `%` at the end."""
    for m in _GET_URL_TOKEN.finditer(template):
        if m.group(1) not in GET_URL_ESCAPES:
            raise TemplateError(f"unknown get-url escape %{m.group(1)}; "
                                f"known: {' '.join('%' + c for c in GET_URL_ESCAPES)}")
    if template.endswith("%") and not template.endswith("%%"):
        raise TemplateError("get-url ends with a lone '%'")


def kannel_coding(data_coding: int | None) -> int:
    """Kannel's coding of an MO from its SMPP data_coding (gw/sms.c `dcs_to_fields`):
    0 7-bit text, 1 8-bit data, 2 UCS-2."""
    dcs = data_coding or 0
    if dcs & 0xF0 == 0xF0:  # data coding / message class group: bit 2 is 8-bit
        return 1 if dcs & 0x04 else 0
    if dcs & 0xC0 == 0:  # general data coding group: bits 3..2 are the alphabet
        return {0x04: 1, 0x08: 2}.get(dcs & 0x0C, 0)
    return 2 if dcs & 0xF0 == 0xE0 else 0  # message waiting groups (UCS-2 store: 0xE_)


def render_get_url(template: str, *, sender: str, receiver: str, text: str, at: datetime,
                   smsc: str | None, message_id: int, service: str, coding: int = 0,
                   raw: bytes | None = None, reply_sender: str | None = None,
                   account: str | None = None, meta_data: str | None = None) -> str:
    """Fill a Kannel `get-url` for a forwarded MO with Kannel's own escape filler
    (`shared.domain.kannel.fill_escape_codes`, the port of `urltrans_fill_escape_codes`).

    Kannel fills the escapes from the MO after it swapped its numbers for the reply
    (gw/smsbox.c `obey_request_thread`): `%p` is the MO's sender (`sender`), `%P` the number it
    was sent to (`receiver`; Kannel's faked-sender, `reply_sender`, when one is set). The text
    is the MO's octets as Kannel holds them: UTF-8 for 7-bit text, UTF-16BE for UCS-2 (so
    `%C` is UTF-16BE and `%a`/`%b` carry those octets, as in Kannel), the data itself for
    8-bit (`raw`). `%n` is the service (the rule's name), `%i` the connector, `%I` our MO id,
    `%t`/`%T` the arrival time, `%o` the `account` (Kannel: the SMPP bind's system-id), `%D`
    the `meta_data`; the fields an MO does not carry are empty (or -1, as Kannel leaves them).
    """
    if coding == 2:
        data = text.encode("utf-16-be", "surrogatepass")
    elif coding == 1 and raw is not None:
        data = raw
    else:
        data = text.encode("utf-8", "surrogatepass")
    msg = DlrMsg(dlr_type=-1, receiver=sender, sender=reply_sender or receiver, msgdata=data,
                 time=int(at.timestamp()), smsc_id=smsc, service=service, id=str(message_id),
                 coding=coding, charset="UTF-16BE" if coding == 2 else None, account=account,
                 meta_data=meta_data)
    return fill_escape_codes(template, msg)
