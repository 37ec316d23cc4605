"""Batched MO forwards must really be batched: N forwards to one URL with `batch = N` arrive as
ONE request whose JSON array holds the N objects in order, signed once over the whole body.

The existing batch test accepts any request of 1 to 3 objects, so a batch limit of 1 passed it;
here the request count and each array's size are exact. The signature is checked with the
standard library's HMAC, not with our signing code.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from smsgw.services.processor.callbacks import CallbackDelivery, SecretResolver, deliver_until_idle
from smsgw.services.processor.options import CallbackSettings

from .conftest import add_mo, drain, mo, set_rules

SECRET = "batch-secret"


@pytest.fixture
async def hook() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An application endpoint that records every request and answers 204."""
    seen: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append({"body": await request.read(), "headers": dict(request.headers)})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/mo", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        yield str(server.make_url("/mo")), seen
    finally:
        await server.close()


async def _deliver_all(pool: asyncpg.Pool) -> None:
    settings = CallbackSettings(max_attempts=3, retry_base_s=0.02, retry_max_s=0.05,
                                timeout_s=5, lease_s=15, per_host=2, concurrency=8, batch=100)
    delivery = CallbackDelivery(pool, settings, owner="batch-test",
                                allowed_networks=("127.0.0.0/8",),
                                secrets=SecretResolver({"FWD_SECRET": SECRET}), poll_s=0.05)

    async def idle() -> bool:
        return await pool.fetchval(
            "SELECT count(*) FROM callbacks WHERE status IN ('queued', 'sending')") == 0

    await delivery.start()
    try:
        await deliver_until_idle(delivery, timeout_s=20, idle=idle)
    finally:
        await delivery.close()


def _verified_items(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's JSON array, after checking its one signature over the whole body."""
    ts = request["headers"]["X-Smsgw-Timestamp"]
    mac = hmac.new(SECRET.encode(), ts.encode() + b"." + request["body"], hashlib.sha256)
    assert hmac.compare_digest(request["headers"]["X-Smsgw-Signature"],
                               "sha256=" + mac.hexdigest())
    items = orjson.loads(request["body"])
    assert isinstance(items, list)
    assert request["headers"]["X-Smsgw-Batch"] == str(len(items))
    return items


@pytest.mark.parametrize(("count", "batch", "sizes"), [(5, 5, [5]), (7, 3, [3, 3, 1])])
async def test_forwards_arrive_in_full_batches(pool: asyncpg.Pool, make_engine: Any,
                                               hook: tuple[str, list[dict[str, Any]]],
                                               count: int, batch: int,
                                               sizes: list[int]) -> None:
    """1. A forward rule with `batch`, signed with FWD_SECRET; `count` MOs from different
       numbers are processed, so `count` callbacks rows wait for one URL.
    2. One delivery pass (a claim of up to 100 rows) sends them.
    3. The application got exactly `sizes` requests (5 → one request of 5; 7 with batch 3 →
       3, 3, 1), every object once, in MO order within and across the arrays; every row is
       done at its first attempt."""
    url, seen = hook
    await set_rules(pool, [{"name": "fwd", "actions": [
        {"type": "forward", "url": url, "secret_env": "FWD_SECRET", "batch": batch}]}])
    texts = [f"mo number {i}" for i in range(count)]
    await add_mo(pool, [mo(f"+4477009001{i:02d}", t) for i, t in enumerate(texts)])
    await drain(make_engine())
    assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE batch_max = $1",
                               batch) == count
    await _deliver_all(pool)
    batches = [_verified_items(request) for request in seen]
    # requests to one host run side by side (per_host = 2): order them by their first object
    batches.sort(key=lambda items: texts.index(items[0]["text"]))
    assert [len(items) for items in batches] == sizes
    assert [item["text"] for items in batches for item in items] == texts
    rows = await pool.fetch("SELECT status, attempts FROM callbacks")
    assert [(r["status"], r["attempts"]) for r in rows] == [("done", 0)] * count
