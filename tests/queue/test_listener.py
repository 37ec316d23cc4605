"""The wake-up listener and the consume loop against real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg

from smsgw.shared.queue import store
from smsgw.shared.queue.listener import CHANNELS, Listener, Pass, consume

from .conftest import callback_row

CH = CHANNELS["callbacks"]


class Consumer:
    """A lease consumer driven by `consume`, recording what it claimed and how it woke up."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.claimed: list[int] = []
        self.passes = 0
        self.fallbacks = 0
        self.idle = asyncio.Event()   # set each time a pass found the queue empty
        self.got_rows = asyncio.Event()

    async def claim_pass(self) -> int:
        self.passes += 1
        rows = await store.claim_leased(self.pool, "callbacks", limit=50, owner="c", lease_s=60)
        await store.ack(self.pool, "callbacks", [r.id for r in rows], owner="c")
        self.claimed.extend(r.id for r in rows)
        if rows:
            self.got_rows.set()
        else:
            self.idle.set()
        return len(rows)

    def on_fallback(self) -> None:
        self.fallbacks += 1


async def _listener_pid(pool: asyncpg.Pool) -> int:
    for _ in range(100):
        pid = await pool.fetchval(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'smsgw_listener' "
            "AND datname = current_database()")
        if pid:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("listener connection not found")


async def test_notify_wakes_idle_consumer_with_60s_fallback(pool: asyncpg.Pool,
                                                            db_url: str) -> None:
    """1. A consumer with a 60 s fallback timer drains the empty queue and waits.
    2. A producer enqueues 30 rows (one NOTIFY at commit).
    3. The consumer claims all 30 within 5 s: only the notification can explain it (the timer
       would take 60 s), and the fallback never fired."""
    listener = Listener(db_url, [CH], health_check_s=5)
    await listener.start()
    c = Consumer(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(listener, CH, c.claim_pass, stop=stop, poll_s=60,
                                       on_fallback=c.on_fallback))
    try:
        await asyncio.wait_for(c.idle.wait(), 5)
        passes_before = c.passes
        res = await store.enqueue(pool, "callbacks", [callback_row() for _ in range(30)])
        await asyncio.wait_for(c.got_rows.wait(), 5)
        assert sorted(c.claimed) == sorted(r.id for r in res)
        assert c.passes > passes_before and c.fallbacks == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)  # stop ends the 60 s wait at once
        await listener.close()


async def test_fallback_timer_picks_up_due_retry(pool: asyncpg.Pool, db_url: str) -> None:
    """1. A row fails and is retried with a 0.3 s backoff (no NOTIFY is sent for retries).
    2. A consumer with a 0.5 s fallback timer claims it after its run_after, via the timer."""
    listener = Listener(db_url, [CH])
    await listener.start()
    [r] = await store.enqueue(pool, "callbacks", [callback_row()], notify=False)
    await store.claim_leased(pool, "callbacks", limit=1, owner="x", lease_s=60)
    await store.retry(pool, "callbacks", [r.id], owner="x", error="t", max_attempts=5,
                      base_s=0.3, cap_s=0.3)
    c = Consumer(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(listener, CH, c.claim_pass, stop=stop, poll_s=0.5,
                                       on_fallback=c.on_fallback))
    try:
        await asyncio.wait_for(c.got_rows.wait(), 5)
        assert c.claimed == [r.id] and c.fallbacks >= 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await listener.close()


