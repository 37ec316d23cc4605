"""Kannel-compatible `GET|POST /cgi-bin/sendsms`, so applications written for Kannel switch over
without code changes.

Parameters as Kannel's smsbox takes them (query string, or a form-encoded POST body):
`username` (the account name), `password` (one of its API keys), `from`, `to` (several
recipients separated by spaces), `text`, `charset` (of `text`; Kannel's default is UTF-8, or
UTF-16BE with `coding=2`), `coding` (0 7-bit, 1 8-bit, 2 UCS-2), `dlr-mask`, `dlr-url` (a
template with Kannel's `%d %p %P %t %A …` escapes, rendered by the sender with
`shared.domain.kannel.render_dlr_url`), `smsc` (a connector to force: only one the account is
allowed to force, `smsgw accounts update NAME --allowed-connector NAME`), `priority` (0-3),
`validity` and `deferred` (minutes). Unknown parameters are ignored, as Kannel does.

Answers as Kannel does: `202 0: Accepted for delivery`; `403 Authorization failed for sendsms`;
`4xx` with a plain-text reason naming the parameter; `503` with `Retry-After` when we cannot
commit. Numbers and sender ids go through the same normalisation and checks as the JSON API.
"""

from __future__ import annotations

import codecs
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl

from aiohttp import web

from smsgw.services.receiver.api import (
    FieldInvalid,
    Rejected,
    account_rate,
    admit,
    admit_account,
    forced_connector,
    read_body,
    sender_id,
    unavailable_for,
)
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.store import MtItem
from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.apikeys import Account
from smsgw.shared.domain.numbers import InvalidNumber, normalise_recipient
from smsgw.shared.domain.urlguard import UnsafeUrl, check_url
from smsgw.shared.queue.groupcommit import IntakeClosed, IntakeFull
from smsgw.shared.smpp.text import Encoding, estimate

ACCEPTED = "0: Accepted for delivery"
AUTH_FAILED = "Authorization failed for sendsms"
_CODING_ENCODING: dict[int, tuple[Encoding, ...]] = {0: ("gsm7", "ucs2"), 1: ("latin1",),
                                                      2: ("ucs2",)}


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=body, headers=headers)


def _bad(ctx: ReceiverContext, field: str, message: str) -> Rejected:
    ctx.metrics.requests_rejected.labels(reason="validation").inc()
    return Rejected(_text(400, f"Invalid parameter {field}: {message}"))


async def _params(request: web.Request, ctx: ReceiverContext) -> dict[str, bytes]:
    """Every parameter as raw bytes (query first, then a form body), decoded later per field:
    `text` is in `charset`, the others in UTF-8."""
    pairs = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True,
                      encoding="latin-1")
    if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded", ""):
        body = await read_body(request, ctx)
        pairs += parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    params: dict[str, bytes] = {}
    for name, value in pairs:
        params.setdefault(name, value.encode("latin-1"))
    return params


def _str(params: dict[str, bytes], name: str) -> str | None:
    raw = params.get(name)
    if raw is None:
        return None
    if b"\x00" in raw:  # Postgres text cannot hold it; refused at the edge, never a 500
        raise _nul(name)
    return raw.decode("utf-8", "replace").strip()


def _nul(name: str) -> Rejected:
    return Rejected(_text(422, f"Invalid parameter {name}: must not contain the NUL character"))


# Codecs Python registers as text encodings that are not character sets: transforms of text
# (punycode, IDNA, escapes) or a codec that always fails. `charset=` must name a character set.
_NOT_CHARSETS = frozenset({"punycode", "idna", "unicode-escape", "raw-unicode-escape",
                           "undefined"})


def _charset(ctx: ReceiverContext, name: str) -> str:
    """The codec for a `charset=` parameter; 400 unless it names a text character set."""
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError) as exc:
        raise _bad(ctx, "charset", "unknown charset") from exc
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        raise _bad(ctx, "charset", "not a character set")
    return info.name


def _int(ctx: ReceiverContext, params: dict[str, bytes], name: str, lo: int,
         hi: int) -> int | None:
    value = _str(params, name)
    if value is None or value == "":
        return None
    if not (value.isascii() and value.lstrip("-").isdigit()) or not lo <= int(value) <= hi:
        raise _bad(ctx, name, f"must be an integer from {lo} to {hi}")
    return int(value)


async def _account(ctx: ReceiverContext, params: dict[str, bytes]) -> Account:
    username, password = _str(params, "username"), _str(params, "password")
    account = await ctx.auth.authenticate(password) if username and password else None
    if account is None or account.name != username:
        ctx.metrics.requests_rejected.labels(reason="unauthorized").inc()
        raise Rejected(_text(403, AUTH_FAILED))
    return account


def _message_text(ctx: ReceiverContext, params: dict[str, bytes], coding: int) -> str:
    raw = params.get("text")
    if raw is None or raw == b"":
        raise _bad(ctx, "text", "missing")
    charset = _str(params, "charset") or ("UTF-16BE" if coding == 2 else "UTF-8")
    codec = _charset(ctx, charset)
    try:
        text = raw.decode(codec)
        text.encode("utf-8")  # a decoder may yield lone surrogates (utf-7): not storable
    except (UnicodeError, ValueError, LookupError, TypeError) as exc:
        raise _bad(ctx, "text", f"not valid {codec}") from exc
    if "\x00" in text:
        raise _nul("text")
    return text


