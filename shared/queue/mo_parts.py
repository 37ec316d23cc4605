"""The `mo_parts` queue's owner: every statement on the fragments of concatenated MO.

A fragment waits in `mo_parts` (status `queued`) until all `total` fragments of its message
are there; the shared intake (`shared.domain.intake`) then writes the `inbound` row and marks
the fragments `done`, or, after the timeout, a `failed` inbound row and `failed` fragments.
The fragments of one message are serialised across instances by a transaction advisory lock
on the message key (`lock_message`). The SQL is `sql/mo_parts.sql`; `PURGE` is run by the
queue core's retention job.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, LiteralString, NamedTuple

import asyncpg

from smsgw.shared.queue.records import MoPartStatus
from smsgw.shared.queue.sql import load

_SQL: Final = load("mo_parts")
STATEMENTS: Final[dict[str, LiteralString]] = {f"mo_parts.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

PURGE: Final = _SQL["purge"]
"""Delete finished fragments older than $1 seconds, up to $2 rows (the retention job)."""

MessageKey = tuple[str, str, str, int, int]
"""(connector, from_addr, to_addr, ref, total): the fragments of one concatenated MO."""


class Fragment(NamedTuple):
    """One waiting fragment as reassembly reads it."""

    id: int
    seq: int
    body: str | None
    raw: bytes | None
    data_coding: int | None
    meta: Any


async def claim_key(conn: asyncpg.Connection, scope: str, key: str, *, ttl_s: float) -> bool:
    """Claim a fragment's dedupe key for `ttl_s` seconds: False when the key is live (a
    re-delivered fragment). The one dedupe rule (`sql/dedupe.sql`): an expired key is taken
    over."""
    return await conn.fetchval(_SQL["claim_key"], scope, key, 0, ttl_s) is not None


async def lock_message(conn: asyncpg.Connection, lock_key: int) -> None:
    """Take the transaction advisory lock of one message's fragments."""
    await conn.execute(_SQL["lock_message"], lock_key)


async def insert(conn: asyncpg.Connection, key: MessageKey, *, seq: int, body: str | None,
                 raw: bytes | None, data_coding: int | None, meta: Any) -> int | None:
    """Store one fragment; None when the same seq of the message is already waiting."""
    return await conn.fetchval(_SQL["insert"], *key, seq, body, raw, data_coding, meta)


async def recently_reassembled(conn: asyncpg.Connection, key: MessageKey, *, seq: int,
                               window_s: float, body: str | None, raw: bytes | None,
                               part_id: int) -> int | None:
    """The inbound id of a message completed within `window_s` that had this very fragment
    (same seq and content), other than row `part_id`; None when there is none."""
    return await conn.fetchval(_SQL["recently_reassembled"], *key, seq, window_s, body, raw,
                               part_id)


async def waiting(conn: asyncpg.Connection, key: MessageKey) -> list[Fragment]:
    """The queued fragments of one message, in sequence order."""
    return [Fragment(*r) for r in await conn.fetch(_SQL["waiting"], *key)]


async def finish(conn: asyncpg.Connection, ids: Sequence[int], status: MoPartStatus,
                 inbound_id: int) -> None:
    """Mark fragments `ids` reassembled (`done`) or timed out (`failed`) into `inbound_id`."""
    await conn.execute(_SQL["finish"], list(ids), str(status), inbound_id)


async def expired_messages(conn: asyncpg.Connection, timeout_s: float, *,
                           limit: int) -> list[MessageKey]:
    """Messages whose oldest waiting fragment is older than `timeout_s` (at most `limit`)."""
    return [(r["connector"], r["from_addr"], r["to_addr"], r["ref"], r["total"])
            for r in await conn.fetch(_SQL["expired_messages"], timeout_s, limit)]
