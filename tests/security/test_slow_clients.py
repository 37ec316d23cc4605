"""Finding 10: slow and idle clients cannot hold connections.

A real `smsgw receiver` with small limits (`[receiver] http_header_timeout_s`,
`http_body_timeout_s`, `http_keepalive_s`, `http_max_connections`) over real sockets: a client
trickling its headers, one trickling its body, one sending nothing, and 50 idle keep-alive
connections are all closed by the server; connections beyond the cap are answered 503 and
closed, and a slot freed is usable again. The SMSC simulator closes a connection that never
binds and a bound one that goes quiet. Waits are event-driven (EOF on the socket) with generous
upper bounds; nothing depends on wall-clock speed.
"""

from __future__ import annotations

import asyncio
import contextlib

from smsgw.services.smsc_sim.server import SimConfig, Simulator
from smsgw.shared.smpp import pdu as P

from ..harness import closed_by_server

BOUND_S = 30.0  # far above every limit configured below; only a server that never closes hits it
LIMITS = {"SMSGW_RECEIVER__HTTP_HEADER_TIMEOUT_S": "1", "SMSGW_RECEIVER__HTTP_BODY_TIMEOUT_S": "1",
          "SMSGW_RECEIVER__HTTP_KEEPALIVE_S": "1"}
GET = b"GET /v1/openapi.json HTTP/1.1\r\nHost: t\r\n\r\n"


async def trickle(writer: asyncio.StreamWriter, data: bytes, every_s: float = 0.2) -> None:
    """Send `data` one byte at a time (a slow client), until done or the socket fails."""
    with contextlib.suppress(ConnectionError, OSError):
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(every_s)


async def read_response_head(reader: asyncio.StreamReader) -> bytes:
    """One response's status line and headers, and its body (Content-Length)."""
    async with asyncio.timeout(BOUND_S):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        await reader.readexactly(length)
    return head


async def test_slow_headers_slow_body_and_idle_connections_are_closed(
        sec_edge_receiver: object) -> None:
    start = sec_edge_receiver
    daemon = await start(LIMITS)  # type: ignore[operator]
    port = daemon.port

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    # 1. half the headers, then one byte every 0.2 s (never finishing: 10 KB of header)
    r1, w1 = await connect()
    w1.write(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\n")
    slow_head = asyncio.create_task(trickle(w1, b"X-Slow: " + b"a" * 10_000))
    # 2. a complete head announcing 1,000 bytes of body, sent one byte every 0.2 s
    r2, w2 = await connect()
    w2.write(b"POST /v1/messages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
             b"Content-Length: 1000\r\n\r\n")
    slow_body = asyncio.create_task(trickle(w2, b"{" + b" " * 998 + b"}"))
    # 3. connects and sends nothing
    r3, _w3 = await connect()
    # 4. fifty keep-alive connections, each served once, then idle
    idle = [await connect() for _ in range(50)]
    for r, w in idle:
        w.write(GET)
        assert (await read_response_head(r)).startswith(b"HTTP/1.1 200")
    results = await asyncio.gather(closed_by_server(r1), closed_by_server(r2),
                                   closed_by_server(r3),
                                   *(closed_by_server(r) for r, _ in idle))
    for task in (slow_head, slow_body):
        task.cancel()
    assert results[0], "a client trickling its headers kept the connection"
    assert results[1], "a client trickling its body kept the connection"
    assert results[2], "a connection that sends nothing was kept"
    assert all(results[3:]), f"{results[3:].count(False)} idle keep-alive connections were kept"
    # the receiver still serves
    r, w = await connect()
    w.write(GET)
    assert (await read_response_head(r)).startswith(b"HTTP/1.1 200")
    w.close()
    assert await daemon.stop() == 0
    assert b'"request_failed"' not in daemon.log


async def test_connections_beyond_the_limit_are_refused(sec_edge_receiver: object) -> None:
    start = sec_edge_receiver
    daemon = await start({"SMSGW_RECEIVER__HTTP_MAX_CONNECTIONS": "5",  # type: ignore[operator]
                          "SMSGW_RECEIVER__HTTP_KEEPALIVE_S": "600",
                          "SMSGW_RECEIVER__HTTP_HEADER_TIMEOUT_S": "600"})
    port = daemon.port
    held = []
    for _ in range(5):  # five served keep-alive connections: the server holds all five
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(GET)
        assert (await read_response_head(r)).startswith(b"HTTP/1.1 200")
        held.append((r, w))
    for _ in range(3):  # more are answered 503 and closed, whatever they send
        r, w = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(BOUND_S):
            answer = await r.read()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        w.close()
    # the held ones still work
    r, w = held[0]
    w.write(GET)
    assert (await read_response_head(r)).startswith(b"HTTP/1.1 200")
    # freeing one slot lets a new connection in (once the server has seen the close)
    held[-1][1].close()
    served = False
    async with asyncio.timeout(BOUND_S):
        while not served:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(GET)
            try:
                served = (await read_response_head(r)).startswith(b"HTTP/1.1 200")
            except (asyncio.IncompleteReadError, ConnectionError):
                served = False
            if not served:
                w.close()
                await asyncio.sleep(0.05)
    for _, w in held[:-1]:
        w.close()
    assert await daemon.stop() == 0


async def test_smsc_simulator_closes_unbound_and_idle_connections() -> None:
    async with Simulator(SimConfig(bind_timeout_s=0.5, idle_timeout_s=0.5)) as sim:
        # never binds
        r1, _w1 = await asyncio.open_connection("127.0.0.1", sim.port)
        # binds, then goes quiet
        r2, w2 = await asyncio.open_connection("127.0.0.1", sim.port)
        w2.write(P.encode(P.BindTransmitter(system_id="idle", password="pw"), 1))
        async with asyncio.timeout(BOUND_S):
            head = await r2.readexactly(16)
            await r2.readexactly(int.from_bytes(head[:4], "big") - 16)
        assert int.from_bytes(head[4:8], "big") == 0x80000002  # bind_transmitter_resp
        assert int.from_bytes(head[8:12], "big") == 0  # ESME_ROK
        assert await closed_by_server(r1), "a connection that never binds was kept"
        assert await closed_by_server(r2), "an idle bound connection was kept"
        assert sim.counters.idle_closed == 2
        w2.close()
