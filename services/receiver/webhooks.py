"""Inbound MO webhooks from HTTP SMS providers: Twilio, Vonage (SMS API) and a generic JSON one.

Signatures are checked before anything is stored; a bad one gets 401 and nothing is written.
A provider route is on only when its secret is configured: without one (Twilio's auth token,
Vonage's signature secret, a generic source's secret) the route answers exactly what an
unknown path answers — 404 — reads nothing and stores nothing, and the daemon says once at
start-up which routes are off (`routes_off`). There is no unsigned mode.
A redelivered webhook (same provider message id) is answered as success and stored once
(`dedupe_keys`, scope `mo:<provider>`). Each stores through the MO group committer after an
admission check against the inbound queue (503 + Retry-After when it is over its watermark).

* Twilio (`/v1/inbound/twilio`, form POST or GET): `X-Twilio-Signature` is base64
  HMAC-SHA1(auth token, URL + every parameter name and value, sorted by name), where URL is the
  public URL Twilio called (`[webhooks] public_base_url` + path and query — required with a
  token, never the request's Host header), tried with and without the default port, repeated
  names with each distinct value sorted, as twilio-python's RequestValidator does. What is
  stored is exactly what was signed. Answer: empty TwiML `<Response/>`.
* Vonage (`/v1/inbound/vonage`, GET, form or JSON POST): `sig` = hex HMAC (sha256 by
  default; md5/sha1/sha512, or the plain "md5hash") over `&key=value` for every other
  parameter sorted by key (with `&` and `=` in values replaced by `_`), as the Vonage SDK
  computes it, compared case-insensitively; `timestamp` must be within the replay window.
  Concatenated parts are reassembled in `mo_parts`. Answer: 204.
* Generic (`/v1/inbound/generic[/{source}]`, JSON): `X-Smsgw-Timestamp: <unix>` and
  `X-Smsgw-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>` — the same
  scheme our own callbacks use — with a replay window.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson
from aiohttp import web
from pydantic import SecretStr, ValidationError

from smsgw.services.receiver.api import Rejected, admit, read_body, unavailable_for
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.models import GenericInboundIn, field_errors
from smsgw.services.receiver.responses import error, json_response
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.intake import FragmentWrite, InboundResult, InboundWrite
from smsgw.shared.domain.numbers import InvalidNumber, normalise
from smsgw.shared.queue.groupcommit import IntakeClosed, IntakeFull
from smsgw.shared.runtime.config import VonageSettings, WebhooksSettings

Handler = Callable[[web.Request, ReceiverContext], Awaitable[web.StreamResponse]]

TWIML_EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response/>'
_VONAGE_DIGESTS = {"md5": hashlib.md5, "sha1": hashlib.sha1, "sha256": hashlib.sha256,
                   "sha512": hashlib.sha512}


# -- signatures (pure functions) ----------------------------------------------------------------
# Keys come as `SecretStr` (printed as `**********`) and are unwrapped only inside the HMAC call,
# so no frame holds a plain copy (a plain `str` is accepted for tests and tools).

Secret = SecretStr | str


def _key(secret: Secret) -> bytes:
    return (secret.get_secret_value() if isinstance(secret, SecretStr) else secret).encode()


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison of a signature from a request with the expected (ASCII) one;
    a value with other characters (bytes a header or parameter should not hold) never matches."""
    return given.isascii() and hmac.compare_digest(given.encode(), expected.encode())


