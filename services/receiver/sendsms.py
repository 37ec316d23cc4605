"""Kannel-compatible `GET|POST /cgi-bin/sendsms`, so applications written for Kannel switch over
without code changes.

Parameters as Kannel's smsbox takes them (query string, a form-encoded POST body, or Kannel's
POST: the text as the body and the rest in `X-Kannel-*` headers, see `X_KANNEL_HEADERS`):
`username` or `user` (the account name), `password` or `pass` (one of its API keys — the
password of a Kannel sendsms-user becomes an smsgw API key), `from`, `to` (several
recipients separated by spaces), `text`, `charset` (of `text`; Kannel's default is UTF-8, or
UTF-16BE with `coding=2`), `coding` (0 7-bit, 1 8-bit, 2 UCS-2), `dlr-mask`, `dlr-url` (a
template with Kannel's `%d %p %P %t %A …` escapes, rendered by the sender with
`shared.domain.kannel.render_dlr_url`), `smsc` (a connector to force: only one the account is
allowed to force, `smsgw accounts update NAME --allowed-connector NAME`), `priority` (0-3),
`validity` and `deferred` (minutes). Unknown parameters are ignored, as Kannel does.

Answers as Kannel 1.4.5 does (gw/smsbox.c): `202 0: Accepted for delivery`; `403
Authorization failed for sendsms`; `400 Missing receiver number, rejected` (POST: `Missing
receiver(s) number(s), rejected`), `400 Empty receiver number not allowed, rejected`, `400
Sender missing and no global set, rejected`, `415 Unsupported content-type, rejected`, `400
Invalid content-type`; other `4xx` with a plain-text reason naming the parameter; `503
Temporal failure, try again later.` with `Retry-After` when we cannot commit. Numbers and
sender ids go through the same normalisation and checks as the JSON API.
"""

from __future__ import annotations

import codecs
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, unquote_to_bytes

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

# Kannel 1.4.5's answers (gw/smsbox.c): 202 "0: Accepted for delivery" (ack_success);
# 403 "Authorization failed for sendsms"; 503 "Temporal failure, try again later."
# (ack_failed_tmp: its queues full) — ours for every "try again": a queue over its watermark,
# the database unreachable (where Kannel's smsbox, unable to reach bearerbox, says 500
# "Sending failed."). Kannel's 202 "3: Queued for later delivery" (no SMSC connected) is never
# given: the receiver commits to the queue and does not know which connectors are up.
ACCEPTED = "0: Accepted for delivery"
AUTH_FAILED = "Authorization failed for sendsms"
TEMPORAL_FAILURE = "Temporal failure, try again later."
_CODING_ENCODING: dict[int, tuple[Encoding, ...]] = {0: ("gsm7", "ucs2"), 1: ("latin1",),
                                                      2: ("ucs2",)}


def _text(status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=body, headers=headers)


def _bad(ctx: ReceiverContext, field: str, message: str) -> Rejected:
    ctx.metrics.requests_rejected.labels(reason="validation").inc()
    return Rejected(_text(400, f"Invalid parameter {field}: {message}"))


# Kannel's POST interface (gw/smsbox.c `smsbox_sendsms_post`, `get_x_kannel_from_headers`):
# a POST whose body is the message — `text/plain` (coding 0 unless given) or
# `application/octet-stream` (coding 1 unless given), the charset from Content-Type — with
# every other parameter in an `X-Kannel-*` header (names compared case-blind, values stripped).
# The query string is not read then, as in Kannel. `text/html`, `text/vnd.wap.wml` and Kannel's
# XML POST (`text/xml`) are refused with Kannel's 415; any other type with Kannel's 400. A
# form-encoded POST (`application/x-www-form-urlencoded`, which Kannel refuses) is read like a
# query string.
X_KANNEL_HEADERS = {
    "x-kannel-username": "username", "x-kannel-password": "password",
    "x-kannel-from": "from", "x-kannel-to": "to", "x-kannel-smsc": "smsc",
    "x-kannel-udh": "udh", "x-kannel-dlr-url": "dlr-url", "x-kannel-dlr-mask": "dlr-mask",
    "x-kannel-account": "account", "x-kannel-binfo": "binfo", "x-kannel-coding": "coding",
    "x-kannel-pid": "pid", "x-kannel-mwi": "mwi", "x-kannel-mclass": "mclass",
    "x-kannel-alt-dcs": "alt-dcs", "x-kannel-compress": "compress",
    "x-kannel-validity": "validity", "x-kannel-deferred": "deferred", "x-kannel-rpi": "rpi",
    "x-kannel-priority": "priority", "x-kannel-meta-data": "meta-data"}
