"""The receiver's MT writes (group-committed, idempotent on client_ref) and message reads.

`flush_mt` is the group committer's flush function for `POST /v1/messages` and
`/cgi-bin/sendsms`: one statement inserts every new row of the batch into `outbound` and its
idempotency key into `dedupe_keys`, then one NOTIFY wakes the senders. The statements are the
`outbound` owner's (`shared.queue.outbound` `insert`, `insert_keyed`).

Idempotency (docs/ARCHITECTURE.md, guarantee 2): an MT with a `client_ref` claims the key
(`mt:<account_id>`, client_ref) in `dedupe_keys` together with a fingerprint of its content.
The row ids are drawn from the identity sequence first, so the key and the row are written in
the same statement and the key points at its row; a row is inserted only if its key was new
or had expired (the one dedupe rule, `shared/queue/sql/dedupe.sql`). A repeat finds the stored
key: same fingerprint → the original id, different → a conflict (409). Keys live in
`dedupe_keys`, not on `outbound`, so they keep working after the retention move.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import outbound, store
from smsgw.shared.queue.records import DedupeKey, MtItem

__all__ = ["MtItem", "MtOutcome", "MtResult", "find_message", "flush_mt"]


class MtOutcome(StrEnum):
    """What happened to one submitted MT."""

    CREATED = "created"
    DUPLICATE = "duplicate"  # same client_ref, same content: the original id
    CONFLICT = "conflict"  # same client_ref, different content: 409


@dataclass(frozen=True, slots=True)
class MtResult:
    """The stored (or original) id of one MT and what happened."""

    id: int
    outcome: MtOutcome


async def flush_mt(conn: asyncpg.Connection, items: Sequence[MtItem], *,
                   ttl_s: float, hasher: NumberHasher | None = None) -> list[MtResult]:
    """Group-commit flush: store the batch's new MTs; resolve repeats of a client_ref.

    A batch without client_refs is one autocommitted statement (insert + NOTIFY: one round
    trip). Otherwise it runs in one transaction; within it only the first item with a given
    client_ref is inserted, later ones are answered from the first (ON CONFLICT cannot touch
    the same key twice in one statement).
    A marketing row carries `to_hash`, its recipient's keyed hash (`hasher`; NULL without one,
    and the sender then hashes it at its claim), for the sender's suppression check; a
    transactional one, which that check skips, stores NULL.
    """
    if all(it.client_ref is None for it in items):
        ids = await outbound.insert(conn, items, _hashes(items, hasher))
        return [MtResult(i, MtOutcome.CREATED) for i in ids]
    async with conn.transaction():
        return await _flush_mt_keyed(conn, items, ttl_s, hasher)


def _hashes(items: Sequence[MtItem], hasher: NumberHasher | None) -> list[bytes | None]:
    # Only marketing is checked against the suppressions (the claim), so only a marketing MT
    # needs its recipient's hash: a transactional one skips the HMAC (~1.5 µs) and stores NULL.
    if hasher is None:
        return [None] * len(items)
    return [hasher(it.to_addr) if it.category == "marketing" else None for it in items]


async def _flush_mt_keyed(conn: asyncpg.Connection, items: Sequence[MtItem],
                          ttl_s: float, hasher: NumberHasher | None) -> list[MtResult]:
    results: list[MtResult | None] = [None] * len(items)
    plain = [i for i, it in enumerate(items) if it.client_ref is None]
    if plain:
        plain_items = [items[i] for i in plain]
        ids = await outbound.insert(conn, plain_items, _hashes(plain_items, hasher))
        for pos, mid in zip(plain, ids, strict=True):
            results[pos] = MtResult(mid, MtOutcome.CREATED)
    firsts: dict[tuple[int, str], int] = {}
    leaders: list[int] = []
    for i, item in enumerate(items):
        if item.client_ref is not None and (item.account_id, item.client_ref) not in firsts:
            firsts[(item.account_id, item.client_ref)] = i
            leaders.append(i)
    fingerprints = [it.fingerprint() if it.client_ref is not None else None for it in items]
    repeats: list[int] = []
    if leaders:
        lead_items = [items[i] for i in leaders]
        rows = await outbound.insert_keyed(conn, lead_items, [fingerprints[i] for i in leaders],
                                           _hashes(lead_items, hasher), ttl_s=ttl_s)
        for pos, (mid, created) in zip(leaders, rows, strict=True):
            if created:
                results[pos] = MtResult(mid, MtOutcome.CREATED)
            else:
                repeats.append(pos)
    if any(r is not None for r in results) and not plain:
        await store.notify(conn, outbound.CHANNEL)
    stored = await _stored_keys(conn, items, repeats)
    return _resolve_repeats(items, fingerprints, results, firsts, stored)


async def _stored_keys(conn: asyncpg.Connection, items: Sequence[MtItem],
                       positions: list[int]) -> dict[tuple[str, str], tuple[int, str | None]]:
    if not positions:
        return {}
    # A second statement: in READ COMMITTED it sees keys committed by concurrent batches
    # that our INSERT waited for (ON CONFLICT waits, but its own snapshot predates them).
    return await store.read_dedupe_keys(conn, [
        DedupeKey(scope=f"mt:{items[p].account_id}", key=items[p].client_ref or "")
        for p in positions])


def _resolve_repeats(items: Sequence[MtItem], fingerprints: list[str | None],
                     results: list[MtResult | None], firsts: dict[tuple[int, str], int],
                     stored: dict[tuple[str, str], tuple[int, str | None]]) -> list[MtResult]:
    out: list[MtResult] = []
    for i, item in enumerate(items):
        res = results[i]
        if res is None:
            assert item.client_ref is not None
            lead = firsts[(item.account_id, item.client_ref)]
            if lead != i and results[lead] is not None:
                target_id, target_fp = results[lead].id, fingerprints[lead]  # type: ignore[union-attr]
            else:
                target_id, target_fp = stored[(f"mt:{item.account_id}", item.client_ref)]
            outcome = MtOutcome.DUPLICATE if target_fp == fingerprints[i] else MtOutcome.CONFLICT
            res = MtResult(target_id, outcome)
            results[i] = res
        out.append(res)
    return out


# -- reads -----------------------------------------------------------------------------------

# find_account_message: one account's MT by id, from the hot table or, after the retention
# move, from history.
FIND_ACCOUNT_MESSAGE = """
SELECT id, account_id, source, from_addr, to_addr, category, priority, encoding, parts_total,
       connector, client_ref, status, error_code, last_error, attempts, send_at, valid_until,
       submitted_at, done_at, created_at, updated_at
  FROM outbound WHERE id = $1 AND account_id = $2
