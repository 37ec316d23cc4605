"""The reports API: `POST /v1/reports`, `GET /v1/reports/{id}`,
`GET /v1/reports/{id}/files/{name}` (docs/ARCHITECTURE.md "The reporter").

A request is queued in `report_requests` (the reporter daemon makes it); the files are served
from the copy the reporter stored in Postgres, chunk by chunk, so any receiver on any host
serves them with one chunk in memory. Scope: an account's keys ask for `traffic` reports of
their own account and see only their own reports; the keys of an operator account
(`smsgw accounts update NAME --operator`) may ask for every kind (campaign, inbound and
opt-out data carry no account) and see every report. Anyone else's report is a 404.

Order of checks: authentication (401) → body size (413) → JSON (400) → fields (422, each
named; unknown kind, campaign, account or zone, a range that ends before it starts or spans
more than `MAX_RANGE_DAYS`) → kind allowed for this key (403) → the account's open reports
below `MAX_OPEN_PER_ACCOUNT` (429) → 202 with the id once the request is committed.
"""

from __future__ import annotations

from typing import Any, Final

import orjson
from aiohttp import web

from smsgw.services.receiver.api import Rejected, read_body, require_account, unavailable_for
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.responses import error, field_error, json_response
from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.apikeys import Account
from smsgw.shared.domain.reports import (
    FILE_NAMES,
    KINDS,
    OPERATOR_KINDS,
    ReportInputError,
    check_names,
    parse_request,
)
from smsgw.shared.queue import report_requests as rq
from smsgw.shared.queue.records import ReportRequest, ReportStatus

MAX_OPEN_PER_ACCOUNT: Final = 20  # queued + running reports one account may have
KEEP_S: Final = 7 * 86400.0  # until the reporter sets a finished report's own expiry
FIELDS: Final = frozenset({"kind", "from", "to", "tz", "campaign", "account"})
OPEN_REPORTS: Final = """
-- open_reports: an account's queued and running reports (report_requests_account_idx)
SELECT count(*) FROM report_requests
 WHERE account_id = $1 AND status IN ('queued', 'running')
"""
STATEMENTS: Final = {"reports_api.open_reports": OPEN_REPORTS}


def _scope(account: Account) -> int | None:
    """The account filter of what this key may see (None: every report)."""
    return None if account.operator else account.id


def describe(req: ReportRequest) -> dict[str, Any]:
    """A report as the API shows it: status, progress and links to its files."""
    base = f"/v1/reports/{req.id}"
    return {"id": req.id, "kind": req.kind, "status": str(req.status), "params": req.params,
            "progress": {"rows_scanned": req.rows_scanned,
                         "rows_estimated": req.rows_estimated,
                         "percent": round(float(req.progress), 1)},
            "links": {"self": base,
                      "files": {name: f"{base}/files/{name}" for name in (req.files or {})}},
            "error": req.last_error,
            "created_at": req.created_at.isoformat(),
            "finished_at": req.finished_at.isoformat() if req.finished_at else None,
            "expires_at": req.expires_at.isoformat() if req.expires_at else None}


def _parse(body: bytes, account: Account) -> dict[str, Any]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(error(400, "bad_json", "body is not valid JSON")) from exc
    if not isinstance(data, dict):
        raise Rejected(field_error(422, "validation_failed", "body", "must be a JSON object"))
    unknown = sorted(str(k)[:40] for k in data if k not in FIELDS)
    if unknown:
        raise Rejected(field_error(422, "validation_failed", unknown[0], "unknown field"))
    kind = data.get("kind")  # any JSON value: `{}` is not hashable (parse_request says 422)
    if isinstance(kind, str) and kind in OPERATOR_KINDS and not account.operator:
        raise Rejected(field_error(403, "forbidden", "kind",
                                   f"{kind} reports are for operator accounts only (their "
                                   "data carries no account)"))
    if not account.operator and data.get("account") not in (None, account.name):
        raise Rejected(field_error(403, "forbidden", "account",
                                   "a traffic report covers your own account only"))
    return data


async def post_report(request: web.Request) -> web.StreamResponse:
    """Queue a report; 202 with its id and links."""
    ctx: ReceiverContext = request.app[CONTEXT]
    try:
        account = await require_account(request, ctx)
        data = _parse(await read_body(request, ctx), account)
        params = parse_request(data.get("kind"), start=data.get("from"), end=data.get("to"),
                               tz=data.get("tz"), campaign=data.get("campaign"),
                               account=data.get("account"),
                               max_range_days=ctx.report_max_range_days)
        async with ctx.pool.acquire() as conn:
            await check_names(conn, params)
            if await conn.fetchval(OPEN_REPORTS, account.id) >= MAX_OPEN_PER_ACCOUNT:
                ctx.metrics.requests_rejected.labels(reason="rate_limited").inc()
                return error(429, "too_many_reports",
                             f"at most {MAX_OPEN_PER_ACCOUNT} reports may be queued or running "
                             "per account", headers={"Retry-After": "60"})
            req = await rq.insert(conn, kind=params.kind, params=params.as_json(),
                                  account_id=account.id, requested_by=f"api:{account.name}",
                                  keep_s=KEEP_S)
    except Rejected as exc:
        return exc.response
    except ReportInputError as exc:
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        return field_error(422, "validation_failed", exc.field, exc.message)
    except CONNECTION_ERRORS as exc:
        return unavailable_for(ctx, DatabaseUnavailable(str(exc)))
    return json_response(describe(req), 202, headers={"Location": f"/v1/reports/{req.id}"})


