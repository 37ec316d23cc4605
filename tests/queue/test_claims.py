"""Both claim modes under concurrency, leases, fencing, retries and dead rows (real Postgres)."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import asyncpg
import pytest

from smsgw.shared.queue import store

from .conftest import Connect, callback_row, inbound_row


async def _fill(pool: asyncpg.Pool, table: str, n: int, chunk: int = 1000) -> None:
    for start in range(0, n, chunk):
        rows = [inbound_row(body=str(i)) if table == "inbound" else callback_row(url=f"http://h/{i}")
                for i in range(start, min(n, start + chunk))]
        await store.enqueue(pool, table, rows, notify=False)


async def test_tx_mode_no_row_claimed_twice(pool: asyncpg.Pool) -> None:
    """1. 3000 inbound rows; 6 consumers claim batches of 25 in transactions and ack them.
    2. Every row is claimed exactly once and ends done."""
    await _fill(pool, "inbound", 3000)
    seen: list[int] = []

    async def consumer() -> None:
        async with pool.acquire() as conn:
            while True:
                async with conn.transaction():
                    rows = await store.claim_tx(conn, "inbound", limit=25)
                    if not rows:
                        return
                    seen.extend(r.id for r in rows)
                    assert await store.ack(conn, "inbound", [r.id for r in rows]) == len(rows)

    await asyncio.gather(*(consumer() for _ in range(6)))
    assert len(seen) == 3000
    assert len(set(seen)) == 3000
    assert await pool.fetchval("SELECT count(*) FROM inbound WHERE status = 'done'") == 3000


async def test_leases_no_row_claimed_twice(pool: asyncpg.Pool) -> None:
    """1. 3000 callback rows (the generic lease table); 6 workers lease batches of 25 and ack
       them, fenced by owner.
    2. Every row is leased exactly once; every fenced ack succeeds; all end done."""
    await _fill(pool, "callbacks", 3000)
    seen: list[int] = []

    async def worker(n: int) -> None:
        while True:
            rows = await store.claim_leased(pool, "callbacks", limit=25, owner=f"w{n}", lease_s=60)
            if not rows:
                return
            assert all(r.lease_owner == f"w{n}" and r.status == "sending" for r in rows)
            seen.extend(r.id for r in rows)
            acked = await store.ack(pool, "callbacks", [r.id for r in rows], owner=f"w{n}")
            assert acked == len(rows)

    await asyncio.gather(*(worker(n) for n in range(6)))
    assert len(seen) == 3000
    assert len(set(seen)) == 3000
    assert await pool.fetchval("SELECT count(*) FROM callbacks WHERE status = 'done'") == 3000


async def test_claim_never_exceeds_limit_under_8_claimers(
        pool: asyncpg.Pool, connect: Connect) -> None:
    """1. 2000 rows; 8 connections claim (lease, with reclaim) with limit 7, released together.
    2. 30 rounds: no claim returns more than 7 rows and no row goes to two claimers;
       same for transaction mode on inbound."""
    await _fill(pool, "callbacks", 2000)
    await _fill(pool, "inbound", 2000)
    conns = [await connect() for _ in range(8)]
    leased: Counter[int] = Counter()
    locked: Counter[int] = Counter()
    for _ in range(30):
        results = await asyncio.gather(*(
            store.claim_leased(c, "callbacks", limit=7, owner=f"c{i}", lease_s=60)
            for i, c in enumerate(conns)))
        assert all(len(r) <= 7 for r in results)
        leased.update(m.id for r in results for m in r)

        async def tx_claim(c: asyncpg.Connection) -> list[int]:
            async with c.transaction():
                rows = await store.claim_tx(c, "inbound", limit=7)
                await store.ack(c, "inbound", [r.id for r in rows])
                return [r.id for r in rows]

        tx = await asyncio.gather(*(tx_claim(c) for c in conns))
        assert all(len(r) <= 7 for r in tx)
        locked.update(i for r in tx for i in r)
    assert max(leased.values()) == 1 and max(locked.values()) == 1
    assert len(leased) == 30 * 8 * 7  # plenty of rows: every claim got its full limit


async def test_killed_consumer_rows_reclaimed_after_lease(
        pool: asyncpg.Pool, connect: Connect) -> None:
    """1. A worker on its own connection leases 5 of 10 rows for 1 s, then its connection is
       closed without release (the process died).
    2. Another worker gets only the other 5 rows at once: the dead worker's rows are leased.
    3. After the lease expires the other worker reclaims them, marked reclaimed, with the lost
       attempt counted; a claim without reclaim would not have taken them."""
    await _fill(pool, "callbacks", 10)
    dying = await connect()
    taken = await store.claim_leased(dying, "callbacks", limit=5, owner="dead", lease_s=1.0)
    assert len(taken) == 5
    dying.terminate()

    rest = await store.claim_leased(pool, "callbacks", limit=10, owner="alive", lease_s=60)
    assert {r.id for r in rest}.isdisjoint(r.id for r in taken) and len(rest) == 5
    assert await store.claim_leased(pool, "callbacks", limit=10, owner="alive", lease_s=60) == []

    await asyncio.sleep(1.1)
    assert await store.claim_leased(pool, "callbacks", limit=10, owner="alive", lease_s=60,
                                    reclaim=False) == []
    back = await store.claim_leased(pool, "callbacks", limit=10, owner="alive", lease_s=60)
    assert sorted(r.id for r in back) == sorted(r.id for r in taken)
    assert all(r.reclaimed and r.attempts == 1 and r.lease_owner == "alive" for r in back)


async def test_tx_mode_killed_consumer_rows_return_at_once(
        pool: asyncpg.Pool, connect: Connect) -> None:
    """1. A consumer claims 5 rows in a transaction; another consumer then sees the other 5.
    2. The first consumer's connection dies: its row locks vanish with it and the rows are
       claimable again at once, still queued with no attempt counted."""
    await _fill(pool, "inbound", 10)
    dying = await connect()
    tx = dying.transaction()
    await tx.start()
    first = await store.claim_tx(dying, "inbound", limit=5)
    async with pool.acquire() as conn, conn.transaction():
        second = await store.claim_tx(conn, "inbound", limit=10)
    assert len(second) == 5 and {r.id for r in second}.isdisjoint(r.id for r in first)
    backend = dying.get_server_pid()
    dying.terminate()
    async with asyncio.timeout(10):  # until the backend noticed the closed socket, rolled back
        while await pool.fetchval(  # noqa: ASYNC110 - polling the database's state
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", backend):
            await asyncio.sleep(0.02)
    async with pool.acquire() as conn, conn.transaction():
        again = await store.claim_tx(conn, "inbound", limit=10)
    assert len(again) == 10 and all(r.attempts == 0 for r in again)


async def test_late_writeback_after_takeover_changes_nothing(pool: asyncpg.Pool) -> None:
    """1. Worker A leases 3 rows for 0.2 s and stalls; B reclaims them after expiry.
    2. Every write-back of A (ack, retry, fail, update_many, release, extend) changes nothing;
       the rows stay leased to B, and B's own write-backs work."""
    await _fill(pool, "callbacks", 3)
    a = await store.claim_leased(pool, "callbacks", limit=3, owner="A", lease_s=0.2)
    ids = [r.id for r in a]
    await asyncio.sleep(0.3)
    b = await store.claim_leased(pool, "callbacks", limit=3, owner="B", lease_s=60)
    assert sorted(r.id for r in b) == sorted(ids)

    assert await store.ack(pool, "callbacks", ids, owner="A") == 0
    assert await store.retry(pool, "callbacks", ids, owner="A", error="late", max_attempts=5,
                             base_s=1, cap_s=2) == ([], [])
    assert await store.fail(pool, "callbacks", ids, owner="A", status="dead", error="x") == 0
    assert await store.update_many(pool, "callbacks", [(i, "dead", "t") for i in ids],
                                   owner="A") == []
    assert await store.release(pool, "callbacks", "A") == 0
    assert await store.extend_lease(pool, "callbacks", ids, owner="A", lease_s=60) == 0
    rows = await pool.fetch("SELECT status, lease_owner, last_error FROM callbacks")
    assert {tuple(r) for r in rows} == {("sending", "B", None)}

    done = await store.update_many(pool, "callbacks", [(ids[0], "done", None),
                                                       (ids[1], "dead", "HTTP 410"),
                                                       (ids[2], "dead", "timeout")],
                                   owner="B")
    assert sorted(done) == sorted(ids)
    got = {r["id"]: (r["status"], r["last_error"], r["lease_owner"]) for r in
           await pool.fetch("SELECT id, status, last_error, lease_owner FROM callbacks")}
    assert got == {ids[0]: ("done", None, None), ids[1]: ("dead", "HTTP 410", None),
                   ids[2]: ("dead", "timeout", None)}