_BODY_TYPES = {"text/plain": b"0", "application/octet-stream": b"1"}  # default coding
_UNSUPPORTED_TYPES = ("text/html", "text/vnd.wap.wml", "text/xml")
_POSTED = "\x00posted"  # marks parameters read from X-Kannel headers (Kannel's texts differ)


async def _params(request: web.Request, ctx: ReceiverContext) -> dict[str, bytes]:
    """Every parameter as raw bytes (query first, then a form body; or Kannel's POST: the
    body and the X-Kannel headers), decoded later per field: `text` is in `charset`, the
    others in UTF-8."""
    pairs = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True,
                      encoding="latin-1")
    if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded", ""):
        body = await read_body(request, ctx)
        pairs += parse_qsl(body.decode("latin-1"), keep_blank_values=True, encoding="latin-1")
    elif request.method == "POST" and request.body_exists:
        return _posted_params(request, await read_body(request, ctx))
    params: dict[str, bytes] = {}
    for name, value in pairs:
        params.setdefault(name, value.encode("latin-1"))
    return params


def _posted_params(request: web.Request, body: bytes) -> dict[str, bytes]:
    """Kannel's POST: the body is `text`, the X-Kannel headers the other parameters."""
    ctype = request.content_type
    if ctype in _UNSUPPORTED_TYPES:
        raise Rejected(_text(415, "Unsupported content-type, rejected"))
    if ctype not in _BODY_TYPES:
        raise Rejected(_text(400, "Invalid content-type"))
    params: dict[str, bytes] = {_POSTED: b"1", "text": body, "coding": _BODY_TYPES[ctype]}
    if request.charset:
        params["charset"] = request.charset.encode("latin-1", "replace")
    for name, value in request.headers.items():
        param = X_KANNEL_HEADERS.get(name.lower())
        if param is None:
            continue
        raw = value.strip().encode("utf-8", "surrogateescape")
        if param == "udh":  # hex, or else URL-encoded bytes, as Kannel reads X-Kannel-UDH
            try:
                raw = bytes.fromhex(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raw = unquote_to_bytes(raw)
        params[param] = raw
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
    # Kannel's default_authorise_user (gw/smsbox.c): `username`, or else `user`; `password`,
    # or else `pass`. The password is one of the account's API keys.
    username = _str(params, "username")
    password = _str(params, "password")
    if username is None:
        username = _str(params, "user")
    if password is None:
        password = _str(params, "pass")
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


def _receiver(ctx: ReceiverContext, params: dict[str, bytes]) -> str:
    """`to`, checked as Kannel checks it right after the password, with Kannel's texts
    (smsbox_req_sendsms, smsbox_sendsms_post in gw/smsbox.c)."""
    to = _str(params, "to")
    if not to:
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        if to is not None:
            raise Rejected(_text(400, "Empty receiver number not allowed, rejected"))
        raise Rejected(_text(400, "Missing receiver(s) number(s), rejected" if _POSTED in params
                             else "Missing receiver number, rejected"))
    return to


def _recipients(ctx: ReceiverContext, params: dict[str, bytes]) -> list[str]:
    to = _receiver(ctx, params)
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
    if not sender:  # Kannel's text (smsbox_req_handle): no account has a default sender here
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        raise Rejected(_text(400, "Sender missing and no global set, rejected"))
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
        _receiver(ctx, params)
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
            return _text(503, TEMPORAL_FAILURE,
                         {"Retry-After": exc.response.headers.get("Retry-After", "2")})
        return exc.response
    except (DatabaseUnavailable, IntakeFull, IntakeClosed) as exc:
        resp = unavailable_for(ctx, exc)
        return _text(503, TEMPORAL_FAILURE, {"Retry-After": resp.headers["Retry-After"]})
    except CONNECTION_ERRORS as exc:
        resp = unavailable_for(ctx, exc)
        return _text(503, TEMPORAL_FAILURE, {"Retry-After": resp.headers["Retry-After"]})
    finally:
        ctx.metrics.duration("sendsms", time.perf_counter() - started)
    ctx.metrics.mt("sendsms", "accepted", len(items))
    return _text(202, ACCEPTED)


def add_routes(app: web.Application) -> None:
    """Register `/cgi-bin/sendsms` for GET and POST."""
    app.router.add_get("/cgi-bin/sendsms", sendsms)
    app.router.add_post("/cgi-bin/sendsms", sendsms)
