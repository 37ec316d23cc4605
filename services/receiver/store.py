"""The receiver's MT writes (group-committed, idempotent on client_ref) and message reads.

`flush_mt` is the group committer's flush function for `POST /v1/messages` and
`/cgi-bin/sendsms`: one statement inserts every new row of the batch into `outbound` and its
idempotency key into `dedupe_keys`, then one NOTIFY wakes the senders.

Idempotency (docs/ARCHITECTURE.md, guarantee 2): an MT with a `client_ref` claims the key
(`mt:<account_id>`, client_ref) in `dedupe_keys` together with a fingerprint of its content.
The row ids are drawn from the identity sequence first, so the key and the row are written in
the same statement and the key points at its row; a row is inserted only if its key was new
(or had expired). A repeat finds the stored key: same fingerprint → the original id, different
→ a conflict (409). Keys live in `dedupe_keys`, not on `outbound`, so they keep working after
the retention move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
import orjson

from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue.listener import CHANNELS

NOTIFY_OUTBOUND = CHANNELS["outbound"]  # the channel the senders LISTEN on


class MtOutcome(StrEnum):
    """What happened to one submitted MT."""

    CREATED = "created"
    DUPLICATE = "duplicate"  # same client_ref, same content: the original id
    CONFLICT = "conflict"  # same client_ref, different content: 409


@dataclass(frozen=True, slots=True, kw_only=True)
class MtItem:
    """One validated MT ready to store (numbers already E.164)."""

    account_id: int
    source: str  # 'api' | 'sendsms'
    from_addr: str
    to_addr: str
    body: str
    category: str
    priority: int = 0
    encoding: str | None = None
    client_ref: str | None = None
    callback_url: str | None = None
    dlr_mask: int | None = None
    send_at: datetime | None = None
    valid_until: datetime | None = None
    route_hint: str | None = None
    meta: dict[str, Any] | None = None
    validity_s: int | None = None  # as requested (valid_until is computed from "now")

    def fingerprint(self) -> str:
        """Content hash telling a retry (same content) from a reused client_ref.

        Made of what the client sent (normalised), never of values computed at intake: a retry
        a minute later has a later `valid_until` but the same `validity_s`.
        """
        content = (self.from_addr, self.to_addr, self.body, self.category, self.priority,
                   self.encoding, self.callback_url, self.dlr_mask,
                   self.send_at.isoformat() if self.send_at else None, self.validity_s,
                   self.route_hint)
        return hashlib.sha256(orjson.dumps(content)).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class MtResult:
    """The stored (or original) id of one MT and what happened."""

    id: int
    outcome: MtOutcome


# insert_mt_batch: insert a batch of MTs and their client_ref keys in one statement.
# Returns, per input position, the id drawn for it and whether its row was inserted.
INSERT_MT_BATCH = """
WITH input AS (
    -- one row per MT, in caller order
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::smallint[], $8::text[], $9::text[], $10::text[],
                         $11::smallint[], $12::timestamptz[], $13::timestamptz[], $14::text[],
                         $15::text[], $16::text[], $18::bytea[])
        WITH ORDINALITY AS t(account_id, source, from_addr, to_addr, body, category, priority,
                             encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                             route_hint, meta, fingerprint, to_hash, ord)
), numbered AS MATERIALIZED (
    -- draw the row ids first so the dedupe key can point at its row in the same statement
    SELECT nextval('outbound_id_seq') AS id, input.* FROM input
), keys AS (
    -- claim each client_ref; an expired key may be taken over, a live one is left alone
    INSERT INTO dedupe_keys (scope, key, target_table, target_id, fingerprint, expires_at)
    SELECT 'mt:' || account_id, client_ref, 'outbound', id, fingerprint,
           now() + make_interval(secs => $17)
      FROM numbered WHERE client_ref IS NOT NULL
    ON CONFLICT (scope, key) DO UPDATE
       SET target_table = EXCLUDED.target_table, target_id = EXCLUDED.target_id,
           fingerprint = EXCLUDED.fingerprint, created_at = now(),
           expires_at = EXCLUDED.expires_at
     WHERE dedupe_keys.expires_at <= now()
    RETURNING target_id
), ins AS (
    -- rows without a key, and rows whose key was claimed just now
    INSERT INTO outbound (id, account_id, source, from_addr, to_addr, body, category, priority,
                          encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                          route_hint, meta, run_after, to_hash)
    OVERRIDING SYSTEM VALUE
    SELECT id, account_id, source, from_addr, to_addr, body, category, priority, encoding,
           client_ref, callback_url, dlr_mask, send_at, valid_until, route_hint, meta::jsonb,
           coalesce(send_at, now()), to_hash
      FROM numbered
     WHERE client_ref IS NULL OR id IN (SELECT target_id FROM keys)
    RETURNING id
)
SELECT n.ord, n.id, (i.id IS NOT NULL) AS created
  FROM numbered n LEFT JOIN ins i ON i.id = n.id
 ORDER BY n.ord
