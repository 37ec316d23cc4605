"""The `receipts` queue's owner: every statement that writes or claims `receipts` rows.

Receipts are stored by the shared intake (any bind, any daemon: `insert`; the sender's binds:
`store`, which matches in the same statement the receipts that need nothing else) and matched
by the sender (`services/sender/matching.py`) in transaction mode; the processor's periodic job
orphans the ones that never matched (docs/ARCHITECTURE.md, guarantee 6). The SQL is
`sql/receipts.sql`; the queue core (`shared.queue.store`) adds the generic statements every
queue table shares (retention move, requeue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Final, LiteralString

import asyncpg
import orjson

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import ReceiptMatch, ReceiptStored, ReceiptWrite
from smsgw.shared.queue.sql import load

_SQL: Final = load("receipts")
STATEMENTS: Final[dict[str, LiteralString]] = {f"receipts.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

_INSERT: Final = _SQL["insert"]
_STORE: Final = _SQL["store"]
_MATCH: Final = _SQL["match"]
_ORPHAN: Final = _SQL["orphan"]
_KANNEL_DLRS: Final = _SQL["kannel_dlrs"]
_WAITING: Final = _SQL["waiting"]
_MATCHED_TO_PARTS: Final = _SQL["matched_to_parts"]


def _document(items: Sequence[ReceiptWrite],
              siblings: Mapping[str, Sequence[str]] | None = None) -> str:
    """The receipts as the JSON array the statements read (through the table's row type, or
    json_to_recordset with each receipt's `siblings` and position `n` when a map is given)."""
    docs = [{
        "connector": r.connector, "smsc_id": r.smsc_id, "raw_id": r.raw_id, "stat": r.stat,
        "state": r.state, "final": r.final, "err": r.err,
        "done_date": None if r.done_date is None else (
            r.done_date if r.done_date.tzinfo else r.done_date.replace(tzinfo=UTC)).isoformat(),
        "body": r.body, "message_state": r.message_state,
        "network_error": None if r.network_error is None else "\\x" + r.network_error.hex(),
    } for r in items]
    if siblings is not None:
        for n, (d, r) in enumerate(zip(docs, items, strict=True)):
            d["siblings"] = siblings.get(r.connector) or (r.connector,)
            d["n"] = n
    return orjson.dumps(docs).decode()


async def insert(conn: asyncpg.Connection, items: Sequence[ReceiptWrite]) -> list[int]:
    """Store receipts and wake the matchers in one statement (autocommit: one round trip);
    returns the ids in input order. Needs no surrounding transaction."""
    rows = await conn.fetch(_INSERT, _document(items), CHANNELS["receipts"])
    return [int(r["id"]) for r in rows]


def sibling_map(connectors: Sequence[str], groups: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Connector → the connectors whose parts its receipts may match (its operator group,
    itself included), from the arrays `match` takes; a connector not named matches only its
    own parts."""
    members: dict[str, list[str]] = {}
    for name, group in zip(connectors, groups, strict=True):
        members.setdefault(group, []).append(name)
    return {name: tuple(members[group]) for name, group in zip(connectors, groups, strict=True)}


async def store(conn: asyncpg.Connection, items: Sequence[ReceiptWrite], *,
                siblings: Mapping[str, Sequence[str]], window_s: float) -> ReceiptStored:
    """Store receipts, matching in the same statement those whose part is written back and
    whose one-part message owes no report (see `store` in sql/receipts.sql); the others are
    stored `queued` for `match` and the matchers woken. One statement (autocommit: one round
    trip). `siblings` is `sibling_map`'s; `window_s` as for `match`."""
    rows = await conn.fetch(_STORE, _document(items, siblings), CHANNELS["receipts"], window_s)
    return ReceiptStored(ids=[int(r["id"]) for r in rows],
                         matched=sum(1 for r in rows if r["matched"]),
                         finalized=int(rows[0]["finalized"]) if rows else 0)


async def waiting(conn: asyncpg.Connection, smsc_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The receipts still waiting for a part with one of `smsc_ids` (id, smsc_id, connector,
    state, final, err; oldest first), locked for the caller's transaction, skipping those a
    matcher holds. Run inside a transaction."""
    return await conn.fetch(_WAITING, list(smsc_ids))  # type: ignore[no-any-return]


async def matched_to_parts(conn: asyncpg.Connection, receipt_ids: Sequence[int],
                           outbound_ids: Sequence[int]) -> int:
    """Mark receipts `receipt_ids` matched to part 1 of messages `outbound_ids` (pairwise;
    the caller recorded those parts with the receipts' state); returns how many."""
    status = await conn.execute(_MATCHED_TO_PARTS, list(receipt_ids), list(outbound_ids))
    return int(status.rsplit(" ", 1)[-1])


async def match(conn: asyncpg.Connection, *, limit: int, connectors: Sequence[str],
                groups: Sequence[str], window_s: float, retry_base_s: float,
                max_attempts: int, min_age_s: float) -> ReceiptMatch:
    """Match up to `limit` due receipts to their parts in one statement (caller's transaction).

    `connectors[i]` belongs to operator group `groups[i]` (a receipt may match a part of any
    connector of its group). Final receipts set their part's state; unmatched receipts retry
    after `retry_base_s` · 2^attempts, or end orphan after `max_attempts`.
    """
    row = await conn.fetchrow(_MATCH, limit, connectors, groups, window_s, retry_base_s,
                              max_attempts, min_age_s)
    assert row is not None
    return ReceiptMatch(finals=row["finals"], intermediates=row["intermediates"],
                        matched=int(row["matched"]), retried=int(row["retried"]),
                        orphaned=int(row["orphaned"]), reported=row["reported"])


async def kannel_dlrs(conn: asyncpg.Connection, ids: Sequence[int]) -> list[asyncpg.Record]:
    """Of receipts `ids` (matched, in arrival order), those of messages with a Kannel dlr-url,
    with the receipt's, its part's and its message's columns a Kannel DLR needs (see
    `kannel_dlrs` in sql/receipts.sql). Read-only; runs in the caller's transaction."""
    return list(await conn.fetch(_KANNEL_DLRS, list(ids)))


async def orphan(conn: asyncpg.Connection, *, older_than_s: float, limit: int = 10_000) -> int:
    """Mark receipts still unmatched `older_than_s` after arrival as `orphan`; return how many.

    For the processor's periodic job (run under its advisory lock); bounded per run by `limit`.
    """
    status = await conn.execute(_ORPHAN, older_than_s, limit)
    return int(status.split()[-1])