async def test_killed_listener_reconnects_and_catches_up(pool: asyncpg.Pool, db_url: str) -> None:
    """1. A consumer (60 s fallback) is idle on a started listener.
    2. Rows are enqueued WITHOUT notification, then the listener's backend is killed with
       pg_terminate_backend.
    3. The listener reconnects (counted, `connected` again, on_reconnect called) and sets the
       channel's event: the consumer's catch-up pass claims the rows — nothing else would.
    4. After the reconnect, a NOTIFY still wakes the consumer."""
    reconnected = asyncio.Event()
    listener = Listener(db_url, [CH], on_reconnect=reconnected.set, health_check_s=1)
    await listener.start()
    c = Consumer(pool)
    stop = asyncio.Event()
    task = asyncio.create_task(consume(listener, CH, c.claim_pass, stop=stop, poll_s=60,
                                       on_fallback=c.on_fallback))
    try:
        await asyncio.wait_for(c.idle.wait(), 5)
        missed = await store.enqueue(pool, "callbacks", [callback_row() for _ in range(5)],
                                     notify=False)
        pid = await _listener_pid(pool)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", pid)
        await asyncio.wait_for(reconnected.wait(), 10)
        assert listener.reconnects == 1 and listener.connected
        assert await _listener_pid(pool) != pid
        await asyncio.wait_for(c.got_rows.wait(), 5)
        assert sorted(c.claimed) == sorted(r.id for r in missed)

        c.got_rows.clear()
        later = await store.enqueue(pool, "callbacks", [callback_row()])
        await asyncio.wait_for(c.got_rows.wait(), 5)
        assert c.claimed[-1] == later[0].id and c.fallbacks == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await listener.close()
    assert not listener.connected


async def test_wait_returns_true_on_notify_false_on_timeout(pool: asyncpg.Pool,
                                                            db_url: str) -> None:
    """1. wait() with nothing notified times out with False.
    2. store.notify inside a transaction is delivered only at commit; wait() then returns True
       and clears the event, so the next wait times out again."""
    listener = Listener(db_url, [CHANNELS["rules"], CH])
    await listener.start()
    try:
        assert await listener.wait(CH, 0.1) is False
        async with pool.acquire() as conn, conn.transaction():
            await store.notify(conn, CH)
            assert await listener.wait(CH, 0.2) is False  # not committed yet
        assert await listener.wait(CH, 5) is True
        assert await listener.wait(CH, 0.1) is False
        assert not listener.event(CHANNELS["rules"]).is_set()
    finally:
        await listener.close()


async def test_consume_survives_failing_claim_pass(pool: asyncpg.Pool, db_url: str) -> None:
    """1. A claim pass raises twice (a database hiccup), then works.
    2. consume logs and reports each error, backs off, and keeps consuming until stop."""
    listener = Listener(db_url, [CH])
    await listener.start()
    errors: list[BaseException] = []
    calls = 0
    done = asyncio.Event()

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise asyncpg.PostgresConnectionError("connection reset")
        done.set()
        return 0

    stop = asyncio.Event()
    task = asyncio.create_task(consume(listener, CH, flaky, stop=stop, poll_s=60,
                                       on_error=errors.append, error_backoff_s=0.05))
    try:
        await asyncio.wait_for(done.wait(), 5)
        assert len(errors) == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await listener.close()


async def test_pass_without_more_waits_for_the_next_notify(pool: asyncpg.Pool,
                                                           db_url: str) -> None:
    """1. Every claim pass claims a row and returns `Pass(1, more=False)` (a short batch with
    nothing behind it). 2. After the first, the loop waits: no second (empty) pass within
    0.3 s, the fallback being 60 s. 3. A NOTIFY wakes it for exactly one more pass."""
    listener = Listener(db_url, [CH])
    await listener.start()
    passes = 0
    woke = asyncio.Event()

    async def short_batch() -> Pass:
        nonlocal passes
        passes += 1
        woke.set()
        return Pass(1, False)

    stop = asyncio.Event()
    task = asyncio.create_task(consume(listener, CH, short_batch, stop=stop, poll_s=60))
    try:
        await asyncio.wait_for(woke.wait(), 5)
        await asyncio.sleep(0.3)
        assert passes == 1
        woke.clear()
        await store.notify(pool, CH)
        await asyncio.wait_for(woke.wait(), 5)
        await asyncio.sleep(0.3)
        assert passes == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await listener.close()
