"""A lean HTTP/1.1 front for a site's hottest routes, with every other request handed to the
site's aiohttp server unchanged (`FastFront`, `FastProtocol`).

A connection starts with a `FastProtocol`. It frames each request itself (the head ends at the
first CRLF CRLF, the body is exactly `Content-Length` octets) and parses the head with
`httptools` (llhttp, strict). It serves a request itself only when all of this holds:

* the head is at most `MAX_HEAD` octets, all ASCII, every CR followed by LF and every LF
  preceded by CR, at most `MAX_HEADERS` headers, and llhttp accepts it;
* HTTP/1.1, a method and exact path (query aside) in the route table, no `#`;
* no `Transfer-Encoding`, `Expect` or `Upgrade` header; `Connection` absent, `keep-alive` or
  `close`; at most one `Content-Length`, digits only, at most the front's body limit; and
  llhttp's end of the message is where the framing above puts it.

Anything else — another route, HTTP/1.0, chunked or ambiguous framing, an oversized or
malformed head, a non-ASCII header — is handed to aiohttp at the request's first octet: the
server's own handler (`make_handler`) takes the transport (`set_protocol`) and is fed every
octet received from that request on, so it answers exactly as it would have (its parser, its
limits, its middlewares, its error answers), and keeps the connection from then on.

The limits are the site's (`HttpLimits`): the header deadline from the connection's start or
the first octet of a following request, the body deadline from the end of the head, the
keep-alive idle timeout; the connection cap is counted by the server before this protocol is
made. Requests on a connection are served one at a time, in order (pipelined ones wait in the
buffer; reading pauses when it holds more than a head and a body); a client that stops reading
its answers (the transport pauses writing) is closed after the keep-alive idle timeout. The
answer is written as
aiohttp writes it (the route's `web.Response`: status line, its headers, `Content-Length`,
`Date`, `Server`, `Connection: close` when closing), so a client cannot tell the paths apart.
A route's common answer may be a `FastAnswer` instead (status, body, content type: the head
written from a cached prefix, the same octets), which saves building a `web.Response`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools
from aiohttp import web
from aiohttp.helpers import HeadersMixin, rfc822_formatted_time
from aiohttp.http import SERVER_SOFTWARE
from aiohttp.tcp_helpers import tcp_keepalive
from multidict import CIMultiDict

from smsgw.shared.core.logging import get_logger

log = get_logger("smsgw.http")

MAX_HEAD = 8190  # aiohttp's max_line_size and max_field_size: a longer head is aiohttp's
MAX_HEADERS = 128  # aiohttp's max_headers
MAX_LENGTH_DIGITS = 12
_END_OF_HEAD = b"\r\n\r\n"
_PASS_HEADERS = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
_INTERNAL_ERROR = (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                   b"Connection: close\r\n\r\n")
# timer phases
_HEAD, _BODY, _IDLE, _BUSY = 1, 2, 3, 0


class FastRequest(HeadersMixin):
    """One request the front serves: method, path, raw query string, headers, whole body;
    `content_type`, `charset`, `content_length` parsed as aiohttp parses them. `headers` is
    built from the raw header fields when first read; `authorization` (the first
    Authorization header, as `headers` would give it) needs no `headers`."""

    def __init__(self, method: str, path: str, query_string: str,
                 fields: list[tuple[bytes, bytes]], body: bytes,
                 authorization: str | None = None) -> None:
        self.method = method
        self.path = path
        self.query_string = query_string
        self._fields = fields
        self._multidict: CIMultiDict[str] | None = None
        self.authorization = authorization
        self.body = body

    @property
    def headers(self) -> CIMultiDict[str]:
        if self._multidict is None:
            self._multidict = CIMultiDict([(n.decode(), v.decode()) for n, v in self._fields])
        return self._multidict

    @property
    def _headers(self) -> CIMultiDict[str]:  # what aiohttp's HeadersMixin reads
        return self.headers

    @property
    def body_exists(self) -> bool:
        """As aiohttp's: a body was announced (Content-Length above 0)."""
        return bool(self.body)


