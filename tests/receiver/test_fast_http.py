"""The fast front (shared/runtime/fasthttp.py) on a real receiver API site, over raw sockets.

One site with small limits: the hot routes answer byte for byte as aiohttp does (Date aside);
pipelined requests are answered in order; every other request (another route, HTTP/1.0,
chunked, `Expect: 100-continue`, a non-ASCII header) is handed to aiohttp on the same
connection, which keeps it; ambiguous framing (Content-Length with Transfer-Encoding, two
Content-Lengths, a signed length, bare LF) is aiohttp's 400 and a close, never a smuggled
request; an oversized head or body is refused; `Connection: close` closes; the header, body and
keep-alive deadlines close slow and idle connections, and one that never reads its answers;
nothing answers 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

import asyncpg

from smsgw.services.receiver.context import build_context
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.web import create_api_app, fast_front
from smsgw.shared.runtime.http import HttpLimits, HttpSite

from ..harness import closed_by_server
from .conftest import SERVER_SECRET, AccountFactory, webhook_settings

BOUND_S = 20.0
LIMITS = HttpLimits(header_timeout_s=0.5, body_timeout_s=0.5, keepalive_s=1.0)
MT = b'{"to":"+447700900123","from":"Shop","text":"hi"}'


def post(key: str, body: bytes = MT, extra: bytes = b"", path: bytes = b"/v1/messages",
         version: bytes = b"1.1") -> bytes:
    return (b"POST " + path + b" HTTP/" + version + b"\r\nHost: t\r\nAuthorization: Bearer "
            + key.encode() + b"\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


class Conn:
    """A raw client connection: write bytes, read whole responses."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def response(self) -> tuple[bytes, bytes]:
        """(head without Date, body) of the next response."""
        async with asyncio.timeout(BOUND_S):
            head = await self.reader.readuntil(b"\r\n\r\n")
            while head.startswith(b"HTTP/1.1 100 "):
                head = await self.reader.readuntil(b"\r\n\r\n")
            m = re.search(rb"\r\ncontent-length: (\d+)\r\n", head, re.I)
            body = await self.reader.readexactly(int(m.group(1))) if m else b""
        return re.sub(rb"\r\nDate: [^\r]*", b"", head), body

    async def closed(self) -> bool:
        """True once the server has closed (EOF or reset) within BOUND_S."""
        return await closed_by_server(self.reader, BOUND_S)