def twilio_signature(auth_token: Secret, url: str, params: Iterable[tuple[str, str]]) -> str:
    """Base64 HMAC-SHA1 of the URL followed by each parameter's name and value, by name."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    payload = url + "".join(name + value for name in sorted(values)
                            for value in sorted(values[name]))
    digest = hmac.new(_key(auth_token), payload.encode("utf-8", "surrogateescape"),
                      hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_valid(auth_token: Secret, url: str, params: list[tuple[str, str]],
                 signature: str) -> bool:
    """True if `signature` matches the URL with or without its default port."""
    candidates = {url, _with_default_port(url), _without_port(url)}
    return any(_same(signature, twilio_signature(auth_token, u, params)) for u in candidates)


def _with_default_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is not None or parts.scheme not in ("http", "https"):
        return url
    port = 443 if parts.scheme == "https" else 80
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _without_port(url: str) -> str:
    parts = urlsplit(url)
    if parts.port is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    host = hostport.rsplit(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{host}" if userinfo else host))


def vonage_signature(secret: Secret, params: Mapping[str, str], method: str = "sha256") -> str:
    """Hex signature over `&key=value` of the sorted params (without `sig`), Vonage SDK style."""
    hasher: Any = (hashlib.md5() if method == "md5hash"
                   else hmac.new(_key(secret), digestmod=_VONAGE_DIGESTS[method]))
    for key in sorted(params):
        if key == "sig":
            continue
        value = str(params[key]).replace("&", "_").replace("=", "_")
        hasher.update(f"&{key}={value}".encode("utf-8", "surrogateescape"))
    if method == "md5hash":
        hasher.update(_key(secret))
    return str(hasher.hexdigest())


def generic_signature(secret: Secret, timestamp: str, body: bytes) -> str:
    """`sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`."""
    mac = hmac.new(_key(secret), timestamp.encode("utf-8", "surrogateescape") + b"." + body,
                   hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _fresh(timestamp: str | None, window_s: float, now: float) -> bool:
    try:
        return timestamp is not None and abs(now - float(timestamp)) <= window_s
    except ValueError:
        return False


# -- shared steps --------------------------------------------------------------------------------

def _route_off() -> web.Response:
    """A provider route without a configured secret: the answer of an unknown path."""
    return error(404, "not_found", "Not Found")


def routes_off(webhooks: WebhooksSettings) -> list[str]:
    """The provider routes that are off because their secret is not configured."""
    off = []
    if webhooks.twilio is None or webhooks.twilio.auth_token is None \
            or not webhooks.public_base_url:
        off.append("/v1/inbound/twilio")
    if webhooks.vonage is None or webhooks.vonage.signature_secret is None:
        off.append("/v1/inbound/vonage")
    if "default" not in webhooks.generic or webhooks.generic["default"].secret is None:
        off.append("/v1/inbound/generic")
    off += [f"/v1/inbound/generic/{name}" for name, source in sorted(webhooks.generic.items())
            if source.secret is None]
    return off


def _unauthorized(ctx: ReceiverContext, provider: str) -> Rejected:
    ctx.metrics.requests_rejected.labels(reason="bad_signature").inc()
    ctx.metrics.inbound_messages.labels(channel="http", provider=provider,
                                        outcome="rejected").inc()
    return Rejected(error(401, "bad_signature", "signature missing or invalid"))


def _number(ctx: ReceiverContext, field: str, value: str | None) -> str:
    if not value:
        raise _missing(ctx, field)
    try:
        return normalise(value, default_country=ctx.options.default_country)
    except InvalidNumber as exc:
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        raise Rejected(error(422, "validation_failed", f"{field}: {exc}",
                             errors=[{"field": field, "message": str(exc)}])) from exc


def _missing(ctx: ReceiverContext, field: str) -> Rejected:
    ctx.metrics.requests_rejected.labels(reason="validation").inc()
    return Rejected(error(422, "validation_failed", f"{field}: field required",
                          errors=[{"field": field, "message": "field required"}]))


def _without_nul(item: InboundWrite | FragmentWrite) -> InboundWrite | FragmentWrite:
    # Postgres text and jsonb cannot hold U+0000 (found by the webhook fuzzer: a signed Twilio
    # webhook with NUL in Body was a 500). A provider would retry a refusal for a day, so the
    # message is kept with each NUL replaced by U+FFFD, as a decoder does with bad bytes —
    # at any depth of a JSON value (a generic webhook's `meta`), keys included.
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(item):
        value = getattr(item, f.name)
        if isinstance(value, str | dict | list):
            clean = _clean_nul(value)
            if clean is not value:
                changes[f.name] = clean
    return dataclasses.replace(item, **changes) if changes else item


def _clean_nul(value: Any) -> Any:
    """`value` with every NUL in every string (keys too) replaced by U+FFFD; the same object
    when there is none."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        items = [(_clean_nul(k), _clean_nul(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(),
                                                                 strict=True)):
            return value
        return dict(items)
    if isinstance(value, list):
        cleaned = [_clean_nul(v) for v in value]
        return value if all(a is b for a, b in zip(cleaned, value, strict=True)) else cleaned
    return value


async def _store(ctx: ReceiverContext, provider: str,
                 item: InboundWrite | FragmentWrite) -> InboundResult:
    item = _without_nul(item)
    result: InboundResult = await ctx.inbound.submit(item)
    ctx.metrics.mo("http", provider, "duplicate" if result.duplicate else "accepted")
    return result


def _public_url(base: str, request: web.Request) -> str:
    # Never from the request's Host header: a signature made for another host would pass.
    return base.rstrip("/") + request.raw_path


async def _run(request: web.Request, provider: str, body: Handler) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    started = time.perf_counter()
    try:
        return await body(request, ctx)
    except Rejected as exc:
        return exc.response
    except (DatabaseUnavailable, IntakeFull, IntakeClosed) as exc:
        return unavailable_for(ctx, exc)
    finally:
        ctx.metrics.duration(provider, time.perf_counter() - started)


# -- Twilio --------------------------------------------------------------------------------------

