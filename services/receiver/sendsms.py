"""Kannel-compatible `GET|POST /cgi-bin/sendsms`, so applications written for Kannel switch over
without code changes.

Parameters as Kannel's smsbox takes them (query string, a form-encoded POST body, or Kannel's
POST: the text as the body and the rest in `X-Kannel-*` headers, see `X_KANNEL_HEADERS`):
`username` or `user` (the account name), `password` or `pass` (one of its API keys — the
password of a Kannel sendsms-user becomes an smsgw API key), `from`, `to` (several
recipients separated by spaces), `text`, `charset` (of `text`; Kannel's default is UTF-8, or
UTF-16BE with `coding=2`), `coding` (0 7-bit, 1 8-bit: `text` is then the octets themselves,
whatever `charset` says; 2 UCS-2; without it 8-bit when there is a `udh`, as Kannel), `udh`
(URL-encoded octets, its length octet first), `dlr-mask` (0-63; also what the SMSC is asked
for: no mask, no receipt), `dlr-url` (a template with Kannel's `%d %p %P %t %A …` escapes,
rendered by the sender with `shared.domain.kannel`), `smsc` (a connector to force: only one
the account is allowed to force, `smsgw accounts update NAME --allowed-connector NAME`),
`priority` (0-3: priority_flag, and the queue order), `validity` and `deferred` (minutes from
now, as Kannel counts both), `mclass`, `mwi`, `alt-dcs` (the data coding, as Kannel's
`fields_to_dcs`), `pid`, `rpi`, `binfo` (the service_type), `meta-data` (`?smpp?name=value&…`:
TLVs by SMPP 3.4 name or a connector's `tlvs` name), `account`; see shared/smpp/fields.py.
A parameter that cannot be honoured (`compress=1`, a value out of Kannel's range, a TLV
nobody defined, another meta-data group) is a 400 naming it, never dropped; unknown
parameters are ignored, as Kannel does.

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
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import unquote, unquote_to_bytes

from aiohttp import web

from smsgw.services.receiver.api import (
    FieldInvalid,
    Rejected,
    account_rate,
    admit,
    admit_account,
    due_now,
    estimate_parts,
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
from smsgw.shared.runtime.fasthttp import FastAnswer, FastRequest
from smsgw.shared.smpp.fields import MAX_TLVS, parse_meta_data
from smsgw.shared.smpp.text import Encoding

# Kannel 1.4.5's answers (gw/smsbox.c): 202 "0: Accepted for delivery" (ack_success);
# 403 "Authorization failed for sendsms"; 503 "Temporal failure, try again later."
# (ack_failed_tmp: its queues full) — ours for every "try again": a queue over its watermark,
# the database unreachable (where Kannel's smsbox, unable to reach bearerbox, says 500
# "Sending failed."). Kannel's 202 "3: Queued for later delivery" (no SMSC connected) is never
# given: the receiver commits to the queue and does not know which connectors are up.
ACCEPTED = "0: Accepted for delivery"
AUTH_FAILED = "Authorization failed for sendsms"
TEMPORAL_FAILURE = "Temporal failure, try again later."
_CODING_ENCODING: dict[int, tuple[Encoding, ...]] = {0: ("gsm7", "ucs2"), 1: ("binary",),
                                                      2: ("ucs2",)}
# the 202 (as `_text` writes it), built once
_ACCEPTED = FastAnswer(202, ACCEPTED.encode(), "text/plain", "utf-8")


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


class SendsmsRequest(Protocol):
    """What sendsms reads of a request's head: aiohttp's `web.Request` has it, and so has the
    fast front's `FastRequest` (shared/runtime/fasthttp.py)."""

    @property
    def method(self) -> str: ...

    @property
    def content_type(self) -> str: ...

    @property
    def charset(self) -> str | None: ...

    @property
    def body_exists(self) -> bool: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


