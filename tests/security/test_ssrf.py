"""Finding 2: the SSRF guard judges the host the HTTP client connects to, at intake and again
for every connection (IP literals included).

The client (aiohttp/yarl) IDNA/UTS-46-maps a Unicode host, so `①②⑦.0.0.1`, fullwidth digits
and ideographic full stops all become the IP literal 127.0.0.1, which no resolver is asked
about. Each test uses real sockets: a receiver API, a local HTTP application on 127.0.0.1, and
a real `smsgw processor` process for delivery.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from smsgw.services.admin.accounts import create_account
from smsgw.services.receiver.context import build_context
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.web import create_api_app
from smsgw.shared.queue import store
from smsgw.shared.runtime.config import WebhooksSettings

from ..harness import CLI_MODULE, ROOT, DaemonProcess, Spawner, clean_env, serve

SERVER_SECRET = b"sec-ssrf-server-secret"

# Hosts that the client maps to 127.0.0.1 / localhost: circled digits, fullwidth digits,
# ideographic / fullwidth / halfwidth full stops, circled zero, fullwidth and circled letters.
UNICODE_HOSTS = ["①②⑦.0.0.1", "\uff11\uff12\uff17.\uff10.\uff10.\uff11", "127\u30020\u30020\u30021",
                 "127\uff0e0\uff0e0\uff0e1", "①②⑦\uff61⓪\uff61⓪\uff61①",
                 "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54", "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ"]
# The same class in ASCII: legacy IPv4 forms and IPv6 spellings of loopback.
OTHER_LOOPBACK = ["127.1", "0x7f.1", "2130706433", "0177.0.0.1", "[::ffff:127.0.0.1]",
                  "[::1]", "0.0.0.0"]
# Unicode spellings of private / metadata addresses.
UNICODE_PRIVATE = ["⑩.0.0.1", "①⑥⑨.②⑤④.①⑥⑨.②⑤④", "①⑨②.①⑥⑧.0.1"]


def test_check_url_refuses_hosts_that_map_to_non_public_addresses() -> None:
    """Every Unicode / legacy spelling of a loopback or private address is refused by the
    intake check with no allowed networks; the error says which address it is."""
    from smsgw.shared.domain.urlguard import UnsafeUrl, check_url
    missed = []
    for host in UNICODE_HOSTS + OTHER_LOOPBACK + UNICODE_PRIVATE:
        try:
            check_url(f"http://{host}:18999/x")
        except UnsafeUrl:
            continue
        missed.append(host)
    assert missed == []


def test_check_url_refuses_hosts_that_do_not_encode() -> None:
    """A host that IDNA cannot encode, or that holds characters no DNS name has, is refused
    (not passed on for the client to interpret)."""
    from smsgw.shared.domain.urlguard import UnsafeUrl, check_url
    for host in ("a\u00adb.example", "\u200b127.0.0.1", "a b.example", "ex%41mple.com",
                 "a\u0000b.example"):
        with pytest.raises(UnsafeUrl):
            check_url(f"http://{host}/x")
    assert check_url("https://bücher.example/cb") == "https://bücher.example/cb"


def test_check_url_judges_the_origin_as_the_whole_url() -> None:
    """The verdict is cached per scheme + authority (the path and query of a dlr-url change
    with every message): for hostile and plain authorities, with paths, queries, fragments
    and characters yarl drops or keeps, `check_url` says exactly what judging the whole URL
    says, with and without allowed networks; and the length limit still counts the whole URL."""
    from smsgw.shared.domain.urlguard import (
        MAX_URL_LENGTH,
        AddressPolicy,
        UnsafeUrl,
        _check,
        check_url,
    )
    authorities = (UNICODE_HOSTS + OTHER_LOOPBACK + UNICODE_PRIVATE
                   + ["example.com", "user:pw@example.com", "example.com:0", "example.com:99999",
                      "h\\@evil", "a\tb.example", "[::1", "example.com:8080", "localhost",
                      "x.localhost", "8.8.8.8", "10.0.0.1:80", ""])
    tails = ["", "/", "/x?a=%d&b=%p", "?x=1", "#f", "/a b/%zz?q=\udcff", "/\\x@10.0.0.1/",
             "?@127.0.0.1", "#@127.0.0.1:80/", ";x", ":80"]
    for networks in ((), ("127.0.0.0/8",)):
        policy = AddressPolicy(networks)
        for scheme in ("http://", "https://", "HTTP://", "ftp://", "http:/", ""):
            for authority in authorities:
                for tail in tails:
                    url = scheme + authority + tail
                    try:
                        _check(url, policy)
                        whole = None
                    except UnsafeUrl as exc:
                        whole = str(exc)
                    try:
                        check_url(url, allowed_networks=networks)
                        cached = None
                    except UnsafeUrl as exc:
                        cached = str(exc)
                    assert cached == whole, (url, networks)
    long_url = "https://example.com/" + "x" * MAX_URL_LENGTH
    check_url("https://example.com/x")  # the origin's verdict is cached: the length is not
    with pytest.raises(UnsafeUrl, match="longer than"):
        check_url(long_url)


# -- intake over HTTP ---------------------------------------------------------------------------

class SecSsrfReceiver:
    """A receiver API on a real socket with the default (strict) webhook settings."""

    def __init__(self, base: str, http: aiohttp.ClientSession, key: str) -> None:
        self.base, self.http, self.key = base, http, key

    async def submit(self, callback_url: str) -> tuple[int, Any]:
        async with self.http.post(f"{self.base}/v1/messages",
                                  headers={"Authorization": f"Bearer {self.key}"},
                                  json={"to": "+447700900123", "from": "Shop", "text": "hi",
                                        "callback_url": callback_url}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def sendsms(self, dlr_url: str) -> tuple[int, str]:
        qs = (f"username=sec_ssrf&password={quote(self.key)}&from=Shop&to=%2B447700900123"
              f"&text=hi&dlr-mask=3&dlr-url={quote(dlr_url)}")
        async with self.http.get(f"{self.base}/cgi-bin/sendsms?{qs}") as resp:
            return resp.status, await resp.text()


@pytest.fixture
async def sec_ssrf_receiver(pool: asyncpg.Pool) -> AsyncIterator[SecSsrfReceiver]:
    """The receiver's API with `[webhooks]` at its defaults and one account `sec_ssrf`."""
    async with pool.acquire() as conn:
        _, key = await create_account(conn, SERVER_SECRET, "sec_ssrf")
    ctx = build_context(pool, ReceiverOptions(default_country="GB"),
                        WebhooksSettings.model_construct(**WebhooksSettings().model_dump()),
                        server_secret=SERVER_SECRET)
    try:
        async with serve(create_api_app(ctx)) as port, aiohttp.ClientSession() as http:
            yield SecSsrfReceiver(f"http://127.0.0.1:{port}", http, key)
    finally:
        await ctx.close(timeout_s=2)


