"""Finding 7 (fairness): one account cannot block the others; accounts get a default rate.

Before the fix admission control compared ONE global `queued` figure with the MT watermark, and
it counted messages scheduled days ahead: one account's batches of scheduled or due messages
made every other account get 503. Now the snapshot carries each account's DUE depth (scheduled
rows do not count) and an account is refused when it holds more than its share of the
watermark, while the others keep going until the global limit. Accounts without their own rate
get `[receiver] default_account_rate` (50/s by default) instead of no limit at all.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.queue import store


def _msgs(n: int, **extra: object) -> dict[str, object]:
    return {"messages": [{"to": f"+4477009{i:05d}", "from": "Shop", "text": "hi", **extra}
                         for i in range(n)]}


async def _snapshot(pool, rx) -> None:
    """What the periodic jobs do: one instance refreshes the snapshot, every receiver reads it."""
    async with pool.acquire() as conn:
        await store.refresh_queue_stats(conn)
        await rx.ctx.admission.read(conn)


async def test_one_account_cannot_block_the_others(sec_mt_receiver, sec_mt_account,
                                                   pool) -> None:
    """1. watermark 100; account A queues 300 messages scheduled for tomorrow: A is still
       admitted (scheduled rows are not load), and so is B
    2. A queues 60 due messages, more than its share (100 // 2 while it is the only account
       with due messages): A gets 503 account_watermark + Retry-After, from the JSON API and
       from sendsms; B still gets 202 from both (the global due figure, 61, is below 100)
    3. the per-account snapshot is one row per account with due rows, A's = 61."""
    rx = await sec_mt_receiver(ReceiverOptions(default_country="GB",
                                               outbound_high_watermark=100,
                                               account_watermark_floor=1))
    a_id, a_key = await sec_mt_account("tenant_a", rate_per_s=math.inf)
    b_id, b_key = await sec_mt_account("tenant_b", rate_per_s=math.inf)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    for _ in range(3):
        status, body = await rx.call("POST", "/v1/messages", key=a_key,
                                     json=_msgs(100, send_at=tomorrow))
        assert status == 202, body
    await _snapshot(pool, rx)
    status, body = await rx.call("POST", "/v1/messages", key=a_key, json=_msgs(1))
    assert status == 202, body
    status, body = await rx.call("POST", "/v1/messages", key=a_key, json=_msgs(60))
    assert status == 202, body
    await _snapshot(pool, rx)
    assert dict(await pool.fetch("SELECT account_id, due FROM outbound_account_depth")) == {
        a_id: 61}

    status, body = await rx.call("POST", "/v1/messages", key=a_key, json=_msgs(1))
    assert status == 503 and body["reason"] == "account_watermark", body
    kannel = "/cgi-bin/sendsms?username={}&password={}&from=Shop&text=hi&to=%2B447700900123"
    status, text = await rx.call("GET", kannel.format("tenant_a", quote(a_key)))
    assert (status, text) == (503, "Temporal failure, try again later.")  # Kannel's 503 text
    status, body = await rx.call("POST", "/v1/messages", key=b_key, json=_msgs(5))
    assert status == 202, body
    status, text = await rx.call("GET", kannel.format("tenant_b", quote(b_key)))
    assert (status, text) == (202, "0: Accepted for delivery")
    counts = dict(await pool.fetch(
        "SELECT account_id, count(*) FROM outbound GROUP BY account_id"))
    assert counts == {a_id: 361, b_id: 6}


async def test_global_limit_still_holds(sec_mt_receiver, sec_mt_account, pool) -> None:
    """With a fixed per-account share (account_high_watermark 60) and the global watermark
    100: A and B each hold 55 due (below their share); the global due figure 110 refuses
    everyone (outbound_watermark)."""
    rx = await sec_mt_receiver(ReceiverOptions(default_country="GB",
                                               outbound_high_watermark=100,
                                               account_high_watermark=60))
    _, a_key = await sec_mt_account("ga", rate_per_s=math.inf)
    _, b_key = await sec_mt_account("gb", rate_per_s=math.inf)
    for key in (a_key, b_key):
        status, _ = await rx.call("POST", "/v1/messages", key=key, json=_msgs(55))
        assert status == 202
    await _snapshot(pool, rx)
    for key in (a_key, b_key):
        status, body = await rx.call("POST", "/v1/messages", key=key, json=_msgs(1))
        assert status == 503 and body["reason"] == "outbound_watermark", body


async def test_default_account_rate(sec_mt_receiver, sec_mt_account, pool) -> None:
    """1. one frozen rate window; an account without its own rate gets the default 50/s:
       50 messages are accepted, the 51st is 429 with Retry-After (JSON API and sendsms)
    2. an account with its own rate (100/s) is limited by that instead
    3. `default_account_rate = 0` means no default limit."""
    assert ReceiverOptions().default_account_rate == 50
    now = [1_800_000_000.25]
    rx = await sec_mt_receiver(clock=lambda: now[0])
    _, key = await sec_mt_account("plain")
    _, own_key = await sec_mt_account("own", rate_per_s=100)
    status, body = await rx.call("POST", "/v1/messages", key=key, json=_msgs(50))
    assert status == 202, body
    status, body = await rx.call("POST", "/v1/messages", key=key, json=_msgs(1))
    assert status == 429 and body["error"] == "rate_limited", body
    status, text = await rx.call(
        "GET", f"/cgi-bin/sendsms?username=plain&password={quote(key)}&from=Shop&text=hi"
               "&to=%2B447700900123")
    assert status == 429, text
    status, body = await rx.call("POST", "/v1/messages", key=own_key, json=_msgs(51))
    assert status == 202, body
    free = await sec_mt_receiver(ReceiverOptions(default_country="GB", default_account_rate=0),
                                 clock=lambda: now[0])
    _, free_key = await sec_mt_account("free")
    for _ in range(2):
        status, body = await free.call("POST", "/v1/messages", key=free_key, json=_msgs(100))
        assert status == 202, body
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 50 + 51 + 200
