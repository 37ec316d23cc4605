"""The MT submit API: `POST /v1/messages`, `GET /v1/messages/{id}`.

Order of checks for a submit: authentication (401) → admission against the outbound snapshot
(503) → body size (413) → JSON (400) → every field (422, all errors at once, each naming its
field) → account rate limit (429) → group commit → 202 once the rows are durable.
Idempotency: a repeated `client_ref` with the same content answers the original id
(`status: duplicate`), with different content 409; in a batch, the repeats are marked and only
the new messages stored.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from smsgw.services.receiver.auth import bearer_key
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.models import (
    BatchIn,
    MessageIn,
    PlainMessage,
    field_errors,
    plain_batch,
    plain_message,
)
from smsgw.services.receiver.ratelimit import window_limit
from smsgw.services.receiver.responses import error, json_response, unavailable, unavailable_reason
from smsgw.services.receiver.store import MtItem, MtOutcome, MtResult, find_message
from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.apikeys import Account
from smsgw.shared.domain.numbers import InvalidNumber, normalise_recipient, normalise_sender
from smsgw.shared.domain.urlguard import UnsafeUrl, check_url
from smsgw.shared.queue.groupcommit import IntakeClosed, IntakeFull
from smsgw.shared.runtime.fasthttp import FastAnswer, FastRequest
from smsgw.shared.runtime.http import BodyTimeout
from smsgw.shared.smpp.text import TextTooLong, check_udh, estimate_content

MAX_SCHEDULE_AHEAD = timedelta(days=30)
_ALLOWED_ENCODINGS: dict[str | None, tuple[Any, ...]] = {
    None: ("gsm7", "ucs2"), "auto": ("gsm7", "ucs2"), "gsm7": ("gsm7",),
    "latin1": ("latin1",), "ucs2": ("ucs2",)}


class Rejected(Exception):
    """A request answered early with `response` (raised inside helpers, caught by handlers)."""

    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


# -- shared request steps (also used by sendsms and webhooks) -------------------------------------

async def require_account(request: web.Request, ctx: ReceiverContext) -> Account:
    """The account of the request's bearer key; raise `Rejected` (401) otherwise."""
    return await require_bearer(ctx, request.headers.get("Authorization"))


async def require_bearer(ctx: ReceiverContext, authorization: str | None) -> Account:
    """The account of an `Authorization: Bearer <key>` header; raise `Rejected` (401)
    otherwise."""
    key = bearer_key(authorization)
    try:
        account = await ctx.auth.authenticate(key) if key else None
    except CONNECTION_ERRORS as exc:  # the database is down: ask the client to retry, do not 401
        raise Rejected(unavailable("database_unavailable", ctx.options.retry_after_s)) from exc
    if account is None:
        ctx.metrics.requests_rejected.labels(reason="unauthorized").inc()
        raise Rejected(error(401, "unauthorized",
                             "a valid API key is required (Authorization: Bearer <key>)",
                             headers={"WWW-Authenticate": 'Bearer realm="smsgw"'}))
    return account


def admit(ctx: ReceiverContext, queue: str) -> None:
    """Raise `Rejected` (503 + Retry-After) when `queue` is over its watermark or age."""
    reason = ctx.admission.check(queue)
    if reason is not None:
        ctx.metrics.backpressure_rejections.labels(reason=reason).inc()
        raise Rejected(unavailable(reason, ctx.options.retry_after_s))


def admit_account(ctx: ReceiverContext, account: Account) -> None:
    """Raise `Rejected` (503 + Retry-After) when the account holds more than its fair share of
    the MT watermark (services/receiver/admission.py); the other accounts keep going."""
    reason = ctx.admission.check_account(account.id)
    if reason is not None:
        ctx.metrics.backpressure_rejections.labels(reason=reason).inc()
        raise Rejected(unavailable(reason, ctx.options.retry_after_s))


def account_rate(ctx: ReceiverContext, account: Account) -> float | None:
    """The account's own rate, else `default_account_rate` (None: no limit)."""
    if account.rate_per_s is not None:
        return account.rate_per_s
    return ctx.options.default_account_rate or None