async def test_json_api_refuses_unicode_callback_hosts(sec_ssrf_receiver: SecSsrfReceiver,
                                                       pool: asyncpg.Pool) -> None:
    """POST /v1/messages with each variant as `callback_url`: 422 naming callback_url,
    nothing stored; a public URL is still accepted."""
    for host in UNICODE_HOSTS + UNICODE_PRIVATE + OTHER_LOOPBACK:
        status, body = await sec_ssrf_receiver.submit(f"http://{host}:18999/x")
        assert status == 422, (host, body)
        assert [e["field"] for e in body["errors"]] == ["callback_url"], (host, body)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0
    status, body = await sec_ssrf_receiver.submit("https://example.com/cb")
    assert status == 202, body


async def test_sendsms_refuses_unicode_dlr_url_hosts(sec_ssrf_receiver: SecSsrfReceiver,
                                                     pool: asyncpg.Pool) -> None:
    """GET /cgi-bin/sendsms with each variant in `dlr-url`: Kannel's 400 answer naming dlr-url,
    nothing stored."""
    for host in UNICODE_HOSTS + UNICODE_PRIVATE:
        status, body = await sec_ssrf_receiver.sendsms(f"http://{host}:18999/dlr?s=%d")
        assert status == 400 and "dlr-url" in body, (host, status, body)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0


# -- delivery: a real application on 127.0.0.1 and a real processor ------------------------------

