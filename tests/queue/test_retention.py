"""The retention move and purges, lookups after the move, and the queue_stats snapshot."""

from __future__ import annotations

import asyncio

import asyncpg

from smsgw.shared.queue import outbound, store
from smsgw.shared.queue.records import DedupeKey
from smsgw.shared.queue.sql import load

from .conftest import inbound_row, outbound_row


async def _count(pool: asyncpg.Pool, table: str) -> int:
    return int(await pool.fetchval(f"SELECT count(*) FROM {table}"))


async def test_retention_keeps_hot_table_small_and_history_working(pool: asyncpg.Pool) -> None:
    """1. 6000 MTs with dedupe keys are enqueued, leased and finished (delivered/rejected), one
       is left queued and one dead; the first message gets events.
    2. run_retention (finished_after_s=0, batches of 1000) moves every finished row: the hot table
       keeps only the queued and the (recent) dead row; history has the rest.
    3. Afterwards: resubmitting the first key still dedupes to the original id, its events are
       still readable, and find_outbound reads it from history with its data."""
    keys = [DedupeKey(scope="mt:1", key=f"ref{i}", fingerprint=f"h{i}", ttl_s=3600)
            for i in range(6000)]
    ids: list[int] = []
    for start in range(0, 6000, 2000):
        res = await store.enqueue(pool, "outbound",
                                  [outbound_row(body=f"b{i}", client_ref=f"ref{i}")
                                   for i in range(start, start + 2000)],
                                  dedupe=keys[start:start + 2000], notify=False)
        ids += [r.id for r in res]
    await store.log_events(pool, [("outbound", ids[0], "accepted", {"via": "api"}),
                                  ("outbound", ids[0], "submitted", None)], "test")
    async with pool.acquire() as conn:
        while rows := await outbound.claim(conn, owner="w", lease_s=60, limit=1000,
                                           max_accounts=100):
            done = [r.id for r in rows if r.id not in (ids[-1], ids[-2])]
            done += [ids[-2]] if ids[-2] in {r.id for r in rows} else []
            n = len(done)
            await outbound.write_back(
                conn, "w", done, ["dead" if i == ids[-2] else "delivered" if i % 7
                                  else "rejected" for i in done],
                [None] * n, [None] * n, [0.0] * n, [0] * n, [1] * n, ["c"] * n,
                [], [], [], [], [], [], [], [])
            await outbound.release(conn, "w", [ids[-1]])
            if len(rows) <= 2:
                break

    counts = await store.run_retention(
        pool, store.RetentionSettings(finished_after_s=0, dead_s=3600, batch=1000))
    assert counts is not None and counts["outbound_moved"] == 5998
    assert await _count(pool, "outbound") == 2
    assert await _count(pool, "outbound_history") == 5998
    assert await pool.fetchval("SELECT count(*) FROM dedupe_keys") == 6000  # not expired yet

    [again] = await store.enqueue(pool, "outbound", [outbound_row(body="b0")], dedupe=[keys[0]])
    assert (again.id, again.duplicate, again.fingerprint_match) == (ids[0], True, True)
    assert [e.event for e in await store.read_events(pool, "outbound", ids[0])] == [
        "accepted", "submitted"]
    moved = await store.find_outbound(pool, ids[0])
    assert moved is not None and (moved.body, moved.status) == ("b0", "delivered")
    assert (await store.find_outbound(pool, ids[-1])).status == "queued"  # type: ignore[union-attr]
    assert await store.find_outbound(pool, 10**9) is None


