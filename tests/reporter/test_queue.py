"""The `report_requests` queue: fair, bounded claims; fenced progress; reclaim; cancel."""

from __future__ import annotations

import asyncio

import asyncpg

from smsgw.shared.queue import report_requests as rq
from smsgw.shared.queue.records import ReportStatus

PARAMS = {"from": "2026-01-01T00:00:00+00:00", "to": "2026-01-02T00:00:00+00:00", "tz": "UTC"}


async def _queue(pool: asyncpg.Pool, account: int | None, n: int) -> list[int]:
    return [(await rq.insert(pool, kind="traffic", params=PARAMS, account_id=account,
                             requested_by="t", keep_s=60)).id for _ in range(n)]


async def test_claims_are_fair_bounded_fenced_and_reclaimed(pool: asyncpg.Pool) -> None:
    """1. Account 1 queues 4 reports, then account 2 and the operator one each.
    2. Four concurrent claimers of 1: four distinct reports, never one twice.
    3. With account 1's first report running, the next claim takes account 2's and the
       operator's before account 1's others (fairness), in id order.
    4. A heartbeat by another owner changes nothing; the owner's renews and reports progress.
    5. A lease that expired is reclaimed: queued again with the lost try counted, or failed
       once max_attempts is reached; a cancel asked for meanwhile ends it cancelled.
    6. Cancel: a queued report is cancelled at once; a running one sees cancel_requested at
       its next heartbeat; another account cannot cancel or see it."""
    a1 = await _queue(pool, 1, 4)
    [a2] = await _queue(pool, 2, 1)
    [op] = await _queue(pool, None, 1)
    # with nothing running, every account's first request goes before anyone's second
    probe = await rq.claim(pool, owner="p", limit=3, lease_s=60)
    assert [r.id for r in probe] == [a1[0], a2, op]
    assert sorted(await rq.release(pool, [r.id for r in probe], owner="p")) == [a1[0], a2, op]
    [first] = await rq.claim(pool, owner="w1", limit=1, lease_s=60)
    assert first.id == a1[0] and first.status == ReportStatus.RUNNING
    got = await rq.claim(pool, owner="w2", limit=2, lease_s=60)
    assert [r.id for r in got] == sorted([a2, op])
    results = await asyncio.gather(*(rq.claim(pool, owner=f"c{i}", limit=1, lease_s=60)
                                     for i in range(4)))
    ids = [r.id for batch in results for r in batch]
    assert sorted(ids) == a1[1:] and len(set(ids)) == 3
    assert await rq.heartbeat(pool, first.id, owner="intruder", rows_scanned=9,
                              rows_estimated=10, progress=90, lease_s=60) is None
    assert await rq.heartbeat(pool, first.id, owner="w1", rows_scanned=5, rows_estimated=10,
                              progress=50, lease_s=60) is False
    row = await rq.get(pool, first.id, account_id=None)
    assert row is not None and (row.rows_scanned, row.progress) == (5, 50)
    # expire three leases: one to requeue, one at its last attempt, one asked to cancel
    await pool.execute("UPDATE report_requests SET lease_until = now() - interval '1 s',"
                       " attempts = CASE WHEN id = $2 THEN 2 ELSE 0 END,"
                       " cancel_requested = (id = $3) WHERE id = ANY($1::bigint[])",
                       [a2, op, a1[1]], op, a1[1])
    back = dict(await rq.reclaim(pool, max_attempts=3))
    assert back == {a2: "queued", op: "failed", a1[1]: "cancelled"}
    assert await rq.reclaim(pool, max_attempts=3) == []  # running ones keep their lease
    # cancel: queued -> cancelled at once; running -> asked; other accounts see nothing
    assert await rq.cancel(pool, a2, account_id=1) is None
    assert await rq.get(pool, a2, account_id=1) is None
    cancelled = await rq.cancel(pool, a2, account_id=2)
    assert cancelled is not None and cancelled.status == ReportStatus.CANCELLED
    asked = await rq.cancel(pool, first.id, account_id=None)
    assert asked is not None and asked.status == ReportStatus.RUNNING
    assert await rq.heartbeat(pool, first.id, owner="w1", rows_scanned=6, rows_estimated=10,
                              progress=60, lease_s=60) is True
    assert await rq.fail(pool, first.id, owner="w1", status=ReportStatus.CANCELLED,
                         reason="cancelled", keep_s=60)
    # release hands a running report back without counting an attempt
    running = [r for r in await rq.list_reports(pool, account_id=None, status="running")]
    owners = {r.id: r.lease_owner for r in running}
    rid = running[0].id
    assert await rq.release(pool, [rid], owner="nobody") == []
    assert await rq.release(pool, [rid], owner=owners[rid] or "") == [rid]
    again = await rq.get(pool, rid, account_id=None)
    assert again is not None and again.status == ReportStatus.QUEUED and again.attempts == 0
