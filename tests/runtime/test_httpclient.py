"""The lean HTTP client of callback delivery (shared/runtime/httpclient.py), against real
sockets: loopback servers that write exact bytes, so each answer shape (keep-alive, chunked,
close-delimited, interim 1xx, oversize, a keep-alive connection the server dropped) is what
the client really meets. TLS against a real TLS server with a self-signed certificate."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from yarl import URL

from smsgw.shared.domain.urlguard import AddressPolicy, UnsafeUrl
from smsgw.shared.runtime.httpclient import HttpClient, HttpError

LOOPBACK = AddressPolicy(["127.0.0.0/8"])
Handler = Callable[[bytes, int], bytes | None]  # (request head+body, request no) -> answer


class WireServer:
    """Answers each request with `handler(request, n)` (None: keep silent); counts the
    connections and keeps every request's bytes. `close_after` closes each connection after
    that many answers, without saying so (a keep-alive timeout on the server's side)."""

    def __init__(self, handler: Handler, close_after: int | None = None) -> None:
        self.handler = handler
        self.close_after = close_after
        self.connections = 0
        self.ended = 0  # connections the client closed
        self.requests: list[bytes] = []
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        answered = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                answer = self.handler(request, len(self.requests))
                if answer is None:
                    await asyncio.sleep(30)
                    return
                writer.write(answer)
                await writer.drain()
                answered += 1
                if self.close_after is not None and answered >= self.close_after:
                    break
        if reader.at_eof():
            self.ended += 1
        writer.close()


@contextlib.asynccontextmanager
async def wire(handler: Handler, *, close_after: int | None = None,
               ssl_ctx: ssl.SSLContext | None = None) -> AsyncIterator[WireServer]:
    srv = WireServer(handler, close_after)
    server = await asyncio.start_server(srv._serve, "127.0.0.1", 0, ssl=ssl_ctx)
    srv.port = server.sockets[0].getsockname()[1]
    try:
        yield srv
    finally:
        server.close()


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body) + body


def client(**kw: float) -> HttpClient:
    return HttpClient(LOOPBACK, connect_timeout_s=kw.get("connect", 2.0),
                      timeout_s=kw.get("timeout", 5.0))


async def test_keep_alive_headers_and_body_limits() -> None:
    """1. two POSTs share one connection; the request carries Host, the caller's headers in
    order, then Accept, Accept-Encoding, Content-Length and a default Content-Type (what the
    applications saw before); 2. a body within read_limit is returned, one above it (by
    Content-Length) is not read: too_large, and the connection is not reused; 3. without
    read_limit the body is skipped (None) and the connection reused."""
    answers = {1: ok(b"first"), 2: ok(b"x" * 100), 3: ok(b"third"), 4: ok(b"fourth")}
    async with wire(lambda req, n: answers[n]) as srv:
        http = client()
        url = URL(f"http://127.0.0.1:{srv.port}/cb?a=1&b=%2F", encoded=True)
        first = await http.request("POST", url, b'{"x":1}', {"User-Agent": "smsgw/t",
                                                            "X-Smsgw-Timestamp": "7"},
                                   read_limit=64)
        assert (first.status, first.body, first.too_large) == (200, b"first", False)
        big = await http.request("POST", url, b"{}", {}, read_limit=10)
        assert big.too_large and big.body is None
        third = await http.request("GET", url, None, {})
        assert third.body is None and third.status == 200
        await http.request("GET", url, None, {})
        await http.close()
    assert srv.connections == 2  # the too-large answer's connection was dropped
    head = srv.requests[0].decode()
    assert head.startswith("POST /cb?a=1&b=%2F HTTP/1.1\r\n")
    lines = head.split("\r\n")
    assert lines[1:8] == [f"Host: 127.0.0.1:{srv.port}", "User-Agent: smsgw/t",
                          "X-Smsgw-Timestamp: 7", "Accept: */*",
                          "Accept-Encoding: gzip, deflate", "Content-Length: 7",
                          "Content-Type: application/octet-stream"]
    assert srv.requests[0].endswith(b'\r\n\r\n{"x":1}')
    assert b"Content-Length" not in srv.requests[2]  # a GET has no body


