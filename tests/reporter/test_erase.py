"""`smsgw erase` and reports: a report whose files hold the number is deleted whole (also when
the number straddles two stored chunks); reports without it stay; running ones restart."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from smsgw.services.admin.erase import erase
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import report_requests as rq

from .conftest import CAMPAIGN, seed
from .test_kinds import make

NUMBER = "+447700100003"  # one of the campaign's participants


async def test_erase_deletes_the_reports_holding_the_number(pool: asyncpg.Pool,
                                                           tmp_path: Path) -> None:
    """1. A campaign report (its draw list names NUMBER) and a traffic report (no numbers).
    2. A third report stored by hand with NUMBER's digits split across two chunks, and a
       fourth running (leased).
    3. erase(NUMBER): the campaign and split reports are gone with their chunks, the
       traffic report stays, the running one is queued again (its lease taken away)."""
    await seed(pool)
    await make(pool, tmp_path, "campaign", campaign=CAMPAIGN)
    await make(pool, tmp_path, "traffic")
    ids = [r.id for r in await rq.list_reports(pool, account_id=None)]
    camp, traffic = sorted(ids)
    assert b"7700100003" in b"".join([c async for c in rq.read_file(pool, camp, "entries_csv")])
    split = await rq.insert(pool, kind="traffic", params={}, account_id=None,
                            requested_by="t", keep_s=60)
    await pool.executemany("INSERT INTO report_chunks VALUES ($1, 'csv', $2, $3)",
                           [(split.id, 0, b"x" * 100 + b"77001"), (split.id, 1, b"00003,y")])
    await pool.execute("UPDATE report_requests SET status = 'done' WHERE id = $1", split.id)
    running = await rq.insert(pool, kind="traffic", params={}, account_id=None,
                              requested_by="t", keep_s=60)
    [leased] = await rq.claim(pool, owner="w", limit=1, lease_s=60)
    assert leased.id == running.id
    async with pool.acquire() as conn:
        counts = await erase(conn, NUMBER, hasher=NumberHasher.from_secret(b"s"), actor="t",
                             dry_run=False)
    assert counts["reports"] == 3
    left = {r.id: r for r in await rq.list_reports(pool, account_id=None)}
    assert set(left) == {traffic, running.id}
    assert left[running.id].status == "queued" and left[running.id].lease_owner is None
    assert await pool.fetchval("SELECT count(*) FROM report_chunks WHERE report_id = ANY($1)",
                               [camp, split.id]) == 0
    assert await rq.heartbeat(pool, running.id, owner="w", rows_scanned=1, rows_estimated=1,
                              progress=1, lease_s=60) is None  # its reporter stops
