"""The `outbound` queue's owner: every statement that writes or claims `outbound` rows and
their `outbound_part` rows.

The SQL is `sql/outbound.sql`; the queue core (`shared.queue.store`) adds the generic
statements every queue table shares (retention move, requeue, lookups).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, LiteralString

import asyncpg
import orjson

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import MtItem, StatusChange
from smsgw.shared.queue.sql import load

_SQL: Final = load("outbound")
STATEMENTS: Final[dict[str, LiteralString]] = {f"outbound.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

PURGE_PARTS: Final = _SQL["purge_parts"]
"""Delete `outbound_part` rows older than $1 seconds, up to $2 rows (the retention job)."""
CHANNEL: Final = CHANNELS["outbound"]  # the channel the senders LISTEN on

_INSERT: Final = _SQL["insert"]
_INSERT_KEYED: Final = _SQL["insert_keyed"]
_FINALIZE: Final = _SQL["finalize"]
_BUFFERED_WATCHERS: Final = _SQL["buffered_watchers"]


# -- intake -----------------------------------------------------------------------------------


async def insert(conn: asyncpg.Connection, items: Sequence[MtItem],
                 hashes: Sequence[bytes | None]) -> list[int]:
    """Insert MTs without a client_ref and wake the senders in ONE statement (autocommit: one
    round trip, durable when it returns); returns the ids in input order. `hashes[i]` is item
    i's keyed recipient hash (`to_hash`) or None."""
    rows = await conn.fetch(_INSERT, *_columns(items, [None] * len(items)), CHANNEL,
                            list(hashes))
    return [row["id"] for row in rows]


async def insert_keyed(conn: asyncpg.Connection, items: Sequence[MtItem],
                       fingerprints: Sequence[str | None], hashes: Sequence[bytes | None], *,
                       ttl_s: float) -> list[tuple[int, bool]]:
    """Insert MTs and claim their client_ref keys (scope `mt:<account_id>`, kept `ttl_s`
    seconds) in one statement; returns (id drawn, inserted) per item in order. An item is not
    inserted when its key is live (the one dedupe rule, `sql/dedupe.sql`: an expired key is
    taken over). No two items may carry the same key. Sends no NOTIFY."""
    rows = await conn.fetch(_INSERT_KEYED, *_columns(items, fingerprints), ttl_s, list(hashes))
    return [(row["id"], row["created"]) for row in rows]


def _columns(items: Sequence[MtItem], fingerprints: Sequence[str | None]) -> list[list[Any]]:
    return [
        [it.account_id for it in items], [it.source for it in items],
        [it.from_addr for it in items], [it.to_addr for it in items],
        [it.body for it in items], [it.category for it in items],
        [it.priority for it in items], [it.encoding for it in items],
        [it.client_ref for it in items], [it.callback_url for it in items],
        [it.dlr_mask for it in items], [it.send_at for it in items],
        [it.valid_until for it in items], [it.route_hint for it in items],
        [orjson.dumps(it.meta).decode() if it.meta is not None else None for it in items],
        list(fingerprints),
    ]


# -- receipt matching -------------------------------------------------------------------------


async def finalize(conn: asyncpg.Connection, ids: Sequence[int]) -> list[StatusChange]:
    """Give messages `ids` whose every part is now final their state (all delivered →
    delivered, all expired → expired, else undeliverable), in `outbound` or, after the
    retention move, `outbound_history`; return the changes (for status callbacks)."""
    return [StatusChange.from_record(r) for r in await conn.fetch(_FINALIZE, list(ids))]


async def buffered_watchers(conn: asyncpg.Connection, ids: Sequence[int]) -> list[StatusChange]:
    """Of messages `ids` that got an intermediate receipt, those whose application asked for
    Kannel "queued on SMSC" reports (dlr-mask bit 4), as `enroute` changes."""
    return [StatusChange.from_record(r) for r in await conn.fetch(_BUFFERED_WATCHERS, list(ids))]