async def _params(ctx: ReceiverContext, request: SendsmsRequest, query: str,
                  read: Callable[[], Awaitable[bytes]] | bytes) -> dict[str, bytes]:
    """Every parameter as raw bytes (query first, then a form body; or Kannel's POST: the
    body and the X-Kannel headers), decoded later per field: `text` is in `charset`, the
    others in UTF-8."""
    params: dict[str, bytes] = {}
    _add_pairs(params, query)
    if request.method == "POST" and request.content_type in (
            "application/x-www-form-urlencoded", ""):
        _add_pairs(params, (await _body(read)).decode("latin-1"))
    elif request.method == "POST" and request.body_exists:
        return _posted_params(request, await _body(read))
    return params


async def _body(read: Callable[[], Awaitable[bytes]] | bytes) -> bytes:
    return read if isinstance(read, bytes) else await read()


def _add_pairs(params: dict[str, bytes], query: str) -> None:
    """Add the `name=value` pairs of `query` (URL-encoded, `+` for a space) to `params` as raw
    bytes, the first of a repeated name winning: what `parse_qsl(query,
    keep_blank_values=True, encoding="latin-1")` then `.encode("latin-1")` of each value
    gave, in half the time (a dlr-url is long and percent-encoded)."""
    for pair in query.split("&"):
        if pair:
            name, _, value = pair.partition("=")
            if "%" in name or "+" in name:
                name = unquote(name.replace("+", " "), encoding="latin-1")
            if name not in params:
                params[name] = (unquote_to_bytes(value.replace("+", " ").encode("latin-1"))
                                if "%" in value or "+" in value else value.encode("latin-1"))


def _posted_params(request: SendsmsRequest, body: bytes) -> dict[str, bytes]:
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


def _message_text(ctx: ReceiverContext, params: dict[str, bytes], coding: int,
                  optional: bool = False) -> str:
    raw = params.get("text")
    if raw is None or raw == b"":
        if optional:  # a UDH-only or message-waiting message may have no text (Kannel)
            return ""
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


def _recipients(ctx: ReceiverContext, to: str) -> list[str]:
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


def _items(ctx: ReceiverContext, account: Account, params: dict[str, bytes],
           to: str) -> list[MtItem]:
    """The request's MTs, one per recipient in `to` (`_receiver`'s)."""
    udh = params.get("udh") or None
    # Kannel's "compatibility mode" (smsbox_req_handle): no coding → 8-bit with a UDH, else
    # 7-bit. 8-bit `text` is the data itself: its URL-decoded octets, whatever `charset` says
    # (charset_processing converts only 7-bit and UCS-2 text).
    coding = _int(ctx, params, "coding", 0, 2)
    if coding is None:
        coding = 1 if udh else 0
    fields = _smpp_params(ctx, params, coding)
    payload = None
    if coding == 1:
        payload = params.get("text") or b""
        if not payload and not udh:
            raise _bad(ctx, "text", "missing")
        text = None
    else:
        text = _message_text(ctx, params, coding, optional=bool(udh) or "mwi" in fields)
    sender = _str(params, "from")
    if not sender:  # Kannel's text (smsbox_req_handle): no account has a default sender here
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        raise Rejected(_text(400, "Sender missing and no global set, rejected"))
    try:
        from_addr = sender_id(account, sender, ctx.options.default_country)
    except FieldInvalid as exc:
        raise _bad(ctx, "from", exc.message) from exc
    try:  # the UDH, the parts limit
        estimate_parts(payload if payload is not None else text or "",
                       _CODING_ENCODING[coding], udh, ctx.options.max_parts, "text")
    except FieldInvalid as exc:
        raise _bad(ctx, exc.field, exc.message) from exc
    # dlr-mask 0-63 as Kannel checks it; kept without a dlr-url too, because it is also what
    # the SMSC is asked for (registered_delivery, shared/smpp/fields.py)
    dlr_mask = _int(ctx, params, "dlr-mask", 0, 63)
    dlr_url = _str(params, "dlr-url") or None
    if dlr_url is not None:
        try:
            check_url(dlr_url, allowed_networks=ctx.webhooks.allowed_networks)
        except UnsafeUrl as exc:
            raise _bad(ctx, "dlr-url", str(exc)) from exc
    priority = _int(ctx, params, "priority", 0, 3) or 0
    if priority:
        fields["priority_flag"] = priority  # Kannel's priority is SMPP's; it orders our queue too
    send_at, valid_until = _times(ctx, params)
    meta = {"callback_style": "kannel", "username": account.name, "coding": coding,
            **_kannel_meta(ctx, params)}
    try:  # `smsc`: only a connector this account may force, and one that exists
        route_hint = forced_connector(ctx, account, "smsc", _str(params, "smsc"))
    except FieldInvalid as exc:
        raise _bad(ctx, "smsc", exc.message) from exc
    now = datetime.now(UTC)
    return [MtItem(account_id=account.id, source="sendsms", from_addr=from_addr, to_addr=to,
                   body=text, category=account.default_category, priority=priority,
                   encoding="ucs2" if coding == 2 else None, callback_url=dlr_url,
                   dlr_mask=dlr_mask, send_at=send_at, valid_until=valid_until,
                   route_hint=route_hint, meta=meta, payload=payload, udh=udh,
                   smpp=fields or None, due_now=due_now(ctx, send_at, now, route_hint))
            for to in _recipients(ctx, to)]