"""

# insert_mt_plain: insert MTs without a client_ref and wake the senders, in ONE statement
# (autocommit: one round trip, durable when it returns). RETURNING yields the rows in the
# order the SELECT produced them (a plain insert from unnest), which is the input order.
INSERT_MT_PLAIN = """
WITH ins AS (
    -- the rows, in input order
    INSERT INTO outbound (account_id, source, from_addr, to_addr, body, category, priority,
                          encoding, callback_url, dlr_mask, send_at, valid_until, route_hint,
                          meta, run_after, to_hash)
    SELECT account_id, source, from_addr, to_addr, body, category, priority, encoding,
           callback_url, dlr_mask, send_at, valid_until, route_hint, meta::jsonb,
           coalesce(send_at, now()), to_hash
      FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::smallint[], $8::text[], $9::text[], $10::text[], $11::smallint[],
                  $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[],
                  $16::text[], $18::bytea[])
               AS t(account_id, source, from_addr, to_addr, body, category, priority,
                    encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                    route_hint, meta, fingerprint, to_hash)
    RETURNING id
)
-- one NOTIFY for the statement (delivered at commit)
SELECT ins.id FROM ins CROSS JOIN (SELECT pg_notify($17, '')) AS wake
"""

# find_dedupe_targets: the stored row id and fingerprint of each (scope, key).
FIND_DEDUPE_TARGETS = """
SELECT d.scope, d.key, d.target_id, d.fingerprint
  FROM dedupe_keys d
  JOIN unnest($1::text[], $2::text[]) AS u(scope, key) ON d.scope = u.scope AND d.key = u.key
"""

# notify: one wake-up per transaction for the table's consumers.
NOTIFY = "SELECT pg_notify($1, '')"


async def flush_mt(conn: asyncpg.Connection, items: Sequence[MtItem], *,
                   ttl_s: float, hasher: NumberHasher | None = None) -> list[MtResult]:
    """Group-commit flush: store the batch's new MTs; resolve repeats of a client_ref.

    A batch without client_refs is one autocommitted statement (insert + NOTIFY: one round
    trip). Otherwise it runs in one transaction; within it only the first item with a given
    client_ref is inserted, later ones are answered from the first (ON CONFLICT cannot touch
    the same key twice in one statement).
    Each row carries `to_hash`, its recipient's keyed hash (`hasher`; NULL without one, and
    the sender then hashes it at its claim), for the sender's suppression check.
    """
    if all(it.client_ref is None for it in items):
        rows = await conn.fetch(INSERT_MT_PLAIN, *_columns(items, [None] * len(items)),
                                NOTIFY_OUTBOUND, _hashes(items, hasher))
        return [MtResult(row["id"], MtOutcome.CREATED) for row in rows]
    async with conn.transaction():
        return await _flush_mt_keyed(conn, items, ttl_s, hasher)


def _hashes(items: Sequence[MtItem], hasher: NumberHasher | None) -> list[bytes | None]:
    return [hasher(it.to_addr) if hasher is not None else None for it in items]


async def _flush_mt_keyed(conn: asyncpg.Connection, items: Sequence[MtItem],
                          ttl_s: float, hasher: NumberHasher | None) -> list[MtResult]:
    results: list[MtResult | None] = [None] * len(items)
    plain = [i for i, it in enumerate(items) if it.client_ref is None]
    if plain:
        rows = await conn.fetch(INSERT_MT_PLAIN, *_columns([items[i] for i in plain],
                                                           [None] * len(plain)),
                                NOTIFY_OUTBOUND, _hashes([items[i] for i in plain], hasher))
        for pos, row in zip(plain, rows, strict=True):
            results[pos] = MtResult(row["id"], MtOutcome.CREATED)
    firsts: dict[tuple[int, str], int] = {}
    leaders: list[int] = []
    for i, item in enumerate(items):
        if item.client_ref is not None and (item.account_id, item.client_ref) not in firsts:
            firsts[(item.account_id, item.client_ref)] = i
            leaders.append(i)
    fingerprints = [it.fingerprint() if it.client_ref is not None else None for it in items]
    repeats: list[int] = []
    if leaders:
        rows = await conn.fetch(INSERT_MT_BATCH, *_columns([items[i] for i in leaders],
                                                           [fingerprints[i] for i in leaders]),
                                ttl_s, _hashes([items[i] for i in leaders], hasher))
        for pos, row in zip(leaders, rows, strict=True):
            if row["created"]:
                results[pos] = MtResult(row["id"], MtOutcome.CREATED)
            else:
                repeats.append(pos)
    if any(r is not None for r in results) and not plain:
        await conn.execute(NOTIFY, NOTIFY_OUTBOUND)
    stored = await _stored_keys(conn, items, repeats)
    return _resolve_repeats(items, fingerprints, results, firsts, stored)


async def _stored_keys(conn: asyncpg.Connection, items: Sequence[MtItem],
                       positions: list[int]) -> dict[tuple[str, str], tuple[int, str | None]]:
    if not positions:
        return {}
    # A second statement: in READ COMMITTED it sees keys committed by concurrent batches
    # that our INSERT waited for (ON CONFLICT waits, but its own snapshot predates them).
    scopes = [f"mt:{items[p].account_id}" for p in positions]
    keys = [items[p].client_ref or "" for p in positions]
    rows = await conn.fetch(FIND_DEDUPE_TARGETS, scopes, keys)
    return {(r["scope"], r["key"]): (r["target_id"], r["fingerprint"]) for r in rows}


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
