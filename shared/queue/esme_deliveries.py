"""The `esme_deliveries` queue's owner: deliver_sm PDUs owed to customer ESMEs.

Receipts are queued by the `esme_receipt` trigger on `outbound` (migration 0015) when an MT an
ESME submitted reaches a state its registered_delivery asked for; MO routed to an account by
the processor's `deliver_to_account` action are queued by `insert_mo`. The receiver delivers
them over the account's receiver/transceiver binds under leases (`claim` … `delivered` /
`retry` / `release`), in order per message; rows no bind took within the retention end
`expired` (`expire`), finished rows are purged after a while (`purge`). The SQL is
`sql/esme_deliveries.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, LiteralString

import asyncpg

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.sql import load

_SQL: Final = load("esme_deliveries")
STATEMENTS: Final[dict[str, LiteralString]] = {f"esme_deliveries.{k}": v
                                               for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

CHANNEL: Final = CHANNELS["esme_deliveries"]


@dataclass(frozen=True, slots=True)
class EsmeDelivery:
    """One claimed row: a receipt (`kind` 'receipt') or an MO ('mo') for `account_id`."""

    id: int
    account_id: int
    kind: str
    outbound_id: int | None
    inbound_id: int | None
    message_ref: str | None
    from_addr: str
    to_addr: str
    stat: str | None
    message_state: int | None
    final: bool | None
    err: int | None
    submitted_at: datetime | None
    done_at: datetime | None
    body: str | None
    raw: bytes | None
    data_coding: int | None
    esm_class: int | None
    attempts: int
    created_at: datetime

    @classmethod
    def from_record(cls, rec: Any) -> EsmeDelivery:
        """Build from a `claim` row."""
        return cls(**dict(rec))


@dataclass(frozen=True, slots=True)
class MoForEsme:
    """One MO to queue for an account's ESMEs (`insert_mo`), by account name (a rule's
    `deliver_to_account`); a name no account has queues nothing."""

    account: str
    inbound_id: int | None
    from_addr: str
    to_addr: str
    body: str | None
    raw: bytes | None
    data_coding: int | None
    esm_class: int | None = 0


async def claim(conn: asyncpg.Connection | asyncpg.Pool, account_ids: Sequence[int], *,
                limit: int, owner: str, lease_s: float) -> list[EsmeDelivery]:
    """Lease up to `limit` due rows of these accounts (in order per message)."""
    if not account_ids or limit <= 0:
        return []
    rows = await conn.fetch(_SQL["claim"], list(account_ids), limit, owner, lease_s)
    return sorted((EsmeDelivery.from_record(r) for r in rows), key=lambda d: d.id)


async def reclaim(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Expired leases back to queued; return how many."""
    return _count(await conn.execute(_SQL["reclaim"]))


async def delivered(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int], *,
                    owner: str) -> list[asyncpg.Record]:
    """Mark rows delivered (only while the lease is `owner`'s); return the changed rows."""
    return await conn.fetch(_SQL["delivered"], list(ids), owner) if ids else []


async def retry(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int], *, owner: str,
                delay_s: float, max_attempts: int, error: str) -> list[asyncpg.Record]:
    """Queue rows again after `delay_s` (dead after `max_attempts`); return the changed rows."""
    if not ids:
        return []
    return await conn.fetch(_SQL["retry"], list(ids), owner, delay_s, max_attempts, error[:500])


async def release(conn: asyncpg.Connection | asyncpg.Pool, ids: Sequence[int], *,
                  owner: str) -> int:
    """Give rows back unsent (no attempt counted)."""
    return _count(await conn.execute(_SQL["release"], list(ids), owner)) if ids else 0


async def expire(conn: asyncpg.Connection | asyncpg.Pool, *, older_than_s: float,
                 limit: int = 1000) -> list[asyncpg.Record]:
    """End rows queued for longer than the retention `expired`; return them."""
    return await conn.fetch(_SQL["expire"], older_than_s, limit)


async def purge(conn: asyncpg.Connection | asyncpg.Pool, *, older_than_s: float,
                limit: int = 5000) -> int:
    """Delete finished rows older than `older_than_s`; return how many."""
    return _count(await conn.execute(_SQL["purge"], older_than_s, limit))


async def insert_mo(conn: asyncpg.Connection, rows: Sequence[MoForEsme]) -> int:
    """Queue MO for ESMEs in one INSERT and wake the receivers once; return how many rows
    were queued (rows for unknown accounts are not)."""
    if not rows:
        return 0
    cols = list(zip(*((r.account, r.inbound_id, r.from_addr, r.to_addr, r.body, r.raw,
                       r.data_coding, r.esm_class) for r in rows), strict=True))
    result = await conn.fetchrow(_SQL["insert_mo"], *[list(c) for c in cols])
    return int(result["n"])


async def stats(conn: asyncpg.Connection | asyncpg.Pool) -> dict[str, tuple[int, float]]:
    """kind → (rows queued or in flight, oldest age in seconds)."""
    return {r["kind"]: (int(r["depth"]), float(r["oldest_age_s"]))
            for r in await conn.fetch(_SQL["stats"])}


async def for_message(conn: asyncpg.Connection | asyncpg.Pool, table: str,
                      message_id: int) -> list[asyncpg.Record]:
    """The deliveries of one message (`table` 'outbound' or 'inbound'), oldest first."""
    return await conn.fetch(_SQL["for_message"], table, message_id)


def _count(status: str) -> int:
    # asyncpg's status string: "UPDATE 3" / "DELETE 0"
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
