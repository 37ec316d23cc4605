"""The `outbound` queue's owner: every statement that writes or claims `outbound` rows and
their `outbound_part` rows.

- intake: `insert`, `insert_keyed` (the receiver's MT; the one dedupe rule);
- the sender's lease cycle (docs/ARCHITECTURE.md, guarantee 3): `claim` (with expiry,
  suppression and scheduling decided in the same statement), `hash_claimed`, `write_back`
  (message states and their `outbound_part` rows, fenced by the lease owner), `defer`,
  `release`, and `log_events` for the trace;
- receipt matching (the sender's matcher): `finalize`;
- cancelling queued messages (an operator, an ESME's cancel_sm): `cancel_queued`;
- retention: `PURGE_PARTS`.

The SQL is `sql/outbound.sql`, each statement with the comment that says why it is shaped that
way; the queue core (`shared.queue.store`) adds the generic statements every queue table
shares (enqueue for the processor's replies, retention move, requeue, lookups).

The queue's in-flight state (lanes, run_after, the lease) lives in `outbound_queue` (migration
0021: one row per queued or sending message, created by a trigger for every inserted row), so
that `outbound`'s own updates are heap-only. The claim and every fenced write-back lock and
change the queue row first, then the message; `outbound.status` stays the visible state.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final, LiteralString

import asyncpg
import orjson

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import ClaimedOutbound, MtItem, OutboundStatus, StatusChange
from smsgw.shared.queue.sql import load

_SQL: Final = load("outbound")
STATEMENTS: Final[dict[str, LiteralString]] = {f"outbound.{k}": v for k, v in _SQL.items()}
"""Statement label → SQL of every statement this module runs (the PREPARE test reads it)."""

PURGE_PARTS: Final = _SQL["purge_parts"]
"""Delete `outbound_part` rows older than $1 seconds, up to $2 rows (the retention job)."""
REQUEUE_DEAD: Final = _SQL["requeue_dead"]
"""The queue core's `requeue_dead` for outbound: dead messages back to `queued` and into
`outbound_queue` (ids $1, dead for more than $2 s, last_error LIKE $3; NULL: any)."""
CHANNEL: Final = CHANNELS["outbound"]  # the channel the senders LISTEN on

_INSERT: Final = _SQL["insert"]
_INSERT_KEYED: Final = _SQL["insert_keyed"]
_CLAIM: Final = _SQL["claim"]
_HASH_CLAIMED: Final = _SQL["hash_claimed"]
_WRITE_BACK: Final = _SQL["write_back"]
_DEFER: Final = _SQL["defer"]
_RELEASE: Final = _SQL["release"]
_LOG_EVENTS: Final = _SQL["log_events"]
_CURRENT_XID: Final = _SQL["current_xid"]
_RELEASE_UNKNOWN: Final = _SQL["release_unknown"]
_DISOWN_ORPHANS: Final = _SQL["disown_orphans"]
_FINALIZE: Final = _SQL["finalize"]
_CANCEL_QUEUED: Final = _SQL["cancel_queued"]
MAX_CANCEL_REASON: Final = 200


# -- intake -----------------------------------------------------------------------------------


async def insert(conn: asyncpg.Connection, items: Sequence[MtItem],
                 hashes: Sequence[bytes | None]) -> list[int]:
    """Insert MTs without a client_ref and wake the senders in ONE statement (autocommit: one
    round trip, durable when it returns); returns the ids in input order. `hashes[i]` is item
    i's keyed recipient hash (`to_hash`) or None."""
    rows = await conn.fetch(_INSERT, _document(items, [None] * len(items), hashes), CHANNEL)
    return [row["id"] for row in rows]


async def insert_keyed(conn: asyncpg.Connection, items: Sequence[MtItem],
                       fingerprints: Sequence[str | None], hashes: Sequence[bytes | None], *,
                       ttl_s: float) -> list[tuple[int, bool]]:
    """Insert MTs and claim their client_ref keys (scope `mt:<account_id>`, kept `ttl_s`
    seconds) in one statement; returns (id drawn, inserted) per item in order. An item is not
    inserted when its key is live (the one dedupe rule, `sql/dedupe.sql`: an expired key is
    taken over). No two items may carry the same key. Sends no NOTIFY."""
    rows = await conn.fetch(_INSERT_KEYED, _document(items, fingerprints, hashes), ttl_s)
    return [(row["id"], row["created"]) for row in rows]


