"""The `esme_deliveries` queue's owner: deliver_sm PDUs owed to customer ESMEs.

Receipts are queued by the `esme_receipt` trigger on `outbound` (migration 0015) when an MT an
ESME submitted reaches a state its registered_delivery asked for; MO routed to an account by
the processor's `deliver_to_account` action are queued by `insert_mo`. The receiver delivers
them over the account's receiver/transceiver binds under leases (`claim` … `finish`), in
order per message. A row lives only while it is owed: `finish` deletes the
delivered ones (and those refused too often) and queues the others again, `expire` deletes
those no bind took within the retention — each with its event, in the same statement. A
leased row stays `queued` (migration 0018: the claim is a heap-only update). `reclaim` and
`purge` only tidy rows an older release left. The SQL is `sql/esme_deliveries.sql`.
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


async def finish(conn: asyncpg.Connection | asyncpg.Pool, *, owner: str,
                 delivered: Sequence[int], failed: Sequence[tuple[int, str]], delay_s: float,
                 max_attempts: int, daemon: str) -> dict[tuple[str, str], int]:
    """Write one batch's outcomes in one statement (only rows whose lease is `owner`'s):
    `delivered` ids deleted with an `esme_delivered` event; `failed` (id, why) queued again
    after `delay_s`, or deleted with an `esme_delivery_dead` event at `max_attempts`. Return
    (outcome, kind) → rows, outcome 'delivered' | 'retried' | 'dead'."""
    if not delivered and not failed:
        return {}
    rows = await conn.fetch(_SQL["finish"], list(delivered), owner,
                            [i for i, _ in failed], [why[:500] for _, why in failed],
                            delay_s, max_attempts, daemon)
    return {(r["outcome"], r["kind"]): int(r["n"]) for r in rows}


async def expire(conn: asyncpg.Connection | asyncpg.Pool, *, older_than_s: float,
                 daemon: str, limit: int = 1000) -> list[str]:
    """Delete rows waiting for longer than the retention, each with an
    `esme_delivery_expired` event; return their kinds."""
    return [r["kind"] for r in await conn.fetch(_SQL["expire"], older_than_s, limit, daemon)]


async def reclaim(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    """Rows an older release left `sending` past their lease back to queued; return how
    many."""
    return _count(await conn.execute(_SQL["reclaim"]))


async def purge(conn: asyncpg.Connection | asyncpg.Pool, *, older_than_s: float,
                limit: int = 5000) -> int:
    """Delete finished rows an older release left, older than `older_than_s`; return how
    many."""
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


def _count(status: str) -> int:
    # asyncpg's status string: "UPDATE 3" / "DELETE 0"
    try:
        return int(status.rsplit(" ", 1)[-1])
    except ValueError:
        return 0