class SecSsrfApp:
    """An HTTP application on 127.0.0.1 that records every request it gets."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.port = 0


@pytest.fixture
async def sec_ssrf_app() -> AsyncIterator[SecSsrfApp]:
    """The local application every test URL points at (by its port)."""
    state = SecSsrfApp()

    async def hook(request: web.Request) -> web.StreamResponse:
        state.seen.append(f"{request.method} {request.path_qs}")
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    async with serve(app) as state.port:
        yield state


StartProcessor = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture
async def sec_ssrf_processor(db_url: str, tmp_path: Path) -> AsyncIterator[StartProcessor]:
    """Start a real `smsgw processor` on the test database (ready when returned)."""
    spawner = Spawner(tmp_path, stderr="stdout", wait_s=60)

    async def start(**extra_env: str) -> DaemonProcess:
        env = clean_env(**{
            "SMSGW_DATABASE_URL": db_url, "SMSGW_PROCESSOR__METRICS_PORT": "0",
            "SMSGW_PROCESSOR__POLL_S": "0.2", "PYTHONPATH": str(ROOT),
            "SMSGW_SECURITY__SERVER_SECRET_ENV": "SEC_SSRF_SERVER_SECRET",
            "SEC_SSRF_SERVER_SECRET": SERVER_SECRET.decode(), **extra_env})
        return await (await spawner.start("processor", env=env, python=CLI_MODULE)).ready()

    try:
        yield start
    finally:
        await spawner.close()


async def _final(pool: asyncpg.Pool, n: int) -> list[asyncpg.Record]:
    """Wait until the `n` callbacks rows are done or dead; return them in id order."""
    async with asyncio.timeout(60):
        while True:
            rows = await pool.fetch("SELECT url, status, attempts, last_error FROM callbacks "
                                    "ORDER BY id")
            if len(rows) == n and all(r["status"] in ("done", "dead") for r in rows):
                return rows
            await asyncio.sleep(0.1)


async def test_delivery_to_unicode_loopback_hosts_is_refused(
        pool: asyncpg.Pool, sec_ssrf_app: SecSsrfApp,
        sec_ssrf_processor: StartProcessor) -> None:
    """1. callbacks rows whose URLs reach the local application through each variant are
    inserted directly (the intake check bypassed); 2. a processor with the default config
    delivers; 3. every row ends dead as refused (no retries) and the application saw no
    request."""
    urls = [f"http://{h}:{sec_ssrf_app.port}/hook" for h in UNICODE_HOSTS + OTHER_LOOPBACK]
    await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": u, "body": b"{}",
                                             "headers": {"Content-Type": "application/json"}}
                                            for u in urls])
    await sec_ssrf_processor()
    rows = await _final(pool, len(urls))
    assert sec_ssrf_app.seen == []
    for r in rows:
        assert r["status"] == "dead" and "refused" in (r["last_error"] or ""), dict(r)


async def test_allowed_network_still_delivers(pool: asyncpg.Pool, sec_ssrf_app: SecSsrfApp,
                                              sec_ssrf_processor: StartProcessor) -> None:
    """With 127.0.0.0/8 in `[webhooks] allowed_networks` the same local application is
    reached, whether the URL spells the host in ASCII or in fullwidth digits."""
    urls = [f"http://127.0.0.1:{sec_ssrf_app.port}/ascii",
            f"http://\uff11\uff12\uff17.0.0.1:{sec_ssrf_app.port}/fullwidth"]
    await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": u, "body": b"{}"}
                                            for u in urls])
    await sec_ssrf_processor(SMSGW_WEBHOOKS__ALLOWED_NETWORKS='["127.0.0.0/8"]')
    rows = await _final(pool, len(urls))
    assert [r["status"] for r in rows] == ["done", "done"], [dict(r) for r in rows]
    assert sorted(sec_ssrf_app.seen) == ["POST /ascii", "POST /fullwidth"]


async def test_connect_time_check_covers_ip_literals(sec_ssrf_app: SecSsrfApp) -> None:
    """The HTTP client's own check, without the URL check before it: a request to the local
    application by an IP literal (ASCII, Unicode digits or full stops, IPv4-mapped IPv6, which
    no resolver is asked about) or by a name that resolves to loopback is refused before
    connect(); listing the network lets it through, on the next connection."""
    from yarl import URL

    from smsgw.shared.domain.urlguard import AddressPolicy, UnsafeAddress, UnsafeUrl
    from smsgw.shared.runtime.httpclient import HttpClient
    policy = AddressPolicy()
    http = HttpClient(policy, connect_timeout_s=2, timeout_s=5)
    for host in ("127.0.0.1", "①②⑦.0.0.1", "127\u30020\u30020\u30021", "[::ffff:127.0.0.1]",
                 "localhost", "127.1", "2130706433"):
        with pytest.raises((UnsafeUrl, UnsafeAddress)):
            await http.request("POST", URL(f"http://{host}:{sec_ssrf_app.port}/x"), b"", {})
    assert sec_ssrf_app.seen == []
    policy.networks = AddressPolicy(["127.0.0.0/8"]).networks
    answer = await http.request("POST", URL(f"http://①②⑦.0.0.1:{sec_ssrf_app.port}/ok"),
                                b"", {})
    assert answer.status == 204
    await http.close()
    assert sec_ssrf_app.seen == ["POST /ok"]
