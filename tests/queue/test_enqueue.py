"""Batched enqueue and dedupe against real Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from smsgw.services.receiver.store import MtOutcome, flush_mt
from smsgw.shared.domain.intake import flush_inbound
from smsgw.shared.queue import store
from smsgw.shared.queue.records import DedupeKey, InboundWrite, MtItem

from .conftest import Connect, inbound_row, outbound_row


async def test_enqueue_batch_returns_ids_in_input_order(pool: asyncpg.Pool) -> None:
    """1. Enqueue 50 rows with distinct bodies, bytes and jsonb in one call.
    2. Each result's id holds the row of its index; defaults apply to omitted columns."""
    rows = [inbound_row(body=f"m{i}", raw=bytes([i]), meta={"i": i}) for i in range(50)]
    res = await store.enqueue(pool, "inbound", rows)
    assert [r.index for r in res] == list(range(50))
    assert not any(r.duplicate for r in res)
    for r in res:
        msg = await store.find_inbound(pool, r.id)
        assert msg is not None
        assert (msg.body, msg.raw, msg.meta) == (f"m{r.index}", bytes([r.index]), {"i": r.index})
        assert (msg.status, msg.attempts) == ("queued", 0)


async def test_enqueue_rejects_unknown_column(pool: asyncpg.Pool) -> None:
    """A column that is not insertable (typo, or `id`) is refused before any SQL runs."""
    with pytest.raises(ValueError, match="frm_addr"):
        await store.enqueue(pool, "inbound", [{"frm_addr": "x"}])
    with pytest.raises(ValueError, match="not a queue table"):
        await store.enqueue(pool, "accounts", [{"name": "x"}])


async def test_dedupe_in_batch_across_batches_and_fingerprints(pool: asyncpg.Pool) -> None:
    """1. One batch: key A, key A again (other fingerprint), no key, key B.
    2. The repeat reports the first row's id, duplicate, fingerprint mismatch; 3 rows exist.
    3. A later batch repeats A (same fingerprint) and B (no fingerprint): duplicates, no rows."""
    a1 = DedupeKey(scope="mt:1", key="A", fingerprint="f1", ttl_s=60)
    a2 = DedupeKey(scope="mt:1", key="A", fingerprint="f2", ttl_s=60)
    b = DedupeKey(scope="mt:1", key="B", fingerprint="fb", ttl_s=60)
    res = await store.enqueue(pool, "outbound", [outbound_row(body=str(i)) for i in range(4)],
                              dedupe=[a1, a2, None, b])
    assert [(r.duplicate, r.fingerprint_match) for r in res] == [
        (False, None), (True, False), (False, None), (False, None)]
    assert res[1].id == res[0].id
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 3

    again = await store.enqueue(pool, "outbound", [outbound_row(), outbound_row()],
                                dedupe=[a1, DedupeKey(scope="mt:1", key="B")])
    assert [(r.id, r.duplicate, r.fingerprint_match) for r in again] == [
        (res[0].id, True, True), (res[3].id, True, None)]
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 3
    # The same key in another scope is another key.
    other = await store.enqueue(pool, "outbound", [outbound_row()],
                                dedupe=[DedupeKey(scope="mt:2", key="A")])
    assert not other[0].duplicate


async def test_dedupe_concurrent_enqueues_one_row_per_key(pool: asyncpg.Pool,
                                                         connect: Connect) -> None:
    """1. Eight connections each open a transaction and enqueue the same 20 keys (shuffled order
       differs per connection, so they race on every key).
    2. No unique violation reaches any caller; every key has exactly one row, and every
       caller's result for a key names that row's id."""
    keys = [DedupeKey(scope="mo:twilio", key=f"SM{i}", fingerprint=f"h{i}") for i in range(20)]
    conns = [await connect() for _ in range(8)]
    start = asyncio.Event()

    async def worker(n: int, conn: asyncpg.Connection) -> dict[str, int]:
        order = keys[n % 20:] + keys[:n % 20]
        await start.wait()
        async with conn.transaction():
            res = await store.enqueue(conn, "inbound", [inbound_row(body=k.key) for k in order],
                                      dedupe=order)
            await asyncio.sleep(0.01)  # hold the keys so the others wait in ON CONFLICT
        assert all(r.fingerprint_match in (None, True) for r in res)
        return {k.key: r.id for k, r in zip(order, res, strict=True)}

    tasks = [asyncio.create_task(worker(n, c)) for n, c in enumerate(conns)]
    start.set()
    results = await asyncio.gather(*tasks)
    rows = await pool.fetch("SELECT id, body FROM inbound")
    assert len(rows) == 20
    by_key = {r["body"]: r["id"] for r in rows}
    for res in results:
        assert res == by_key


async def test_enqueue_notifies_once_per_call(pool: asyncpg.Pool, connect: Connect) -> None:
    """1. LISTEN on the outbound channel.
    2. Enqueue 100 rows in one call, then a duplicate-only call (nothing inserted) and a
       notify=False call: exactly one notification arrives."""
    got: list[str] = []
    marker = asyncio.Event()
    listener = await connect()

    def heard(_conn: object, _pid: int, channel: str, payload: str) -> None:
        if payload == "test-marker":
            marker.set()
        else:
            got.append(channel)

    await listener.add_listener("smsgw_outbound", heard)
    await store.enqueue(pool, "outbound", [outbound_row() for _ in range(100)],
                        dedupe=[DedupeKey(scope="s", key="k")] + [None] * 99)
    await store.enqueue(pool, "outbound", [outbound_row()], dedupe=[DedupeKey(scope="s", key="k")])
    await store.enqueue(pool, "outbound", [outbound_row()], notify=False)
    # Positive control: a marker notified after the three calls. Postgres delivers a
    # channel's notifications in commit order, so once the marker is here every notification
    # the calls made has been heard too.
    await pool.execute("SELECT pg_notify('smsgw_outbound', 'test-marker')")
    await asyncio.wait_for(marker.wait(), 10)
    assert got == ["smsgw_outbound"]


