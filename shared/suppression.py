"""Suppression lists (opt-outs): check, add and remove, each change written to `audit_log`.

A suppression is keyed by `number_hash = sha256(number in E.164, UTF-8)` and a scope: 'global'
or a short code. The hash is what every lookup uses, so erasing a number (setting `number` to
NULL) keeps it suppressed. `evidence` (number, short code, text, time of the opt-out) is kept
with the entry — longer than message bodies, which the retention job blanks — and is copied into
the audit log when the entry is removed, so the proof of an opt-out outlives an opt-in.

Every function takes a connection and runs one statement, so the caller composes it into its
own transaction (the processor applies STOP/START inside its batch transaction); each add or
remove and its audit rows are one statement, hence atomic even outside a transaction.
Numbers must be normalised to E.164 first (`shared.numbers.normalise`), or a STOP from a
national number never suppresses the international one (DESIGN.md, guarantee 8).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg

GLOBAL: Final = "global"

IS_SUPPRESSED: Final = """
-- is_suppressed: which of the numbers $1 are suppressed in any of the scopes $2
SELECT u.number
  FROM unnest($1::text[]) AS u(number)
 WHERE EXISTS (SELECT 1 FROM suppressions s
                WHERE s.number_hash = sha256(convert_to(u.number, 'UTF8'))
                  AND s.scope = ANY($2::text[]))
"""

ADD_SUPPRESSIONS: Final = """
-- add_suppressions: upsert entries (number, scope, source, evidence) and audit each one.
-- ins: the upsert; an existing entry keeps its created_at and takes the newest evidence.
WITH ins AS (
    INSERT INTO suppressions AS s (number_hash, number, scope, source, evidence)
    SELECT sha256(convert_to(u.number, 'UTF8')), u.number, u.scope, u.source, u.evidence
      FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[])
           AS u(number, scope, source, evidence)
    ON CONFLICT (number_hash, scope) DO UPDATE
       SET number = EXCLUDED.number, source = EXCLUDED.source, evidence = EXCLUDED.evidence
    RETURNING s.number_hash, s.scope, s.source, s.evidence, (s.xmax = 0) AS created)
INSERT INTO audit_log (actor, action, object_type, object_id, detail)
SELECT $5, 'suppression_add', 'suppression', encode(number_hash, 'hex') || ':' || scope,
       jsonb_build_object('scope', scope, 'source', source, 'new', created,
                          'evidence', evidence - 'number')
  FROM ins
RETURNING object_id
"""

REMOVE_SUPPRESSIONS: Final = """
-- remove_suppressions: delete (number, scope) entries and audit each deleted one, keeping the
-- removed entry's evidence and the reason for the removal in the audit row.
-- del: the deleted entries (only those that existed produce audit rows).
WITH del AS (
    DELETE FROM suppressions s
     USING unnest($1::text[], $2::text[], $3::jsonb[]) AS u(number, scope, reason)
     WHERE s.number_hash = sha256(convert_to(u.number, 'UTF8')) AND s.scope = u.scope
    RETURNING s.number_hash, s.scope, s.source, s.evidence, s.created_at, u.reason)
INSERT INTO audit_log (actor, action, object_type, object_id, detail)
SELECT $4, 'suppression_remove', 'suppression', encode(number_hash, 'hex') || ':' || scope,
       jsonb_build_object('scope', scope, 'source', source, 'since', created_at,
                          'evidence', evidence - 'number', 'reason', reason - 'number')
  FROM del
RETURNING object_id
"""


def number_hash(number: str) -> bytes:
    """sha256 of the E.164 number as UTF-8: the key of `suppressions` (as Postgres computes it)."""
    return hashlib.sha256(number.encode("utf-8")).digest()


@dataclass(frozen=True, slots=True, kw_only=True)
class SuppressionChange:
    """One entry to add or remove: number (E.164), scope, and why (evidence / reason)."""

    number: str
    scope: str = GLOBAL
    source: str = "cli"
    evidence: Mapping[str, Any] = field(default_factory=dict)


def _scopes(scope: str | None) -> list[str]:
    return [GLOBAL] if scope in (None, GLOBAL) else [GLOBAL, str(scope)]


async def is_suppressed(conn: asyncpg.Connection | asyncpg.Pool, numbers: Iterable[str],
                        scope: str | None = None) -> set[str]:
    """The subset of `numbers` that is suppressed globally or in `scope` (a short code).

    `scope` None or 'global' checks the global list only. One query for the whole batch.
    """
    wanted = list(dict.fromkeys(numbers))
    if not wanted:
        return set()
    rows = await conn.fetch(IS_SUPPRESSED, wanted, _scopes(scope))
    return {r["number"] for r in rows}


def _last_per_key(changes: Sequence[SuppressionChange]) -> list[SuppressionChange]:
    # ON CONFLICT DO UPDATE may not touch a row twice in one statement: keep the last per key.
    return list({(c.number, c.scope): c for c in changes}.values())


async def add_suppressions(conn: asyncpg.Connection | asyncpg.Pool,
                           changes: Sequence[SuppressionChange], *, actor: str) -> int:
    """Add (or refresh) suppression entries and write one audit row each; return how many."""
    items = _last_per_key(changes)
    if not items:
        return 0
    rows = await conn.fetch(
        ADD_SUPPRESSIONS, [c.number for c in items], [c.scope for c in items],
        [c.source for c in items], [{"number": c.number, **c.evidence} for c in items], actor)
    return len(rows)


async def remove_suppressions(conn: asyncpg.Connection | asyncpg.Pool,
                              changes: Sequence[SuppressionChange], *, actor: str) -> int:
    """Remove suppression entries (those that exist), auditing each; return how many went."""
    items = _last_per_key(changes)
    if not items:
        return 0
    rows = await conn.fetch(
        REMOVE_SUPPRESSIONS, [c.number for c in items], [c.scope for c in items],
        [{"source": c.source, **c.evidence} for c in items], actor)
    return len(rows)


async def add_suppression(conn: asyncpg.Connection | asyncpg.Pool, number: str, *,
                          scope: str = GLOBAL, source: str = "cli",
                          evidence: Mapping[str, Any] | None = None, actor: str = "cli") -> bool:
    """Suppress one number in `scope` (audited); True when an entry was written."""
    change = SuppressionChange(number=number, scope=scope, source=source,
                               evidence=dict(evidence or {}))
    return await add_suppressions(conn, [change], actor=actor) == 1


async def remove_suppression(conn: asyncpg.Connection | asyncpg.Pool, number: str, *,
                             scope: str = GLOBAL, source: str = "cli",
                             reason: Mapping[str, Any] | None = None,
                             actor: str = "cli") -> bool:
    """Remove one number's entry in `scope` (audited); True when there was one."""
    change = SuppressionChange(number=number, scope=scope, source=source,
                               evidence=dict(reason or {}))
    return await remove_suppressions(conn, [change], actor=actor) == 1