def _times(ctx: ReceiverContext,
           params: dict[str, bytes]) -> tuple[datetime | None, datetime | None]:
    """(send_at, valid_until) from `deferred` and `validity`, minutes from now as Kannel
    counts both (smsbox_req_handle: `validity * 60 + time(NULL)`)."""
    if "validity" not in params and "deferred" not in params:
        return None, None
    validity = _int(ctx, params, "validity", 1, 7 * 24 * 60)
    deferred = _int(ctx, params, "deferred", 0, 30 * 24 * 60)
    now = datetime.now(UTC)
    send_at = now + timedelta(minutes=deferred) if deferred else None
    valid_until = now + timedelta(minutes=validity) if validity else None
    if send_at is not None and valid_until is not None and valid_until <= send_at:
        raise _bad(ctx, "validity", "ends before the deferred delivery")
    return send_at, valid_until


# Kannel's per-message SMPP parameters (smsbox_req_sendsms / smsbox_req_handle, gw/smsbox.c)
# and their ranges there; stored as `outbound.smpp` (shared/smpp/fields.py).
_SMPP_INTS = (("mclass", "mclass", 0, 3), ("mwi", "mwi", 0, 7), ("pid", "pid", 0, 255),
              ("alt-dcs", "alt_dcs", 0, 1), ("rpi", "rpi", 0, 2))
# every parameter `_smpp_params` reads: a request with none of them has no SMPP fields
_SMPP_PARAMS = frozenset([*(name for name, *_ in _SMPP_INTS), "compress", "binfo",
                          "meta-data"])
# every parameter `_kannel_meta` reads
_META_PARAMS = (("account", "account"), ("binfo", "binfo"), ("meta-data", "meta_data"))


def _smpp_params(ctx: ReceiverContext, params: dict[str, bytes],
                 coding: int) -> dict[str, Any]:
    """The message's SMPP fields from Kannel's parameters; 400 naming a parameter smsgw
    cannot honour (never dropped)."""
    fields: dict[str, Any] = {}
    if params.keys().isdisjoint(_SMPP_PARAMS):
        return fields
    for name, key, lo, hi in _SMPP_INTS:
        value = _int(ctx, params, name, lo, hi)
        if value is not None and (key != "rpi" or value > 0):
            fields[key] = value
    if "mwi" in fields and coding == 1:
        raise _bad(ctx, "mwi", "a message waiting indication cannot carry 8-bit data")
    if _int(ctx, params, "compress", 0, 1):
        raise _bad(ctx, "compress", "compressed messages are not supported")
    binfo = _str(params, "binfo")
    if binfo:  # SMPP 3.4: Kannel sends binfo as the service_type (msg_to_pdu)
        if len(binfo) > 5 or not all(" " <= c <= "~" for c in binfo):
            raise _bad(ctx, "binfo", "is the SMPP service_type: up to 5 ASCII characters")
        fields["service_type"] = binfo
    meta_data = _str(params, "meta-data")
    if meta_data:
        tlvs = _meta_data_tlvs(ctx, meta_data)
        if tlvs:
            fields["tlvs"] = tlvs
    return fields


