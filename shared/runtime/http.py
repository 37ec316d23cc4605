"""The daemons' HTTP sites: `HttpSite` (one aiohttp app on host:port), the `/metrics`
`/healthz` `/readyz` app (`health_app`), the JSON access log, and the limits every site applies
to slow and idle clients: header and body deadlines, keep-alive idle timeout, a connection cap.

aiohttp's server has a keep-alive timer but no deadline for a request's head or body: a client
that sends one header byte every few seconds, or trickles a body, holds its connection (and a
file descriptor) for as long as it likes, and nothing bounds the number of connections.
`GuardedAppRunner` is an `aiohttp.web.AppRunner` whose connections are `_GuardedHandler`s:

* `header_timeout_s`: from the connection's start, or from the first byte of a following
  request, until the request head (request line and headers) is complete; else closed;
* `body_timeout_s`: from the end of the head until the body is complete; else the handler's
  read fails with `BodyTimeout` and the connection is closed;
* `keepalive_s`: an idle keep-alive connection (no byte of a next request) is closed after this
  (aiohttp's own `keepalive_timeout`, whose default is an hour);
* `max_connections`: a connection beyond the cap is answered `503` and closed at once.

These are protocol-level timers (one `call_at` handle per phase, no task per connection); the
request path is unchanged. A client that completes requests keeps its connection: the limits
bound the time between them, not a connection's life.

A site may put a `FastFront` (shared/runtime/fasthttp.py) before its app: its hottest routes
are then served by a lean HTTP/1.1 protocol under the same limits, and every other request is
handed to this server's handler at the request's first octet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from smsgw.shared.core.logging import get_logger
from smsgw.shared.runtime.fasthttp import FastFront, FastProtocol
from smsgw.shared.runtime.lifecycle import SITE_CLOSE_TIMEOUT_S

log = get_logger("smsgw.http")

REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
           b"Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
           b"too many connections\n")
REFUSAL_LOG_EVERY_S = 10.0


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Deadlines and the connection cap of one HTTP site (see the module docstring)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    keepalive_s: float = 15.0
    max_connections: int = 1000


class BodyTimeout(asyncio.TimeoutError):
    """The request body did not arrive within `body_timeout_s` (raised in the handler's read)."""


class GuardedAppRunner(web.AppRunner):
    """`web.AppRunner` whose server applies `HttpLimits` to every connection."""

    def __init__(self, app: web.Application, *, limits: HttpLimits,
                 front: FastFront | None = None, **kwargs: Any) -> None:
        kwargs["keepalive_timeout"] = limits.keepalive_s
        super().__init__(app, **kwargs)
        self.limits = limits
        self.front = front

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _GuardedServer  # same state; only __call__ differs
        assert isinstance(server, _GuardedServer)
        server.limits = self.limits
        server.front = self.front
        server.active = 0
        server.fast_requests = 0
        server.refused = 0
        server.refusal_logged = 0.0
        return server


class _GuardedServer(web.Server):
    """Makes `_GuardedHandler`s (or `FastProtocol`s, with a front); past `max_connections`
    a `_Refuse` instead."""

    limits: HttpLimits
    front: FastFront | None
    active: int
    fast_requests: int  # served by the front (the rest by aiohttp)
    refused: int
    refusal_logged: float

    def __call__(self) -> Any:
        if self.active >= self.limits.max_connections:
            self.refused += 1
            now = time.monotonic()
            if now - self.refusal_logged >= REFUSAL_LOG_EVERY_S:
                self.refusal_logged = now
                log.warning("http_connections_refused", max_connections=self.limits.max_connections,
                            refused_total=self.refused)
            return _Refuse()
        self.active += 1
        if self.front is not None:
            return FastProtocol(self, self.front, self._loop)
        return self.make_handler()

    def make_handler(self) -> _GuardedHandler:
        """aiohttp's handler for one connection (already counted in `active`)."""
        return _GuardedHandler(self, loop=self._loop, **self._kwargs)


class _Refuse(asyncio.Protocol):
    """A connection over the cap: one 503 answer, then closed, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(REFUSED)  # type: ignore[attr-defined]  # uvloop's is no subclass
        transport.close()


class _GuardedHandler(RequestHandler):
    """aiohttp's request handler with a header and a body deadline (see the module docstring)."""

    __slots__ = ("_counted", "_guard_body", "_guard_header", "_guard_payload")

    def __init__(self, manager: _GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._counted = True
        self._guard_header: asyncio.TimerHandle | None = None
        self._guard_body: asyncio.TimerHandle | None = None
        self._guard_payload: StreamReader | None = None

    @property
    def _limits(self) -> HttpLimits:
        manager = self._manager
        return manager.limits if isinstance(manager, _GuardedServer) else HttpLimits()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm_header()

    def connection_lost(self, exc: BaseException | None) -> None:
        manager = self._manager
        if self._counted and isinstance(manager, _GuardedServer):
            self._counted = False
            manager.active -= 1
        self._cancel_header()
        self._cancel_body()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # a request head is complete
            self._cancel_header()
            payload = self._messages[-1][1] if self._messages else None
            if isinstance(payload, StreamReader) and not payload.is_eof():
                self._arm_body(payload)
        elif data and self._guard_header is None and not self._in_body():
            self._arm_header()  # the first byte of the next request
        if self._guard_payload is not None and self._guard_payload.is_eof():
            self._cancel_body()

    def _in_body(self) -> bool:
        return self._guard_payload is not None and not self._guard_payload.is_eof()

    # -- timers --------------------------------------------------------------------------------

    def _arm_header(self) -> None:
        self._cancel_header()
        self._guard_header = self._loop.call_later(self._limits.header_timeout_s,
                                                   self._header_expired)

    def arm_header_until(self, deadline: float) -> None:
        """Keep a header deadline already running (a connection handed over by a front)."""
        self._cancel_header()
        self._guard_header = self._loop.call_at(deadline, self._header_expired)

    def _cancel_header(self) -> None:
        if self._guard_header is not None:
            self._guard_header.cancel()
            self._guard_header = None

    def _header_expired(self) -> None:
        self._guard_header = None
        self.force_close()

    def _arm_body(self, payload: StreamReader) -> None:
        self._cancel_body()
        self._guard_payload = payload
        self._guard_body = self._loop.call_later(self._limits.body_timeout_s,
                                                 self._body_expired)

    def _cancel_body(self) -> None:
        if self._guard_body is not None:
            self._guard_body.cancel()
            self._guard_body = None
        self._guard_payload = None

    def _body_expired(self) -> None:
        payload, self._guard_body = self._guard_payload, None
        self._guard_payload = None
        if payload is not None and not payload.is_eof():
            payload.set_exception(BodyTimeout("request body not received in time"))
            self.force_close()


# --- the site ---------------------------------------------------------------------------

_access_log = structlog.stdlib.get_logger("aiohttp.access")
ReadyCheck = Callable[[], Awaitable[bool]]
READY_CHECK_TIMEOUT_S = 2.0
# In-flight requests get this long when a site closes (the stop budget counts it).
SITE_SHUTDOWN_TIMEOUT_S = SITE_CLOSE_TIMEOUT_S


def _metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[
        web.StreamResponse]]:
    try:
        from prometheus_client.aiohttp import make_aiohttp_handler
    except ImportError:  # prometheus-client < 0.21 has no aiohttp helper
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.Response(body=generate_latest(registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        return handler
    return make_aiohttp_handler(registry)


def health_app(registry: CollectorRegistry, checks: Mapping[str, ReadyCheck],
               is_stopping: Callable[[], bool] = lambda: False) -> web.Application:
    """The aiohttp app serving `/metrics`, `/healthz` (the loop answers) and `/readyz`.

    `/readyz` runs every check (e.g. database, listener) with a timeout and answers 200 only
    when all pass and the daemon is not stopping; the body says which failed.
    """
    async def healthz(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async def readyz(_request: web.Request) -> web.StreamResponse:
        results = {name: await _run_check(check) for name, check in checks.items()}
        if is_stopping():
            results["stopping"] = False
        ok = all(results.values())
        return web.json_response({"ok": ok, "checks": results}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", _metrics_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _run_check(check: ReadyCheck) -> bool:
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            return bool(await check())
    except (TimeoutError, OSError):
        return False
    except Exception:  # noqa: BLE001 - a failing check means "not ready", never a 500
        return False


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access log as one `http_request` event per request (constant event name).

    Logs the path without the query string: query strings can carry phone numbers
    (Kannel-style `sendsms?to=...`) and credentials.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        _access_log.info("http_request", method=request.method, path=request.path,
                         status=response.status, duration_s=round(time, 6),
                         remote=request.remote)


class HttpSite:
    """One aiohttp app served on host:port; `port` is the real port (0 picks a free one)."""

    def __init__(self, name: str, app: web.Application, host: str, port: int, *,
                 access_log: bool = False, limits: HttpLimits | None = None,
                 front: FastFront | None = None) -> None:
        if front is not None and access_log:
            raise ValueError("a fast front writes no access log: use one or the other")
        self.name = name
        self.host = host
        self.port = port
        # access_log=None turns aiohttp's access log off (the health site is scraped often).
        extra: dict[str, Any] = ({"access_log_class": JsonAccessLogger} if access_log
                                 else {"access_log": None})
        # header/body deadlines, keep-alive idle timeout and a connection cap (httpguard)
        self._runner = GuardedAppRunner(app, limits=limits or HttpLimits(), front=front,
                                        shutdown_timeout=SITE_SHUTDOWN_TIMEOUT_S, **extra)
        self._closed = False

    async def start(self) -> int:
        """Bind and serve; return the bound port (read back, for port 0)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[-1][1])  # the real port, also for port 0
        return self.port

    @property
    def fast_requests(self) -> int:
        """Requests the site's fast front served itself (0 without a front)."""
        server = self._runner.server
        return server.fast_requests if isinstance(server, _GuardedServer) else 0

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), release the socket."""
        if not self._closed:
            self._closed = True
            await self._runner.cleanup()
