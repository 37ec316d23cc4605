"""Kannel compatibility: dlr-mask bits, states → DLR type, and dlr-url escape substitution.

Applications written for Kannel give `dlr-mask` and a `dlr-url` template with `%` escapes to
`/cgi-bin/sendsms`. The receiver stores the template in `outbound.callback_url` (with
`dlr_mask` and `meta->>'callback_style' = 'kannel'`); the sender, on each state change the mask
asks for, renders the template with `render_dlr_url` and queues a GET callback.

Escapes follow the Kannel user guide ("sms-service" / dlr-url parameters). Note Kannel's own
meanings: `%i` is the smsc-id (our connector name), `%I` the internal message id, `%A` the
SMSC's reply (the receipt text), `%F` the failure code. Unknown escapes are left as they are,
as Kannel does. Substituted values are URL-encoded (the template is a URL).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

# dlr-mask bits (Kannel user guide, "Delivery reports")
DLR_DELIVERED = 1  # delivered to phone
DLR_UNDELIVERED = 2  # non-delivered to phone
DLR_BUFFERED = 4  # queued on SMSC
DLR_SMSC_SUCCESS = 8  # delivered to SMSC (submit_sm_resp OK)
DLR_SMSC_FAIL = 16  # non-delivered to SMSC (submit_sm rejected)
DLR_MASK_ALL = 31
DLR_MASK_FINAL = DLR_DELIVERED | DLR_UNDELIVERED | DLR_SMSC_FAIL  # 19: final states only

# outbound / outbound_part states (docs/ARCHITECTURE.md "Tables and states") → the Kannel DLR type
# reported for them
_STATE_TO_DLR: dict[str, int] = {
    "delivered": DLR_DELIVERED,
    "undeliverable": DLR_UNDELIVERED,
    "expired": DLR_UNDELIVERED,
    "unknown_receipt": DLR_UNDELIVERED,
    "enroute": DLR_BUFFERED,
    "accepted": DLR_BUFFERED,
    "submitted": DLR_SMSC_SUCCESS,
    "rejected": DLR_SMSC_FAIL,
    "suppressed": DLR_SMSC_FAIL,
    "dead": DLR_SMSC_FAIL,
    "submit_unknown": DLR_SMSC_FAIL,
}

_ESCAPE_RE = re.compile(r"%([A-Za-z])")


def dlr_type_for(state: str) -> int | None:
    """The Kannel DLR type (one mask bit) for an outbound/part state; None if not reportable."""
    return _STATE_TO_DLR.get(state)


def wants_dlr(dlr_mask: int | None, state: str) -> bool:
    """True if an application that asked for `dlr_mask` wants a report for `state`."""
    bit = dlr_type_for(state)
    return bool(dlr_mask and bit and dlr_mask & bit)


def render_dlr_url(template: str, **fields: object) -> str:
    """Substitute Kannel `%x` escapes in a dlr-url template; values are URL-encoded.

    Field names (all optional; a missing one renders as empty, as in Kannel):
    `dlr` (%d, the DLR type), `to` (%p; %q with '00' for '+'), `from_addr` (%P; %Q),
    `at` (datetime: %t "YYYY-MM-DD HH:MM:SS" UTC, %T unix seconds), `smsc_reply` (%A),
    `connector` (%i and %f), `message_id` (%I), `err` (%F), `text` (%a, %b; %k first word),
    `username` (%n), `account` (%o), `coding` (%c), `mclass` (%m), `udh` (%u),
    `charset` (%C), `meta` (%D), `billing` (%B), `dlr_url` (%R).
    """
    values = _escape_values(fields)

    def substitute(m: re.Match[str]) -> str:
        letter = m.group(1)
        if letter not in values:
            return m.group(0)
        return quote(values[letter], safe="")

    return _ESCAPE_RE.sub(substitute, template)


def _escape_values(fields: Mapping[str, object]) -> dict[str, str]:
    def text(name: str) -> str:
        value = fields.get(name)
        return "" if value is None else str(value)

    at = fields.get("at")
    when = at if isinstance(at, datetime) else None
    if when is not None and when.tzinfo is not None:
        when = when.astimezone(UTC)
    body = text("text")
    return {
        "d": text("dlr"),
        "p": text("to"),
        "q": _plus_to_00(text("to")),
        "P": text("from_addr"),
        "Q": _plus_to_00(text("from_addr")),
        "t": when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        "T": str(int(when.replace(tzinfo=UTC).timestamp())) if when else "",
        "A": text("smsc_reply"),
        "i": text("connector"),
        "f": text("connector"),
        "I": text("message_id"),
        "F": text("err"),
        "a": body,
        "b": body,
        "k": body.split(" ", 1)[0] if body else "",
        "n": text("username"),
        "o": text("account"),
        "c": text("coding"),
        "m": text("mclass"),
        "u": text("udh"),
        "C": text("charset"),
        "D": text("meta"),
        "B": text("billing"),
        "R": text("dlr_url"),
    }


def _plus_to_00(number: str) -> str:
    return "00" + number[1:] if number.startswith("+") else number
