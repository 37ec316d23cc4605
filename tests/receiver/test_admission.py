"""Admission control (503 + Retry-After per intake's own queue) and the account rate limit (429)."""

from __future__ import annotations

import asyncpg

from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.queue import store

from .conftest import AccountFactory, Receiver, ReceiverFactory
from .test_webhooks import generic_headers

MSG = {"to": "+447700900123", "from": "MyBrand", "text": "hi"}


async def test_each_intake_checks_only_its_own_queue(receiver_factory: ReceiverFactory,
                                                     account_factory: AccountFactory,
                                                     pool: asyncpg.Pool) -> None:
    """1. three queued MTs, outbound watermark 3; the real snapshot is refreshed and read
    2. the MT API answers 503 + Retry-After and counts the rejection
    3. an MO webhook is still accepted (the inbound queue is fine)."""
    receiver = await receiver_factory(ReceiverOptions(default_country="GB",
                                                      outbound_high_watermark=3))
    _, key = await account_factory()
    for _ in range(3):
        status, _ = await receiver.post("/v1/messages", key=key, json=MSG)
        assert status == 202
    async with pool.acquire() as conn:
        await store.refresh_queue_stats(conn)
        await receiver.ctx.admission.read(conn)
    status, body = await receiver.post("/v1/messages", key=key, json=MSG)
    assert status == 503 and body["reason"] == "outbound_watermark"
    assert receiver.last_headers["Retry-After"] == "2"
    metric = receiver.ctx.metrics.backpressure_rejections.labels(reason="outbound_watermark")
    assert metric._value.get() == 1
    mo = b'{"id": "m1", "from": "+447700900123", "to": "60060", "text": "hi"}'
    status, _ = await receiver.post("/v1/inbound/generic/acme", data=mo,
                                    headers=generic_headers(mo))
    assert status == 200
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 3


async def test_inbound_age_refuses_mo(receiver: Receiver) -> None:
    """An inbound queue whose oldest row is too old refuses MO with 503 (reason inbound_age)."""
    receiver.ctx.admission.set_snapshot("inbound", depth=5, oldest_age_s=10_000)
    mo = b'{"id": "m2", "from": "+447700900123", "to": "60060", "text": "hi"}'
    status, body = await receiver.post("/v1/inbound/generic/acme", data=mo,
                                       headers=generic_headers(mo))
    assert status == 503 and body["reason"] == "inbound_age"


async def test_account_rate_limit_holds_across_instances(receiver_factory: ReceiverFactory,
                                                         account_factory: AccountFactory,
                                                         pool: asyncpg.Pool) -> None:
    """1. two receivers with one frozen clock (one rate window), an account limited to 4/s
    2. 3 accepted on the first, 1 on the second; after both sync, the second refuses (429
       with Retry-After) and so does the first
    3. in the next window the account may send again."""
    now = [1_800_000_000.25]
    a = await receiver_factory(clock=lambda: now[0])
    b = await receiver_factory(clock=lambda: now[0])
    _, key = await account_factory(rate_per_s=4)
    statuses = [(await a.post("/v1/messages", key=key, json=MSG))[0] for _ in range(3)]
    assert statuses == [202, 202, 202]
    assert (await b.post("/v1/messages", key=key, json=MSG))[0] == 202
    await a.ctx.ratelimit.sync()
    await b.ctx.ratelimit.sync()
    status, body = await b.post("/v1/messages", key=key, json=MSG)
    assert status == 429 and body["error"] == "rate_limited"
    assert int(b.last_headers["Retry-After"]) >= 1
    await a.ctx.ratelimit.sync()
    assert (await a.post("/v1/messages", key=key, json=MSG))[0] == 429
    now[0] += 1.0  # the next window
    assert (await a.post("/v1/messages", key=key, json=MSG))[0] == 202
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 5
    assert await pool.fetchval("SELECT sum(count) FROM account_rate_windows") == 4


def test_a_stale_snapshot_is_ignored() -> None:
    """A snapshot that stopped changing (its refresher died) no longer refuses intake."""
    from smsgw.services.receiver.admission import STALE_AFTER_S, Admission

    now = [100.0]
    admission = Admission(ReceiverOptions(outbound_high_watermark=10), clock=lambda: now[0])
    admission.set_snapshot("outbound", depth=50)
    assert admission.check("outbound") == "outbound_watermark"
    assert admission.check("inbound") is None
    now[0] += STALE_AFTER_S + 1
    assert admission.check("outbound") is None
