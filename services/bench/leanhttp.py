"""A lean HTTP/1.1 client and application sink for the benchmark's load driver.

The driver shares the 2-core benchmark box with the gateway: every CPU-µs it spends is taken
from the daemons it measures. aiohttp's client costs ~160 CPU-µs per single-message request here
and its server (the MO sink) ~95; these asyncio protocols do the same work — keep-alive
connections, one request in flight per connection, Content-Length or chunked bodies — for a
fraction of that, so the figures say more about the gateway and less about the driver.
`--http-client aiohttp` keeps the old driver for comparison; both are measured in the run's CPU
table ("driver").

Deliberately small: HTTP/1.1 only, no TLS, no redirects, no proxies. A response the parser does
not understand raises `LeanHTTPError` (the driver counts it as a retry, never as an ack).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit

_CRLF2: Final = b"\r\n\r\n"
_MAX_HEAD: Final = 64 * 1024
_MAX_BODY: Final = 16 * 1024 * 1024


class LeanHTTPError(Exception):
    """The connection broke or the peer sent something this client does not parse."""


class Response:
    """Status, the few headers the driver reads (lower-cased names), body."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise LeanHTTPError(f"bad header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return lines[0], headers


def _body_length(headers: dict[str, str]) -> int | None:
    """Content-Length as an int, None for chunked; raises on anything else."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return None
    try:
        n = int(headers.get("content-length", "0"))
    except ValueError as exc:
        raise LeanHTTPError("bad Content-Length") from exc
    if not 0 <= n <= _MAX_BODY:
        raise LeanHTTPError("Content-Length out of range")
    return n


def _take_head(buf: bytearray, what: str) -> tuple[str, dict[str, str]] | None:
    """The first line and headers of a complete head at the start of `buf` (consumed)."""
    end = buf.find(_CRLF2)
    if end < 0:
        if len(buf) > _MAX_HEAD:
            raise LeanHTTPError(f"{what} head too large")
        return None
    head = _parse_head(bytes(buf[:end]))
    del buf[:end + 4]
    return head


def _take_body(buf: bytearray, length: int | None) -> bytes | None:
    """A complete body (Content-Length `length`, or chunked when None) from `buf`, or None."""
    if length is None:
        return _take_chunked(buf)
    if len(buf) < length:
        return None
    body = bytes(buf[:length])
    del buf[:length]
    return body


def _take_chunked(buf: bytearray) -> bytes | None:
    """Decode a complete chunked body from the start of `buf` (consuming it), or None."""
    pos, out = 0, bytearray()
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        try:
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
        except ValueError as exc:
            raise LeanHTTPError("bad chunk size") from exc
        start = eol + 2
        if size == 0:
            end = buf.find(_CRLF2, eol)  # optional trailers end with an empty line
            if end < 0:
                return None
            del buf[:end + 4]
            return bytes(out)
        if len(buf) < start + size + 2:
            return None
        out += buf[start:start + size]
        pos = start + size + 2


class _ClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Response] | None = None
        self.head: tuple[int, dict[str, str], int | None] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(LeanHTTPError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        try:
            self._parse()
        except LeanHTTPError as exc:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(exc)
            if self.transport is not None:
                self.transport.close()

    def _parse(self) -> None:
        if self.head is None:
            got = _take_head(self.buf, "response")
            if got is None:
                return
            status_line, headers = got
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise LeanHTTPError(f"bad status line {status_line[:60]!r}")
            self.head = (int(parts[1]), headers, _body_length(headers))
        status, headers, length = self.head
        body = _take_body(self.buf, length)
        if body is None:
            return
        self.head = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(Response(status, headers, body))
        if headers.get("connection", "").lower() == "close" and self.transport is not None:
            self.transport.close()


class LeanClient:
    """One keep-alive connection to one origin, one request at a time (reconnects as needed)."""

    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        u = urlsplit(base_url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"LeanClient speaks plain http only, not {base_url!r}")
        self.host, self.port = u.hostname, u.port or 80
        self.host_header = f"{self.host}:{self.port}"
        self.timeout_s = timeout_s
        self.proto: _ClientProtocol | None = None

    def build(self, method: str, target: str, headers: dict[str, str],
              body: bytes | None) -> bytes:
        """The request's bytes (build once, send many: the driver reuses them on retry)."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")

    async def send(self, raw: bytes) -> Response:
        """Send one built request and wait for its response."""
        proto = self.proto
        if proto is None or proto.closed:
            loop = asyncio.get_running_loop()
            try:
                _, proto = await loop.create_connection(_ClientProtocol, self.host, self.port)
            except OSError as exc:
                raise LeanHTTPError(f"connect failed: {exc}") from exc
            self.proto = proto
        assert proto.transport is not None
        waiter: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        proto.waiter = waiter
        proto.transport.write(raw)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await waiter
        except BaseException:
            proto.transport.close()  # an unanswered request poisons the connection
            self.proto = None
            raise
        finally:
            proto.waiter = None

    def close(self) -> None:
        """Close the connection."""
        if self.proto is not None and self.proto.transport is not None:
            self.proto.transport.close()
        self.proto = None


_OK: Final = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
              b"Content-Length: 11\r\n\r\n{\"ok\":true}")
_BAD: Final = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class _SinkProtocol(asyncio.Protocol):
    def __init__(self, on_request: Callable[[str, str, bytes], None],
                 live: set[asyncio.Transport]) -> None:
        self.on_request = on_request
        self.live = live
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.head: tuple[str, str, int | None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.live.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.live.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        assert self.transport is not None
        try:
            while self._one():
                pass
        except LeanHTTPError:
            self.transport.write(_BAD)
            self.transport.close()

    def _one(self) -> bool:
        if self.head is None:
            got = _take_head(self.buf, "request")
            if got is None:
                return False
            request_line, headers = got
            parts = request_line.split(" ")
            if len(parts) != 3:
                raise LeanHTTPError("bad request line")
            self.head = (parts[0], parts[1], _body_length(headers))
        method, target, length = self.head
        body = _take_body(self.buf, length)
        if body is None:
            return False
        self.head = None
        self.on_request(method, target, body)
        assert self.transport is not None
        self.transport.write(_OK)
        return True


class LeanSink:
    """An HTTP/1.1 application that answers every request 200 `{"ok":true}` after a callback."""

    def __init__(self, on_request: Callable[[str, str, bytes], None]) -> None:
        self.on_request = on_request
        self.server: asyncio.AbstractServer | None = None
        self.live: set[asyncio.Transport] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> int:
        """Listen on a free port; return it."""
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: _SinkProtocol(self.on_request, self.live), host, 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self.server is not None:
            self.server.close()
            for transport in list(self.live):
                transport.close()
            await self.server.wait_closed()
