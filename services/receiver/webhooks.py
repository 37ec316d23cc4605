"""Inbound MO webhooks from HTTP SMS providers: Twilio, Vonage (SMS API) and a generic JSON one.

Signatures are checked before anything is stored; a bad one gets 401 and nothing is written.
A provider route is on only when its secret is configured: without one (Twilio's auth token,
Vonage's signature secret, a generic source's secret) the route answers exactly what an
unknown path answers — 404 — reads nothing and stores nothing, and the daemon says once at
start-up which routes are off (`routes_off`). There is no unsigned mode.
A redelivered webhook (same provider message id) is answered as success and stored once
(`dedupe_keys`, scope `mo:<provider>`). Each stores through the MO group committer after an
admission check against the inbound queue (503 + Retry-After when it is over its watermark).
Numbers are read in each provider's own format (Twilio "+E.164", Vonage international digits
without the '+', a generic source's `number_format`); what each answer makes the provider do,
and so what we answer, is in docs/ARCHITECTURE.md "Provider webhooks".

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
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson
import structlog
from aiohttp import web
from pydantic import SecretStr, ValidationError

from smsgw.services.receiver.api import Rejected, admit, read_body, unavailable_for
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.models import GenericInboundIn, field_errors
from smsgw.services.receiver.responses import error, json_response
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.intake import FragmentWrite, InboundResult, InboundWrite
from smsgw.shared.domain.numbers import InvalidNumber, normalise_provider
from smsgw.shared.queue.groupcommit import IntakeClosed, IntakeFull
from smsgw.shared.runtime.config import VonageSettings, WebhooksSettings

Handler = Callable[[web.Request, ReceiverContext], Awaitable[web.StreamResponse]]
log = structlog.get_logger("receiver.webhooks")

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


# What each answer makes the provider do decides the answer (docs/ARCHITECTURE.md "Provider
# webhooks"): Vonage resends everything but 200/204 for 24 hours; Twilio resends nothing by
# itself — an error answer makes it call the number's Fallback URL, and a 5xx is retried
# only with the connection override `rp=5xx` (within its 15 s total). So:
# * a transient problem (database down, the inbound queue over its watermark) is 503 +
#   Retry-After, the answer both can act on;
# * what no resend can fix (a bad signature, a request that is not a message) is a 4xx,
#   counted (`smsgw_inbound_messages_total{outcome="rejected"}`,
#   `smsgw_receiver_requests_rejected_total{reason}`) and logged (`webhook_rejected`, at most
#   one line per provider, status and reason every `_LOG_EVERY_S`, with the number left out);
# * a number in a format the provider should not send is no reason to refuse: the message
#   is stored, flagged (`_Addresses`).
_LOG_EVERY_S = 10.0
_last_logged: dict[tuple[int, str, int, str], tuple[float, int]] = {}


def _log_rejection(ctx: ReceiverContext, provider: str, status: int, reason: str,
                   field: str | None) -> None:
    key = (id(ctx), provider, status, reason)
    now = time.monotonic()
    last, suppressed = _last_logged.get(key, (float("-inf"), 0))
    if now - last < _LOG_EVERY_S:
        _last_logged[key] = (last, suppressed + 1)
        return
    _last_logged[key] = (now, 0)
    log.warning("webhook_rejected", provider=provider, status=status, reason=reason,
                field=field, suppressed=suppressed)


def _reject(ctx: ReceiverContext, provider: str, status: int, reason: str, message: str,
            field: str | None = None, code: str = "validation_failed") -> Rejected:
    """A counted, logged 4xx for a webhook no retry can make storable; `field` is named in
    the answer (and the log), never its value."""
    ctx.metrics.requests_rejected.labels(reason=reason).inc()
    ctx.metrics.mo("http", provider, "rejected")
    _log_rejection(ctx, provider, status, reason, field)
    if field is None:
        return Rejected(error(status, code, message))
    return Rejected(error(status, code, f"{field}: {message}",
                          errors=[{"field": field, "message": message}]))


def _unauthorized(ctx: ReceiverContext, provider: str) -> Rejected:
    return _reject(ctx, provider, 401, "bad_signature", "signature missing or invalid",
                   code="bad_signature")


def _missing(ctx: ReceiverContext, provider: str, field: str) -> Rejected:
    return _reject(ctx, provider, 422, "validation", "field required", field)


_MAX_RAW_NUMBER = 64  # a kept unparsed value; longer is no address of any kind


class _Addresses:
    """Reads a provider's address fields in its own format (`normalise_provider`).

    A value in another format is not refused — a refusal would be retried and refused again
    until the provider gives up, and the message would be lost. It is stored as it came
    (stripped) with the flag `meta.unparsed_numbers = {field: reason}`, counted
    (`smsgw_inbound_messages_total{outcome="number_unparsed"}`) and logged
    (`webhook_number_unparsed`, field and reason, not the value). An empty or absurd value
    (over 64 characters) is not an address: 422."""

    def __init__(self, ctx: ReceiverContext, provider: str, number_format: str,
                 default_country: str | None) -> None:
        self.ctx = ctx
        self.provider = provider
        self.number_format = number_format
        self.default_country = default_country
        self.unparsed: dict[str, str] = {}

    def read(self, field: str, value: Any) -> str:
        if not isinstance(value, str) or not value.strip():
            raise _missing(self.ctx, self.provider, field)
        try:
            return normalise_provider(value, self.number_format,
                                      default_country=self.default_country)
        except InvalidNumber as exc:
            raw = value.strip()
            if len(raw) > _MAX_RAW_NUMBER:
                raise _reject(self.ctx, self.provider, 422, "validation",
                              f"longer than {_MAX_RAW_NUMBER} characters", field) from exc
            self.unparsed[field] = str(exc)
            return raw

    def flag(self, meta: dict[str, Any]) -> dict[str, Any]:
        """`meta` with the flag when a field was kept unparsed (counted and logged here)."""
        if not self.unparsed:
            return meta
        self.ctx.metrics.mo("http", self.provider, "number_unparsed")
        log.warning("webhook_number_unparsed", provider=self.provider,
                    number_format=self.number_format, fields=self.unparsed)
        return {**meta, "unparsed_numbers": dict(self.unparsed)}


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
        raise _missing(ctx, "twilio", "MessageSid")
    # Twilio writes `From`/`To` as "+<E.164>" (a short code or an alphanumeric sender as is)
    numbers = _Addresses(ctx, "twilio", "e164", None)
    from_addr = numbers.read("From", params.get("From"))
    to_addr = numbers.read("To", params.get("To"))
    meta = {k: v for k, v in params.items()
            if k not in ("From", "To", "Body", "MessageSid")}
    item = InboundWrite(channel="http", provider="twilio", connector=None,
                        from_addr=from_addr, to_addr=to_addr,
                        body=params.get("Body", ""), provider_message_id=sid,
                        meta=numbers.flag(meta), dedupe_scope="mo:twilio", dedupe_key=sid)
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
            raise _reject(ctx, "twilio", 422, "validation", "repeated with different values",
                          name)
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
            raise _reject(ctx, "vonage", 400, "validation", "not valid JSON", "body",
                          code="invalid_json") from exc
        if not isinstance(data, dict):
            raise _reject(ctx, "vonage", 422, "validation", "expected a JSON object", "body")
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
        raise _missing(ctx, "vonage", "messageId")
    # Vonage writes `msisdn`/`to` as international digits without the '+' ("447700900001")
    numbers = _Addresses(ctx, "vonage", "international_digits", None)
    from_addr = numbers.read("msisdn", params.get("msisdn"))
    to_addr = numbers.read("to", params.get("to"))
    await _store(ctx, "vonage", _vonage_item(params, message_id, from_addr, to_addr, numbers))
    return web.Response(status=204)


# The inbound-SMS fields of Vonage's SMS API reference kept in `meta` as they came: `type` is
# text | unicode | binary, `keyword` the first word upper-cased, `message-timestamp` UTC
# "YYYY-MM-DD HH:MM:SS", `api-key` the receiving account; `udh` (hex) and `data` for binary.
_VONAGE_META = ("type", "keyword", "message-timestamp", "udh", "data", "api-key")
_DC_BINARY = 4  # SMPP data_coding 8-bit binary, as an SMPP MO with binary content is stored


def _vonage_item(params: dict[str, str], message_id: str, from_addr: str, to_addr: str,
                 numbers: _Addresses) -> InboundWrite | FragmentWrite:
    text = params.get("text")
    raw = data_coding = None
    if params.get("type") == "binary":  # `data` is the content, hex like `udh`
        try:
            raw, data_coding, text = bytes.fromhex(params.get("data", "")), _DC_BINARY, None
        except ValueError:
            raw = None  # not hex: kept in meta as it came
    concat = _vonage_concat(params) if params.get("concat") == "true" else None
    if concat is not None and not numbers.unparsed:
        ref, total, seq = concat
        return FragmentWrite(channel="http", provider="vonage", connector="vonage",
                             from_addr=from_addr, to_addr=to_addr, ref=ref, total=total,
                             seq=seq, body=text, raw=raw, data_coding=data_coding,
                             provider_message_id=message_id, dedupe_scope="mo:vonage",
                             dedupe_key=message_id)
    meta: dict[str, Any] = {k: v for k, v in params.items() if k in _VONAGE_META}
    if params.get("concat") == "true":
        # a part kept whole: its numbers are flagged (a fragment carries no meta), or its
        # concat fields cannot place it — kept rather than lost, with what it said
        meta["concat_part"] = {k: params.get(k) for k in ("concat-ref", "concat-total",
                                                          "concat-part")}
    stamp = _vonage_timestamp(params.get("message-timestamp"))
    if stamp is not None:
        meta["provider_timestamp"] = stamp
    return InboundWrite(channel="http", provider="vonage", connector=None, from_addr=from_addr,
                        to_addr=to_addr, body=text, raw=raw, data_coding=data_coding,
                        provider_message_id=message_id, meta=numbers.flag(meta),
                        dedupe_scope="mo:vonage", dedupe_key=message_id)


def _vonage_concat(params: dict[str, str]) -> tuple[int, int, int] | None:
    """(ref, total, part) of a concatenated part, or None when they cannot place it. Vonage
    calls `concat-ref` "the transaction reference" (a string): one that is not a small
    integer is mapped to one (CRC-32, 31 bits), the same for every part."""
    try:
        total, seq = int(params.get("concat-total", "")), int(params.get("concat-part", ""))
    except ValueError:
        return None
    if not 1 <= seq <= total <= 255:
        return None
    ref_text = params.get("concat-ref", "")
    ref = int(ref_text) if ref_text.isascii() and ref_text.isdigit() else -1
    if not 0 <= ref < 2**31:
        ref = zlib.crc32(ref_text.encode("utf-8", "surrogateescape")) & 0x7FFFFFFF
    return ref, total, seq


def _vonage_timestamp(value: str | None) -> str | None:
    """`message-timestamp` ("2020-01-01 12:00:00", UTC) as ISO 8601, or None."""
    try:
        return datetime.strptime(value or "", "%Y-%m-%d %H:%M:%S").replace(
            tzinfo=UTC).isoformat()
    except ValueError:
        return None


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
        _reject(ctx, "generic", 422, "validation", errors[0]["message"],
                errors[0]["field"])  # counted and logged; the answer lists every error
        return error(422, "validation_failed", f"{errors[0]['field']}: {errors[0]['message']}",
                     errors=errors)
    # the numbers in the format the source declared (`[webhooks.generic.NAME] number_format`)
    numbers = _Addresses(ctx, "generic", settings.number_format,
                         settings.default_country or ctx.options.default_country)
    from_addr = numbers.read("from", msg.from_)
    to_addr = numbers.read("to", msg.to)
    meta = _json_meta(ctx, msg.meta)
    item = InboundWrite(channel="http", provider=f"generic:{source}", connector=None,
                        from_addr=from_addr, to_addr=to_addr, body=msg.text,
                        provider_message_id=msg.id,
                        meta=numbers.flag(meta or {}) if numbers.unparsed else meta,
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
        raise _reject(ctx, "generic", 422, "validation", "not storable as JSON",
                      "meta") from exc


def add_routes(app: web.Application) -> None:
    """Register the webhook routes."""
    app.router.add_post("/v1/inbound/twilio", twilio)
    app.router.add_get("/v1/inbound/twilio", twilio)
    app.router.add_get("/v1/inbound/vonage", vonage)
    app.router.add_post("/v1/inbound/vonage", vonage)
    app.router.add_post("/v1/inbound/generic", generic)
    app.router.add_post("/v1/inbound/generic/{source}", generic)
