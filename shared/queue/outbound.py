"""The `outbound` queue's owner: every statement that writes or claims `outbound` rows and
their `outbound_part` rows.

The SQL is `sql/outbound.sql`; the queue core (`shared.queue.store`) adds the generic
statements every queue table shares (retention move, requeue, lookups).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, LiteralString

import asyncpg

from smsgw.shared.queue.records import StatusChange
from smsgw.shared.queue.sql import load

_SQL: Final = load("outbound")
STATEMENTS: Final[dict[str, LiteralString]] = {f"outbound.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

_FINALIZE: Final = _SQL["finalize"]
_BUFFERED_WATCHERS: Final = _SQL["buffered_watchers"]


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