async def test_fast_front_framing_limits_and_hand_off(pool: asyncpg.Pool,
                                                      account_factory: AccountFactory) -> None:
    ctx = build_context(pool, ReceiverOptions(default_country="GB", max_body_bytes=2048),
                        webhook_settings(), server_secret=SERVER_SECRET)
    site = HttpSite("api", create_api_app(ctx), "127.0.0.1", 0, limits=LIMITS,
                    front=fast_front(ctx))
    port = await site.start()
    _, key = await account_factory("fast_front")

    async def connect() -> Conn:
        return Conn(*await asyncio.open_connection("127.0.0.1", port))

    try:
        # 1. three pipelined MTs in one write: three answers, in order, as aiohttp writes them
        c = await connect()
        c.writer.write(post(key) * 2 + post(key, b"{"))
        heads = [await c.response() for _ in range(3)]
        assert [h[:21] for h, _ in heads] == [b"HTTP/1.1 202 Accepted"] * 2 + [
            b"HTTP/1.1 400 Bad Requ"]
        names = [line.split(b":")[0] for line in heads[0][0].split(b"\r\n")[1:-2]]
        assert names == [b"Content-Type", b"Content-Length", b"Server"]
        assert b'"error":"invalid_json"' in heads[2][1]
        # the body in a second segment, after the head: still served
        c.writer.write(post(key)[:-10])
        await asyncio.sleep(0.05)
        c.writer.write(post(key)[-10:])
        assert (await c.response())[0].startswith(b"HTTP/1.1 202")

        # 2. the same answers through aiohttp: Kannel's texts identical byte for byte
        # (a non-ASCII header hands the request over; the connection stays aiohttp's)
        get = (b"GET /cgi-bin/sendsms?user=fast_front&pass=" + key.encode()
               + b"&from=Shop&to=%2B447700900123&text=hi HTTP/1.1\r\nHost: t\r\n")
        bad = get.replace(b"pass=", b"pass=x")
        fast = []
        for req in (get, bad):
            c.writer.write(req + b"\r\n")
            fast.append(await c.response())
        assert fast[0] == (fast[0][0], b"0: Accepted for delivery")
        assert fast[1][0].startswith(b"HTTP/1.1 403 Forbidden")
        assert fast[1][1] == b"Authorization failed for sendsms"
        slow = []
        for req in (get, bad):
            c.writer.write(req + "X-Name: Zoë\r\n\r\n".encode())
            slow.append(await c.response())
        assert slow == fast
        c.writer.write(post(key))  # aiohttp keeps the connection: a hot route still works
        assert (await c.response())[0].startswith(b"HTTP/1.1 202")
        c.writer.close()

        # 3. another route after a hot one, on one connection: handed over, both answered
        c = await connect()
        c.writer.write(post(key) + b"GET /v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (await c.response())[0].startswith(b"HTTP/1.1 202")
        head, body = await c.response()
        assert head.startswith(b"HTTP/1.1 200") and body.startswith(b"{")
        c.writer.close()

        # 4. chunked and Expect: 100-continue are aiohttp's, and work
        c = await connect()
        chunked = post(key).split(b"Content-Length")[0] + b"Transfer-Encoding: chunked\r\n\r\n"
        c.writer.write(chunked + b"%x\r\n" % len(MT) + MT + b"\r\n0\r\n\r\n")
        assert (await c.response())[0].startswith(b"HTTP/1.1 202")
        c.writer.write(post(key, extra=b"Expect: 100-continue\r\n"))
        assert (await c.response())[0].startswith(b"HTTP/1.1 202")
        c.writer.close()

        # 5. ambiguous framing: 400 and closed; the request behind it is never served
        smuggled = post(key, b"0\r\n\r\n" + post(key))
        for framing in (smuggled.replace(b"Content-Length", b"Transfer-Encoding: chunked\r\n"
                                         b"Content-Length"),
                        smuggled.replace(b"Content-Length", b"Content-Length: 5\r\n"
                                         b"Content-Length"),
                        post(key).replace(b"Content-Length: ", b"Content-Length: +"),
                        post(key).replace(b"Host: t\r\n", b"Host: t\n")):
            c = await connect()
            c.writer.write(framing)
            head, _ = await c.response()
            assert re.match(rb"HTTP/1\.[01] 400 ", head), head
            assert await c.closed()

        # 6. HTTP/1.0 (aiohttp answers and closes), Connection: close (answered, closed)
        for req in (post(key, version=b"1.0"), post(key, extra=b"Connection: close\r\n")):
            c = await connect()
            c.writer.write(req)
            head, _ = await c.response()
            assert b" 202 Accepted" in head
            assert await c.closed()

        # 7. a head over aiohttp's limits, a body over max_body_bytes
        c = await connect()
        c.writer.write(post(key, extra=b"X-Big: " + b"a" * 9000 + b"\r\n"))
        head, _ = await c.response()
        assert re.match(rb"HTTP/1\.[01] 400 ", head), head
        c.writer.close()
        c = await connect()
        c.writer.write(post(key, b"[" + b" " * 3000 + b"]"))
        head, body = await c.response()
        assert head.startswith(b"HTTP/1.1 413") and b"too_large" in body
        c.writer.close()

        # 8. deadlines: a head never finished, a body never finished, an idle connection
        slow_head, slow_body, idle = await connect(), await connect(), await connect()
        slow_head.writer.write(post(key)[:30])
        slow_body.writer.write(post(key)[:-5])
        idle.writer.write(post(key))
        assert (await idle.response())[0].startswith(b"HTTP/1.1 202")
        assert all(await asyncio.gather(slow_head.closed(), slow_body.closed(), idle.closed()))
        assert site.fast_requests == 9  # the others went to aiohttp

        # 9. a client that pipelines requests and never reads the answers: once the socket's
        # buffers are full the server stops serving it and closes it after the idle timeout
        served = site.fast_requests
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        _, deaf = await asyncio.open_connection(sock=sock, limit=4096)
        deaf.write(post("not-a-key", b"{}") * 60_000)  # 401s: no database work
        with contextlib.suppress(ConnectionError):  # the server's abort fails our writes
            async with asyncio.timeout(BOUND_S):
                await deaf.wait_closed()
        assert site.fast_requests - served < 60_000
    finally:
        await site.close()
        await ctx.close(timeout_s=2)
    async with pool.acquire() as conn:  # every 202 above is one stored message
        assert await conn.fetchval("SELECT count(*) FROM outbound") == 12