class FastAnswer:
    """A plain answer (no headers of its own): what `web.Response(body=body, status=status,
    content_type=content_type, charset=charset)` would write, written from a cached head
    (`_encode`). Its `response()` is that `web.Response`, for the route served by aiohttp."""

    __slots__ = ("body", "charset", "content_type", "status")

    def __init__(self, status: int, body: bytes, content_type: str = "application/json",
                 charset: str | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.charset = charset

    def response(self) -> web.Response:
        """The same answer as a `web.Response`."""
        return web.Response(body=self.body, status=self.status, content_type=self.content_type,
                            charset=self.charset)


FastRoute = Callable[[FastRequest], Awaitable[web.Response | FastAnswer]]


@dataclass(frozen=True, slots=True)
class FastFront:
    """The routes a site serves itself, keyed by (method, path) as bytes, e.g.
    `(b"POST", b"/v1/messages")`; `max_body()` the largest body it takes (a larger one is
    aiohttp's to refuse); `on_body_timeout()` is called when a body misses its deadline."""

    routes: dict[tuple[bytes, bytes], FastRoute]
    max_body: Callable[[], int]
    on_body_timeout: Callable[[], None] = field(default=lambda: None)


class Server(Protocol):
    """What the front needs of the site's server (`shared.runtime.http._GuardedServer`)."""

    active: int
    fast_requests: int

    @property
    def limits(self) -> Any: ...

    def make_handler(self) -> asyncio.Protocol: ...

    def connection_made(self, handler: Any, transport: Any) -> None: ...

    def connection_lost(self, handler: Any, exc: BaseException | None = None) -> None: ...


class FastProtocol(asyncio.Protocol):
    """One connection of a site with a `FastFront` (see the module docstring)."""

    def __init__(self, server: Server, front: FastFront, loop: asyncio.AbstractEventLoop) -> None:
        self._server = server
        self._front = front
        self._loop = loop
        limits = server.limits
        self._header_s: float = limits.header_timeout_s
        self._body_s: float = limits.body_timeout_s
        self._keepalive_s: float = limits.keepalive_s
        self._transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self._message_done = False
        # (route, request without body, head length, body length, close after) once parsed
        self._pending: tuple[FastRoute, FastRequest, int, int, bool] | None = None
        self._busy = False
        self._closing = False
        self._handed = False
        self._counted = True
        self._read_paused = False
        self._write_paused = False
        self._phase = _BUSY
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._task_handler: asyncio.Task[None] | None = None  # read by aiohttp's Server

    # -- httptools callbacks -------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields.append((name, value))

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_message_complete(self) -> None:
        self._message_done = True

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        tcp_keepalive(transport)  # type: ignore[arg-type]
        self._server.connection_made(self, transport)
        self._arm(self._header_s, _HEAD)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._handed:
            return
        self._transport = None
        self._disarm()
        if self._counted:
            self._counted = False
            self._server.active -= 1
        self._server.connection_lost(self, exc)
        self._buf = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._transport is None or self._handed:
            return
        self._buf += data
        if self._busy or self._write_paused:
            if len(self._buf) > MAX_HEAD + self._front.max_body() and not self._read_paused:
                self._read_paused = True
                self._transport.pause_reading()
            return
        self._process()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy:
            self._disarm()
            self._process()

    # -- aiohttp's Server calls these on shutdown ----------------------------------------------

    def close(self) -> None:
        """Close once the request being served (if any) is answered."""
        self._closing = True
        if not self._busy and self._transport is not None:
            self._transport.close()

    async def shutdown(self, timeout: float | None = 15.0) -> None:  # noqa: ASYNC109 - aiohttp's
        """Let the request being served finish (bounded by `timeout`), then close."""
        self._closing = True
        task = self._task_handler
        if task is not None and not task.done():
            _done, pending = await asyncio.wait({task}, timeout=timeout)
            for t in pending:
                t.cancel()
        if self._transport is not None:
            self._transport.close()

    # -- framing -------------------------------------------------------------------------------

    def _process(self) -> None:
        """Serve the next complete request in the buffer, or wait for more (with a deadline)."""
        buf = self._buf
        if self._busy or self._closing or self._handed or self._transport is None:
            return
        if not buf:
            self._arm(self._keepalive_s, _IDLE)
            return
        if self._pending is None and not self._take_head():
            return
        assert self._pending is not None
        route, request, head_len, body_len, close = self._pending
        need = head_len + body_len
        if len(buf) < need:
            if self._phase != _BODY:
                self._arm(self._body_s, _BODY)
            return
        if body_len:
            request.body = bytes(buf[head_len:need])
            try:
                self._parser.feed_data(request.body)
            except httptools.HttpParserError:
                self._message_done = False
            if not self._message_done:  # llhttp disagrees with the framing: aiohttp decides
                self._hand_off()
                return
        del buf[:need]
        self._pending = None
        self._disarm()
        self._busy = True
        self._server.fast_requests += 1
        if close:
            self._closing = True
        self._task_handler = self._loop.create_task(self._serve(route, request))

    def _take_head(self) -> bool:
        """Parse the head at the start of the buffer; False while incomplete (with the header
        deadline running) or when the request was handed to aiohttp."""
        buf = self._buf
        end = buf.find(_END_OF_HEAD, 0, MAX_HEAD)
        if end < 0:
            if len(buf) >= MAX_HEAD:
                self._hand_off()
            elif self._phase != _HEAD:
                self._arm(self._header_s, _HEAD)  # the first octet of a request
            return False
        self._pending = self._parse_head(bytes(buf[:end + 4]))
        if self._pending is None:
            self._hand_off()
            return False
        return True

    def _parse_head(self, head: bytes) -> tuple[FastRoute, FastRequest, int, int, bool] | None:
        """The route, request and framing of a head the front serves; None to hand it off."""
        crlf = head.count(b"\r\n")
        if not head.isascii() or head.count(b"\r") != crlf or head.count(b"\n") != crlf:
            return None
        self._url = b""
        self._fields = []
        self._head_done = self._message_done = False
        try:
            self._parser.feed_data(head)
        except httptools.HttpParserError:
            return None
        parser = self._parser
        if not self._head_done or parser.get_http_version() != "1.1":
            return None
        method = parser.get_method()
        path, _, query = self._url.partition(b"?")
        route = self._front.routes.get((method, path))
        if route is None or b"#" in query or len(self._fields) > MAX_HEADERS:
            return None
        framing = _framing(self._fields)
        if framing is None:
            return None
        body_len, close, authorization = framing
        if body_len > self._front.max_body() or (body_len == 0 and not self._message_done):
            return None
        request = FastRequest(method.decode(), path.decode(), query.decode(), self._fields, b"",
                              None if authorization is None else authorization.decode())
        return route, request, len(head), body_len, close

    # -- serving -------------------------------------------------------------------------------

    async def _serve(self, route: FastRoute, request: FastRequest) -> None:
        try:
            response = await route(request)
            answer = _encode(response, self._closing)
        except asyncio.CancelledError:
            self._close_now()
            raise
        except Exception:  # the routes answer every error; this is the last net
            log.exception("request_failed", path=request.path, method=request.method)
            self._closing = True
            answer = _INTERNAL_ERROR
        transport = self._transport
        self._busy = False
        self._task_handler = None
        if transport is None:
            return
        transport.write(answer)
        if self._closing:
            transport.close()
            return
        if self._read_paused and len(self._buf) <= MAX_HEAD + self._front.max_body():
            self._read_paused = False
            transport.resume_reading()
        if self._write_paused:  # a client that stops reading gets the idle timeout
            self._arm(self._keepalive_s, _IDLE)
        else:
            self._process()

    def _hand_off(self) -> None:
        """Give the connection to aiohttp at the first octet of the current request."""
        transport = self._transport
        assert transport is not None
        header_deadline = self._deadline if self._phase == _HEAD else None
        self._disarm()
        self._handed = True
        self._counted = False  # the handler counts it from now on
        self._server.connection_lost(self, None)
        handler = self._server.make_handler()
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if header_deadline is not None:
            arm = getattr(handler, "arm_header_until", None)
            if arm is not None:
                arm(header_deadline)  # the same header deadline, not a fresh one
        data, self._buf = bytes(self._buf), bytearray()
        self._pending = None
        if data:
            handler.data_received(data)

    # -- one timer: header, body or keep-alive deadline ---------------------------------------

    def _arm(self, delay: float, phase: int) -> None:
        self._phase = phase
        deadline = self._loop.time() + delay
        self._deadline = deadline
        timer = self._timer
        if timer is not None and timer.when() > deadline:
            timer.cancel()
            timer = None
        if timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)
        # else: it fires earlier and re-arms itself for the deadline (no cancel per request)

    def _disarm(self) -> None:
        self._phase = _BUSY
        self._deadline = None

    def _expire(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or self._transport is None:
            return
        if self._loop.time() < deadline:
            self._timer = self._loop.call_at(deadline, self._expire)
            return
        if self._phase == _BODY:
            self._front.on_body_timeout()
        transport = self._transport
        if transport.get_write_buffer_size():  # answers the client does not read: drop them
            self._disarm()
            self._closing = True
            transport.abort()
        else:
            self._close_now()

    def _close_now(self) -> None:
        self._disarm()
        self._closing = True
        if self._transport is not None:
            self._transport.close()


def _framing(fields: list[tuple[bytes, bytes]]) -> tuple[int, bool, bytes | None] | None:
    """(body length, close after, the first Authorization value) from the headers; None for
    any framing the front leaves to aiohttp: a second or non-digit Content-Length,
    Transfer-Encoding, Expect, Upgrade, a Connection other than keep-alive or close."""
    body_len = -1
    close = False
    authorization = None
    for name, value in fields:
        lower = name.lower()
        if lower == b"authorization":
            if authorization is None:
                authorization = value
        elif lower == b"content-length":
            if body_len >= 0 or not value.isdigit() or len(value) > MAX_LENGTH_DIGITS:
                return None
            body_len = int(value)
        elif lower in _PASS_HEADERS:
            return None
        elif lower == b"connection":
            token = value.strip().lower()
            if token == b"close":
                close = True
            elif token != b"keep-alive":
                return None
    return max(body_len, 0), close, authorization


# (status, content type, charset) → a FastAnswer's status line and Content-Type header
_ANSWER_HEADS: dict[tuple[int, str, str | None], bytes] = {}
_SERVER_LINE = f"Server: {SERVER_SOFTWARE}\r\n\r\n".encode("latin-1")
_SERVER_CLOSE_LINE = f"Server: {SERVER_SOFTWARE}\r\nConnection: close\r\n\r\n".encode(
    "latin-1")


def _encode(response: web.Response | FastAnswer, close: bool) -> bytes:
    """The answer as aiohttp writes it: status line, the response's headers, Content-Length,
    Date, Server, and `Connection: close` when the connection closes after it."""
    if isinstance(response, FastAnswer):
        return _encode_answer(response, close)
    body = response.body
    if not isinstance(body, bytes):
        raise TypeError("a fast route answers with a bytes body")
    headers = response.headers
    lines = [f"HTTP/1.1 {response.status} {response.reason}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if body and "Content-Type" not in headers:
        lines.append("Content-Type: application/octet-stream\r\n")
    lines.append(f"Content-Length: {len(body)}\r\n")
    if "Date" not in headers:
        lines.append(f"Date: {rfc822_formatted_time()}\r\n")
    if "Server" not in headers:
        lines.append(f"Server: {SERVER_SOFTWARE}\r\n")
    if close:
        lines.append("Connection: close\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1") + body


def _encode_answer(answer: FastAnswer, close: bool) -> bytes:
    """`_encode` of `answer.response()`, its status line and Content-Type cached."""
    body = answer.body
    key = (answer.status, answer.content_type, answer.charset)
    head = _ANSWER_HEADS.get(key)
    if head is None:
        res = answer.response()
        text = (f"HTTP/1.1 {res.status} {res.reason}\r\n"
                + "".join(f"{name}: {value}\r\n" for name, value in res.headers.items()))
        head = _ANSWER_HEADS.setdefault(key, text.encode("latin-1"))
    return b"%sContent-Length: %d\r\nDate: %s\r\n%s%s" % (
        head, len(body), rfc822_formatted_time().encode("latin-1"),
        _SERVER_CLOSE_LINE if close else _SERVER_LINE, body)
