"""Shared intake writers: MO dedupe, fragment timeout, and the group committer's error paths."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from smsgw.shared.core import db
from smsgw.shared.domain.intake import (
    FragmentWrite,
    InboundWrite,
    expire_mo_fragments,
    flush_inbound,
)
from smsgw.shared.queue.groupcommit import GroupCommitter


def _frag(seq: int, total: int = 3, ref: int = 9) -> FragmentWrite:
    return FragmentWrite(channel="smpp", provider="c1", connector="c1",
                         from_addr="+447700900123", to_addr="60060", ref=ref, total=total,
                         seq=seq, body=f"part{seq} ")


async def test_incomplete_fragments_expire_into_a_failed_message(pool: asyncpg.Pool) -> None:
    """1. parts 1 and 3 of 3 arrive; part 2 never does
    2. before the timeout nothing happens; after it, one failed inbound row holds what came,
       with the error saying what is missing; the fragments are kept (failed)."""
    async with pool.acquire() as conn, conn.transaction():
        res = await flush_inbound(conn, [_frag(1), _frag(3)])
    assert [r.complete for r in res] == [False, False]
    async with pool.acquire() as conn:
        assert await expire_mo_fragments(conn, 60) == 0
        await conn.execute("UPDATE mo_parts SET created_at = now() - interval '1 hour'")
        assert await expire_mo_fragments(conn, 60) == 1
    row = await pool.fetchrow("SELECT * FROM inbound")
    assert row["status"] == "failed" and row["body"] == "part1 part3 "
    assert "2 of 3" in row["last_error"] and row["meta"]["concat"]["received"] == [1, 3]
    assert await pool.fetchval("SELECT count(*) FROM mo_parts WHERE status = 'failed'"
                               " AND inbound_id = $1", row["id"]) == 2


async def test_concurrent_last_fragments_make_one_message(db_url: str, pool: asyncpg.Pool) -> None:
    """Two instances (two pools) store the last two fragments of one message at the same time:
    the advisory lock makes exactly one of them write the message."""
    async with pool.acquire() as conn, conn.transaction():
        await flush_inbound(conn, [_frag(1)])
    other = await db.create_pool(db_url, min_size=1, max_size=2)
    try:
        async def store(p: asyncpg.Pool, seq: int) -> bool:
            async with p.acquire() as conn, conn.transaction():
                return (await flush_inbound(conn, [_frag(seq)]))[0].complete
        done = await asyncio.gather(store(pool, 2), store(other, 3))
    finally:
        await other.close()
    assert sorted(done) == [False, True]
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 1


async def test_provider_id_dedupe_within_a_batch(pool: asyncpg.Pool) -> None:
    """The same provider id twice in one batch and once more later: one row."""
    item = InboundWrite(channel="http", provider="twilio", connector=None,
                        from_addr="+447700900123", to_addr="+447700900999", body="hi",
                        provider_message_id="SM1", dedupe_scope="mo:twilio", dedupe_key="SM1")
    async with pool.acquire() as conn, conn.transaction():
        first = await flush_inbound(conn, [item, item])
    async with pool.acquire() as conn, conn.transaction():
        later = await flush_inbound(conn, [item])
    assert [r.duplicate for r in first + later] == [False, True, True]
    assert len({r.inbound_id for r in first + later}) == 1
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 1


async def test_one_bad_item_does_not_fail_its_batch(pool: asyncpg.Pool) -> None:
    """A batch where one item violates a constraint: the others commit, that caller fails."""
    async def flush(conn: asyncpg.Connection, items: list[str]) -> list[int]:
        rows = await conn.fetch(
            "INSERT INTO inbound (channel, provider, from_addr, to_addr)"
            " SELECT c, 'p', 'a', 'b' FROM unnest($1::text[]) AS c RETURNING id", items)
        return [r["id"] for r in rows]
    gc: GroupCommitter[str, int] = GroupCommitter(pool, flush, name="t", linger_s=0.01)
    gc.start()
    try:
        results = await asyncio.gather(*(gc.submit(c) for c in ("http", "bogus", "smpp")),
                                       return_exceptions=True)
    finally:
        await gc.close()
    assert isinstance(results[1], asyncpg.CheckViolationError)
    assert all(isinstance(r, int) for r in (results[0], results[2]))
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 2


async def test_full_buffer_refuses_at_once(pool: asyncpg.Pool) -> None:
    """Past max_pending, submit raises IntakeFull instead of queueing without limit."""
    from smsgw.shared.queue.groupcommit import IntakeFull

    gate = asyncio.Event()

    async def slow(conn: asyncpg.Connection, items: list[int]) -> list[int]:
        await gate.wait()
        return items
    gc: GroupCommitter[int, int] = GroupCommitter(pool, slow, name="t", max_pending=2,
                                                  max_inflight=1, max_batch=1)
    gc.start()
    try:
        first = asyncio.ensure_future(gc.submit(1))
        await asyncio.sleep(0)  # the worker takes item 1 and waits in the flush
        waiting = [asyncio.ensure_future(gc.submit(i)) for i in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(IntakeFull):
            await gc.submit(4)
        gate.set()
        assert await first == 1 and [await w for w in waiting] == [2, 3]
    finally:
        gate.set()
        await gc.close()


async def test_resent_fragment_is_a_duplicate_but_a_reused_reference_is_not(
        pool: asyncpg.Pool) -> None:
    """1. a 2-part message is reassembled
    2. its part 2 is re-sent (same content) → duplicate, still one message
    3. a new message with the same reference but other text → a second message."""
    def frag(seq: int, text: str) -> FragmentWrite:
        return FragmentWrite(channel="smpp", provider="c1", connector="c1",
                             from_addr="+447700900123", to_addr="60060", ref=5, total=2,
                             seq=seq, body=text)
    for batch in ([frag(1, "a"), frag(2, "b")], [frag(2, "b")], [frag(1, "c"), frag(2, "d")]):
        async with pool.acquire() as conn, conn.transaction():
            await flush_inbound(conn, batch)
    bodies = [r["body"] for r in await pool.fetch("SELECT body FROM inbound ORDER BY id")]
    assert bodies == ["ab", "cd"]


async def test_whole_mo_batch_is_one_autocommitted_statement_with_its_notify(
        db_url: str, pool: asyncpg.Pool) -> None:
    """1. A batch of whole MOs flushed outside a transaction (the committers run
       transactional=False) is stored and wakes the processors once on smsgw_inbound.
    2. A batch holding only redeliveries (same provider ids) stores nothing and wakes nobody.
    3. A batch with a fragment opens its own transaction: all rows or none."""
    from smsgw.shared.queue.listener import CHANNELS

    got: list[str] = []
    listener = await db.connect(db_url)
    await listener.add_listener(CHANNELS["inbound"], lambda *args: got.append(args[2]))

    def mo(i: int) -> InboundWrite:
        return InboundWrite(channel="smpp", provider="c1", connector="c1",
                            from_addr="+447700900123", to_addr="60060", body=f"m{i}",
                            provider_message_id=f"p{i}", dedupe_scope="mo:c1",
                            dedupe_key=f"p{i}")
    try:
        async with pool.acquire() as conn:
            assert not conn.is_in_transaction()
            first = await flush_inbound(conn, [mo(1), mo(2)])
            await asyncio.sleep(0.2)
            assert got == [CHANNELS["inbound"]]
            again = await flush_inbound(conn, [mo(1), mo(2)])
            await asyncio.sleep(0.2)
            assert got == [CHANNELS["inbound"]]  # nothing new: no wake-up
            assert [r.inbound_id for r in again] == [r.inbound_id for r in first]
            assert all(r.duplicate for r in again)
            mixed = await flush_inbound(conn, [mo(3), _frag(1, total=2, ref=77)])
            assert not conn.is_in_transaction()
        assert mixed[0].inbound_id is not None and mixed[1].complete is False
    finally:
        await listener.close()
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 3
    assert await pool.fetchval("SELECT count(*) FROM mo_parts") == 1


async def test_whole_mo_with_and_without_provider_ids(pool: asyncpg.Pool) -> None:
    """1. three SMPP MO without a provider id (the keyless statement): ids in input order,
    every field stored, no dedupe key; 2. a batch mixing a keyed MO, a keyless one and the
    keyed one again: the repeat is a duplicate of the first, the keyless one stored."""
    def smpp(text: str, **kw: object) -> InboundWrite:
        return InboundWrite(channel="smpp", provider="c1", connector="c1",
                            from_addr="+447700900123", to_addr="60060", body=text,
                            raw=b"\x00\x01" if text == "b" else None, data_coding=8,
                            meta={"esm_class": 0}, **kw)  # type: ignore[arg-type]

    async with pool.acquire() as conn:
        res = await flush_inbound(conn, [smpp("a"), smpp("b"), smpp("c")])
        ids = [r.inbound_id for r in res]
        assert ids == sorted(ids) and not any(r.duplicate for r in res)
        rows = await conn.fetch("SELECT id, body, raw, data_coding, meta, status FROM inbound "
                                "WHERE id = ANY($1) ORDER BY id", ids)
        assert [(r["body"], r["raw"], r["data_coding"], r["meta"], r["status"]) for r in rows] \
            == [("a", None, 8, {"esm_class": 0}, "queued"),
                ("b", b"\x00\x01", 8, {"esm_class": 0}, "queued"),
                ("c", None, 8, {"esm_class": 0}, "queued")]
        assert await conn.fetchval("SELECT count(*) FROM dedupe_keys") == 0
        keyed = {"dedupe_scope": "mo:smpp:c1", "dedupe_key": "id-1", "provider_message_id": "id-1"}
        x, y, z = await flush_inbound(conn, [smpp("k", **keyed), smpp("plain"),
                                             smpp("k", **keyed)])
        assert (x.duplicate, y.duplicate, z.duplicate) == (False, False, True)
        assert z.inbound_id == x.inbound_id and x.inbound_id < y.inbound_id