UNION ALL
SELECT id, account_id, source, from_addr, to_addr, category, priority, encoding, parts_total,
       connector, client_ref, status, error_code, last_error, attempts, send_at, valid_until,
       submitted_at, done_at, created_at, updated_at
  FROM outbound_history WHERE id = $1 AND account_id = $2
LIMIT 1
"""

# list_message_parts: the submitted parts of one MT, in part order.
LIST_MESSAGE_PARTS = """
SELECT id, part_no, parts_total, connector, smsc_id, status, command_status, err,
       submitted_at, done_at
  FROM outbound_part WHERE outbound_id = $1 ORDER BY part_no, id
"""

# list_part_receipts: the receipts matched to the given parts (hot and history), oldest first.
LIST_PART_RECEIPTS = """
SELECT outbound_part_id, stat, state, final, err, done_date, created_at
  FROM receipts WHERE outbound_part_id = ANY($1::bigint[])
UNION ALL
SELECT outbound_part_id, stat, state, final, err, done_date, created_at
  FROM receipts_history WHERE outbound_part_id = ANY($1::bigint[])
ORDER BY created_at
"""

STATEMENTS: dict[str, str] = {"find_account_message": FIND_ACCOUNT_MESSAGE,
                              "list_message_parts": LIST_MESSAGE_PARTS,
                              "list_part_receipts": LIST_PART_RECEIPTS}
"""Statement label → SQL of the reads above (the PREPARE test reads it)."""


async def find_message(pool: asyncpg.Pool, account_id: int,
                       message_id: int) -> dict[str, Any] | None:
    """The account's MT with its parts and receipts, as the API shows it; None if not theirs."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(FIND_ACCOUNT_MESSAGE, message_id, account_id)
        if row is None:
            return None
        parts = await conn.fetch(LIST_MESSAGE_PARTS, message_id)
        receipts = await conn.fetch(LIST_PART_RECEIPTS, [p["id"] for p in parts]) if parts else []
    part_no = {p["id"]: p["part_no"] for p in parts}
    return {
        "id": row["id"], "status": row["status"], "to": row["to_addr"],
        "from": row["from_addr"], "category": row["category"], "priority": row["priority"],
        "encoding": row["encoding"], "client_ref": row["client_ref"],
        "parts_total": row["parts_total"], "connector": row["connector"],
        "error_code": row["error_code"], "error": row["last_error"],
        "attempts": row["attempts"], "send_at": _iso(row["send_at"]),
        "valid_until": _iso(row["valid_until"]), "submitted_at": _iso(row["submitted_at"]),
        "done_at": _iso(row["done_at"]), "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "parts": [{"part_no": p["part_no"], "parts_total": p["parts_total"],
                   "status": p["status"], "connector": p["connector"], "smsc_id": p["smsc_id"],
                   "command_status": p["command_status"], "err": p["err"],
                   "submitted_at": _iso(p["submitted_at"]), "done_at": _iso(p["done_at"])}
                  for p in parts],
        "receipts": [{"part_no": part_no.get(r["outbound_part_id"]), "stat": r["stat"],
                      "state": r["state"], "final": r["final"], "err": r["err"],
                      "done_date": _iso(r["done_date"]), "received_at": _iso(r["created_at"])}
                     for r in receipts],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
