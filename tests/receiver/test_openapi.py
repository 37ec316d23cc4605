"""The OpenAPI document stays true: every route documented, real answers match it, and a
schemathesis run over the whole document finds no 5xx."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsgw.services.receiver.context import build_context
from smsgw.services.receiver.openapi import document
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.web import create_api_app
from smsgw.shared.core import db

from .conftest import SERVER_SECRET, AccountFactory, Receiver, webhook_settings
from .test_webhooks import generic_headers

MSG = {"to": "+447700900123", "from": "MyBrand", "text": "hi"}


def _documented(path: str, method: str, status: int) -> dict[str, Any]:
    op = document()["paths"][path][method.lower()]
    return op["responses"][str(status)]


def _check(path: str, method: str, status: int, body: Any) -> None:
    """Validate a JSON answer against the documented schema for its status."""
    resp = _documented(path, method, status)
    content = resp.get("content", {})
    if "application/json" in content:
        schema = {**content["application/json"]["schema"],
                  "components": document()["components"]}
        jsonschema.Draft202012Validator(schema).validate(body)


def test_every_route_is_documented() -> None:
    """Each route the app serves (method + path) appears in the document, and vice versa."""
    routes = set()
    fake_ctx = type("Ctx", (), {"options": ReceiverOptions()})()
    application = create_api_app(fake_ctx)  # type: ignore[arg-type]
    for route in application.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        routes.add((path, route.method.lower()))
    documented = {(p, m) for p, ops in document()["paths"].items() for m in ops}
    assert routes == documented
    jsonschema.Draft202012Validator.check_schema(
        {"$defs": document()["components"]["schemas"]})


async def test_real_answers_match_the_document(receiver: Receiver,
                                               account_factory: AccountFactory) -> None:
    """Happy paths and errors over real HTTP validate against their documented schemas."""
    _, key = await account_factory()
    cases = [
        ("/v1/messages", "POST", dict(key=key, json=MSG)),
        ("/v1/messages", "POST", dict(key=key, json={"messages": [MSG, MSG]})),
        ("/v1/messages", "POST", dict(key=key, json={**MSG, "to": "x"})),
        ("/v1/messages", "POST", dict(json=MSG)),
        ("/v1/messages", "POST", dict(key=key, data=b"{", headers={
            "Content-Type": "application/json"})),
        ("/v1/messages", "POST", dict(key=key, json={**MSG, "client_ref": "c"})),
        ("/v1/messages", "POST", dict(key=key, json={**MSG, "text": "y", "client_ref": "c"})),
    ]
    for path, method, kw in cases:
        status, body = await receiver.request(method, path, **kw)
        _check(path, method, status, body)
    status, body = await receiver.post("/v1/messages", key=key, json=MSG)
    for mid in (str(body["id"]), "999999", "abc"):
        status, got = await receiver.get(f"/v1/messages/{mid}", key=key)
        _check("/v1/messages/{id}", "GET", status, got)
    mo = b'{"id": "x1", "from": "+447700900123", "to": "60060", "text": "hi"}'
    status, got = await receiver.post("/v1/inbound/generic/acme", data=mo,
                                      headers=generic_headers(mo))
    _check("/v1/inbound/generic/{source}", "POST", status, got)
    status, got = await receiver.get("/v1/openapi.json")
    assert status == 200 and got == document()
    status, got = await receiver.get("/v1/nope")
    assert status == 404 and got["error"] == "not_found"


class ThreadedReceiver:
    """A receiver API in its own thread and event loop (schemathesis calls are blocking)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete,
                                       args=(self._main(),), daemon=True)
        self.url = ""
        self.key = ""
        self._stop: asyncio.Event | None = None

    async def _main(self) -> None:
        from smsgw.services.admin.accounts import create_account

        self._stop = asyncio.Event()
        pool = await db.create_pool(self.db_url, min_size=1, max_size=5)
        ctx = build_context(pool, ReceiverOptions(default_country="GB"), webhook_settings(),
                            server_secret=SERVER_SECRET)
        async with pool.acquire() as conn:
            _, self.key = await create_account(conn, SERVER_SECRET, "fuzz")
        runner = web.AppRunner(create_api_app(ctx), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await ctx.close(2)
        await pool.close()

    def __enter__(self) -> ThreadedReceiver:
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(20)
        self.loop.close()


@pytest.fixture
def threaded_receiver(db_url: str) -> Iterator[ThreadedReceiver]:
    with ThreadedReceiver(db_url) as r:
        yield r


def test_schemathesis_finds_no_server_errors(threaded_receiver: ThreadedReceiver,
                                             db_url: str) -> None:
    """Every documented operation, fuzzed from the document (valid key included): no 5xx,
    and every answer conforms to the documented status codes and schemas."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(document())
    headers = {"Authorization": f"Bearer {threaded_receiver.key}"}
    started = time.monotonic()
    failures: list[str] = []
    def fuzz(operation: Any) -> None:
        @settings(max_examples=15, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(), use_key=st.booleans())
        def run(case: Any, use_key: bool) -> None:
            response = case.call(base_url=threaded_receiver.url,
                                 headers=headers if use_key else None, timeout=10)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{operation.label}: {response.status_code}")
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance,
                                                     response_schema_conformance])

        run()

    for result in schema.get_all_operations():
        fuzz(result.ok())
    assert not failures
    assert time.monotonic() - started < 60