async def test_dedupe_key_committed_while_waiting(pool: asyncpg.Pool, connect: Connect) -> None:
    """1. Transaction A enqueues key K (fingerprint f) and keeps its transaction open.
    2. B enqueues K too (fingerprints f and g in two rows of one batch): its INSERT waits in
       ON CONFLICT for A.
    3. A commits: B returns without an error, both rows duplicates of A's row (the original read
       back after the statement, since it is not in B's snapshot), fingerprints compared."""
    a, b = await connect(), await connect()
    tx = a.transaction()
    await tx.start()
    [orig] = await store.enqueue(a, "inbound", [inbound_row()],
                                 dedupe=[DedupeKey(scope="mo:t", key="K", fingerprint="f")])
    waiting = asyncio.create_task(store.enqueue(
        b, "inbound", [inbound_row(), inbound_row()],
        dedupe=[DedupeKey(scope="mo:t", key="K", fingerprint="f"),
                DedupeKey(scope="mo:t", key="K", fingerprint="g")]))
    # B is seen waiting on a lock held by A's transaction (pg_blocking_pids), not assumed to
    # be after a fixed sleep.
    a_pid, b_pid = a.get_server_pid(), b.get_server_pid()
    async with asyncio.timeout(10):
        while a_pid not in await pool.fetchval(  # noqa: ASYNC110 - polling the database
                "SELECT pg_blocking_pids($1)", b_pid):
            await asyncio.sleep(0.01)
    assert not waiting.done()  # blocked on A's uncommitted key
    await tx.commit()
    res = await asyncio.wait_for(waiting, 5)
    assert [(r.id, r.duplicate, r.fingerprint_match) for r in res] == [
        (orig.id, True, True), (orig.id, True, False)]
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 1


async def test_expired_key_not_yet_purged_is_taken_over(pool: asyncpg.Pool) -> None:
    """The one dedupe rule (shared/queue/sql/dedupe.sql), for each of the three key claimers:
    the queue core's enqueue, the receiver's MT flush and the shared MO intake.
    1. Store a row under a key, then let the key expire without the retention job purging it.
    2. Resubmit under the same key (with other content): a new row is stored, not reported as
       a duplicate or a conflict, and the key now points at the new row.
    3. Resubmit again while the key is live: a duplicate of the new row.
    (Before there was one rule the core's ON CONFLICT DO NOTHING answered step 2 with the old
    row, while the other two took the key over.)"""
    async def expire_all() -> None:
        await pool.execute("UPDATE dedupe_keys SET expires_at = now() - interval '1 second'")

    async def target(scope: str, key: str) -> int:
        return await pool.fetchval(
            "SELECT target_id FROM dedupe_keys WHERE scope = $1 AND key = $2", scope, key)

    # the queue core
    k1, k2 = DedupeKey(scope="s", key="k", fingerprint="f1"), DedupeKey(scope="s", key="k",
                                                                         fingerprint="f2")
    (first,) = await store.enqueue(pool, "outbound", [outbound_row()], dedupe=[k1])
    await expire_all()
    (second,) = await store.enqueue(pool, "outbound", [outbound_row()], dedupe=[k2])
    assert not second.duplicate and second.id != first.id
    assert await target("s", "k") == second.id
    (third,) = await store.enqueue(pool, "outbound", [outbound_row()], dedupe=[k2])
    assert third.duplicate and third.id == second.id and third.fingerprint_match

    # the receiver's MT flush (client_ref)
    def mt(text: str) -> MtItem:
        return MtItem(account_id=7, source="api", from_addr="Brand", to_addr="+447700900123",
                      body=text, category="transactional", client_ref="ref-1")

    async with pool.acquire() as conn, conn.transaction():
        (a,) = await flush_mt(conn, [mt("one")], ttl_s=60)
    await expire_all()
    async with pool.acquire() as conn, conn.transaction():
        (b,) = await flush_mt(conn, [mt("two")], ttl_s=60)
    assert (b.outcome, b.id != a.id) == (MtOutcome.CREATED, True)
    assert await target("mt:7", "ref-1") == b.id
    async with pool.acquire() as conn, conn.transaction():
        (c,) = await flush_mt(conn, [mt("two")], ttl_s=60)
    assert (c.outcome, c.id) == (MtOutcome.DUPLICATE, b.id)

    # the shared MO intake (provider message id)
    def mo() -> InboundWrite:
        return InboundWrite(channel="http", provider="twilio", connector=None,
                            from_addr="+447700900123", to_addr="12345", body="hi",
                            dedupe_scope="mo:twilio", dedupe_key="SM1")

    async with pool.acquire() as conn:
        (x,) = await flush_inbound(conn, [mo()], ttl_s=60)
        await expire_all()
        (y,) = await flush_inbound(conn, [mo()], ttl_s=60)
        (z,) = await flush_inbound(conn, [mo()], ttl_s=60)
    assert not y.duplicate and y.inbound_id != x.inbound_id
    assert await target("mo:twilio", "SM1") == y.inbound_id
    assert z.duplicate and z.inbound_id == y.inbound_id