async def test_chunked_interim_and_close_delimited_answers() -> None:
    """Chunked with extensions and trailers; a 100 Continue before the real answer; an
    HTTP/1.0 body delimited by the connection's end; a chunked body past the limit."""
    chunked = (b"HTTP/1.1 100 Continue\r\n\r\n"
               b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Kannel-From: 1234\r\n"
               b"\r\n4;ext=1\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: x\r\n\r\n")
    async with wire(lambda req, n: chunked) as srv:
        http = client()
        answer = await http.request("GET", URL(f"http://127.0.0.1:{srv.port}/"), None, {},
                                    read_limit=100)
        assert (answer.status, answer.body) == (201, b"Wikipedia")
        assert ("X-Kannel-From", "1234") in answer.headers
        again = await http.request("GET", URL(f"http://127.0.0.1:{srv.port}/"), None, {},
                                   read_limit=6)
        assert again.too_large
        await http.close()
    assert srv.connections == 1  # the complete chunked answer's connection was reused
    async with wire(lambda req, n: b"HTTP/1.0 200 OK\r\n\r\nuntil the end",
                    close_after=1) as srv:
        answer = await client().request("GET", URL(f"http://127.0.0.1:{srv.port}/"), None, {},
                                        read_limit=100)
        assert answer.body == b"until the end"


async def test_server_closed_keep_alive_is_retried_once_on_a_new_connection() -> None:
    """The server drops each connection after one answer without saying so: the second
    request finds its pooled connection closed before any answer byte, and is sent once more
    on a new connection — the server sees each request exactly once."""
    async with wire(lambda req, n: ok(), close_after=1) as srv:
        http = client()
        url = URL(f"http://127.0.0.1:{srv.port}/x")
        for _ in range(3):
            assert (await http.request("POST", url, b"{}", {})).status == 200
            await asyncio.sleep(0.05)  # let the close arrive, as between real callbacks
        await http.close()
    assert len(srv.requests) == 3 and srv.connections == 3


async def test_timeouts_bad_answers_and_header_injection() -> None:
    """1. a server that never answers: TimeoutError after timeout_s; 2. garbage instead of
    HTTP: HttpError; 3. a header value with CR LF is refused before anything is sent;
    4. a loopback name outside the policy is refused before connect."""
    async with wire(lambda req, n: None) as srv:
        with pytest.raises(TimeoutError):
            await client(timeout=0.3).request("GET", URL(f"http://127.0.0.1:{srv.port}/"),
                                              None, {})
    async with wire(lambda req, n: b"SMTP ready\r\n\r\n") as srv:
        with pytest.raises(HttpError):
            await client().request("GET", URL(f"http://127.0.0.1:{srv.port}/"), None, {})
        with pytest.raises(HttpError):
            await client().request("GET", URL(f"http://127.0.0.1:{srv.port}/"), None,
                                   {"X-A": "v\r\nX-Injected: 1"})
        assert len(srv.requests) == 1  # only the garbage exchange
    strict = HttpClient(AddressPolicy(), connect_timeout_s=1, timeout_s=2)
    with pytest.raises(UnsafeUrl):
        await strict.request("GET", URL("http://localhost:9/"), None, {})



async def test_https_verifies_the_certificate(tls_files: tuple[Path, Path]) -> None:
    """https to a TLS server: with its certificate trusted the request goes through (and the
    connection is reused); with the system trust store alone the handshake fails, nothing is
    delivered."""
    cert, key = tls_files
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    async with wire(lambda req, n: ok(b"secure"), ssl_ctx=server_ctx) as srv:
        url = URL(f"https://127.0.0.1:{srv.port}/cb")
        with pytest.raises(OSError):
            await HttpClient(LOOPBACK, connect_timeout_s=2, timeout_s=5).request(
                "POST", url, b"{}", {})
        assert srv.requests == []
        trusting = HttpClient(LOOPBACK, connect_timeout_s=2, timeout_s=5,
                              ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            answer = await trusting.request("POST", url, b"{}", {}, read_limit=10)
            assert answer.body == b"secure"
        await trusting.close()
    assert len(srv.requests) == 2 and srv.connections == 1  # kept alive between the two


async def test_idle_connections_expire_and_are_closed() -> None:
    """A keep-alive connection idle longer than idle_s is closed (not kept for ever when its
    host is never called again) and the next request to that host opens a new one."""
    async with wire(lambda req, n: ok()) as a, wire(lambda req, n: ok()) as b:
        http = HttpClient(LOOPBACK, connect_timeout_s=2, timeout_s=5, idle_s=0.2)
        await http.request("GET", URL(f"http://127.0.0.1:{a.port}/"), None, {})
        await asyncio.sleep(0.3)
        await http.request("GET", URL(f"http://127.0.0.1:{b.port}/"), None, {})
        for _ in range(50):
            if a.ended:
                break
            await asyncio.sleep(0.01)
        assert a.ended == 1
        await http.request("GET", URL(f"http://127.0.0.1:{a.port}/"), None, {})
        assert a.connections == 2
        await http.close()
