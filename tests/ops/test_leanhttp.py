"""The benchmark's lean HTTP client and sink against real sockets (and aiohttp as the peer)."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from smsgw.services.bench.leanhttp import LeanClient, LeanHTTPError, LeanSink


async def _aiohttp_app() -> tuple[web.AppRunner, str]:
    async def plain(request: web.Request) -> web.Response:
        return web.json_response({"got": (await request.read()).decode()}, status=202)

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(status=200)
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for piece in (b"alpha-", b"beta-", b"gamma"):
            await resp.write(piece)
        await resp.write_eof()
        return resp

    async def close(_request: web.Request) -> web.Response:
        return web.Response(status=503, headers={"Connection": "close", "Retry-After": "1"})

    app = web.Application()
    app.router.add_post("/plain", plain)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/close", close)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_client_reads_length_and_chunked_bodies_and_reconnects_after_close() -> None:
    """1. A POST gets its Content-Length answer on a kept-alive connection; 2. a chunked answer
    is reassembled; 3. `Connection: close` ends the connection and the next request reconnects;
    4. a refused connection is a LeanHTTPError, never an answer."""
    runner, url = await _aiohttp_app()
    client = LeanClient(url)
    try:
        r = await client.send(client.build("POST", "/plain", {"Content-Type": "text/plain"},
                                           b"hello"))
        assert (r.status, r.body) == (202, b'{"got": "hello"}')
        first = client.proto
        r = await client.send(client.build("GET", "/chunked", {}, None))
        assert (r.status, r.body) == (200, b"alpha-beta-gamma")
        assert client.proto is first  # kept alive
        r = await client.send(client.build("GET", "/close", {}, None))
        assert (r.status, r.headers["retry-after"]) == (503, "1")
        await asyncio.sleep(0.05)
        r = await client.send(client.build("POST", "/plain", {}, b"again"))
        assert r.status == 202 and client.proto is not first
    finally:
        client.close()
        await runner.cleanup()
    with pytest.raises(LeanHTTPError):
        await LeanClient(url).send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")


async def test_sink_answers_each_request_and_sees_pipelined_bodies() -> None:
    """The sink answers 200 to each request, including two written in one packet, and hands
    every body to its callback; garbage gets 400 and a closed connection."""
    seen: list[tuple[str, str, bytes]] = []
    sink = LeanSink(lambda m, t, b: seen.append((m, t, b)))
    port = await sink.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /mo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n[1]"
                     b"POST /mo?x=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"2\r\n[2\r\n1\r\n]\r\n0\r\n\r\n")
        await writer.drain()
        answers = b""
        while answers.count(b"HTTP/1.1 200") < 2:
            answers += await asyncio.wait_for(reader.read(4096), 5)
        assert seen == [("POST", "/mo", b"[1]"), ("POST", "/mo?x=1", b"[2]")]
        writer.write(b"NOT HTTP\r\n\r\n")
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(), 5)
        assert rest.startswith(b"HTTP/1.1 400")
        writer.close()
    finally:
        await sink.stop()