def forced_connector(ctx: ReceiverContext, account: Account, field: str,
                     value: str | None) -> str | None:
    """A connector the client forces (Kannel `smsc=`, JSON `connector`), checked: by default
    an account may not force one (its routes decide); one it may force must also be in the
    config's `[[connectors]]`, or the message would wait for it forever."""
    if not value:
        return None
    if value not in account.allowed_connectors:
        raise FieldInvalid(field, "this account may not choose a connector (the routes decide; "
                                  "`smsgw accounts update NAME --allowed-connector NAME`)")
    if value not in ctx.connectors:
        raise FieldInvalid(field, "unknown connector")
    return value


async def read_body(request: web.Request, ctx: ReceiverContext) -> bytes:
    """The request body; raise `Rejected` (413) past `max_body_bytes`."""
    limit = ctx.options.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        ctx.metrics.requests_rejected.labels(reason="too_large").inc()
        raise Rejected(error(413, "too_large", f"request body larger than {limit} bytes"))
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        ctx.metrics.requests_rejected.labels(reason="too_large").inc()
        raise Rejected(error(413, "too_large", f"request body larger than {limit} bytes")) \
            from exc
    except (BodyTimeout, ConnectionResetError) as exc:  # too slow (httpguard), or gone
        ctx.metrics.requests_rejected.labels(reason="timeout").inc()
        raise Rejected(error(408, "timeout", "request body not received in time",
                             headers={"Connection": "close"})) from exc


def unavailable_for(ctx: ReceiverContext, exc: BaseException) -> web.Response:
    """503 for an intake that could not commit (database down, buffer full, shutting down)."""
    reason = unavailable_reason(exc)
    ctx.metrics.backpressure_rejections.labels(reason=reason).inc()
    return unavailable(reason, ctx.options.retry_after_s)


def invalid(ctx: ReceiverContext, errors: list[dict[str, str]],
            code: str = "validation_failed") -> Rejected:
    """422 listing every invalid field."""
    ctx.metrics.requests_rejected.labels(reason="validation").inc()
    first = errors[0]
    return Rejected(error(422, code, f"{first['field']}: {first['message']}", errors=errors))


# -- POST /v1/messages ---------------------------------------------------------------------------

async def post_messages(request: web.Request) -> web.StreamResponse:
    """Accept one MT or a batch; 202 when every new row is committed."""
    ctx = request.app[CONTEXT]
    answer = await submit(ctx, request.headers.get("Authorization"),
                          lambda: read_body(request, ctx))
    return answer.response() if isinstance(answer, FastAnswer) else answer


def fast_post_messages(ctx: ReceiverContext,
                       request: FastRequest) -> Awaitable[web.Response | FastAnswer]:
    """`POST /v1/messages` served by the fast front (shared/runtime/fasthttp.py): the same
    `submit` (returned, not awaited here: one coroutine less per request), the body already
    read (the front hands larger ones to aiohttp, whose `read_body` answers 413)."""
    return submit(ctx, request.authorization, request.body)


async def submit(ctx: ReceiverContext, authorization: str | None,
                 read: Callable[[], Awaitable[bytes]] | bytes) -> web.Response | FastAnswer:
    """The submit API's answer to one request (both HTTP paths): the checks in the order the
    module docstring gives, then the group commit. `read` reads the body, or is the body.
    A 202 is a `FastAnswer` (its `response()` for aiohttp)."""
    started = time.perf_counter()
    try:
        account = await require_bearer(ctx, authorization)
        admit(ctx, "outbound")
        admit_account(ctx, account)
        raw = read if isinstance(read, bytes) else await read()
        messages, batch = _parse(ctx, raw)
        items, estimates = _build_items(ctx, account, messages, batch)
        _check_rate(ctx, account, len(items))
        results = await ctx.mt.submit_many(items)
    except Rejected as exc:
        return exc.response
    except (DatabaseUnavailable, IntakeFull, IntakeClosed) as exc:
        return unavailable_for(ctx, exc)
    finally:
        ctx.metrics.duration("api", time.perf_counter() - started)
    for r in results:
        ctx.metrics.mt("api", _OUTCOME_LABELS[r.outcome])
    if batch:
        return FastAnswer(202, orjson.dumps(_batch_answer(items, results, estimates)))
    return _single_answer(items[0], results[0], estimates[0])


