"""outbound's in-flight state in `outbound_queue` (migration 0021): every inserted message is
queued whoever inserts it, the queue follows each state change, a queue row that disagrees with
its message is set right by the claim, the later updates of `outbound` are heap-only, and the
migration backfills a live queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from smsgw.shared.core import db
from smsgw.shared.queue import outbound, store
from smsgw.shared.queue.records import DedupeKey, MtItem

from ..harness import empty_database
from .conftest import outbound_row

_QUEUE = ("SELECT id, category, acct, lease_owner, lease_until IS NOT NULL AS leased"
          " FROM outbound_queue")


def _mt(body: str, **kw: object) -> MtItem:
    return MtItem(account_id=7, source="api", from_addr="Brand", to_addr="+447700900123",
                  body=body, category="transactional", **kw)  # type: ignore[arg-type]


async def _queue(conn: asyncpg.Connection | asyncpg.Pool) -> dict[int, tuple]:
    return {r["id"]: tuple(r)[1:] for r in await conn.fetch(_QUEUE)}


async def test_every_insert_path_queues_and_each_state_change_follows(
        pool: asyncpg.Pool) -> None:
    """1. MTs inserted by the receiver's two statements, the core's enqueue (plain and with
       dedupe keys) and a bare INSERT each get one queue row (lane, account 0 for none); a row
       inserted finished gets none, one inserted `sending` an expired lease the claim takes
       over; a scheduled MT waits in the queue until its send_at.
    2. claim leases the due ones (queue row and message agree), write_back takes the finished
       one out of the queue and puts the retry back queued with its backoff, defer and release
       give leases back, cancel_queued takes a queued message out, requeue_dead puts a dead
       one back."""
    later = datetime.now(UTC) + timedelta(hours=1)
    async with pool.acquire() as conn:
        [a] = await outbound.insert(conn, [_mt("a")], [None])
        [(b, created)] = await outbound.insert_keyed(conn, [_mt("b", client_ref="k")], ["f"],
                                                     [None], ttl_s=60)
        [c] = await outbound.insert(conn, [_mt("c", send_at=later)], [None])
    assert created
    [d] = await store.enqueue(pool, "outbound", [outbound_row(body="d", category="marketing")])
    [e] = await store.enqueue(pool, "outbound", [outbound_row(body="e")],
                              dedupe=[DedupeKey(scope="mt:0", key="e", ttl_s=60)])
    f, g, h = [r["id"] for r in await pool.fetch(
        "INSERT INTO outbound (from_addr, to_addr, body, status, lease_owner) VALUES"
        " ('X', '+4915100000001', 'f', 'queued', NULL),"
        " ('X', '+4915100000001', 'g', 'delivered', NULL),"
        " ('X', '+4915100000001', 'h', 'sending', 'gone-sender') RETURNING id")]
    q = await _queue(pool)
    assert q == {a: ("transactional", 7, None, False), b: ("transactional", 7, None, False),
                 c: ("transactional", 7, None, False), d.id: ("marketing", 0, None, False),
                 e.id: ("transactional", 0, None, False), f: ("transactional", 0, None, False),
                 h: ("transactional", 0, "gone-sender", True)}
    assert g not in q

    async with pool.acquire() as conn:
        claimed = {r.id: r for r in await outbound.claim(conn, owner="s1", lease_s=60, limit=50,
                                                         max_accounts=10)}
        # the scheduled one is looked at only once due: not claimed, still queued
        assert set(claimed) == {a, b, d.id, e.id, f, h} and claimed[h].reclaimed
        q = await _queue(conn)
        assert {i for i, v in q.items() if v[2] == "s1"} == set(claimed)
        assert q[c][2] is None
        n = 3
        owned = await outbound.write_back(
            conn, "s1", [a, b, d.id], ["submitted", "queued", "rejected"], [None, None, 8],
            [None, "throttled", "bad"], [0.0, 30.0, 0.0], [0, 1, 0], [1, None, 1],
            ["c1", None, "c1"], [], [], [], [], [], [], [], [])
        assert sorted(owned) == sorted([a, b, d.id]) and n == 3
        assert await outbound.write_back(conn, "other", [e.id], ["submitted"], [None], [None],
                                         [0.0], [0], [1], ["c1"], [], [], [], [], [], [], [],
                                         []) == []  # fenced: not its lease
        assert await outbound.defer(conn, "s1", [e.id], [60.0], ["quiet hours"]) == 1
        assert await outbound.release(conn, "s1", [f]) == [f]
        q = await _queue(conn)
        assert a not in q and d.id not in q  # finished: out of the queue
        assert q[b][2] is None and q[e.id][2] is None and q[f][2] is None
        states = dict(await conn.fetch("SELECT id, status FROM outbound"))
        assert (states[a], states[b], states[d.id], states[e.id], states[f], states[h]) == (
            "submitted", "queued", "rejected", "queued", "queued", "sending")
        # run_after agrees between the message and its queue row (the claim checks it)
        assert await conn.fetchval(
            "SELECT count(*) FROM outbound o JOIN outbound_queue q USING (id)"
            " WHERE o.run_after <> q.run_after") == 0

        changes = await outbound.cancel_queued(conn, 7, [b, c], reason="test", daemon="t")
        assert sorted(ch.outbound_id for ch in changes) == sorted([b, c])
        q = await _queue(conn)
        assert b not in q and c not in q
        await conn.execute("UPDATE outbound SET status = 'dead' WHERE id = $1", d.id)
        assert await store.requeue_dead(conn, "outbound", ids=[d.id]) == 1
        assert (await _queue(conn))[d.id] == ("marketing", 0, None, False)


async def test_claim_sets_right_a_queue_row_that_disagrees_with_its_message(
        pool: asyncpg.Pool) -> None:
    """A message changed behind the queue's back (a daemon of the previous release, by hand):
    finished → the claim drops its queue row; claimed by an old sender (`sending` with a lease)
    → the queue row takes that lease; deferred (run_after ahead) → the queue row waits too.
    None of them is claimed; a consistent one is."""
    ids = [r.id for r in await store.enqueue(pool, "outbound",
                                             [outbound_row(body=str(i)) for i in range(4)])]
    done, old_claim, deferred, fine = ids
    await pool.execute("UPDATE outbound SET status = 'delivered' WHERE id = $1", done)
    await pool.execute("UPDATE outbound SET status = 'sending', lease_owner = 'old',"
                       " lease_until = now() + interval '1 minute' WHERE id = $1", old_claim)
    await pool.execute("UPDATE outbound SET run_after = now() + interval '1 hour'"
                       " WHERE id = $1", deferred)
    async with pool.acquire() as conn:
        got = await outbound.claim(conn, owner="s1", lease_s=60, limit=10, max_accounts=10)
    assert [r.id for r in got] == [fine]
    q = await _queue(pool)
    assert done not in q
    assert q[old_claim][2:] == ("old", True) and q[deferred][2:] == (None, False)
    assert await pool.fetchval("SELECT run_after > now() FROM outbound_queue WHERE id = $1",
                               deferred)


async def test_later_updates_of_a_message_are_heap_only(pool: asyncpg.Pool) -> None:
    """200 MTs go through the claim, the write-back and a finalize, each step its own
    transaction: every one of those updates of `outbound` is heap-only (no index entry: the
    table's indexes name no column they change, and its pages keep room), read from the
    session's own counters."""
    async with pool.acquire() as conn:
        ids = await outbound.insert(conn, [_mt(str(i)) for i in range(200)], [None] * 200)
        hot = "SELECT pg_stat_get_xact_tuples_hot_updated('outbound'::regclass)"
        upd = "SELECT pg_stat_get_xact_tuples_updated('outbound'::regclass)"
        counts = []
        async with conn.transaction():
            await outbound.claim(conn, owner="s1", lease_s=60, limit=200, max_accounts=10)
            counts.append((await conn.fetchval(upd), await conn.fetchval(hot)))
        async with conn.transaction():
            n = len(ids)
            await outbound.write_back(conn, "s1", ids, ["submitted"] * n, [None] * n,
                                      [None] * n, [0.0] * n, [0] * n, [1] * n, ["c1"] * n,
                                      ids, [1] * n, [1] * n, ["c1"] * n,
                                      [f"m{i}" for i in ids], [0] * n, ["delivered"] * n,
                                      [False] * n)
            counts.append((await conn.fetchval(upd), await conn.fetchval(hot)))
        async with conn.transaction():
            await outbound.finalize(conn, ids)
            counts.append((await conn.fetchval(upd), await conn.fetchval(hot)))
    # (the counters add up over the session's transactions)
    assert counts == [(200, 200), (400, 400), (600, 600)]
    assert await pool.fetchval("SELECT count(*) FROM outbound WHERE status = 'delivered'") == 200


async def test_migration_backfills_a_live_queue(pg_server: dict, unique) -> None:
    """A database at migration 0020 with queued, sending and finished MTs: 0021 gives the
    queued and sending ones their queue rows (the lease kept), drops the three indexes that
    named status, and the next claim takes the queued ones."""
    async with empty_database(str(pg_server["url"]), unique("smsgw_m21_")) as url:
        await db.migrate(url, target=20)
        c = await db.connect(url)
        try:
            await c.execute(
                "INSERT INTO outbound (from_addr, to_addr, body, status, lease_owner, lease_until)"
                " VALUES ('X', '+4915100000001', 'q', 'queued', NULL, NULL),"
                " ('X', '+4915100000001', 's', 'sending', 'old', now() + interval '1 minute'),"
                " ('X', '+4915100000001', 'd', 'delivered', NULL, NULL)")
            await db.migrate(url)
            rows = await c.fetch("SELECT o.body, q.lease_owner FROM outbound_queue q"
                                 " JOIN outbound o USING (id) ORDER BY o.body")
            assert [tuple(r) for r in rows] == [("q", None), ("s", "old")]
            idx = {r[0] for r in await c.fetch(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'outbound'")}
            assert idx.isdisjoint({"outbound_claim_idx", "outbound_lease_idx",
                                   "outbound_lane_idx"}), idx
            got = await outbound.claim(c, owner="new", lease_s=60, limit=10, max_accounts=10)
            assert [r.body for r in got] == ["q"]
        finally:
            await c.close()


async def test_write_back_inserts_first_parts_and_replaces_a_resubmitted_one(
        pool: asyncpg.Pool) -> None:
    """1. a two-part MT: part 1 accepted, part 2 rejected transiently → retry (queued), two
       part rows; 2. claimed again, part 2 accepted: its row is replaced (new smsc id, status,
       attempts 1), part 1 untouched, still two rows; 3. an operator requeue of a dead
       message keeps its rows, and the next write-back replaces them instead of failing on
       their key."""
    async with pool.acquire() as conn:
        [m] = await outbound.insert(conn, [_mt("two parts")], [None])

        async def claim_and_write(status: str, parts: list[tuple[int, str | None, int, str]],
                                  attempts_inc: int = 0) -> None:
            [row] = await outbound.claim(conn, owner="s1", lease_s=60, limit=5, max_accounts=5)
            assert row.id == m
            n = len(parts)
            owned = await outbound.write_back(
                conn, "s1", [m], [status], [None], [None], [0.0], [attempts_inc], [2], ["c1"],
                [m] * n, [p[0] for p in parts], [2] * n, ["c1"] * n, [p[1] for p in parts],
                [p[2] for p in parts], [p[3] for p in parts], [False] * n)
            assert owned == [m]

        await claim_and_write("queued", [(1, "id-1", 0, "submitted"), (2, None, 88, "rejected")],
                              attempts_inc=1)
        await conn.execute("UPDATE outbound_queue SET run_after = now() WHERE id = $1", m)
        await conn.execute("UPDATE outbound SET run_after = now() WHERE id = $1", m)
        await claim_and_write("submitted", [(2, "id-2", 0, "submitted")])
        parts = {r["part_no"]: dict(r) for r in await conn.fetch(
            "SELECT part_no, smsc_id, status, command_status, attempts FROM outbound_part"
            " WHERE outbound_id = $1", m)}
        assert parts == {
            1: {"part_no": 1, "smsc_id": "id-1", "status": "submitted", "command_status": 0,
                "attempts": 0},
            2: {"part_no": 2, "smsc_id": "id-2", "status": "submitted", "command_status": 0,
                "attempts": 1}}

        await conn.execute("UPDATE outbound SET status = 'dead' WHERE id = $1", m)
        assert await store.requeue_dead(conn, "outbound", ids=[m]) == 1
        await claim_and_write("submitted", [(1, "id-1b", 0, "submitted"),
                                            (2, "id-2b", 0, "submitted")])
        rows = await conn.fetch("SELECT part_no, smsc_id, attempts FROM outbound_part"
                                " WHERE outbound_id = $1 ORDER BY part_no", m)
        assert [tuple(r) for r in rows] == [(1, "id-1b", 1), (2, "id-2b", 2)]