async def test_retention_purges_only_what_expired(pool: asyncpg.Pool) -> None:
    """1. Two dedupe keys (one with a 0.1 s ttl), one done MO with events and a body.
    2. Retention with long ages moves the MO but purges nothing else; after the ttl it purges
       only the expired key; with body_after_s=0 the moved body is dropped but the row stays.
    3. A second instance's run is skipped while the advisory lock is held."""
    res = await store.enqueue(pool, "inbound", [inbound_row(body="secret"), inbound_row()],
                              dedupe=[DedupeKey(scope="mo:x", key="short", ttl_s=0.1),
                                      DedupeKey(scope="mo:x", key="long", ttl_s=3600)])
    mo = res[0].id
    await store.log_events(pool, [("inbound", mo, "processed", None)], "test")
    async with pool.acquire() as conn, conn.transaction():
        await store.ack(conn, "inbound", [mo])
    keep = store.RetentionSettings(finished_after_s=0, body_after_s=3600, events_s=3600)
    counts = await store.run_retention(pool, keep)
    assert counts is not None and counts["inbound_moved"] == 1
    assert counts["dedupe_keys_purged"] == 0 and counts["events_purged"] == 0
    await asyncio.sleep(0.15)
    counts = await store.run_retention(pool, store.RetentionSettings(finished_after_s=0,
                                                                     body_after_s=0))
    assert counts is not None
    assert (counts["dedupe_keys_purged"], counts["inbound_bodies_purged"]) == (1, 1)
    assert await pool.fetchval("SELECT key FROM dedupe_keys") == "long"
    moved = await store.find_inbound(pool, mo)
    assert moved is not None and moved.body is None and moved.status == "done"
    assert len(await store.read_events(pool, "inbound", mo)) == 1

    async with pool.acquire() as holder:
        assert await store.try_advisory_lock(holder, store.RETENTION_LOCK_KEY)
        assert await store.run_retention(pool, keep) is None
        await store.advisory_unlock(holder, store.RETENTION_LOCK_KEY)


async def test_queue_stats_snapshot(pool: asyncpg.Pool) -> None:
    """1. 30 queued MOs, 12 queued MTs of which 5 are then leased.
    2. refresh_queue_stats + read_queue_stats report those depths (capped at the cap) and the
       oldest queued row's age; empty queues report depth 0."""
    await store.enqueue(pool, "inbound", [inbound_row() for _ in range(30)])
    await store.enqueue(pool, "outbound", [outbound_row() for _ in range(12)])
    async with pool.acquire() as conn:
        await outbound.claim(conn, owner="w", lease_s=60, limit=5, max_accounts=10)
    await store.refresh_queue_stats(pool, cap=20)
    stats = {(s.queue, s.status): s for s in await store.read_queue_stats(pool)}
    assert stats[("inbound", "queued")].depth == 20  # capped
    assert stats[("outbound", "queued")].depth == 7
    assert stats[("outbound", "sending")].depth == 5
    assert stats[("callbacks", "queued")].depth == 0
    assert stats[("callbacks", "queued")].oldest_at is None
    oldest = await pool.fetchval("SELECT min(created_at) FROM inbound")
    assert stats[("inbound", "queued")].oldest_at == oldest


async def test_oldest_queued_outbound_across_priorities_without_walking_finished_rows(
        pool: asyncpg.Pool) -> None:
    """1. 20,000 finished MTs fill the front of the hot table; then 50 queued MTs of priorities
       5, 1 and 0, one priority-0 row the oldest (its created_at set an hour back).
    2. The snapshot's oldest queued outbound is that row's created_at (not the first of the
       highest priority, which the claim index lists first).
    3. Its plan reads the queue table (outbound_queue, migration 0021, which holds only queued
       and sending messages) and probes outbound by primary key only: walking outbound_pkey went
       past every finished row still in the hot table."""
    res = await store.enqueue(pool, "outbound", [outbound_row() for _ in range(20_000)],
                              notify=False)
    await pool.execute("UPDATE outbound SET status = 'delivered' WHERE id = ANY($1::bigint[])",
                       [r.id for r in res])
    await pool.execute("DELETE FROM outbound_queue WHERE id = ANY($1::bigint[])",
                       [r.id for r in res])
    [low] = await store.enqueue(pool, "outbound", [outbound_row(priority=0)])
    await store.enqueue(pool, "outbound", [outbound_row(priority=p % 3 * 2 + 1)
                                           for p in range(49)])
    await pool.execute("UPDATE outbound SET created_at = now() - interval '1 hour' WHERE id = $1",
                       low.id)
    await pool.execute("ANALYZE outbound")
    await store.refresh_queue_stats(pool)
    stats = {(s.queue, s.status): s for s in await store.read_queue_stats(pool)}
    assert stats[("outbound", "queued")].depth == 50
    assert stats[("outbound", "queued")].oldest_at == await pool.fetchval(
        "SELECT created_at FROM outbound WHERE id = $1", low.id)
    plan = "\n".join(r[0] for r in await pool.fetch(
        "EXPLAIN " + store._stats_sql(), 100_000))
    assert "outbound_queue" in plan
    assert "Seq Scan on outbound " not in plan
    lines = plan.splitlines()
    assert all("Index Cond: (id = " in lines[i + 1]
               for i, line in enumerate(lines) if " on outbound o" in line), plan