def _parse(ctx: ReceiverContext,
           raw: bytes) -> tuple[list[MessageIn] | list[PlainMessage], bool]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        ctx.metrics.requests_rejected.labels(reason="invalid_json").inc()
        raise Rejected(error(400, "invalid_json", "the body is not valid JSON",
                             errors=[{"field": "body", "message": "not valid JSON"}])) from exc
    if not isinstance(data, dict):
        raise invalid(ctx, [{"field": "body", "message": "expected a JSON object"}])
    batch = "messages" in data
    # the common shapes without pydantic (models.plain_message: what the model would accept
    # unchanged); anything else through the model, which names every error
    plain = plain_batch(data) if batch else plain_message(data)
    messages: list[MessageIn] | list[PlainMessage]
    if plain is None:
        try:
            if batch:
                messages = BatchIn.model_validate(data).messages
            else:
                messages = [MessageIn.model_validate(data)]
        except ValidationError as exc:
            raise invalid(ctx, field_errors(exc)) from exc
    else:
        messages = plain if isinstance(plain, list) else [plain]
    if len(messages) > ctx.options.max_batch:
        raise invalid(ctx, [{"field": "messages",
                             "message": f"at most {ctx.options.max_batch} messages"}])
    return messages, batch


def _build_items(ctx: ReceiverContext, account: Account,
                 messages: list[MessageIn] | list[PlainMessage],
                 batch: bool) -> tuple[list[MtItem], list[tuple[str, int]]]:
    items: list[MtItem] = []
    estimates: list[tuple[str, int]] = []
    errors: list[dict[str, str]] = []
    now = datetime.now(UTC)
    for i, msg in enumerate(messages):
        try:
            if type(msg) is PlainMessage:
                item, est = plain_item(ctx, account, msg)
            else:
                item, est = mt_item(ctx, account, msg, now)
        except FieldInvalid as exc:
            prefix = f"messages[{i}]." if batch else ""
            errors.append({"field": prefix + exc.field, "message": exc.message})
            continue
        items.append(item)
        estimates.append(est)
    if errors:
        raise invalid(ctx, errors)
    return items, estimates


class FieldInvalid(ValueError):
    """One field failed a check beyond the schema (number, sender, length, URL)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def mt_item(ctx: ReceiverContext, account: Account, msg: MessageIn | PlainMessage,
            now: datetime) -> tuple[MtItem, tuple[str, int]]:
    """Turn a validated `MessageIn` into a storable `MtItem` (+ encoding/parts estimate)."""
    opts = ctx.options
    to_addr = _number("to", msg.to, opts.default_country)
    from_addr = sender_id(account, msg.from_, opts.default_country)
    _check_content(msg)
    payload = bytes.fromhex(msg.binary) if msg.binary is not None else None
    udh = bytes.fromhex(msg.udh) if msg.udh is not None else None
    content: str | bytes = payload if payload is not None else (msg.text or "")
    field = "binary" if payload is not None else "text"
    encoding, parts = estimate_parts(content, _ALLOWED_ENCODINGS[msg.encoding], udh,
                                     opts.max_parts, field)
    callback_url = None
    if msg.callback_url is not None:
        try:
            callback_url = check_url(msg.callback_url,
                                     allowed_networks=ctx.webhooks.allowed_networks)
        except UnsafeUrl as exc:
            raise FieldInvalid("callback_url", str(exc)) from exc
    send_at = msg.send_at
    if send_at is not None and send_at - now > MAX_SCHEDULE_AHEAD:
        raise FieldInvalid("send_at", "at most 30 days ahead")
    start = max(send_at, now) if send_at is not None else now
    valid_until = start + timedelta(seconds=msg.validity) if msg.validity else None
    route_hint = forced_connector(ctx, account, "connector", msg.connector)
    item = MtItem(
        account_id=account.id, source="api", from_addr=from_addr, to_addr=to_addr,
        body=msg.text, category=msg.category or account.default_category,
        priority=msg.priority,
        encoding=None if msg.encoding in (None, "auto") else msg.encoding,
        client_ref=msg.client_ref, callback_url=callback_url, send_at=send_at,
        valid_until=valid_until, validity_s=msg.validity, route_hint=route_hint,
        meta={"callback_style": "json"} if callback_url else None,
        payload=payload, udh=udh, smpp=_smpp_fields(ctx, msg),
        due_now=due_now(ctx, send_at, now, route_hint))
    return item, (encoding, parts)


def plain_item(ctx: ReceiverContext, account: Account,
               msg: PlainMessage) -> tuple[MtItem, tuple[str, int]]:
    """`mt_item` of a `PlainMessage` (to, from, text, maybe client_ref; every other field its
    default), without the steps that cannot apply to one: the same checks in the same order,
    the same item and estimate (tests/receiver/test_units.py compares them)."""
    opts = ctx.options
    to_addr = _number("to", msg.to, opts.default_country)
    from_addr = sender_id(account, msg.from_, opts.default_country)
    est = estimate_parts(msg.text, _ALLOWED_ENCODINGS[None], None, opts.max_parts, "text")
    return MtItem(account_id=account.id, source="api", from_addr=from_addr, to_addr=to_addr,
                  body=msg.text, category=account.default_category,
                  client_ref=msg.client_ref), est


def _check_content(msg: MessageIn | PlainMessage) -> None:
    """The checks that span fields, each naming the field it blames."""
    if (msg.text is None) == (msg.binary is None):
        raise FieldInvalid("text", "give either text or binary")
    if msg.binary == "" and not msg.udh:
        raise FieldInvalid("binary", "may be empty only with a udh")
    if msg.binary is not None and msg.encoding not in (None, "auto"):
        raise FieldInvalid("encoding", "applies to text, not to binary")
    if msg.flash and msg.mclass not in (None, 0):
        raise FieldInvalid("mclass", "flash is message class 0")
    if (msg.flash or msg.mclass is not None) and msg.encoding == "latin1":
        raise FieldInvalid("encoding", "a message class needs GSM 7-bit or UCS-2")


def _smpp_fields(ctx: ReceiverContext,
                 msg: MessageIn | PlainMessage) -> dict[str, Any] | None:
    """The message's SMPP fields (shared/smpp/fields.py), None when it asks for none."""
    out: dict[str, Any] = {}
    mclass = 0 if msg.flash else msg.mclass
    if mclass is not None:
        out["mclass"] = mclass
    if msg.pid is not None:
        out["pid"] = msg.pid
    if msg.service_type is not None:
        out["service_type"] = msg.service_type
    if msg.smpp_priority is not None:
        out["priority_flag"] = msg.smpp_priority
    if msg.receipt is False:
        out["receipt"] = False  # the default asks the SMSC (the API tracks delivery)
    if msg.tlvs:
        out["tlvs"] = tlv_octets(ctx, msg.tlvs)
    return out or None