async def twilio(request: web.Request) -> web.StreamResponse:
    """Twilio incoming-message webhook → one inbound row; answers empty TwiML."""
    return await _run(request, "twilio", _twilio)


async def _twilio(request: web.Request, ctx: ReceiverContext) -> web.StreamResponse:
    settings = ctx.webhooks.twilio
    token = settings.auth_token if settings is not None else None
    base = ctx.webhooks.public_base_url  # required with a token (config validation)
    if token is None or not base:
        return _route_off()
    admit(ctx, "inbound")
    # One parse, used both for the signature and for what is stored: a POST's form fields
    # (signed as name+value pairs), or a GET's query (signed as part of the URL).
    form: list[tuple[str, str]] = []
    if request.method == "POST":
        raw = await read_body(request, ctx)
        form = parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)
        fields = form
    else:
        fields = parse_qsl(request.rel_url.raw_query_string, keep_blank_values=True)
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature or not twilio_valid(token, _public_url(base, request), form, signature):
        raise _unauthorized(ctx, "twilio")
    params = _twilio_fields(ctx, fields)
    sid = params.get("MessageSid") or params.get("SmsMessageSid")
    if not sid:
        raise _missing(ctx, "MessageSid")
    meta = {k: v for k, v in params.items()
            if k not in ("From", "To", "Body", "MessageSid")}
    item = InboundWrite(channel="http", provider="twilio", connector=None,
                        from_addr=_number(ctx, "From", params.get("From")),
                        to_addr=_number(ctx, "To", params.get("To")),
                        body=params.get("Body", ""), provider_message_id=sid, meta=meta,
                        dedupe_scope="mo:twilio", dedupe_key=sid)
    await _store(ctx, "twilio", item)
    return web.Response(text=TWIML_EMPTY, content_type="text/xml")


_TWILIO_SINGLE = ("From", "To", "Body", "MessageSid", "SmsMessageSid")


def _twilio_fields(ctx: ReceiverContext, fields: list[tuple[str, str]]) -> dict[str, Any]:
    """The signed fields by name. Twilio's signature covers every value of a repeated name
    (sorted, duplicates once), so each value was signed; a message field that comes with two
    different values is ambiguous and refused (422) rather than picking one. Other repeated
    names keep all their values, in order."""
    values: dict[str, list[str]] = {}
    for name, value in fields:
        seen = values.setdefault(name, [])
        if value not in seen:
            seen.append(value)
    for name in _TWILIO_SINGLE:
        if len(values.get(name, ())) > 1:
            ctx.metrics.requests_rejected.labels(reason="validation").inc()
            raise Rejected(error(422, "validation_failed", f"{name}: repeated with different "
                                 "values", errors=[{"field": name,
                                                    "message": "repeated with different values"}]))
    return {name: vals[0] if len(vals) == 1 else vals for name, vals in values.items()}


# -- Vonage --------------------------------------------------------------------------------------

async def vonage(request: web.Request) -> web.StreamResponse:
    """Vonage SMS API inbound webhook (GET, form or JSON POST) → inbound row; answers 204."""
    return await _run(request, "vonage", _vonage)


async def _vonage_params(request: web.Request, ctx: ReceiverContext) -> dict[str, str]:
    params = dict(request.query)
    if request.method != "POST":
        return params
    raw = await read_body(request, ctx)
    if request.content_type == "application/json":
        try:
            data = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise Rejected(error(400, "invalid_json", "the body is not valid JSON",
                                 errors=[{"field": "body", "message": "not valid JSON"}])) \
                from exc
        if not isinstance(data, dict):
            raise Rejected(error(422, "validation_failed", "body: expected a JSON object",
                                 errors=[{"field": "body", "message": "expected an object"}]))
        params.update({str(k): v if isinstance(v, str) else orjson.dumps(v).decode()
                       for k, v in data.items()})
    else:
        params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def _vonage_check_signature(ctx: ReceiverContext, params: dict[str, str],
                            settings: VonageSettings, secret: SecretStr) -> None:
    sig = params.get("sig", "").lower()
    expected = vonage_signature(secret, params, settings.signature_method)
    if not sig or not _same(sig, expected.lower()):
        raise _unauthorized(ctx, "vonage")
    if not _fresh(params.get("timestamp"), ctx.webhooks.replay_window_s, ctx.clock()):
        raise _unauthorized(ctx, "vonage")


