"""JSON error answers and the error middleware: every failure is a JSON body, never a trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from aiohttp import web

from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.queue.groupcommit import IntakeClosed, IntakeFull

log = structlog.get_logger("receiver.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    """A JSON answer encoded with orjson."""
    return web.Response(body=orjson.dumps(data), status=status, headers=headers,
                        content_type="application/json")


def error(status: int, code: str, message: str | None = None, *,
          errors: list[dict[str, str]] | None = None, headers: dict[str, str] | None = None,
          **extra: Any) -> web.Response:
    """`{"error": code, "message": …, "errors": [{"field", "message"}]}` with `status`."""
    body: dict[str, Any] = {"error": code}
    if message is not None:
        body["message"] = message
    if errors is not None:
        body["errors"] = errors
    body.update(extra)
    return json_response(body, status, headers)


def field_error(status: int, code: str, field: str, message: str) -> web.Response:
    """An error naming one field."""
    return error(status, code, f"{field}: {message}",
                 errors=[{"field": field, "message": message}])


def unavailable(reason: str, retry_after_s: int) -> web.Response:
    """503 + Retry-After: the peer should retry (watermark, full buffer, database down)."""
    return error(503, "unavailable", f"try again later ({reason})",
                 headers={"Retry-After": str(retry_after_s)}, reason=reason)


def unavailable_reason(exc: BaseException) -> str:
    """The backpressure reason label for an intake exception."""
    if isinstance(exc, DatabaseUnavailable):
        return "database_unavailable"
    if isinstance(exc, IntakeFull | IntakeClosed):
        return "intake_full"
    return "database_unavailable"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn aiohttp's HTTP errors into JSON and any unexpected exception into a bare 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return failure(exc, request.method, request.path)
    except Exception as exc:  # noqa: BLE001 - request boundary: `failure` answers
        return failure(exc, request.method, request.path)


def failure(exc: Exception, method: str, path: str) -> web.Response:
    """The JSON answer to an exception that reached the request boundary (the middleware's,
    and the fast front's routes'): aiohttp's HTTP errors as JSON, 503 for an intake that
    could not commit, anything else logged and answered a bare 500."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error(413, "too_large", "request body too large")
    if isinstance(exc, web.HTTPException) and exc.status >= 400:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status, "http_error")
        return error(exc.status, code, exc.reason, headers=_allowed(exc))
    if isinstance(exc, DatabaseUnavailable | IntakeFull | IntakeClosed):
        return unavailable(unavailable_reason(exc), 2)
    # request boundary: log it, tell the client nothing about internals
    log.error("request_failed", path=path, method=method, exc_info=exc)
    return error(500, "internal_error", "internal error")


@web.middleware
async def header_guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """400 for a request with a header value that is not valid UTF-8.

    aiohttp decodes header bytes with `surrogateescape`, so a byte like 0xff arrives as a lone
    surrogate that every later `.encode()` (an HMAC, a database parameter) would fail on with a
    500. Checking every header once, here, covers the ones read by aiohttp itself too.
    (NUL and other control bytes are already refused by aiohttp's parser with a 400.)
    """
    for name, value in request.headers.items():
        if not value.isascii() and not _is_utf8(value):
            label = name if name.isascii() and name.isprintable() else "?"
            return error(400, "bad_header", f"header {label}: not valid UTF-8",
                         errors=[{"field": f"header:{label}", "message": "not valid UTF-8"}])
    return await handler(request)


def _is_utf8(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _allowed(exc: web.HTTPException) -> dict[str, str] | None:
    allow = exc.headers.get("Allow") if exc.headers else None
    return {"Allow": allow} if allow else None
