"""The `report_requests` queue's owner, and its outputs in `report_chunks` (migration 0016).

Report requests are queued by `smsgw reports create` and by the receiver's `POST /v1/reports`,
and leased by the reporter daemon (`services/reporter`) like `outbound` and `callbacks`
(docs/ARCHITECTURE.md, guarantee 3): `claim` leases a batch in one statement, each progress
update (`heartbeat`) renews the lease and reads `cancel_requested`, and every write-back is
fenced by `lease_owner`. A report whose reporter died is taken back by `reclaim` and run again
from the start (a report is one read-only snapshot, never resumed half-way). Finished outputs
are stored as chunks of at most `CHUNK_BYTES`, written in the transaction that marks the
report done, so nothing half-written is ever served. The SQL is `sql/report_requests.sql`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Final, LiteralString

import asyncpg

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import ReportRequest, ReportStatus
from smsgw.shared.queue.sql import load

_SQL: Final = load("report_requests")
STATEMENTS: Final[dict[str, LiteralString]] = {f"report_requests.{k}": v
                                               for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

CHANNEL: Final = CHANNELS["reports"]
CHUNK_BYTES: Final = 1 << 20  # one stored chunk: what a reader holds in memory at a time
Conn = asyncpg.Connection | asyncpg.Pool


async def insert(conn: Conn, *, kind: str, params: dict[str, Any], account_id: int | None,
                 requested_by: str, keep_s: float) -> ReportRequest:
    """Queue one report (expiring `keep_s` after it was asked for, until it finishes) and wake
    the reporters; returns the new row."""
    row = await conn.fetchrow(_SQL["insert"], kind, params, account_id, requested_by, keep_s,
                              CHANNEL)
    return ReportRequest.from_record(row)


async def claim(conn: Conn, *, owner: str, limit: int, lease_s: float) -> list[ReportRequest]:
    """Lease up to `limit` queued reports to `owner` (fair across accounts, oldest first)."""
    if limit <= 0:
        return []
    rows = await conn.fetch(_SQL["claim"], owner, limit, lease_s)
    return sorted((ReportRequest.from_record(r) for r in rows), key=lambda r: r.id)


async def reclaim(conn: Conn, *, max_attempts: int) -> list[tuple[int, str]]:
    """Take back running reports whose lease expired: (id, new status) of each."""
    return [(r["id"], r["status"]) for r in await conn.fetch(_SQL["reclaim"], max_attempts)]


async def heartbeat(conn: Conn, report_id: int, *, owner: str, rows_scanned: int,
                    rows_estimated: int | None, progress: float, lease_s: float) -> bool | None:
    """Record progress and renew the lease. True: a cancel was asked for; None: the lease was
    lost (stop working on it: another reporter has it, or it is no longer running)."""
    row = await conn.fetchrow(_SQL["heartbeat"], report_id, owner, rows_scanned,
                              rows_estimated, max(0.0, min(100.0, progress)), lease_s)
    return None if row is None else bool(row["cancel_requested"])


async def store_and_finish(conn: asyncpg.Connection, report_id: int, *, owner: str,
                           files: dict[str, Any], chunks: AsyncIterator[tuple[str, int, bytes]],
                           rows: int, keep_s: float) -> bool:
    """In the caller's transaction: store every chunk, then mark the report done. False (and
    the caller rolls back) when this instance no longer holds the lease."""
    await conn.execute(_SQL["drop_chunks"], report_id)
    put = await conn.prepare(_SQL["put_chunk"])
    async for name, no, data in chunks:
        await put.fetch(report_id, name, no, data)
    done = await conn.fetchval(_SQL["finish"], report_id, owner, files, rows, keep_s)
    return done is not None


async def fail(conn: Conn, report_id: int, *, owner: str, status: ReportStatus, reason: str,
               keep_s: float) -> bool:
    """End a running report `failed` (with the reason) or `cancelled`; fenced by `owner`."""
    assert status in (ReportStatus.FAILED, ReportStatus.CANCELLED)
    return await conn.fetchval(_SQL["fail"], report_id, owner, str(status), reason[:1000],
                               keep_s) is not None


async def release(conn: Conn, ids: Sequence[int], *, owner: str) -> list[int]:
    """Hand running reports back to the queue (drain); returns the ids released."""
    if not ids:
        return []
    return [r["id"] for r in await conn.fetch(_SQL["release"], owner, list(ids))]


async def cancel(conn: Conn, report_id: int, *, account_id: int | None) -> ReportRequest | None:
    """Cancel a report (queued: at once; running: at its next progress update); None when no
    such report is visible to `account_id` (None = operator, every report)."""
    row = await conn.fetchrow(_SQL["cancel"], report_id, account_id)
    return None if row is None else ReportRequest.from_record(row)


async def get(conn: Conn, report_id: int, *, account_id: int | None) -> ReportRequest | None:
    """One report as `account_id` may see it (None = operator: any report)."""
    row = await conn.fetchrow(_SQL["get"], report_id, account_id)
    return None if row is None else ReportRequest.from_record(row)


async def list_reports(conn: Conn, *, account_id: int | None, status: str | None = None,
                       limit: int = 50) -> list[ReportRequest]:
    """The newest reports (one account's, or every one for the operator)."""
    rows = await conn.fetch(_SQL["list"], limit, account_id, status)
    return [ReportRequest.from_record(r) for r in rows]


async def read_file(pool: asyncpg.Pool, report_id: int, name: str) -> AsyncIterator[bytes]:
    """A stored output file, chunk by chunk (one query per chunk, one chunk in memory)."""
    no = 0
    while True:
        data = await pool.fetchval(_SQL["chunk"], report_id, name, no)
        if data is None:
            return
        yield bytes(data)
        no += 1


async def purge(conn: Conn, *, limit: int = 1000) -> list[int]:
    """Retention: delete finished reports past their expiry (and their chunks); their ids."""
    return [r["id"] for r in await conn.fetch(_SQL["purge"], limit)]


async def known_ids(conn: Conn, ids: Sequence[int]) -> set[int]:
    """The ids among `ids` whose report is still queued, running or done (files to keep)."""
    return {r["id"] for r in await conn.fetch(_SQL["known_ids"], list(ids))}


async def erase_naming(conn: asyncpg.Connection, digits: str) -> int:
    """In the caller's (erase) transaction: delete the reports whose files hold `digits` and
    restart the running ones; how many reports that touched."""
    deleted = await conn.fetch(_SQL["erase_naming"], digits.encode())
    restarted = await conn.fetch(_SQL["restart_running"])
    return len(deleted) + len(restarted)