async def _vonage(request: web.Request, ctx: ReceiverContext) -> web.StreamResponse:
    settings = ctx.webhooks.vonage
    secret = settings.signature_secret if settings is not None else None
    if settings is None or secret is None:
        return _route_off()  # never an unsigned mode: anyone could store MO (and get replies)
    admit(ctx, "inbound")
    params = await _vonage_params(request, ctx)
    if not params:
        return web.Response(status=204)  # Vonage's reachability check carries no message
    _vonage_check_signature(ctx, params, settings, secret)
    message_id = params.get("messageId")
    if not message_id:
        raise _missing(ctx, "messageId")
    from_addr = _number(ctx, "msisdn", params.get("msisdn"))
    to_addr = _number(ctx, "to", params.get("to"))
    text = params.get("text")
    await _store(ctx, "vonage", _vonage_item(ctx, params, message_id, from_addr, to_addr, text))
    return web.Response(status=204)


def _vonage_item(ctx: ReceiverContext, params: dict[str, str], message_id: str, from_addr: str,
                 to_addr: str, text: str | None) -> InboundWrite | FragmentWrite:
    if params.get("concat") == "true":
        try:
            ref, total, seq = (int(params[k]) for k in ("concat-ref", "concat-total",
                                                         "concat-part"))
        except (KeyError, ValueError) as exc:
            raise _missing(ctx, "concat-ref/concat-total/concat-part") from exc
        if not 1 <= seq <= total <= 255:
            raise _missing(ctx, "concat-part")
        return FragmentWrite(channel="http", provider="vonage", connector="vonage",
                             from_addr=from_addr, to_addr=to_addr, ref=ref, total=total,
                             seq=seq, body=text, provider_message_id=message_id,
                             dedupe_scope="mo:vonage", dedupe_key=message_id)
    meta = {k: v for k, v in params.items()
            if k in ("type", "keyword", "message-timestamp", "udh", "data", "api-key")}
    return InboundWrite(channel="http", provider="vonage", connector=None, from_addr=from_addr,
                        to_addr=to_addr, body=text, provider_message_id=message_id,
                        meta=meta, dedupe_scope="mo:vonage", dedupe_key=message_id)


# -- generic --------------------------------------------------------------------------------------

async def generic(request: web.Request) -> web.StreamResponse:
    """Generic signed JSON webhook → inbound row; answers `{"id", "duplicate", "complete"}`."""
    return await _run(request, "generic", _generic)


async def _generic(request: web.Request, ctx: ReceiverContext) -> web.StreamResponse:
    source = request.match_info.get("source") or request.headers.get("X-Smsgw-Source") \
        or "default"
    settings = ctx.webhooks.generic.get(source)
    secret = settings.secret if settings is not None else None
    if secret is None:
        return _route_off()  # an unknown source, or one without a secret
    admit(ctx, "inbound")
    raw = await read_body(request, ctx)
    timestamp = request.headers.get("X-Smsgw-Timestamp")
    signature = request.headers.get("X-Smsgw-Signature", "")
    if not timestamp or not _same(
            signature, generic_signature(secret, timestamp, raw)):
        raise _unauthorized(ctx, "generic")
    if not _fresh(timestamp, ctx.webhooks.replay_window_s, ctx.clock()):
        raise _unauthorized(ctx, "generic")
    try:
        msg = GenericInboundIn.model_validate_json(raw)
    except ValidationError as exc:
        errors = field_errors(exc)
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        return error(422, "validation_failed", f"{errors[0]['field']}: {errors[0]['message']}",
                     errors=errors)
    item = InboundWrite(channel="http", provider=f"generic:{source}", connector=None,
                        from_addr=_number(ctx, "from", msg.from_),
                        to_addr=_number(ctx, "to", msg.to), body=msg.text,
                        provider_message_id=msg.id, meta=_json_meta(ctx, msg.meta),
                        dedupe_scope=f"mo:generic:{source}", dedupe_key=msg.id)
    result = await _store(ctx, "generic", item)
    return json_response({"id": result.inbound_id, "duplicate": result.duplicate,
                          "complete": result.complete})


def _json_meta(ctx: ReceiverContext, meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """`meta` as the jsonb column will hold it; 422 for what JSON cannot carry there (an
    integer beyond 64 bits, nesting too deep), refused here rather than failing the commit
    of a whole batch."""
    if meta is None:
        return None
    try:
        return dict(orjson.loads(orjson.dumps(meta)))
    except (TypeError, orjson.JSONEncodeError, orjson.JSONDecodeError) as exc:
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        raise Rejected(error(422, "validation_failed", "meta: not storable as JSON",
                             errors=[{"field": "meta", "message": "not storable as JSON"}])) \
            from exc


def add_routes(app: web.Application) -> None:
    """Register the webhook routes."""
    app.router.add_post("/v1/inbound/twilio", twilio)
    app.router.add_get("/v1/inbound/twilio", twilio)
    app.router.add_get("/v1/inbound/vonage", vonage)
    app.router.add_post("/v1/inbound/vonage", vonage)
    app.router.add_post("/v1/inbound/generic", generic)
    app.router.add_post("/v1/inbound/generic/{source}", generic)