def _recipients(ctx: ReceiverContext, params: dict[str, bytes]) -> list[str]:
    to = _str(params, "to")
    if not to:
        raise _bad(ctx, "to", "missing receiver number")
    numbers = to.split()
    if len(numbers) > ctx.options.max_recipients:
        raise _bad(ctx, "to", f"at most {ctx.options.max_recipients} recipients")
    out = []
    for number in numbers:
        try:  # E.164 or a short code; letters, extensions, vanity numbers are refused
            out.append(normalise_recipient(
                number, default_country=ctx.options.default_country,
                assume_international=ctx.options.sendsms_assume_international))
        except InvalidNumber as exc:
            raise _bad(ctx, "to", f"{exc}") from exc
    return out


def _items(ctx: ReceiverContext, account: Account, params: dict[str, bytes]) -> list[MtItem]:
    coding = _int(ctx, params, "coding", 0, 2) or 0
    text = _message_text(ctx, params, coding)
    sender = _str(params, "from")
    if not sender:
        raise _bad(ctx, "from", "missing sender")
    try:
        from_addr = sender_id(account, sender, ctx.options.default_country)
    except FieldInvalid as exc:
        raise _bad(ctx, "from", exc.message) from exc
    try:
        encoding, parts = estimate(text, _CODING_ENCODING[coding])
    except ValueError as exc:
        raise _bad(ctx, "text", "cannot be encoded with this coding") from exc
    if parts > ctx.options.max_parts:
        raise _bad(ctx, "text", f"needs {parts} parts, more than {ctx.options.max_parts}")
    dlr_mask = _int(ctx, params, "dlr-mask", 0, 31)
    dlr_url = _str(params, "dlr-url") or None
    if dlr_url is not None:
        try:
            check_url(dlr_url, allowed_networks=ctx.webhooks.allowed_networks)
        except UnsafeUrl as exc:
            raise _bad(ctx, "dlr-url", str(exc)) from exc
    priority = _int(ctx, params, "priority", 0, 3) or 0
    validity = _int(ctx, params, "validity", 1, 7 * 24 * 60)
    deferred = _int(ctx, params, "deferred", 0, 30 * 24 * 60)
    now = datetime.now(UTC)
    send_at = now + timedelta(minutes=deferred) if deferred else None
    valid_until = (send_at or now) + timedelta(minutes=validity) if validity else None
    meta = {"callback_style": "kannel", "username": account.name, "coding": coding}
    try:  # `smsc`: only a connector this account may force, and one that exists
        route_hint = forced_connector(ctx, account, "smsc", _str(params, "smsc"))
    except FieldInvalid as exc:
        raise _bad(ctx, "smsc", exc.message) from exc
    return [MtItem(account_id=account.id, source="sendsms", from_addr=from_addr, to_addr=to,
                   body=text, category=account.default_category, priority=priority,
                   encoding=None if coding == 0 else encoding, callback_url=dlr_url,
                   dlr_mask=dlr_mask if dlr_url else None, send_at=send_at,
                   valid_until=valid_until, route_hint=route_hint, meta=meta)
            for to in _recipients(ctx, params)]


async def sendsms(request: web.Request) -> web.StreamResponse:
    """Kannel's sendsms interface (see the module docstring)."""
    ctx = request.app[CONTEXT]
    started = time.perf_counter()
    try:
        params = await _params(request, ctx)
        account = await _account(ctx, params)
        admit(ctx, "outbound")
        admit_account(ctx, account)
        items = _items(ctx, account, params)
        wait = ctx.ratelimit.try_acquire(account.id, account_rate(ctx, account), len(items))
        if wait is not None:
            ctx.metrics.requests_rejected.labels(reason="rate_limited").inc()
            return _text(429, "Rate limit exceeded", {"Retry-After": str(int(wait))})
        await ctx.mt.submit_many(items)
    except Rejected as exc:
        if exc.response.status == 503:
            return _text(503, "Sending failed.",
                         {"Retry-After": exc.response.headers.get("Retry-After", "2")})
        return exc.response
    except (DatabaseUnavailable, IntakeFull, IntakeClosed) as exc:
        resp = unavailable_for(ctx, exc)
        return _text(503, "Sending failed.", {"Retry-After": resp.headers["Retry-After"]})
    except CONNECTION_ERRORS as exc:
        resp = unavailable_for(ctx, exc)
        return _text(503, "Sending failed.", {"Retry-After": resp.headers["Retry-After"]})
    finally:
        ctx.metrics.duration("sendsms", time.perf_counter() - started)
    ctx.metrics.mt("sendsms", "accepted", len(items))
    return _text(202, ACCEPTED)


def add_routes(app: web.Application) -> None:
    """Register `/cgi-bin/sendsms` for GET and POST."""
    app.router.add_get("/cgi-bin/sendsms", sendsms)
    app.router.add_post("/cgi-bin/sendsms", sendsms)
