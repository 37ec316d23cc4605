"""Callback delivery against a real local aiohttp application: retries, signature, dead, guard."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from smsgw.services.processor.callbacks import CallbackDelivery, SecretResolver, deliver_until_idle
from smsgw.services.processor.options import CallbackSettings
from smsgw.shared.queue import store


@dataclass
class App:
    """The application standing in for a customer's endpoint."""

    fail_first: int = 0
    seen: list[dict] = field(default_factory=list)
    server: TestServer | None = None

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def app() -> AsyncIterator[App]:
    state = App()

    async def hook(request: web.Request) -> web.StreamResponse:
        state.seen.append({"method": request.method, "body": await request.read(),
                           "headers": dict(request.headers), "query": dict(request.query)})
        if len(state.seen) <= state.fail_first:
            return web.Response(status=503)
        return web.Response(status=204)

    async def redirect(_request: web.Request) -> web.StreamResponse:
        state.seen.append({"method": "redirect"})
        raise web.HTTPFound("/hook")

    web_app = web.Application()
    web_app.router.add_route("*", "/hook", hook)
    web_app.router.add_route("*", "/redirect", redirect)
    state.server = TestServer(web_app, host="127.0.0.1", port=0)
    await state.server.start_server()
    try:
        yield state
    finally:
        await state.server.close()


LOOPBACK = ("127.0.0.0/8", "::1/128")  # the test applications listen on loopback
SERVER_SECRET = b"test-server-secret"


def delivery(pool: asyncpg.Pool, *, allowed_networks: tuple[str, ...] = LOOPBACK,
             max_attempts: int = 5, env: dict[str, str] | None = None,
             server_secret: bytes | None = SERVER_SECRET) -> CallbackDelivery:
    s = CallbackSettings(max_attempts=max_attempts, retry_base_s=0.02, retry_max_s=0.05,
                         timeout_s=2, lease_s=10, per_host=2, concurrency=8)
    return CallbackDelivery(pool, s, owner="test-proc", allowed_networks=allowed_networks,
                            secrets=SecretResolver(env or {}, server_secret=server_secret),
                            poll_s=0.05)


async def run_until_final(pool: asyncpg.Pool, d: CallbackDelivery, timeout_s: float = 10) -> None:
    async def idle() -> bool:
        return await pool.fetchval(
            "SELECT count(*) FROM callbacks WHERE status IN ('queued', 'sending')") == 0
    await d.start()
    try:
        await deliver_until_idle(d, timeout_s=timeout_s, idle=idle)
    finally:
        await d.close()


async def test_retried_until_2xx_and_signed(pool, app) -> None:
    """1. an account (its callback secret derived from the server secret, generation 1); a
    status callback to the app; 2. the app answers 503 twice, then 204; 3. the row ends done
    after 3 attempts and the last request carries a valid signature over "<ts>.<body>"."""
    acct = await pool.fetchval("INSERT INTO accounts (name) VALUES ('a') RETURNING id")
    app.fail_first = 2
    body = b'{"id": 1, "status": "delivered"}'
    await store.enqueue(pool, "callbacks", [{
        "kind": "status", "account_id": acct, "url": app.url(), "body": body,
        "headers": {"Content-Type": "application/json"}, "secret_ref": f"account:{acct}"}])
    await run_until_final(pool, delivery(pool))
    row = await pool.fetchrow("SELECT status, attempts FROM callbacks")
    assert (row["status"], row["attempts"]) == ("done", 2)  # two failed tries counted
    assert len(app.seen) == 3
    last = app.seen[-1]
    ts = last["headers"]["X-Smsgw-Timestamp"]
    secret = hmac.new(SERVER_SECRET, f"callback:{acct}:1".encode(), hashlib.sha256).hexdigest()
    want = "sha256=" + hmac.new(secret.encode(), f"{ts}.".encode() + body,
                                hashlib.sha256).hexdigest()
    assert last["headers"]["X-Smsgw-Signature"] == want
    assert last["body"] == body and last["headers"]["Content-Type"] == "application/json"
    # the event log keeps the two failures; the success is the row's own `done`
    events = await pool.fetch("SELECT event, detail FROM events WHERE message_table = "
                              "'callbacks' ORDER BY id")
    assert [e["event"] for e in events] == ["retried", "retried"]


async def test_dead_after_limit(pool, app) -> None:
    """The app always fails: the row is tried max_attempts times and ends dead."""
    app.fail_first = 10**6
    await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": app.url(), "body": b"{}"}])
    await run_until_final(pool, delivery(pool, max_attempts=3))
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM callbacks")
    assert (row["status"], row["attempts"], row["last_error"]) == ("dead", 3, "HTTP 503")
    assert len(app.seen) == 3