async def test_retry_waits_backoff_then_dead_then_requeue(pool: asyncpg.Pool) -> None:
    """1. A leased callback fails: retry with base 0.4 s puts it back with run_after ≥ 0.4 s.
    2. It is not claimable before run_after, and is after.
    3. The third failure (max_attempts 3) makes it dead with the error kept.
    4. requeue_dead: a dry run counts it, a filter that does not match leaves it, a matching
       one requeues it with attempts reset."""
    res = await store.enqueue(pool, "callbacks", [{"kind": "mo", "url": "http://127.0.0.1/x"}])
    cid = res[0].id
    [cb] = await store.claim_leased(pool, "callbacks", limit=5, owner="w", lease_s=30)
    for attempt, (low, high) in ((1, (0.4, 0.4)), (2, (0.4, 0.5))):
        assert cb.id == cid and cb.attempts == attempt - 1
        # Retry and an immediate claim in ONE transaction: now() is the same instant for both,
        # so "not claimable before run_after" holds however slow the machine is.
        async with pool.acquire() as conn, conn.transaction():
            assert await store.retry(conn, "callbacks", [cid], owner="w",
                                     error=f"HTTP 503 #{attempt}", max_attempts=3, base_s=0.4,
                                     cap_s=0.5) == ([cid], [])
            assert await store.claim_leased(conn, "callbacks", limit=5, owner="w",
                                            lease_s=30) == []
        # The backoff from the row itself (run_after and updated_at come from the same now()):
        # attempt 1 is the floor, attempt 2 uniform in [base, min(cap, 2·base)].
        row = await pool.fetchrow("SELECT run_after, extract(epoch FROM run_after - updated_at)"
                                  "::float8 AS backoff FROM callbacks")
        assert low - 1e-6 <= row["backoff"] <= high + 1e-6
        async with asyncio.timeout(10):  # until the database's clock passes run_after
            while not (got := await store.claim_leased(  # noqa: ASYNC110 - polling the database
                    pool, "callbacks", limit=5, owner="w", lease_s=30)):
                await asyncio.sleep(0.02)
        [cb] = got
        claimed_at = await pool.fetchval(
            "SELECT lease_until - make_interval(secs => 30) FROM callbacks")
        assert claimed_at >= row["run_after"]  # never claimed early
    assert await store.retry(pool, "callbacks", [cid], owner="w", error="HTTP 503 #3",
                             max_attempts=3, base_s=0.4, cap_s=0.5) == ([], [cid])
    row = await pool.fetchrow("SELECT status, attempts, last_error, lease_owner FROM callbacks")
    assert tuple(row) == ("dead", 3, "HTTP 503 #3", None)
    assert await store.claim_leased(pool, "callbacks", limit=5, owner="w", lease_s=30) == []

    assert await store.requeue_dead(pool, "callbacks", dry_run=True) == 1
    assert await store.requeue_dead(pool, "callbacks", error_like="HTTP 404%") == 0
    assert await store.requeue_dead(pool, "callbacks", older_than_s=3600) == 0
    assert await store.requeue_dead(pool, "callbacks", ids=[cid], error_like="HTTP 503%") == 1
    [cb] = await store.claim_leased(pool, "callbacks", limit=5, owner="w", lease_s=30)
    assert (cb.id, cb.attempts, cb.last_error) == (cid, 0, "HTTP 503 #3")