def _meta_data_tlvs(ctx: ReceiverContext, meta_data: str) -> dict[str, str]:
    """The TLVs of Kannel meta-data's `?smpp?` group (name=value, packed as the catalogue's
    type says); another group, an unknown name or a value Kannel would drop is a 400."""
    try:
        groups = parse_meta_data(meta_data)
    except ValueError as exc:
        raise _bad(ctx, "meta-data", str(exc)) from exc
    if set(groups) - {"smpp"}:
        raise _bad(ctx, "meta-data", "only the ?smpp? group is used here")
    tlvs: dict[str, str] = {}
    for key, value in groups.get("smpp", {}).items():
        try:
            tag, hexed = ctx.tlvs.from_text(key, value)
        except ValueError as exc:
            raise _bad(ctx, "meta-data", str(exc)) from exc
        tlvs[tag] = hexed
    if len(tlvs) > MAX_TLVS:
        raise _bad(ctx, "meta-data", f"at most {MAX_TLVS} TLVs")
    return tlvs


def _kannel_meta(ctx: ReceiverContext, params: dict[str, bytes]) -> dict[str, str]:
    """What Kannel keeps with a message for its dlr-url escapes: `account` (Kannel: up to 64
    characters, none of `[]` or a line break), `binfo` and the `meta-data` text."""
    out: dict[str, str] = {}
    for name, key in _META_PARAMS:
        if name not in params:
            continue
        value = _str(params, name)
        if not value:
            continue
        if "\ufffd" in value:
            raise _bad(ctx, name, "not UTF-8")
        if name == "account" and (len(value) > 64 or any(c in value for c in "[]\r\n")):
            raise _bad(ctx, "account", "misformed or too long")
        out[key] = value
    return out


async def sendsms(request: web.Request) -> web.StreamResponse:
    """Kannel's sendsms interface (see the module docstring)."""
    ctx = request.app[CONTEXT]
    reply = await answer(ctx, request, request.rel_url.raw_query_string,
                         lambda: read_body(request, ctx))
    return reply.response() if isinstance(reply, FastAnswer) else reply


async def fast_sendsms(ctx: ReceiverContext,
                       request: FastRequest) -> web.Response | FastAnswer:
    """`/cgi-bin/sendsms` served by the fast front (shared/runtime/fasthttp.py): the same
    `answer`, the body already read (the front hands larger ones to aiohttp)."""
    return await answer(ctx, request, request.query_string, request.body)


async def answer(ctx: ReceiverContext, request: SendsmsRequest, query: str,
                 read: Callable[[], Awaitable[bytes]] | bytes) -> web.Response | FastAnswer:
    """Kannel's answer to one sendsms request (both HTTP paths; `read` reads the body, or is
    the body). The 202 is a `FastAnswer` (its `response()` for aiohttp)."""
    started = time.perf_counter()
    try:
        params = await _params(ctx, request, query, read)
        account = await _account(ctx, params)
        to = _receiver(ctx, params)
        admit(ctx, "outbound")
        admit_account(ctx, account)
        items = _items(ctx, account, params, to)
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
    return _ACCEPTED


def add_routes(app: web.Application) -> None:
    """Register `/cgi-bin/sendsms` for GET and POST."""
    app.router.add_get("/cgi-bin/sendsms", sendsms)
    app.router.add_post("/cgi-bin/sendsms", sendsms)