async def test_redirect_not_followed(pool, app) -> None:
    """A 302 is not followed (the app sees no request on /hook) and counts as a failure."""
    await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": app.url("/redirect"),
                                             "method": "GET"}])
    await run_until_final(pool, delivery(pool, max_attempts=2))
    assert [s["method"] for s in app.seen] == ["redirect", "redirect"]
    assert await pool.fetchval("SELECT last_error FROM callbacks") == "HTTP 302"


async def test_private_address_refused_unless_allowed(pool, app) -> None:
    """Outside allowed_networks a loopback URL is refused before any request: dead at once."""
    await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": app.url(), "body": b"{}"}])
    await run_until_final(pool, delivery(pool, allowed_networks=()))
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM callbacks")
    assert row["status"] == "dead" and "refused" in row["last_error"]
    assert app.seen == []


async def test_forward_signed_with_rule_secret(pool, app, make_engine) -> None:
    """MO forward end to end: rule -> callbacks row -> POST signed with the env secret."""
    from .conftest import add_mo, drain, mo, set_rules
    await set_rules(pool, [{"name": "fwd", "actions": [
        {"type": "forward", "url": app.url(), "secret_env": "FWD_SECRET"}]}])
    await add_mo(pool, [mo("+447700900001", "hello app")])
    await drain(make_engine())
    await run_until_final(pool, delivery(pool, env={"FWD_SECRET": "k"}))
    [req] = app.seen
    ts = req["headers"]["X-Smsgw-Timestamp"]
    want = "sha256=" + hmac.new(b"k", f"{ts}.".encode() + req["body"], hashlib.sha256).hexdigest()
    assert req["headers"]["X-Smsgw-Signature"] == want
    assert b'"text":"hello app"' in req["body"]


async def test_late_result_does_not_overwrite_a_taken_over_row(pool, app) -> None:
    """1. a row is leased to us; 2. another worker takes it over (lease owner changes);
    3. our write-back of 'done' changes nothing."""
    from smsgw.services.processor.callbacks import Result
    [res] = await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": app.url()}])
    d = delivery(pool)
    await store.claim_leased(pool, "callbacks", limit=1, owner="test-proc", lease_s=10)
    await pool.execute("UPDATE callbacks SET lease_owner = 'other'")
    await d.write_back([Result(res.id, "mo", "done")])
    assert await pool.fetchval("SELECT status FROM callbacks") == "sending"


async def test_concurrency_per_host_is_bounded(pool) -> None:
    """20 callbacks to one slow host with per_host=2: never more than 2 requests at once."""
    active = peak = 0

    async def slow(_request: web.Request) -> web.StreamResponse:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.05)
        active -= 1
        return web.Response(status=200)

    web_app = web.Application()
    web_app.router.add_post("/slow", slow)
    server = TestServer(web_app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = str(server.make_url("/slow"))
        await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": url, "body": b"{}"}
                                                for _ in range(20)])
        await run_until_final(pool, delivery(pool))
    finally:
        await server.close()
    assert peak == 2
    assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE status = 'done'") == 20


async def test_timeout_counts_as_failure(pool) -> None:
    """An application slower than timeout_s: each attempt times out; dead after the limit."""
    async def slow(_request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return web.Response(status=200)

    web_app = web.Application()
    web_app.router.add_post("/slow", slow)
    server = TestServer(web_app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": str(server.make_url(
            "/slow")), "body": b"{}"}])
        s = CallbackSettings(max_attempts=2, retry_base_s=0.01, retry_max_s=0.01,
                             timeout_s=0.2, lease_s=5)
        d = CallbackDelivery(pool, s, owner="t", allowed_networks=LOOPBACK,
                             secrets=SecretResolver({}), poll_s=0.05)
        await run_until_final(pool, d)
    finally:
        await server.close()
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM callbacks")
    assert (row["status"], row["attempts"]) == ("dead", 2)
    assert "Timeout" in row["last_error"]


async def test_account_callback_never_goes_unsigned(pool, app) -> None:
    """Status callbacks are signed by default: without a server secret to derive the
    account's secret from, the callback is retried (then dead), never sent unsigned."""
    acct = await pool.fetchval("INSERT INTO accounts (name) VALUES ('b') RETURNING id")
    await store.enqueue(pool, "callbacks", [{"kind": "status", "account_id": acct,
                                             "url": app.url(), "body": b"{}",
                                             "secret_ref": f"account:{acct}"}])
    await run_until_final(pool, delivery(pool, server_secret=None, max_attempts=2))
    row = await pool.fetchrow("SELECT status, last_error FROM callbacks")
    assert row["status"] == "dead" and "unresolved" in row["last_error"], dict(row)
    assert app.seen == []