def _document(items: Sequence[MtItem], fingerprints: Sequence[str | None],
              hashes: Sequence[bytes | None]) -> str:
    """The MTs as the insert statements' one JSON parameter: bytea as "\\x<hex>",
    timestamps as ISO 8601 with their offset (a naive one is UTC, as asyncpg read it).
    A key whose value is null is left out: `json_to_recordset` gives NULL for a missing key
    as for a null, and a plain MT's object is half as long (measured: 1.3 server-µs and
    0.7 Python-µs less per MT than writing every key)."""
    out = []
    for it, fp, h in zip(items, fingerprints, hashes, strict=True):
        doc: dict[str, Any] = {
            "account_id": it.account_id, "source": it.source, "from_addr": it.from_addr,
            "to_addr": it.to_addr, "category": it.category, "priority": it.priority,
            "due_now": it.due_now}
        if it.body is not None:
            doc["body"] = it.body
        if h is not None:
            doc["to_hash"] = _hex(h)
        if fp is not None:
            doc["fingerprint"] = fp
        if it.client_ref is not None:
            doc["client_ref"] = it.client_ref
        _add_optional(doc, it)
        out.append(doc)
    return orjson.dumps(out).decode()


def _add_optional(doc: dict[str, Any], it: MtItem) -> None:
    """The item's optional fields that are set (most are None for a plain MT)."""
    if it.encoding is not None:
        doc["encoding"] = it.encoding
    if it.callback_url is not None:
        doc["callback_url"] = it.callback_url
    if it.dlr_mask is not None:
        doc["dlr_mask"] = it.dlr_mask
    if it.send_at is not None:
        doc["send_at"] = _iso(it.send_at)
    if it.valid_until is not None:
        doc["valid_until"] = _iso(it.valid_until)
    if it.route_hint is not None:
        doc["route_hint"] = it.route_hint
    if it.meta is not None:
        doc["meta"] = it.meta
    if it.payload is not None:
        doc["payload"] = _hex(it.payload)
    if it.udh is not None:
        doc["udh"] = _hex(it.udh)
    if it.smpp is not None:
        doc["smpp"] = it.smpp


def _hex(value: bytes) -> str:
    return "\\x" + value.hex()


def _iso(value: datetime) -> str:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


# -- the sender's lease cycle ----------------------------------------------------------------------


async def claim(conn: asyncpg.Connection, *, owner: str, lease_s: float, limit: int,
                max_accounts: int, schedule_at_smsc: bool = False) -> list[ClaimedOutbound]:
    """Lease up to `limit` messages to `owner` for `lease_s` seconds in one statement:
    expired leases first, then transactional before marketing and round-robin across (at most
    `max_accounts`) accounts. Messages past their validity end `expired`, marketing to a
    suppressed recipient `suppressed`, future `send_at` goes back to `queued` (unless
    `schedule_at_smsc`: the caller has a connector that passes schedules to the SMSC and
    decides per connector): they come back too, with that status."""
    return [ClaimedOutbound.from_record(r)
            for r in await conn.fetch(_CLAIM, owner, lease_s, limit, max_accounts,
                                      schedule_at_smsc)]


async def hash_claimed(conn: asyncpg.Connection, *, owner: str, ids: Sequence[int],
                       hashes: Sequence[bytes]) -> list[tuple[int, OutboundStatus]]:
    """Store the recipient hashes of leased rows `ids` that had none, finishing a suppressed
    marketing MT as the claim would have; returns (id, status now) of the rows still leased."""
    return [(r["id"], OutboundStatus(r["status"]))
            for r in await conn.fetch(_HASH_CLAIMED, owner, list(ids), list(hashes))]


_MSG_KEYS: Final = ("id", "status", "error_code", "error", "delay_s", "attempts_inc",
                    "parts_total", "connector", "receipt_final", "receipt_err")
_PART_KEYS: Final = ("outbound_id", "part_no", "parts_total", "connector", "smsc_id",
                     "command_status", "status", "kannel_dlr", "receipt_status", "receipt_err",
                     "receipt_done")


async def write_back(conn: asyncpg.Connection, owner: str, *columns: list[Any]) -> list[int]:
    """Record a batch of submit outcomes in one statement, fenced by lease owner `owner`;
    returns the ids of the messages it still owned (and so updated).

    `columns` are 16 arrays — per message id, status, error_code, error, delay_s (a retry's
    backoff), attempts_inc, parts_total, connector; then per answered part outbound_id,
    part_no, parts_total, connector, smsc_id, command_status, status, kannel_dlr (whether its
    message asked for a Kannel dlr-url; None: unknown) — `outbound_part` rows; a resubmitted
    part replaces the earlier attempt's row. The sender passes documents instead
    (`write_back_docs`); this form serves the tools and tests.
    """
    msgs = [dict(zip(_MSG_KEYS, row, strict=False)) for row in zip(*columns[:8], strict=True)]
    parts = [dict(zip(_PART_KEYS, row, strict=False)) for row in zip(*columns[8:16], strict=True)]
    return await write_back_docs(conn, owner, orjson.dumps(msgs).decode(),
                                 orjson.dumps(parts).decode())


