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

Kannel-style `get-url` templates for forwarded MO use `%` escapes instead (`render_get_url`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from urllib.parse import quote

from smsgw.shared.core.errors import SmsGatewayError

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


# Kannel sms-service get-url escapes that make sense for a forwarded MO.
_GET_URL_ESCAPES = "kSsraAbtTpPiInc%"
_GET_URL_TOKEN = re.compile(r"%(.)")


def check_get_url(template: str) -> None:
    """Raise `TemplateError` for a `%` escape that `render_get_url` does not know."""
    for m in _GET_URL_TOKEN.finditer(template):
        if m.group(1) not in _GET_URL_ESCAPES:
            raise TemplateError(f"unknown get-url escape %{m.group(1)}; "
                                f"known: {' '.join('%' + c for c in _GET_URL_ESCAPES)}")
    if template.endswith("%") and not template.endswith("%%"):
        raise TemplateError("get-url ends with a lone '%'")


def render_get_url(template: str, *, sender: str, receiver: str, text: str, keyword: str,
                   rest: str, at: datetime, smsc: str | None, message_id: int,
                   service: str) -> str:
    """Fill a Kannel-style get-url (values URL-encoded, as Kannel does).

    %k keyword · %s next word after the keyword · %S the same with '*' as '~' · %r the words
    after the keyword · %a all words · %b the original body · %t time (YYYY-MM-DD HH:MM:SS, UTC)
    · %T unix time · %p sender · %P receiver · %i connector · %I message id · %n rule name ·
    %c coding (0 = text) · %% a literal %.
    """
    words = rest.split()
    nxt = words[0] if words else ""
    values = {
        "k": keyword, "s": nxt, "S": nxt.replace("*", "~"), "r": rest,
        "a": " ".join(text.split()), "b": text, "t": at.strftime("%Y-%m-%d %H:%M:%S"),
        "T": str(int(at.timestamp())), "p": sender, "P": receiver, "i": smsc or "",
        "I": str(message_id), "n": service, "c": "0",
    }

    def sub(m: re.Match[str]) -> str:
        code = m.group(1)
        if code == "%":
            return "%"
        return quote(values.get(code, ""), safe="")

    return _GET_URL_TOKEN.sub(sub, template)
