"""A claim whose COMMIT answer is lost (a failover at commit): `outbound.release_unknown`.

The sender never takes over its own expired leases (an outcome of its own may still be waiting
for its write-back), so rows a committed-but-unanswered claim leased to it would stay `sending`
for ever. The submitter remembers the claim's transaction id and, once the database answers
again, gives back exactly the rows that transaction leased and nothing else.
"""

from __future__ import annotations

import asyncio

import asyncpg

from smsgw.shared.queue import outbound, store

from .conftest import outbound_row


async def _claim(conn: asyncpg.Connection, owner: str, limit: int, *,
                 commit: bool = True) -> tuple[int, list[int]]:
    tx = conn.transaction()
    await tx.start()
    xid = await outbound.current_xid(conn)
    rows = await outbound.claim(conn, owner=owner, lease_s=60, limit=limit, max_accounts=10)
    await (tx.commit() if commit else tx.rollback())
    return xid, [r.id for r in rows]


async def test_release_unknown_gives_back_exactly_the_lost_claims_rows(
        pool: asyncpg.Pool) -> None:
    """1. 10 MTs; claim A (3 rows, committed: its answer 'lost'), claim B (3 rows, committed,
    known), claim C (rolled back) by the same owner; 2. release_unknown(owner, [A, C]) requeues
    A's 3 rows only; 3. a row of A taken over meanwhile by another owner is left alone; 4. a
    second call finds nothing."""
    await store.enqueue(pool, "outbound", [outbound_row(body=f"u{i}") for i in range(10)],
                        notify=False)
    async with pool.acquire() as conn:
        xid_a, ids_a = await _claim(conn, "s1", 3)
        _xid_b, ids_b = await _claim(conn, "s1", 3)
        xid_c, ids_c = await _claim(conn, "s1", 2, commit=False)
        assert len(ids_a) == len(ids_b) == 3 and len(ids_c) == 2
        # one of A's rows was taken over by another sender (its lease expired there)
        # (the lease lives in the message's queue row, migration 0021)
        await conn.execute("UPDATE outbound_queue SET lease_owner = 's2' WHERE id = $1", ids_a[0])
        released = await outbound.release_unknown(conn, "s1", [xid_a, xid_c])
        assert sorted(released) == sorted(ids_a[1:])
        states = dict(await conn.fetch("SELECT id, status FROM outbound WHERE id = ANY($1)",
                                       ids_a + ids_b))
        assert [states[i] for i in ids_a] == ["sending", "queued", "queued"]
        assert [states[i] for i in ids_b] == ["sending"] * 3
        assert await outbound.release_unknown(conn, "s1", [xid_a, xid_c]) == []


async def test_disown_orphans_hands_lost_leases_to_the_takeover(pool: asyncpg.Pool) -> None:
    """A write-back lost with an asynchronous standby leaves rows `sending`, leased to a sender
    that no longer holds them. 1. s1 claims 3 rows (short lease) and still holds one;
    2. disown_orphans renames the other two's owner, once their lease is over by the grace;
    3. s1's next claim takes them over as stale leases (`reclaimed`: possible duplicates);
    the held row stays s1's."""
    await store.enqueue(pool, "outbound", [outbound_row(body=f"o{i}") for i in range(3)],
                        notify=False)
    async with pool.acquire() as conn:
        rows = await outbound.claim(conn, owner="s1", lease_s=0.05, limit=3, max_accounts=10)
        ids = [r.id for r in rows]
        assert await outbound.disown_orphans(conn, "s1", ids[:1], grace_s=60) == []
        await asyncio.sleep(0.2)
        disowned = await outbound.disown_orphans(conn, "s1", ids[:1], grace_s=0.1)
        assert sorted(disowned) == sorted(ids[1:])
        again = await outbound.claim(conn, owner="s1", lease_s=60, limit=10, max_accounts=10)
        assert sorted(r.id for r in again) == sorted(ids[1:])
        assert all(r.reclaimed for r in again)
        owner = await conn.fetchval("SELECT lease_owner FROM outbound WHERE id = $1", ids[0])
        assert owner == "s1"