def tlv_octets(ctx: ReceiverContext, tlvs: dict[str, str]) -> dict[str, str]:
    """JSON `tlvs` (name or tag → hex octets) checked against the catalogue, as stored."""
    out: dict[str, str] = {}
    for key, hexed in tlvs.items():
        try:
            tag, value = ctx.tlvs.from_octets(key, bytes.fromhex(hexed))
        except ValueError as exc:
            raise FieldInvalid("tlvs", str(exc)) from exc
        if tag in out:
            raise FieldInvalid("tlvs", f"TLV {tag} given twice")
        out[tag] = value
    return out


def due_now(ctx: ReceiverContext, send_at: datetime | None, now: datetime,
            route_hint: str | None) -> bool:
    """A future `send_at` is due at once when its connector may pass the schedule to the
    SMSC (`schedule_mode = "send"`): the forced one, or any when the routes decide."""
    if send_at is None or send_at <= now or not ctx.schedule_send:
        return False
    return route_hint in ctx.schedule_send if route_hint else True


def estimate_parts(content: str | bytes, allowed: tuple[Any, ...], udh: bytes | None,
                   max_parts: int, field: str) -> tuple[str, int]:
    """(encoding, parts) of a message's content next to its UDH; `FieldInvalid` naming
    `udh` or `field` when it cannot be sent or needs more than `max_parts` parts."""
    if udh is not None:
        try:
            check_udh(udh)
        except ValueError as exc:
            raise FieldInvalid("udh", str(exc)) from exc
    try:
        enc, parts = estimate_content(content, allowed, udh)
    except TextTooLong as exc:
        raise FieldInvalid("udh" if udh else field, str(exc)) from exc
    except ValueError as exc:
        raise FieldInvalid(field, "cannot be encoded with the requested encoding") from exc
    if parts > max_parts:
        raise FieldInvalid(field, f"needs {parts} parts, more than the {max_parts} allowed")
    return enc, parts


