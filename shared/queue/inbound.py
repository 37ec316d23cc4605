"""The `inbound` queue's owner: every statement that writes `inbound` rows beyond the queue
core's generic ones (claim, ack, retry, retention move: `shared.queue.store`).

MO arrives through the shared intake (`shared.domain.intake`): whole messages in one batch
statement that also claims each provider message id in `dedupe_keys` (the one dedupe rule,
`sql/dedupe.sql`), reassembled or timed-out concatenated MO one row at a time. The SQL is
`sql/inbound.sql`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, LiteralString

import asyncpg
import orjson

from smsgw.shared.queue.records import InboundStatus, InboundWrite
from smsgw.shared.queue.sql import load

_SQL: Final = load("inbound")
STATEMENTS: Final[dict[str, LiteralString]] = {f"inbound.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

_INSERT: Final = _SQL["insert"]
_INSERT_PLAIN: Final = _SQL["insert_plain"]
_INSERT_ONE: Final = _SQL["insert_one"]


async def insert(conn: asyncpg.Connection, items: Sequence[InboundWrite], *, ttl_s: float,
                 notify: str | None) -> list[tuple[int, bool]]:
    """Insert whole MO messages in one statement, claiming each item's dedupe key for `ttl_s`
    seconds; returns (id drawn, inserted) per item in order (not inserted: its key is live).

    No two items may carry the same key (the statement claims a key once). `notify`: a channel
    to wake, in the same statement, when a row was inserted (None: no NOTIFY). Items without
    a key (SMPP MO as a rule) go through `insert_plain`, which leaves dedupe_keys alone.
    """
    if all(it.dedupe_key is None or it.dedupe_scope is None for it in items):
        rows = await conn.fetch(_INSERT_PLAIN, _document(items), notify)
    else:
        rows = await conn.fetch(_INSERT, _document(items), ttl_s, notify)
    return [(r["id"], r["created"]) for r in rows]


def _document(items: Sequence[InboundWrite]) -> str:
    """The items as the statement's one JSON parameter (bytea as "\\x<hex>")."""
    return orjson.dumps([{
        "channel": it.channel, "provider": it.provider, "connector": it.connector,
        "from_addr": it.from_addr, "to_addr": it.to_addr, "body": it.body,
        "raw": None if it.raw is None else "\\x" + it.raw.hex(),
        "data_coding": it.data_coding, "provider_message_id": it.provider_message_id,
        "meta": it.meta,
        "dedupe_scope": it.dedupe_scope if it.dedupe_key is not None else None,
        "dedupe_key": it.dedupe_key if it.dedupe_scope is not None else None,
    } for it in items]).decode()


async def insert_one(conn: asyncpg.Connection, *, channel: str, provider: str,
                     connector: str | None, from_addr: str, to_addr: str, body: str | None,
                     raw: bytes | None, data_coding: int | None,
                     provider_message_id: str | None, meta: Any, status: InboundStatus,
                     last_error: str | None) -> int:
    """Insert one message (a reassembled or timed-out concatenated MO); returns its id."""
    return int(await conn.fetchval(_INSERT_ONE, channel, provider, connector, from_addr,
                                   to_addr, body, raw, data_coding, provider_message_id, meta,
                                   str(status), last_error))