async def test_release_returns_rows_without_attempt(pool: asyncpg.Pool) -> None:
    """A drained worker releases its leases: rows queued again, attempts unchanged."""
    await _fill(pool, "callbacks", 4)
    rows = await store.claim_leased(pool, "callbacks", limit=4, owner="w", lease_s=60)
    assert await store.release(pool, "callbacks", "w", ids=[rows[0].id]) == 1
    assert await store.release(pool, "callbacks", "w") == 3
    again = await store.claim_leased(pool, "callbacks", limit=4, owner="v", lease_s=60)
    assert len(again) == 4 and all(r.attempts == 0 and not r.reclaimed for r in again)


async def test_head_of_line_keeps_per_number_order(
        pool: asyncpg.Pool, connect: Connect) -> None:
    """1. Number A has rows a1 < a2 < a3, number B has b1.
    2. A claim hands out a1 and b1 only; while a1 is locked by that transaction, a second
       consumer gets nothing (a2 waits behind a1).
    3. a1 fails transiently (retry with a 0.3 s backoff): a2 is still not claimable while
       a1 waits for its retry, even though a2 is due.
    4. After the backoff a1 comes back first; once it is done, a2, then a3."""
    ids = [r.id for r in await store.enqueue(pool, "inbound", [
        inbound_row("A", "a1"), inbound_row("A", "a2"), inbound_row("B", "b1"),
        inbound_row("A", "a3")])]
    a1, a2, b1, a3 = ids
    c1, c2 = await connect(), await connect()
    tx = c1.transaction()
    await tx.start()
    got = await store.claim_tx(c1, "inbound", limit=10, hol_column="from_addr")
    assert sorted(r.id for r in got) == [a1, b1]
    async with c2.transaction():
        assert await store.claim_tx(c2, "inbound", limit=10, hol_column="from_addr") == []
    await store.retry(c1, "inbound", [a1], error="db busy", max_attempts=5, base_s=0.3, cap_s=0.3)
    await store.ack(c1, "inbound", [b1])
    await tx.commit()

    async def claim() -> list[int]:
        async with c2.transaction():
            rows = await store.claim_tx(c2, "inbound", limit=10, hol_column="from_addr")
            await store.ack(c2, "inbound", [r.id for r in rows])
            return [r.id for r in rows]

    assert await claim() == []  # a1 waits for its retry; a2 and a3 wait behind it
    await asyncio.sleep(0.35)
    assert await claim() == [a1]
    assert await claim() == [a2]
    assert await claim() == [a3]