def _number(field: str, value: str, country: str | None) -> str:
    # A recipient is E.164 or a short code, never alphanumeric (letters are for senders).
    try:
        return normalise_recipient(value, default_country=country)
    except InvalidNumber as exc:
        raise FieldInvalid(field, str(exc)) from exc


def sender_id(account: Account, value: str, country: str | None) -> str:
    """Normalise a sender id and check it against the account's allowed senders."""
    try:
        sender = normalise_sender(value, default_country=country)
    except InvalidNumber as exc:
        raise FieldInvalid("from", str(exc)) from exc
    if account.allowed_senders is not None and sender not in account.allowed_senders:
        raise FieldInvalid("from", "sender id not allowed for this account")
    return sender


def _check_rate(ctx: ReceiverContext, account: Account, n: int) -> None:
    rate = account_rate(ctx, account)
    wait = ctx.ratelimit.try_acquire(account.id, rate, n)
    if wait is not None:
        ctx.metrics.requests_rejected.labels(reason="rate_limited").inc()
        raise Rejected(error(429, "rate_limited",
                             f"account rate limit of {rate:g}/s exceeded (a request may carry "
                             f"at most {window_limit(rate or 0)} messages)",
                             headers={"Retry-After": str(int(wait))}))


_OUTCOME_LABELS = {MtOutcome.CREATED: "accepted", MtOutcome.DUPLICATE: "duplicate",
                   MtOutcome.CONFLICT: "conflict"}
_STATUSES = {MtOutcome.CREATED: "queued", MtOutcome.DUPLICATE: "duplicate",
             MtOutcome.CONFLICT: "conflict"}


def _status(result: MtResult) -> str:
    return _STATUSES[result.outcome]


def _single_answer(item: MtItem, result: MtResult,
                   est: tuple[str, int]) -> web.Response | FastAnswer:
    if result.outcome is MtOutcome.CONFLICT:
        return error(409, "client_ref_conflict",
                     "client_ref was already used for a different message",
                     errors=[{"field": "client_ref",
                              "message": "already used for a different message"}],
                     id=result.id)
    return FastAnswer(202, orjson.dumps({"id": result.id, "status": _status(result),
                                         "parts": est[1], "encoding": est[0],
                                         "client_ref": item.client_ref}))


def _batch_answer(items: list[MtItem], results: list[MtResult],
                  estimates: list[tuple[str, int]]) -> dict[str, Any]:
    out = []
    for i, (item, res, est) in enumerate(zip(items, results, estimates, strict=True)):
        entry: dict[str, Any] = {"index": i, "id": res.id, "status": _status(res),
                                 "parts": est[1], "encoding": est[0],
                                 "client_ref": item.client_ref}
        if res.outcome is MtOutcome.CONFLICT:
            entry["error"] = "client_ref_conflict"
        out.append(entry)
    return {"messages": out,
            "accepted": sum(r.outcome is MtOutcome.CREATED for r in results),
            "duplicates": [i for i, r in enumerate(results) if r.outcome is MtOutcome.DUPLICATE],
            "conflicts": [i for i, r in enumerate(results) if r.outcome is MtOutcome.CONFLICT]}


# -- GET /v1/messages/{id} -------------------------------------------------------------------------

async def get_message(request: web.Request) -> web.StreamResponse:
    """One of the account's messages with its parts and receipts; 404 for anyone else's."""
    ctx = request.app[CONTEXT]
    try:
        account = await require_account(request, ctx)
    except Rejected as exc:
        return exc.response
    raw_id = request.match_info["id"]
    if not (raw_id.isascii() and raw_id.isdigit()) or len(raw_id) > 18:
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        return error(422, "validation_failed", "id: must be a message id (digits)",
                     errors=[{"field": "id", "message": "must be a message id (digits)"}])
    try:
        found = await find_message(ctx.pool, account.id, int(raw_id))
    except CONNECTION_ERRORS as exc:
        return unavailable_for(ctx, DatabaseUnavailable(str(exc)))
    if found is None:
        ctx.metrics.requests_rejected.labels(reason="not_found").inc()
        return error(404, "not_found", "no such message")
    return json_response(found)


def add_routes(app: web.Application) -> None:
    """Register the MT API routes."""
    app.router.add_post("/v1/messages", post_messages)
    app.router.add_get("/v1/messages/{id}", get_message)