async def test_batched_forwards_go_as_one_signed_json_array_per_request(
        pool, app, make_engine) -> None:
    """1. A rule forwards with `batch = 3` (signed); 7 MOs are processed: their callbacks rows
       carry batch_max = 3. 2. The app fails the first request once. 3. Delivery sends JSON
       arrays of at most 3 objects with `X-Smsgw-Batch`, each signed over the whole array;
       every MO reaches the app (the failed request's MOs again, with their rows' attempts
       counted), and every row ends done."""
    import orjson

    from .conftest import add_mo, drain, mo, set_rules
    await set_rules(pool, [{"name": "fwd", "actions": [
        {"type": "forward", "url": app.url(), "secret_env": "FWD_SECRET", "batch": 3}]}])
    await add_mo(pool, [mo(f"+44770090000{i}", f"hello {i}") for i in range(7)])
    await drain(make_engine())
    assert await pool.fetchval("SELECT array_agg(DISTINCT batch_max) FROM callbacks") == [3]
    app.fail_first = 1
    await run_until_final(pool, delivery(pool, env={"FWD_SECRET": "k"}))
    sizes, texts = [], []
    for req in app.seen:
        ts = req["headers"]["X-Smsgw-Timestamp"]
        want = "sha256=" + hmac.new(b"k", f"{ts}.".encode() + req["body"],
                                    hashlib.sha256).hexdigest()
        assert req["headers"]["X-Smsgw-Signature"] == want
        items = orjson.loads(req["body"])
        assert isinstance(items, list) and 1 <= len(items) <= 3
        assert req["headers"]["X-Smsgw-Batch"] == str(len(items))
        sizes.append(len(items))
        texts += [item["text"] for item in items]
    first_batch = orjson.loads(app.seen[0]["body"])
    assert sorted(texts) == sorted([f"hello {i}" for i in range(7)]
                                   + [item["text"] for item in first_batch])  # retried once
    assert sum(sizes) == 7 + len(first_batch)
    rows = await pool.fetch("SELECT status, attempts FROM callbacks ORDER BY id")
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(r["attempts"] for r in rows) == [0] * (7 - len(first_batch)) + \
        [1] * len(first_batch)


async def test_unbatched_rows_stay_one_request_each(pool, app) -> None:
    """Rows without batch_max (status callbacks, forwards with batch = 1) and GETs are sent one
    per request with their own body, even when several go to the same URL."""
    await store.enqueue(pool, "callbacks", [
        {"kind": "mo", "url": app.url(), "body": b'{"n": 1}'},
        {"kind": "mo", "url": app.url(), "body": b'{"n": 2}', "batch_max": 1},
        {"kind": "mo", "url": app.url(), "method": "GET", "batch_max": 5},
    ])
    await run_until_final(pool, delivery(pool))
    assert sorted((s["method"], s["body"]) for s in app.seen) == [
        ("GET", b""), ("POST", b'{"n": 1}'), ("POST", b'{"n": 2}')]
    assert all("X-Smsgw-Batch" not in s["headers"] for s in app.seen)


def test_batch_needs_a_json_url() -> None:
    """`batch` on a get_url forward is refused when the rules are loaded."""
    from smsgw.services.processor.rules import RuleError, parse_rules
    with pytest.raises(RuleError, match="batch applies"):
        parse_rules([{"name": "x", "actions": [
            {"type": "forward", "get_url": "https://app.example/mo?t=%a", "batch": 10}]}])