async def _visible(request: web.Request) -> tuple[ReceiverContext, ReportRequest]:
    ctx: ReceiverContext = request.app[CONTEXT]
    account = await require_account(request, ctx)
    raw = request.match_info["id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        ctx.metrics.requests_rejected.labels(reason="validation").inc()
        raise Rejected(field_error(422, "validation_failed", "id",
                                   "must be a report id (digits)"))
    try:
        req = await rq.get(ctx.pool, int(raw), account_id=_scope(account))
    except CONNECTION_ERRORS as exc:
        raise Rejected(unavailable_for(ctx, DatabaseUnavailable(str(exc)))) from exc
    if req is None:
        ctx.metrics.requests_rejected.labels(reason="not_found").inc()
        raise Rejected(error(404, "not_found", "no such report"))
    return ctx, req


async def get_report(request: web.Request) -> web.StreamResponse:
    """A report's status, progress and file links."""
    try:
        _, req = await _visible(request)
    except Rejected as exc:
        return exc.response
    return json_response(describe(req))


async def get_file(request: web.Request) -> web.StreamResponse:
    """A finished report's file, streamed from Postgres one chunk at a time."""
    try:
        ctx, req = await _visible(request)
    except Rejected as exc:
        return exc.response
    name = request.match_info["name"]
    meta = (req.files or {}).get(name) if req.status == ReportStatus.DONE else None
    if meta is None:
        ctx.metrics.requests_rejected.labels(reason="not_found").inc()
        return error(404, "not_found", f"report {req.id} has no file {name[:40]!r} "
                                       f"(status {req.status}; files: {', '.join(FILE_NAMES)})")
    resp = web.StreamResponse(headers={
        "Content-Type": meta["content_type"], "Content-Length": str(meta["bytes"]),
        "Content-Disposition": f'attachment; filename="{meta["filename"]}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store",
        # the page is self-contained: nothing may load from anywhere, nothing may run
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                   "img-src data:; sandbox"})
    await resp.prepare(request)
    async for chunk in rq.read_file(ctx.pool, req.id, name):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


# -- OpenAPI -----------------------------------------------------------------------------------

def _err(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}


_NULL_STR = {"type": ["string", "null"]}
REPORT_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["id", "kind", "status", "params", "progress", "links"],
    "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string", "enum": list(KINDS)},
        "status": {"type": "string", "enum": [str(s) for s in ReportStatus]},
        "params": {"type": "object"},
        "progress": {"type": "object", "properties": {
            "rows_scanned": {"type": "integer"},
            "rows_estimated": {"type": ["integer", "null"]},
            "percent": {"type": "number"}}},
        "links": {"type": "object", "properties": {
            "self": {"type": "string"},
            "files": {"type": "object", "additionalProperties": {"type": "string"}}}},
        "error": _NULL_STR, "created_at": {"type": "string"}, "finished_at": _NULL_STR,
        "expires_at": _NULL_STR}}
REQUEST_SCHEMA: Final[dict[str, Any]] = {
    "type": "object", "required": ["kind"], "additionalProperties": False,
    "properties": {
        "kind": {"type": "string", "enum": list(KINDS),
                 "description": "traffic for any account (its own); campaign, inbound and "
                                "optouts for operator accounts"},
        "from": {"type": "string", "description": "ISO 8601; default: `to` minus 7 days"},
        "to": {"type": "string", "description": "ISO 8601; default: now"},
        "tz": {"type": "string", "description": "IANA zone days and hours are counted in"},
        "campaign": {"type": "string", "description": "the campaign (kind campaign)"},
        "account": {"type": "string", "description": "traffic of one account (operators)"}}}


def openapi_paths() -> dict[str, Any]:
    """The reports API's part of the OpenAPI document."""
    bearer: list[dict[str, list[str]]] = [{"bearerAuth": []}]
    report = {"application/json": {"schema": REPORT_SCHEMA}}
    rid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    common = {"401": _err("Missing or invalid API key."),
              "404": _err("No such report for this key."),
              "422": _err("id is not a report id."), "503": _err("Database unreachable.")}
    return {
        "/v1/reports": {"post": {
            "summary": "Ask for a report (made in the background by the reporter)",
            "operationId": "postReport", "security": bearer,
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": REQUEST_SCHEMA}}},
            "responses": {"202": {"description": "Queued.", "content": report},
                          "400": _err("Body is not JSON."),
                          "401": _err("Missing or invalid API key."),
                          "403": _err("This key may not ask for this kind or account."),
                          "413": _err("Body too large."),
                          "422": _err("Invalid fields (each named)."),
                          "429": _err("Too many open reports for this account."),
                          "503": _err("Database unreachable.")}}},
        "/v1/reports/{id}": {"get": {
            "summary": "A report's status, progress and file links",
            "operationId": "getReport", "security": bearer, "parameters": [rid],
            "responses": {"200": {"description": "The report.", "content": report}, **common}}},
        "/v1/reports/{id}/files/{name}": {"get": {
            "summary": "A finished report's file (csv, html, entries_csv), streamed",
            "operationId": "getReportFile", "security": bearer,
            "parameters": [rid, {"name": "name", "in": "path", "required": True,
                                 "schema": {"type": "string", "enum": list(FILE_NAMES)}}],
            "responses": {"200": {"description": "The file.", "content": {
                "text/csv": {"schema": {"type": "string"}},
                "text/html": {"schema": {"type": "string"}}}}, **common}}},
    }


def add_routes(app: web.Application) -> None:
    """Register the reports API routes."""
    app.router.add_post("/v1/reports", post_report)
    app.router.add_get("/v1/reports/{id}", get_report)
    app.router.add_get("/v1/reports/{id}/files/{name}", get_file)
