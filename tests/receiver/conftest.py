"""Receiver test helpers: a receiver API on a real socket over the test database, accounts."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

import aiohttp
import asyncpg
import pytest
from pydantic import SecretStr

from smsgw.services.admin.accounts import create_account
from smsgw.services.receiver.context import ReceiverContext, build_context
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.web import create_api_app, fast_front
from smsgw.shared.runtime.config import (
    GenericSourceSettings,
    TwilioSettings,
    VonageSettings,
    WebhooksSettings,
)
from smsgw.shared.runtime.http import HttpSite

SERVER_SECRET = b"test-server-secret"
TWILIO_TOKEN = "12345678901234567890123456789012"
VONAGE_SECRET = "vonage-signature-secret"
GENERIC_SECRET = "generic-secret"


def webhook_settings(**overrides: Any) -> WebhooksSettings:
    """Webhook settings with all three providers configured (secrets given directly)."""
    base: dict[str, Any] = {
        # the tests' applications listen on loopback
        "allowed_networks": (ip_network("127.0.0.0/8"), ip_network("::1/128")),
        "twilio": TwilioSettings.model_construct(auth_token=SecretStr(TWILIO_TOKEN)),
        "vonage": VonageSettings.model_construct(signature_secret=SecretStr(VONAGE_SECRET),
                                                 signature_method="sha256"),
        "generic": {"acme": GenericSourceSettings.model_construct(
            secret=SecretStr(GENERIC_SECRET))},
    }
    base.update(overrides)
    return WebhooksSettings.model_construct(**{**WebhooksSettings().model_dump(), **base})


@dataclass
class Receiver:
    """One running receiver API: its context, base URL and a client session."""

    ctx: ReceiverContext
    url: str
    http: aiohttp.ClientSession

    async def post(self, path: str, *, key: str | None = None, **kw: Any) -> tuple[int, Any]:
        """POST and return (status, JSON body or text)."""
        return await self.request("POST", path, key=key, **kw)

    async def get(self, path: str, *, key: str | None = None, **kw: Any) -> tuple[int, Any]:
        """GET and return (status, JSON body or text)."""
        return await self.request("GET", path, key=key, **kw)

    async def request(self, method: str, path: str, *, key: str | None = None,
                      headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
        """Any request; JSON answers are decoded."""
        hdrs = dict(headers or {})
        if key is not None:
            hdrs["Authorization"] = f"Bearer {key}"
        async with self.http.request(method, self.url + path, headers=hdrs, **kw) as resp:
            self.last_headers = resp.headers
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()


ReceiverFactory = Callable[..., Awaitable[Receiver]]


@pytest.fixture
async def receiver_factory(pool: asyncpg.Pool) -> AsyncIterator[ReceiverFactory]:
    """Start receiver APIs on 127.0.0.1:0 over the test pool; all closed at the end."""
    started: list[tuple[HttpSite, ReceiverContext, aiohttp.ClientSession]] = []

    async def start(options: ReceiverOptions | None = None,
                    webhooks: WebhooksSettings | None = None,
                    clock: Callable[[], float] = time.time,
                    db_pool: asyncpg.Pool | None = None) -> Receiver:
        opts = options or ReceiverOptions(default_country="GB")
        ctx = build_context(db_pool or pool, opts, webhooks or webhook_settings(),
                            server_secret=SERVER_SECRET, clock=clock)
        # the daemon's site: the fast front serves the MT hot routes, aiohttp the others
        site = HttpSite("api", create_api_app(ctx), "127.0.0.1", 0, front=fast_front(ctx))
        port = await site.start()
        http = aiohttp.ClientSession()
        started.append((site, ctx, http))
        return Receiver(ctx, f"http://127.0.0.1:{port}", http)

    yield start
    for site, ctx, http in reversed(started):
        await http.close()
        await site.close()
        await ctx.close(timeout_s=2)


@pytest.fixture
async def receiver(receiver_factory: ReceiverFactory) -> Receiver:
    """A receiver with default options (default country GB, private callback URLs allowed)."""
    return await receiver_factory()


AccountFactory = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
def account_factory(pool: asyncpg.Pool, unique: Callable[[str], str]) -> AccountFactory:
    """Create an account (and its first key) the way `smsgw accounts create` does."""
    async def make(name: str | None = None, **kw: Any) -> tuple[int, str]:
        async with pool.acquire() as conn:
            return await create_account(conn, SERVER_SECRET, name or unique("acct"), **kw)
    return make