async def test_forwards_leased_at_insert_go_straight_to_delivery(pool, app, make_engine) -> None:
    """The processor's own delivery takes forwards leased at insert (no claim, no NOTIFY):
    1. room for 2 requests, 3 MOs in one batch: 2 rows are inserted `sending`, leased to the
    delivery's owner and handed to it once the batch committed; the third is queued as
    before; 2. the delivery loop delivers all three (the two without a claim) and writes them
    back `done`, bodies and signatures as for claimed rows; 3. a batch whose transaction rolls
    back hands nothing over (its re-run queues the forward instead)."""
    from .conftest import add_mo, mo, set_rules
    await set_rules(pool, [{"name": "fwd", "actions": [
        {"type": "forward", "url": app.url(), "secret_env": "FWD_SECRET"}]}])
    await add_mo(pool, [mo(f"+44770090000{i}", f"leased {i}") for i in range(3)])
    d = delivery(pool, env={"FWD_SECRET": "k"})
    d.settings = d.settings.model_copy(update={"concurrency": 2})
    taken: list[list[int]] = []

    class Spy:
        owner, lease_s = d.owner, d.lease_s

        def free(self) -> int:
            return d.free()

        def take_acks(self) -> list[int]:
            return d.take_acks()

        def acks_committed(self, committed: bool) -> None:
            d.acks_committed(committed)

        async def take(self, rows) -> None:
            taken.append([r.id for r in rows])
            states = await pool.fetch("SELECT status, lease_owner, lease_until > now() AS live "
                                      "FROM callbacks WHERE id = ANY($1)", [r.id for r in rows])
            assert {tuple(s) for s in states} == {("sending", "test-proc", True)}
            await d.take(rows)

    engine = make_engine()
    engine.forward_lease = Spy()
    await d.start()
    try:
        assert await engine.run_batch() == 3
        assert [len(t) for t in taken] == [2]
        assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE status = 'queued'") == 1
        await deliver_until_idle(d, timeout_s=10, idle=lambda: _none_open(pool))
    finally:
        await d.close()
    assert sorted(r["body"].split(b'"text":"')[1][:8] for r in app.seen) == [
        b"leased 0", b"leased 1", b"leased 2"]
    for req in app.seen:
        ts = req["headers"]["X-Smsgw-Timestamp"]
        assert req["headers"]["X-Smsgw-Signature"] == "sha256=" + hmac.new(
            b"k", f"{ts}.".encode() + req["body"], hashlib.sha256).hexdigest()
    assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE status = 'done'") == 3
    # a batch whose leased insert fails rolls back and hands nothing over; the message-by-
    # message re-run queues its forward for any processor instead
    await pool.execute("""
        CREATE FUNCTION no_leased() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.status = 'sending' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW;
        END $$;
        CREATE TRIGGER no_leased BEFORE INSERT ON callbacks FOR EACH ROW
            EXECUTE FUNCTION no_leased()""")
    await add_mo(pool, [mo("+447700900009", "rolled back")])
    taken.clear()
    assert await engine.run_batch() == 1
    assert taken == []
    assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE status = 'queued'") == 1


async def test_acknowledgements_ride_on_the_next_batch(pool, app, make_engine,
                                                       monkeypatch) -> None:
    """With `acks_ride` (the daemon's setting) a delivered forward's acknowledgement waits for
    the processor's next inbound batch, which writes it in its own statement and commit:
    1. MO 1's forward is delivered; its row stays `sending`, leased to us (ACK_RIDE_S made
    long here, so only a batch can acknowledge it); 2. the batch of MO 2 acknowledges it:
    `done`; 3. a batch that claims nothing hands MO 2's acknowledgement back, and the
    delivery loop writes it at once; 4. nothing was sent twice."""
    from smsgw.services.processor import callbacks as callbacks_module

    from .conftest import add_mo, mo, set_rules
    monkeypatch.setattr(callbacks_module, "ACK_RIDE_S", 30.0)
    await set_rules(pool, [{"name": "fwd", "actions": [{"type": "forward", "url": app.url()}]}])
    d = delivery(pool)
    d.acks_ride = True
    engine = make_engine()
    engine.forward_lease = d
    await d.start()
    stop = asyncio.Event()
    loop = asyncio.create_task(d.run(stop))

    async def status(inbound_id: int) -> str:
        return await pool.fetchval("SELECT status FROM callbacks WHERE inbound_id = $1",
                                   inbound_id)

    async def until(check, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not await check():  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.02)

    try:
        [m1] = await add_mo(pool, [mo("+447700900001", "one")])
        assert await engine.run_batch() == 1
        await until(lambda: _sent(app, 1))
        await asyncio.sleep(0.2)  # the loop has written back whatever it would
        assert await status(m1) == "sending"
        [m2] = await add_mo(pool, [mo("+447700900001", "two")])
        assert await engine.run_batch() == 1
        assert await status(m1) == "done"
        await until(lambda: _sent(app, 2))
        await asyncio.sleep(0.2)
        assert await status(m2) == "sending"
        assert await engine.run_batch() == 0
        await until(lambda: _is(status(m2), "done"))
    finally:
        stop.set()
        await loop
        await d.close()
    assert len(app.seen) == 2


async def _sent(app, n: int) -> bool:
    return len(app.seen) >= n


async def _is(value, want: str) -> bool:
    return await value == want


async def _none_open(pool: asyncpg.Pool) -> bool:
    return await pool.fetchval(
        "SELECT count(*) FROM callbacks WHERE status IN ('queued', 'sending')") == 0
