"""The `callbacks` queue's owner: every statement that writes or claims `callbacks` rows.

Forwarded MO (kind 'mo') are enqueued by the processor, status callbacks (kind 'status') by the
sender when a message changes state; the processor delivers both under leases. The SQL is
`sql/callbacks.sql`; the queue core (`shared.queue.store`) adds the generic statements every
queue table shares (claim, ack, retry, release, retention move).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, LiteralString

import asyncpg
import orjson

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import Callback, StatusCallback
from smsgw.shared.queue.sql import load

_SQL: Final = load("callbacks")
STATEMENTS: Final[dict[str, LiteralString]] = {f"callbacks.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

_INSERT_STATUS: Final = _SQL["insert_status"]
_INSERT_LEASED: Final = _SQL["insert_leased"]
_CHANNEL: Final = CHANNELS["callbacks"]


async def insert_status(conn: asyncpg.Connection, rows: Sequence[StatusCallback]) -> int:
    """Queue status callbacks in one INSERT and wake the callback workers; return how many."""
    if not rows:
        return 0
    cols = list(zip(*rows, strict=True))
    result = await conn.fetchrow(_INSERT_STATUS, *[list(c) for c in cols], _CHANNEL)
    return int(result["n"])


async def insert_leased(conn: asyncpg.Connection, rows: Sequence[Mapping[str, Any]], *,
                        owner: str, lease_s: float) -> list[Callback]:
    """Insert forwarded-MO rows (`kind`, `inbound_id`, `url`, `method`, `body`, `headers`,
    `secret_ref`, `batch_max`, `reply`) already leased to `owner` for `lease_s` seconds, in
    the caller's transaction; return them as claimed rows (the caller delivers them once its
    transaction has committed). No NOTIFY: nobody else needs waking."""
    if not rows:
        return []
    return [Callback.from_record(r) for r in await conn.fetch(
        _INSERT_LEASED, leased_document(rows), owner, float(lease_s))]


def leased_document(rows: Sequence[Mapping[str, Any]]) -> str:
    """`insert_leased`'s $1: the rows as one JSON array (a bytea body as "\\x<hex>")."""
    return orjson.dumps([{**row, "body": None if row.get("body") is None
                          else "\\x" + row["body"].hex()} for row in rows]).decode()


INSERT_LEASED: Final[LiteralString] = _INSERT_LEASED
"""`insert_leased`'s SQL ($1 the rows' document, $2 owner, $3 lease seconds), for a writer that
makes it part of a larger statement (the processor's `finish_batch`)."""