async def write_back_docs(conn: asyncpg.Connection, owner: str, msgs: str,
                          parts: str) -> list[int]:
    """`write_back` with the batch as two JSON arrays of objects: `msgs` (keys: id, status,
    error_code, error, delay_s, attempts_inc, parts_total, connector, and for a receipt that
    arrived first receipt_final, receipt_err) and `parts` (outbound_id, part_no, parts_total,
    connector, smsc_id, command_status, status, kannel_dlr; receipt_status, receipt_err,
    receipt_done); a missing key is NULL (see `write_back` in sql/outbound.sql)."""
    row = await conn.fetchrow(_WRITE_BACK, owner, msgs, parts)
    assert row is not None
    return row["owned"]  # type: ignore[no-any-return]


async def defer(conn: asyncpg.Connection, owner: str, ids: Sequence[int],
                delays_s: Sequence[float], reasons: Sequence[str | None]) -> int:
    """Give `owner`'s leased messages `ids` back to the queue until now + `delays_s[i]`,
    without counting an attempt (quiet hours, no bound connector, drain); returns how many."""
    status = await conn.execute(_DEFER, owner, list(ids), list(delays_s), list(reasons))
    return int(status.split()[-1])


async def release(conn: asyncpg.Connection, owner: str,
                  ids: Sequence[int] | None = None) -> list[int]:
    """Give back the rows still leased to `owner` (all, or `ids`): claimed, never submitted;
    returns their ids."""
    return [r["id"] for r in await conn.fetch(_RELEASE, owner,
                                              None if ids is None else list(ids))]


async def current_xid(conn: asyncpg.Connection) -> int:
    """The id of the open transaction (call inside a claim's transaction; see
    `release_unknown`)."""
    return int(await conn.fetchval(_CURRENT_XID))


async def release_unknown(conn: asyncpg.Connection, owner: str, xids: Sequence[int]) -> list[int]:
    """Give back the rows claims `xids` leased to `owner`, if those claims committed although
    their caller saw a connection error at COMMIT (a failover): never submitted, so queued
    again with no duplicate. Returns their ids (none when the claims did not commit)."""
    rows = await conn.fetch(_RELEASE_UNKNOWN, owner, [str(x % 2**32) for x in xids])
    return [r["id"] for r in rows]


async def disown_orphans(conn: asyncpg.Connection, owner: str, held: Sequence[int],
                         grace_s: float) -> list[int]:
    """Hand `owner`'s rows it no longer holds (not in `held`), leased and expired more than
    `grace_s` ago, to the claim's takeover of stale leases; returns their ids. The claim never
    takes over its own owner's leases, so without this such a row would stay `sending`."""
    rows = await conn.fetch(_DISOWN_ORPHANS, owner, list(held), grace_s)
    return [r["id"] for r in rows]


async def log_events(conn: asyncpg.Connection,
                     events: Sequence[tuple[int, str, dict[str, Any] | None]],
                     daemon: str) -> None:
    """Append (message id, event, detail) events of outbound messages in one INSERT."""
    await conn.execute(_LOG_EVENTS, [e[0] for e in events], [e[1] for e in events],
                       [e[2] for e in events], daemon)


# -- receipt matching -------------------------------------------------------------------------


async def finalize(conn: asyncpg.Connection,
                   ids: Sequence[int]) -> tuple[int, list[StatusChange]]:
    """Give messages `ids` whose every part is now final their state (all delivered →
    delivered, all expired → expired, else undeliverable), in `outbound` or, after the
    retention move, `outbound_history`; return how many changed and the changes of the
    messages that asked for a status callback (a `callback_url`; the others need no record)."""
    rows = await conn.fetch(_FINALIZE, list(ids))
    return len(rows), [StatusChange.from_record(r) for r in rows if r["callback_url"]]



# -- cancelling ------------------------------------------------------------------------------


async def cancel_queued(conn: asyncpg.Connection, account_id: int,
                        ids: Sequence[int] | None = None, *, reason: str, daemon: str,
                        to_addr: str | None = None, from_addr: str | None = None,
                        limit: int | None = None) -> list[StatusChange]:
    """Cancel account `account_id`'s queued messages in ONE statement and return their changes
    (status `cancelled`, for status callbacks); a terminal state, written with a `cancelled`
    event (`reason`, `daemon`) for `smsgw trace`.

    - `ids=None`: every queued message of the account; else only those ids (others' ids and
      ids that are not queued are ignored: they are simply not in the result).
    - `to_addr` / `from_addr`: only messages to / from that address (E.164 as stored).
    - `limit`: at most that many (in id order), for callers that cancel a large backlog in
      several transactions; None: all.

    Never cancels a message a sender has claimed (`sending`) or submitted: the statement only
    changes rows still `queued` once it holds their lock. Callers that must also queue the
    status callbacks use `shared.domain.status_callbacks.cancel_queued` (same arguments,
    one transaction)."""
    if not reason or len(reason) > MAX_CANCEL_REASON:
        raise ValueError(f"a cancel reason is 1-{MAX_CANCEL_REASON} characters")
    rows = await conn.fetch(_CANCEL_QUEUED, account_id, None if ids is None else list(ids),
                            reason, daemon, to_addr, from_addr, limit)
    return [StatusChange.from_record(r) for r in rows]