async def test_head_of_line_order_with_concurrent_processors(pool: asyncpg.Pool) -> None:
    """1. 20 numbers x 25 messages interleaved; 5 processors claim with the head-of-line
       condition, and about 10% of claims fail once and retry after 20 to 40 ms.
    2. Each number's messages are processed exactly once, strictly in id order."""
    rows = [inbound_row(f"N{i % 20}", str(i)) for i in range(500)]
    res = await store.enqueue(pool, "inbound", rows)
    by_id = {r.id: rows[r.index]["from_addr"] for r in res}
    processed: dict[str, list[int]] = {}
    failed_once: set[int] = set()
    rng = random.Random(7)

    async def processor() -> None:
        idle = 0
        async with pool.acquire() as conn:
            while idle < 5:
                async with conn.transaction():
                    batch = await store.claim_tx(conn, "inbound", limit=8, hol_column="from_addr")
                    flaky = [m.id for m in batch if m.id not in failed_once and rng.random() < 0.1]
                    failed_once.update(flaky)
                    ok = [m.id for m in batch if m.id not in flaky]
                    for m in batch:
                        if m.id in ok:
                            processed.setdefault(m.from_addr, []).append(m.id)
                    await store.ack(conn, "inbound", ok)
                    await store.retry(conn, "inbound", flaky, error="x", max_attempts=5,
                                      base_s=0.02, cap_s=0.04)
                idle = 0 if batch else idle + 1
                if not batch:
                    await asyncio.sleep(0.03)  # a test consumer without a listener

    await asyncio.gather(*(processor() for _ in range(5)))
    assert failed_once
    assert sum(len(v) for v in processed.values()) == 500
    for number, seq in processed.items():
        assert seq == sorted(seq), number
        assert all(by_id[i] == number for i in seq)


async def test_write_backs_validate_and_never_leave_terminal_states(pool: asyncpg.Pool) -> None:
    """1. fail() refuses a non-terminal status, ack()/update_many() an unknown one, a lease
       claim a table without leases; the generic claims and write-backs refuse outbound
       (its queue lives in outbound_queue: only shared.queue.outbound's statements serve it).
    2. A row failed as dead keeps its error; a later ack or retry does not change it.
    3. extend_lease moves the owner's lease forward."""
    await _fill(pool, "callbacks", 2)
    a, b = await store.claim_leased(pool, "callbacks", limit=2, owner="w", lease_s=5)
    with pytest.raises(ValueError, match="terminal"):
        await store.fail(pool, "callbacks", [a.id], owner="w", status="sending", error="x")
    with pytest.raises(ValueError, match="status"):
        await store.ack(pool, "callbacks", [a.id], owner="w", status="sent")
    with pytest.raises(ValueError, match="status"):
        await store.update_many(pool, "callbacks", [(a.id, "bogus", None)], owner="w")
    with pytest.raises(ValueError, match="not a queue table here"):
        await store.claim_leased(pool, "inbound", limit=1, owner="w", lease_s=5)
    for call in (store.claim_leased(pool, "outbound", limit=1, owner="w", lease_s=5),
                 store.ack(pool, "outbound", [a.id]),
                 store.retry(pool, "outbound", [a.id], error="x", max_attempts=3, base_s=1,
                             cap_s=1)):
        with pytest.raises(ValueError, match="not a queue table here"):
            await call

    assert await store.fail(pool, "callbacks", [a.id], owner="w", status="dead",
                            error="HTTP 410") == 1
    assert await store.ack(pool, "callbacks", [a.id]) == 0
    assert await store.retry(pool, "callbacks", [a.id], error="x", max_attempts=3, base_s=1,
                             cap_s=1) == ([], [])
    row = await pool.fetchrow("SELECT status, last_error FROM callbacks WHERE id = $1", a.id)
    assert tuple(row) == ("dead", "HTTP 410")

    assert await store.extend_lease(pool, "callbacks", [b.id], owner="w", lease_s=120) == 1
    # lease_until and updated_at come from the statement's one now(): exactly 120 s apart
    left = await pool.fetchval("SELECT extract(epoch FROM lease_until - updated_at)::float8 "
                               "FROM callbacks WHERE id = $1", b.id)
    assert left == 120
