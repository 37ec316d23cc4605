"""Adaptive batching where work waits: the group committer and the NOTIFY-driven claim loop
batch while busy and never make a lone item wait (shared/queue/groupcommit.py,
shared/queue/listener.py). Real Postgres; items arrive at a steady paced rate, as MO from an
SMSC or requests at a moderate rate do."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from smsgw.shared.queue import store
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.queue.listener import CHANNELS, Listener, consume

from .conftest import callback_row


async def _insert(conn: asyncpg.Connection, items: list[int]) -> list[int]:
    await conn.execute("SELECT pg_sleep(0.0003)")  # a commit's worth of time, as with fsync
    return items


async def _paced(gc: GroupCommitter[int, int], n: int, gap_s: float) -> list[int]:
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(gc.submit(i)))
        await asyncio.sleep(gap_s)
    return await asyncio.gather(*tasks)


async def test_group_commit_batches_a_steady_rate_and_not_a_lone_item(pool: asyncpg.Pool) -> None:
    """1. 250 items at ~1,000/s: without the adaptive linger nearly every item is a commit of
    its own; with it (up to 50 ms) the commits after the first 50 items (the moving average
    settling) are at least three times fewer; 2. after a quiet spell a lone item is written at
    once (well under the linger)."""
    batches: dict[str, list[int]] = {"fixed": [], "adaptive": []}
    waits: list[float] = []
    for mode, linger in (("fixed", 0.0), ("adaptive", 0.05)):
        gc: GroupCommitter[int, int] = GroupCommitter(
            pool, _insert, name=mode, adaptive_linger_s=linger,
            on_commit=lambda rows, _s, m=mode: batches[m].append(rows))
        gc.start()
        try:
            assert await _paced(gc, 50, 0.001) == list(range(50))
            batches[mode].clear()  # steady state from here
            assert await _paced(gc, 200, 0.001) == list(range(200))
            if mode == "adaptive":
                await asyncio.sleep(1.5)  # quiet: the moving average of the gaps grows
                t0 = time.perf_counter()
                await gc.submit(999)
                waits.append(time.perf_counter() - t0)
        finally:
            await gc.close()
    assert sum(batches["fixed"]) == 200 and sum(batches["adaptive"]) == 201
    assert len(batches["adaptive"]) * 3 <= len(batches["fixed"]), batches
    assert batches["adaptive"][-1] == 1 and waits[0] < 0.025, waits


async def test_claim_loop_lingers_only_while_busy(pool: asyncpg.Pool, db_url: str) -> None:
    """A consumer woken by one NOTIFY per row, allowed to linger up to 250 ms: at ~500 rows/s
    it claims in batches (fewer claim passes than rows); a row after a quiet spell is claimed
    at once, far within the linger it would have been allowed."""
    passes: list[int] = []
    claimed_at: dict[int, float] = {}

    async def claim_pass() -> int:
        rows = await store.claim_leased(pool, "callbacks", limit=100, owner="t", lease_s=30)
        if rows:
            passes.append(len(rows))
            for r in rows:
                claimed_at[r.id] = time.perf_counter()
        return len(rows)

    listener = Listener(db_url, [CHANNELS["callbacks"]])
    await listener.start()
    stop = asyncio.Event()
    task = asyncio.create_task(consume(listener, CHANNELS["callbacks"], claim_pass, stop=stop,
                                       poll_s=5, adaptive_linger_s=0.25))
    try:
        for _ in range(150):
            await store.enqueue(pool, "callbacks", [callback_row()])
            await asyncio.sleep(0.002)
        await asyncio.sleep(0.3)
        assert sum(passes) == 150
        assert len(passes) <= 75, passes  # batched: at least two rows per pass on average
        await asyncio.sleep(2.0)  # quiet
        sent = time.perf_counter()
        [lone] = await store.enqueue(pool, "callbacks", [callback_row()])
        for _ in range(100):
            if lone.id in claimed_at:
                break
            await asyncio.sleep(0.005)
        assert claimed_at[lone.id] - sent < 0.1
    finally:
        stop.set()
        await task
        await listener.close()


async def test_a_commit_that_does_not_come_is_answered_unavailable(pool: asyncpg.Pool) -> None:
    """1. a flush hangs (a primary that stopped answering) with one item in it, a second waits
    in the buffer, a third is submitted later  2. each caller gets DatabaseUnavailable
    `commit_wait_s` after its own submit (not before), the waiting item is withdrawn (never
    written) once the flush comes back, and the committer then writes new items."""
    from smsgw.shared.core.errors import DatabaseUnavailable

    release = asyncio.Event()
    written: list[int] = []

    async def flush(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        if 1 in items:
            await release.wait()
        await conn.execute("SELECT 1")
        written.extend(items)
        return items

    gc: GroupCommitter[int, int] = GroupCommitter(pool, flush, name="hang", max_inflight=1,
                                                  linger_s=0, commit_wait_s=0.3)
    gc.start()
    try:
        t0 = time.perf_counter()
        first = asyncio.create_task(gc.submit(1))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(gc.submit_many([2, 3]))
        await asyncio.sleep(0.15)
        third = asyncio.create_task(gc.submit(4))
        answered: dict[str, float] = {}
        for name, task in (("first", first), ("second", second), ("third", third)):
            try:
                await task
            except DatabaseUnavailable:
                answered[name] = time.perf_counter() - t0
        assert list(answered) == ["first", "second", "third"]
        assert 0.28 <= answered["first"] < 1.0, answered
        assert 0.33 <= answered["second"] < 1.1, answered
        assert 0.48 <= answered["third"] < 1.3, answered
        release.set()
        assert await gc.submit(5) == 5
        assert written == [1, 5]  # 2, 3 and 4 were withdrawn; 1 committed unacknowledged
    finally:
        release.set()
        await gc.close()
