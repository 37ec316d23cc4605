"""MT group-commit flush: idempotency on client_ref, within a batch and across batches."""

from __future__ import annotations

import asyncio

import asyncpg

from smsgw.services.receiver.store import STATEMENTS, MtItem, MtOutcome, flush_mt
from smsgw.shared.queue.groupcommit import GroupCommitter


def _mt(ref: str | None, text: str = "hello", account: int = 1) -> MtItem:
    return MtItem(account_id=account, source="api", from_addr="Brand", to_addr="+447700900123",
                  body=text, category="transactional", client_ref=ref)


async def test_flush_mt_dedupes_within_and_across_batches(pool: asyncpg.Pool) -> None:
    """1. a batch with two new refs, a repeat of one and a conflicting reuse
    2. a second batch repeating both → original ids, nothing new stored."""
    async with pool.acquire() as conn, conn.transaction():
        res = await flush_mt(conn, [_mt("a"), _mt("b"), _mt("a"), _mt("b", "other"), _mt(None)],
                             ttl_s=60)
    assert [r.outcome for r in res] == [MtOutcome.CREATED, MtOutcome.CREATED,
                                        MtOutcome.DUPLICATE, MtOutcome.CONFLICT,
                                        MtOutcome.CREATED]
    assert res[2].id == res[0].id and res[3].id == res[1].id
    async with pool.acquire() as conn, conn.transaction():
        again = await flush_mt(conn, [_mt("a"), _mt("b", "other"), _mt("a", account=2)], ttl_s=60)
    assert [r.outcome for r in again] == [MtOutcome.DUPLICATE, MtOutcome.CONFLICT,
                                          MtOutcome.CREATED]
    assert again[0].id == res[0].id
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 4
    assert await pool.fetchval("SELECT count(*) FROM dedupe_keys") == 3


async def test_group_committer_coalesces_concurrent_submits(pool: asyncpg.Pool) -> None:
    """1. 200 concurrent submits, half of them repeating 20 client_refs
    2. every caller gets an id; only the distinct messages are stored; batches hold > 1 row."""
    batches: list[int] = []
    gc: GroupCommitter[MtItem, object] = GroupCommitter(
        pool, lambda c, items: flush_mt(c, items, ttl_s=60), name="mt",
        on_commit=lambda rows, _s: batches.append(rows))
    gc.start()
    try:
        items = [_mt(f"r{i % 40}") if i % 2 else _mt(None) for i in range(200)]
        results = await asyncio.gather(*(gc.submit(it) for it in items))
    finally:
        await gc.close()
    assert all(r.id for r in results)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 100 + 20
    assert max(batches) > 1 and sum(batches) == 200


async def test_one_notify_per_commit_on_the_senders_channel(db_url: str,
                                                            pool: asyncpg.Pool) -> None:
    """A committed batch wakes the senders once on smsgw_outbound (after the commit)."""
    from smsgw.shared.core import db
    from smsgw.shared.queue.listener import CHANNELS

    got: list[str] = []
    woke = asyncio.Event()
    listener = await db.connect(db_url)
    await listener.add_listener(CHANNELS["outbound"],
                                lambda *args: (got.append(args[2]), woke.set()))
    try:
        async with pool.acquire() as conn:
            await flush_mt(conn, [_mt(None), _mt(None), _mt("k")], ttl_s=60)
        await asyncio.wait_for(woke.wait(), 5)
        await asyncio.sleep(0.1)  # any second notification would arrive by now
    finally:
        await listener.close()
    assert got == [CHANNELS["outbound"]]


async def test_message_reads_prepare(pool: asyncpg.Pool) -> None:
    """The API's message reads PREPARE on the migrated schema (column typos fail here)."""
    async with pool.acquire() as conn:
        for sql in STATEMENTS.values():
            await conn.prepare(sql)