async def test_stats_refresh_reanalyzes_a_queue_the_planner_thinks_empty(
        pool: asyncpg.Pool) -> None:
    """1. inbound is analyzed while empty (an idle queue), then 3000 MOs arrive.
    2. The head-of-line claim's plan now sorts every queued row (the planner believes the
       table empty) — except as claim_tx runs it, pinned to the index for that one statement.
    3. refresh_queue_stats notices depth >> the planner's estimate and analyzes inbound (not
       twice within analyze_every_s): the claim walks the claim index again, without a sort;
       a further refresh does nothing."""
    claim = store._q("claim_tx", "inbound", "from_addr")

    async def plan(pinned: bool = False) -> str:
        async with pool.acquire() as conn, conn.transaction():
            if pinned:
                await conn.execute(load("queue")["pin_claim_plan"])
            rows = await conn.fetch("EXPLAIN (COSTS OFF) " + claim, 100)
        return "\n".join(r[0] for r in rows)

    await pool.execute("ANALYZE inbound")
    for start in range(0, 3000, 1000):
        await store.enqueue(pool, "inbound", [inbound_row(f"+49{i}") for i in
                                              range(start, start + 1000)], notify=False)
    assert "Sort" in await plan()
    # claim_tx pins its plan: even with these statistics it walks the claim index ...
    pinned = await plan(pinned=True)
    assert "Sort" not in pinned and "inbound_claim_idx" in pinned
    async with pool.acquire() as conn, conn.transaction():
        assert len(await store.claim_tx(conn, "inbound", limit=100, hol_column="from_addr")) == 100
        # ... and unpins it for the caller's own queries in the same transaction
        assert await conn.fetchval("SHOW enable_sort") == "on"
        assert await conn.fetchval("SHOW enable_bitmapscan") == "on"
    # (the ANALYZE of step 1 was just now: the default 10 s between analyzes would wait)
    assert await store.refresh_queue_stats(pool) == []
    assert await store.refresh_queue_stats(pool, analyze_every_s=0) == ["inbound"]
    after = await plan()
    assert "Sort" not in after and "inbound_claim_idx" in after
    assert await store.refresh_queue_stats(pool, analyze_every_s=0) == []  # estimate is right


async def test_stats_refresh_reanalyzes_a_table_grown_with_finished_rows(
        pool: asyncpg.Pool) -> None:
    """1. inbound is analyzed nearly empty; a connection caches `ack`'s generic plan (forced,
       as asyncpg's prepared statement gets after five runs): a sequential scan.
    2. 20,000 finished MOs pile up (no queued depth to notice: the queue is empty).
    3. refresh_queue_stats sees the table at more than 4 times its analyzed pages and analyzes
       it; the cached generic plan is invalidated and the same connection's next generic plan
       probes the primary key."""
    ack = store._q("ack", "inbound")
    await store.enqueue(pool, "inbound", [inbound_row(f"+49{i}") for i in range(3)])
    await pool.execute("ANALYZE inbound")

    async def generic_plan(conn: asyncpg.Connection) -> str:
        rows = await conn.fetch("EXPLAIN (COSTS OFF) EXECUTE ack_probe('{1,2}', 'done', NULL)")
        return "\n".join(r[0] for r in rows)

    async with pool.acquire() as conn:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE ack_probe(bigint[], text, text) AS {ack}")
        try:
            assert "Seq Scan" in await generic_plan(conn)
            for start in range(0, 20_000, 5000):
                await store.enqueue(pool, "inbound", [
                    {**inbound_row(f"+48{i}"), "status": "done"}
                    for i in range(start, start + 5000)], notify=False)
            assert await store.refresh_queue_stats(pool, analyze_every_s=0) == ["inbound"]
            assert "inbound_pkey" in await generic_plan(conn)
            assert await store.refresh_queue_stats(pool, analyze_every_s=0) == []
        finally:
            await conn.execute("DEALLOCATE ack_probe")
            await conn.execute("RESET plan_cache_mode")
