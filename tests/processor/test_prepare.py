"""Every named query of the processor PREPAREs against the migrated schema (column typos fail)."""

from __future__ import annotations

import asyncpg

from smsgw.services.processor import callbacks, engine, jobs, rules_cli
from smsgw.shared.domain import suppression

STATEMENTS = {
    **{f"engine.{k}": v for k, v in engine.STATEMENTS.items()},
    **{f"rules_cli.{k}": v for k, v in rules_cli.STATEMENTS.items()},
    **{f"callbacks.{k}": v for k, v in callbacks.STATEMENTS.items()},
    **{f"jobs.{k}": v for k, v in jobs.STATEMENTS.items()},
    "suppression.is_suppressed": suppression.IS_SUPPRESSED,
    "suppression.add_suppressions": suppression.ADD_SUPPRESSIONS,
    "suppression.remove_suppressions": suppression.REMOVE_SUPPRESSIONS,
}


async def test_every_query_prepares(pool) -> None:
    failed = {}
    async with pool.acquire() as conn:
        for name, sql in sorted(STATEMENTS.items()):
            try:
                await conn.prepare(sql)
            except asyncpg.PostgresError as exc:
                failed[name] = str(exc)
    assert failed == {}
