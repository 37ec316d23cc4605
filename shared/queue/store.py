"""The queue core: one typed async function per named query of `sql/queue.sql`.

Every function takes `conn`: an asyncpg `Connection` or `Pool`. Functions whose work must be part
of the caller's transaction (`claim_tx`, and write-backs in transaction mode) need the
`Connection` that holds it. Queue tables are whitelisted identifiers (`QUEUE_TABLES`); anything a
caller passes as data travels as a `$n` parameter.

Claim modes (docs/ARCHITECTURE.md, guarantee 3):

- transaction mode, `claim_tx`: `FOR UPDATE SKIP LOCKED` inside the caller's transaction; the
  caller writes its results and `ack`s/`retry`s in the same transaction; a crash rolls back.
- leases, `claim_leased`: one statement sets `status='sending'`, `lease_owner`, `lease_until`;
  every write-back given `owner=` checks `lease_owner = owner`, so a late write-back from a
  worker whose lease was taken over changes nothing (the functions return what they changed).

Attempts count failed tries: `retry` adds one, a lease reclaim adds one (the lost try), a
`release` adds none.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, LiteralString, TypeAlias

import asyncpg

from smsgw.shared.core import db
from smsgw.shared.queue import mo_parts, outbound
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import (
    Callback,
    CallbackStatus,
    DedupeKey,
    EnqueueResult,
    Event,
    InboundMessage,
    InboundStatus,
    MoPart,
    MoPartStatus,
    OutboundMessage,
    OutboundStatus,
    QueueStat,
    Receipt,
    ReceiptStatus,
)
from smsgw.shared.queue.retention import RetentionSettings
from smsgw.shared.queue.sql import load

_SQL: Final = load("queue")  # the core's statements (templates still hold {placeholders})

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool
Record: TypeAlias = InboundMessage | OutboundMessage | Receipt | Callback | MoPart

QUEUE_TABLES: Final = ("inbound", "outbound", "receipts", "callbacks", "mo_parts")
HISTORY_TABLES: Final = {t: f"{t}_history" for t in ("inbound", "outbound", "receipts",
                                                     "callbacks")}
# The generic claims and write-backs serve every queue table but `outbound`, whose queue state
# lives in `outbound_queue` (migration 0021) and which only its owner's statements
# (`shared.queue.outbound`) claim and write back; the generic enqueue, requeue and retention
# serve it too (a trigger queues every inserted row).
CLAIM_TABLES: Final = tuple(t for t in QUEUE_TABLES if t != "outbound")
LEASE_TABLES: Final = ("callbacks",)
RETENTION_LOCK_KEY: Final = 0x736D7367_0010  # 'smsg' + 0x10: the retention job's advisory lock
STATS_LOCK_KEY: Final = 0x736D7367_0011      # 'smsg' + 0x11: the queue_stats refresh's lock


@dataclass(frozen=True, slots=True)
class _Table:
    """What the queries need to know about one queue table (constants, never caller input)."""

    name: str
    record: type[Any]
    statuses: frozenset[str]
    pending: tuple[str, ...]       # not finished: claimable or in flight (head-of-line blocks)
    terminal: tuple[str, ...]      # final states; write-backs never leave them
    ok: str                        # ack's default status
    order: str                     # claim order, matching the table's claim index
    columns: Mapping[str, tuple[str, str | None]]  # insertable column → (type, default SQL)
    body: tuple[str, ...] = ()     # columns dropped by body retention


_QUEUE_COLS: Final = {
    "status": ("text", "'queued'"), "attempts": ("int4", "0"),
    "run_after": ("timestamptz", "now()"),
    "last_error": ("text", None), "created_at": ("timestamptz", "now()"),
}

TABLES: Final[Mapping[str, _Table]] = {
    "inbound": _Table(
        "inbound", InboundMessage, frozenset(InboundStatus), (InboundStatus.QUEUED,),
        (InboundStatus.DONE, InboundStatus.FAILED, InboundStatus.DEAD), InboundStatus.DONE,
        "m.id",
        {"channel": ("text", None), "provider": ("text", None), "connector": ("text", None),
         "from_addr": ("text", None), "to_addr": ("text", None), "body": ("text", None),
         "raw": ("bytea", None), "data_coding": ("int2", None),
         "provider_message_id": ("text", None), "meta": ("jsonb", None), **_QUEUE_COLS},
        ("body", "raw")),
    "outbound": _Table(
        "outbound", OutboundMessage, frozenset(OutboundStatus),
        (OutboundStatus.QUEUED, OutboundStatus.SENDING),
        (OutboundStatus.DELIVERED, OutboundStatus.UNDELIVERABLE, OutboundStatus.EXPIRED,
         OutboundStatus.REJECTED, OutboundStatus.SUPPRESSED, OutboundStatus.SUBMIT_UNKNOWN,
         OutboundStatus.DEAD, OutboundStatus.CANCELLED), OutboundStatus.SUBMITTED,
        "m.priority DESC, m.id",
        {"account_id": ("int8", None), "source": ("text", "'api'"), "from_addr": ("text", None),
         "to_addr": ("text", None), "body": ("text", None),
         "category": ("text", "'transactional'"), "priority": ("int2", "0"),
         "encoding": ("text", None), "parts_total": ("int2", None), "connector": ("text", None),
         "route_hint": ("text", None), "client_ref": ("text", None),
         "callback_url": ("text", None), "dlr_mask": ("int2", None),
         "send_at": ("timestamptz", None), "valid_until": ("timestamptz", None),
         "inbound_id": ("int8", None), "rule_id": ("int8", None), "meta": ("jsonb", None),
         "to_hash": ("bytea", None), "payload": ("bytea", None), "udh": ("bytea", None),
         "smpp": ("jsonb", None), **_QUEUE_COLS},
        ("body",)),
    "receipts": _Table(
        "receipts", Receipt, frozenset(ReceiptStatus), (ReceiptStatus.QUEUED,),
        (ReceiptStatus.MATCHED, ReceiptStatus.ORPHAN), ReceiptStatus.MATCHED, "m.run_after, m.id",
        {"connector": ("text", None), "smsc_id": ("text", None), "raw_id": ("text", None),
         "stat": ("text", None), "state": ("text", None), "final": ("bool", "true"),
         "err": ("text", None), "done_date": ("timestamptz", None), "body": ("text", None),
         "outbound_part_id": ("int8", None), **_QUEUE_COLS}),
    "callbacks": _Table(
        "callbacks", Callback, frozenset(CallbackStatus),
        (CallbackStatus.QUEUED, CallbackStatus.SENDING), (CallbackStatus.DONE, CallbackStatus.DEAD),
        CallbackStatus.DONE, "m.run_after, m.id",
        {"kind": ("text", None), "account_id": ("int8", None), "outbound_id": ("int8", None),
         "inbound_id": ("int8", None), "url": ("text", None), "method": ("text", "'POST'"),
         "body": ("bytea", None), "headers": ("jsonb", None), "secret_ref": ("text", None),
         "batch_max": ("int2", None), "reply": ("jsonb", None), **_QUEUE_COLS},
        ("body",)),
    "mo_parts": _Table(
        "mo_parts", MoPart, frozenset(MoPartStatus), (MoPartStatus.QUEUED,),
        (MoPartStatus.DONE, MoPartStatus.FAILED), MoPartStatus.DONE, "m.id",
        {"connector": ("text", None), "from_addr": ("text", None), "to_addr": ("text", None),
         "ref": ("int4", None), "total": ("int2", None), "seq": ("int2", None),
         "body": ("text", None), "raw": ("bytea", None), "data_coding": ("int2", None),
         "inbound_id": ("int8", None), "meta": ("jsonb", None), **_QUEUE_COLS}),
}

# Head-of-line keys a claim may use, per table (identifiers, whitelisted).
HOL_COLUMNS: Final = {
    "inbound": ("from_addr", "to_addr"), "outbound": ("to_addr", "from_addr", "account_id"),
    "receipts": ("smsc_id",), "callbacks": ("url", "outbound_id", "inbound_id"),
    "mo_parts": ("from_addr",),
}


def _table(table: str, allowed: Sequence[str] = QUEUE_TABLES) -> _Table:
    if table not in allowed:
        raise ValueError(f"not a queue table here: {table!r} (one of {', '.join(allowed)})")
    return TABLES[table]


def _sql_list(values: Sequence[str]) -> str:
    # Constant status names from the StrEnums above: safe to inline.
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def _stamp(table: str, status_expr: str) -> str:
    # outbound keeps when it was submitted and when it ended.
    if table != "outbound":
        return ""
    term = _sql_list(TABLES["outbound"].terminal)
    return (f", submitted_at = CASE WHEN {status_expr} = 'submitted' THEN now() "
            f"ELSE submitted_at END, done_at = CASE WHEN {status_expr} IN {term} "
            f"THEN now() ELSE done_at END")


@lru_cache(maxsize=512)
def _q(name: str, table: str = "", variant: str = "") -> LiteralString:
    """The SQL of query `name` for `table` (and a variant, e.g. the head-of-line column)."""
    sql = _SQL[name]
    if not table:
        return sql
    spec = TABLES[table]
    hol = ""
    if variant and name == "claim_tx":
        hol = (f"AND NOT EXISTS (SELECT 1 FROM {table} e WHERE e.{variant} = m.{variant} "
               f"AND e.status IN {_sql_list(spec.pending)} AND e.id < m.id)")
    body_null = ", ".join(f"{c} = NULL" for c in spec.body) or "body = body"
    body_kept = "(" + " OR ".join(f"{c} IS NOT NULL" for c in spec.body) + ")" if spec.body \
        else "false"
    return sql.format(  # type: ignore[return-value]
        t=table, h=HISTORY_TABLES.get(table, ""), order=spec.order.replace("m.", "")
        if name in ("claim_leased", "claim_leased_reclaim") else spec.order, hol=hol,
        pending=_sql_list(spec.pending), terminal=_sql_list(spec.terminal),
        done=_sql_list([s for s in spec.terminal if s != "dead"]),
        stamp=_stamp(table, "$2::text"), stamp_u=_stamp(table, "u.status"),
        body_null=body_null, body_kept=body_kept)


def _count(status: str) -> int:
    # asyncpg's execute() returns the command tag, e.g. "UPDATE 3".
    return int(status.rsplit(" ", 1)[-1])


# -- enqueue -----------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _enqueue_sql(table: str, cols: tuple[str, ...], dedupe: bool) -> LiteralString:
    spec = TABLES[table]
    first = 6 if dedupe else 2
    unnest = ", ".join(f"${first + i}::{spec.columns[c][0]}[]" for i, c in enumerate(cols))
    exprs = ", ".join(
        f"coalesce(src.{c}, {spec.columns[c][1]})" if spec.columns[c][1] else f"src.{c}"
        for c in cols)
    sql = _SQL["enqueue_dedupe" if dedupe else "enqueue"]
    return sql.format(t=table, unnest=unnest, ucols=", ".join(cols), cols=", ".join(cols),
                      exprs=exprs)  # type: ignore[return-value]


def _columns(spec: _Table, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for row in rows:
        for c in row:
            seen.setdefault(c, None)
    unknown = [c for c in seen if c not in spec.columns]
    if unknown:
        raise ValueError(f"{spec.name}: unknown or non-insertable columns {unknown}")
    return tuple(seen)


async def enqueue(conn: Conn, table: str, rows: Sequence[Mapping[str, Any]], *,
                  dedupe: Sequence[DedupeKey | None] | None = None,
                  notify: bool = True) -> list[EnqueueResult]:
    """Insert `rows` into queue `table` in ONE statement; return one result per row, in order.

    `rows` map column names to values (columns left out, or None where the column has a
    default, get the default). `dedupe[i]` is row i's idempotency key or None: a row whose key
    is already stored — earlier, in this batch, or by a concurrent transaction — is not inserted
    and its result carries the original id with `duplicate=True` and `fingerprint_match`. Safe
    under concurrent enqueues of one key: exactly one row, no unique violation.
    `notify` sends one NOTIFY on the table's channel (delivered at commit), only when a row was
    inserted. Pass the transaction's Connection to make the rows part of it.
    """
    if not rows:
        return []
    spec = _table(table)
    cols = _columns(spec, rows)
    arrays = [[row.get(c) for row in rows] for c in cols]
    channel = CHANNELS[table] if notify and table in CHANNELS else None
    if dedupe is None or not any(dedupe):
        rec = await conn.fetchrow(_enqueue_sql(table, cols, False), channel, *arrays)
        assert rec is not None
        return [EnqueueResult(index=i, id=rid, duplicate=False, fingerprint_match=None)
                for i, rid in enumerate(rec["ids"])]
    if len(dedupe) != len(rows):
        raise ValueError("dedupe must have one entry (or None) per row")
    keys = [_key_arrays(k) for k in dedupe]
    recs = await conn.fetch(_enqueue_sql(table, cols, True), channel,
                            *[list(a) for a in zip(*keys, strict=True)], *arrays)
    return await _dedupe_results(conn, recs, dedupe)


def _key_arrays(k: DedupeKey | None) -> tuple[str | None, str | None, str | None, float | None]:
    if k is None:
        return (None, None, None, None)
    return (k.scope, k.key, k.fingerprint, float(k.ttl_s))


async def _dedupe_results(conn: Conn, recs: Sequence[asyncpg.Record],
                          dedupe: Sequence[DedupeKey | None]) -> list[EnqueueResult]:
    # A key committed by a concurrent transaction while ours waited in ON CONFLICT is not in the
    # statement's snapshot: read those originals back with a new statement.
    missing = [r["ord"] - 1 for r in recs if r["keyed"] and r["target_id"] is None]
    late: dict[tuple[str, str], tuple[int, str | None]] = {}
    if missing:
        late = await read_dedupe_keys(conn, [k for k in (dedupe[i] for i in missing) if k])
    out = []
    for r in recs:
        i = r["ord"] - 1
        key = dedupe[i]
        if key is None:
            out.append(EnqueueResult(index=i, id=r["id"], duplicate=False, fingerprint_match=None))
            continue
        target, target_fp = r["target_id"], r["target_fingerprint"]
        if target is None:
            target, target_fp = late[(key.scope, key.key)]
        dup = target != r["id"]
        match = None if not dup or key.fingerprint is None or target_fp is None \
            else key.fingerprint == target_fp
        out.append(EnqueueResult(index=i, id=target, duplicate=dup, fingerprint_match=match))
    return out


async def read_dedupe_keys(conn: Conn, keys: Sequence[DedupeKey]
                           ) -> dict[tuple[str, str], tuple[int, str | None]]:
    """The stored target id and fingerprint of each (scope, key) of `keys` that exists.

    Run as a statement of its own after an insert that claimed keys: in READ COMMITTED it sees
    keys committed by concurrent transactions the insert waited for.
    """
    found = await conn.fetch(_SQL["read_dedupe_keys"], [k.scope for k in keys],
                             [k.key for k in keys])
    return {(f["scope"], f["key"]): (f["target_id"], f["fingerprint"]) for f in found}


# -- claims --------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def claim_transaction(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.Connection]:
    """A transaction for a transaction-mode consumer, with the claim plan pinned (the two SET
    LOCALs of `pin_claim_plan`) for ALL of it: BEGIN and the pin are one round trip, there is
    no unpin, and the caller's claims go with `claim_tx(..., pinned=True)` or `claim_tx_sql`.
    Commits at the end, rolls back on any exception. Its other statements also plan without
    sorts or bitmap scans: fine for inserts, upserts and updates by primary key (an ORDER BY
    that only a sort can serve still sorts). No `conn.transaction()` inside (asyncpg refuses
    a savepoint in a transaction it did not start)."""
    await conn.execute(_SQL["begin_pinned"])
    try:
        yield conn
    except BaseException:
        # An aborted transaction or a cancelled statement: roll back here; if even that fails
        # the pool's reset at release rolls back (or discards the connection).
        with contextlib.suppress(Exception):
            if not conn.is_closed() and conn.is_in_transaction():
                await conn.execute("ROLLBACK")
        raise
    await conn.execute("COMMIT")


def claim_tx_sql(table: str, hol_column: str | None = None) -> LiteralString:
    """The SQL of `claim_tx` ($1: the limit), for a consumer that claims inside a larger
    statement of its own (a CTE), in a `claim_transaction`."""
    _table(table, CLAIM_TABLES)
    if hol_column is not None and hol_column not in HOL_COLUMNS[table]:
        raise ValueError(f"{table}: head-of-line column must be one of {HOL_COLUMNS[table]}")
    return _q("claim_tx", table, hol_column or "")


async def claim_tx(conn: asyncpg.Connection, table: str, *, limit: int,
                   hol_column: str | None = None, pinned: bool = False) -> list[Any]:
    """Lock up to `limit` due queued rows of `table` for the caller's open transaction.

    Rows other transactions hold are skipped (`FOR UPDATE SKIP LOCKED`). With `hol_column`
    (e.g. "from_addr" on inbound) a row is claimable only when no earlier unfinished row with
    the same value exists — also not one waiting for its retry — so one key's rows are handed
    out strictly in id order, one at a time, across any number of consumers. Write the results
    and `ack`/`retry`/`fail` the rows in the same transaction; a rollback returns them.
    `pinned`: the transaction is a `claim_transaction` (its plan is pinned already).
    """
    spec = _table(table, CLAIM_TABLES)
    if hol_column is not None and hol_column not in HOL_COLUMNS[table]:
        raise ValueError(f"{table}: head-of-line column must be one of {HOL_COLUMNS[table]}")
    if not conn.is_in_transaction():
        raise RuntimeError("claim_tx needs a connection inside a transaction")
    # Two extra round trips pin the plan (see pin_claim_plan): measured, a plan picked while
    # the queue looked empty sorted every queued row per claim (60 ms instead of 0.5 ms at
    # 10k rows with the head-of-line condition), and asyncpg's cached generic plan kept it.
    # No try/finally: after an error the transaction is aborted and SET LOCAL ends with it.
    if pinned:
        rows = await conn.fetch(_q("claim_tx", table, hol_column or ""), limit)
    else:
        await conn.execute(_SQL["pin_claim_plan"])
        rows = await conn.fetch(_q("claim_tx", table, hol_column or ""), limit)
        await conn.execute(_SQL["unpin_claim_plan"])
    return [spec.record.from_record(r) for r in rows]


async def claim_leased(conn: Conn, table: str, *, limit: int, owner: str, lease_s: float,
                       reclaim: bool = True) -> list[Any]:
    """Lease up to `limit` due rows of `table` ("outbound" or "callbacks") to `owner`.

    One statement moves them to `sending` with `lease_owner = owner` and `lease_until = now +
    lease_s`; it never returns more than `limit` rows, whatever runs concurrently. With
    `reclaim`, rows whose lease expired (their worker died) are taken over first, through their
    own branch and partial index; they come back with `reclaimed=True` and `attempts` already
    counting the lost try (the sender counts them as possible duplicates). Make `lease_s`
    longer than the response timeout plus the drain deadline.
    """
    spec = _table(table, LEASE_TABLES)
    if limit <= 0:
        return []
    name = "claim_leased_reclaim" if reclaim else "claim_leased"
    rows = await conn.fetch(_q(name, table), limit, owner, float(lease_s))
    return [spec.record.from_record(r) for r in rows]


async def extend_lease(conn: Conn, table: str, ids: Sequence[int], *, owner: str,
                       lease_s: float) -> int:
    """Extend `owner`'s leases on `ids` to now + `lease_s`; returns how many it still held."""
    _table(table, LEASE_TABLES)
    return _count(await conn.execute(_q("extend_lease", table), list(ids), owner, float(lease_s)))


# -- write-backs ---------------------------------------------------------------------------------


def _check_status(spec: _Table, status: str, *, terminal_only: bool = False) -> str:
    if status not in spec.statuses or (terminal_only and status not in spec.terminal):
        kind = "terminal status" if terminal_only else "status"
        raise ValueError(f"{spec.name}: {status!r} is not a {kind}")
    return str(status)


async def ack(conn: Conn, table: str, ids: Sequence[int], *, owner: str | None = None,
              status: str | None = None) -> int:
    """Record success for `ids`: move them to `status` (default: the table's success state —
    inbound done, outbound submitted, receipts matched, callbacks done, mo_parts done) and clear
    the lease. With `owner`, only rows still leased to it change. Returns how many changed.
    """
    spec = _table(table, CLAIM_TABLES)
    st = _check_status(spec, status or spec.ok)
    return _count(await conn.execute(_q("ack", table), list(ids), st, owner))


async def retry(conn: Conn, table: str, ids: Sequence[int], *, owner: str | None = None,
                error: str, max_attempts: int, base_s: float,
                cap_s: float) -> tuple[list[int], list[int]]:
    """Count a failed attempt for `ids`; returns (retried ids, ids now dead).

    A row whose attempts reach `max_attempts` ends `dead`; the others go back to `queued` with
    `run_after` = now + a backoff drawn uniformly from [base_s, min(cap_s, base_s·2^attempts)]
    (full jitter above a floor, so a retry never comes back at once). `error` is kept in
    `last_error`. With `owner`, only rows still leased to it change.
    """
    _table(table, CLAIM_TABLES)
    rows = await conn.fetch(_q("retry", table), list(ids), owner, error, max_attempts,
                            float(base_s), float(cap_s))
    retried = [r["id"] for r in rows if r["status"] != "dead"]
    dead = [r["id"] for r in rows if r["status"] == "dead"]
    return retried, dead


async def fail(conn: Conn, table: str, ids: Sequence[int], *, owner: str | None = None,
               status: str, error: str) -> int:
    """End `ids` in the permanent terminal `status` (e.g. outbound "rejected") keeping `error`.

    With `owner`, only rows still leased to it change. Returns how many changed.
    """
    spec = _table(table, CLAIM_TABLES)
    st = _check_status(spec, status, terminal_only=True)
    return _count(await conn.execute(_q("fail", table), list(ids), st, error, owner))


async def update_many(conn: Conn, table: str,
                      items: Sequence[tuple[int, str, str | None]], *,
                      owner: str | None) -> list[int]:
    """Apply per-row outcomes `(id, status, error or None)` in one statement; clear leases.

    For a sender's window of mixed results (submitted / rejected / submit_unknown …). Fenced by
    `owner` like `ack`; returns the ids that changed (a missing id lost its lease).
    """
    spec = _table(table, CLAIM_TABLES)
    if not items:
        return []
    ids, statuses, errors = zip(*items, strict=True)
    sts = [_check_status(spec, s) for s in statuses]
    rows = await conn.fetch(_q("update_many", table), list(ids), sts, list(errors), owner)
    return [r["id"] for r in rows]


async def release(conn: Conn, table: str, owner: str, ids: Sequence[int] | None = None) -> int:
    """Give `owner`'s leased rows (all, or `ids`) back to `queued`, attempts not counted."""
    _table(table, LEASE_TABLES)
    return _count(await conn.execute(_q("release", table), owner,
                                     None if ids is None else list(ids)))


async def requeue_dead(conn: Conn, table: str, *, ids: Sequence[int] | None = None,
                       older_than_s: float | None = None, error_like: str | None = None,
                       dry_run: bool = False) -> int:
    """Requeue dead rows of `table` (attempts reset, last error kept); returns how many.

    Filters combine: `ids`, dead for more than `older_than_s`, `last_error LIKE error_like`.
    `dry_run` only counts. Dead rows stay in the hot table for `RetentionSettings.dead_s`.
    """
    _table(table)
    args = (None if ids is None else list(ids),
            None if older_than_s is None else float(older_than_s), error_like)
    if dry_run:
        return int(await conn.fetchval(_q("count_dead", table), *args))
    # outbound's requeue also puts each message back into outbound_queue
    sql = outbound.REQUEUE_DEAD if table == "outbound" else _q("requeue_dead", table)
    return _count(await conn.execute(sql, *args))


# -- notify, events, lookups -----------------------------------------------------------------------


async def notify(conn: Conn, channel: str) -> None:
    """Send one NOTIFY on `channel` (a `CHANNELS` value); delivered when the transaction commits."""
    if channel not in CHANNELS.values():
        raise ValueError(f"unknown channel {channel!r}")
    await conn.execute(_SQL["notify"], channel)


async def log_events(conn: Conn,
                     rows: Sequence[tuple[str, int, str, Mapping[str, Any] | None]],
                     daemon: str) -> None:
    """Append events `(message_table, message_id, event, detail or None)` in one INSERT."""
    if not rows:
        return
    tables, ids, events, details = zip(*rows, strict=True)
    await conn.execute(_SQL["log_events"], list(tables), list(ids), list(events),
                       list(details), daemon)


async def read_events(conn: Conn, message_table: str, message_id: int) -> list[Event]:
    """One message's event log, oldest first (still readable after the retention move)."""
    rows = await conn.fetch(_SQL["read_events"], message_table, message_id)
    return [Event.from_record(r) for r in rows]


async def find_inbound(conn: Conn, id: int) -> InboundMessage | None:
    """An MO by id from `inbound`, else `inbound_history`; None when neither has it."""
    rec = await conn.fetchrow(_q("find_message", "inbound"), id)
    return None if rec is None else InboundMessage.from_record(rec)


async def find_outbound(conn: Conn, id: int) -> OutboundMessage | None:
    """An MT by id from `outbound`, else `outbound_history`; None when neither has it."""
    rec = await conn.fetchrow(_q("find_message", "outbound"), id)
    return None if rec is None else OutboundMessage.from_record(rec)


# -- retention -----------------------------------------------------------------------------------


async def move_finished(conn: Conn, table: str, *, older_than_s: float, batch: int,
                        dead_older_than_s: float | None = None) -> int:
    """Move up to `batch` rows that ended more than `older_than_s` ago to `<table>_history`.

    Dead rows move after `dead_older_than_s` (default: `older_than_s`). Returns rows moved.
    """
    _table(table, tuple(HISTORY_TABLES))
    dead_s = older_than_s if dead_older_than_s is None else dead_older_than_s
    return _count(await conn.execute(_q("move_finished", table), float(older_than_s),
                                     float(dead_s), batch))


async def _batches(conn: Conn, sql: str, *args: Any, batch: int, max_batches: int) -> int:
    total = 0
    for _ in range(max_batches):
        n = _count(await conn.execute(sql, *args, batch))
        total += n
        if n < batch:
            break
    return total


async def run_retention(pool: Conn, settings: RetentionSettings) -> dict[str, int] | None:
    """One retention pass under an advisory lock; None when another instance holds it.

    Moves finished rows of inbound/outbound/receipts/callbacks to their history tables and
    purges expired dedupe keys, old outbound parts, old events, old MO fragments and old bodies,
    each in batches (short statements, no long transaction). Returns counts per step.
    Pass a pool or a connection outside any transaction: each batch must commit on its own
    (inside one transaction the moved rows stay locked and the work is lost on error).
    """
    async with _acquire(pool) as conn:
        if not await conn.fetchval(_SQL["try_lock"], RETENTION_LOCK_KEY):
            return None
        try:
            return await _retention_steps(conn, settings)
        finally:
            await conn.execute(_SQL["unlock"], RETENTION_LOCK_KEY)


async def _retention_steps(conn: asyncpg.Connection, s: RetentionSettings) -> dict[str, int]:
    out: dict[str, int] = {}
    kw = {"batch": s.batch, "max_batches": s.max_batches}
    for table in HISTORY_TABLES:
        out[f"{table}_moved"] = await _batches(
            conn, _q("move_finished", table), float(s.finished_after_s), float(s.dead_s), **kw)
    out["dedupe_keys_purged"] = await _batches(conn, _SQL["purge_dedupe_keys"], **kw)
    out["outbound_part_purged"] = await _batches(conn, outbound.PURGE_PARTS,
                                                 float(s.parts_s), **kw)
    out["events_purged"] = await _batches(conn, _SQL["purge_events"], float(s.events_s), **kw)
    out["mo_parts_purged"] = await _batches(conn, mo_parts.PURGE,
                                            float(s.finished_after_s), **kw)
    for table in ("inbound", "outbound", "callbacks"):
        out[f"{table}_bodies_purged"] = await _batches(
            conn, _q("purge_bodies", table), float(s.body_after_s), **kw)
    return out


@contextlib.asynccontextmanager
async def _acquire(conn: Conn):  # type: ignore[no-untyped-def]
    if isinstance(conn, asyncpg.Pool):
        async with conn.acquire() as c:
            yield c
    else:
        yield conn


# -- queue snapshot --------------------------------------------------------------------------------

# (table, status, order for "oldest") — each part reads one partial index.
_STATS: Final = (
    ("inbound", "queued", "id"), ("outbound", "queued", "id"), ("outbound", "sending", None),
    ("receipts", "queued", "run_after, id"), ("callbacks", "queued", "run_after, id"),
    ("callbacks", "sending", None), ("mo_parts", "queued", None),
)


# outbound's depth and oldest queued message come from its queue table (migration 0021): a
# queue row without a lease is queued, one with a lease is sending. The oldest queued message
# is the lowest id without a lease, found on outbound_queue_pkey (only the few in-flight rows
# ahead of it are skipped: finished messages are not in the queue table), then its created_at.
_OUTBOUND_STATS: Final = {
    "queued": ("(SELECT count(*) FROM (SELECT 1 FROM outbound_queue "
               "WHERE lease_owner IS NULL LIMIT $1) c)",
               "(SELECT o.created_at FROM outbound o WHERE o.id = (SELECT q.id "
               "FROM outbound_queue q WHERE q.lease_owner IS NULL ORDER BY q.id LIMIT 1))"),
    "sending": ("(SELECT count(*) FROM (SELECT 1 FROM outbound_queue "
                "WHERE lease_until IS NOT NULL LIMIT $1) c)",
                "(SELECT min(o.created_at) FROM outbound o WHERE o.id IN (SELECT q.id "
                "FROM outbound_queue q WHERE q.lease_until IS NOT NULL))"),
}


@lru_cache(maxsize=1)
def _stats_sql() -> LiteralString:
    parts = []
    for table, status, order in _STATS:
        depth = (f"(SELECT count(*) FROM (SELECT 1 FROM {table} "
                 f"WHERE status = '{status}' LIMIT $1) c)")
        if table == "outbound":
            depth, oldest = _OUTBOUND_STATS[status]
        elif order:
            oldest = (f"(SELECT min(created_at) FROM (SELECT created_at FROM {table} "
                      f"WHERE status = '{status}' ORDER BY {order} LIMIT 1) o)")
        else:
            oldest = f"(SELECT min(created_at) FROM {table} WHERE status = '{status}')"
        parts.append(f"SELECT '{table}'::text, '{status}'::text, {depth}, {oldest}")
    return _SQL["refresh_queue_stats"].format(parts="\n    UNION ALL ".join(parts))  # type: ignore[return-value]


# The per-account due snapshot walks at most this many (category, account) pairs.
ACCOUNT_DEPTH_MAX_ACCOUNTS: Final = 10_000

# A table that has grown this many times past the pages the planner last saw is re-analyzed.
GROWTH_REANALYZE_FACTOR: Final = 4
GROWTH_REANALYZE_MIN_PAGES: Final = 64


def _stale(r: Mapping[str, Any], depth: int, min_depth: int) -> bool:
    """The planner's picture of a queue table is too far off to keep its cached plans."""
    if depth >= min_depth and depth > 2 * max(r["reltuples"], 0.0):
        return True  # a deep queue the planner believes (nearly) empty
    pages_now, relpages = int(r["pages_now"]), max(int(r["relpages"]), 0)
    return (pages_now >= GROWTH_REANALYZE_MIN_PAGES
            and pages_now > GROWTH_REANALYZE_FACTOR * max(relpages, 1))


async def refresh_queue_stats(conn: Conn, *, cap: int = 100_000, analyze_min_depth: int = 1000,
                              analyze_every_s: float = 10.0) -> list[str]:
    """Refresh the `queue_stats` snapshot (depth counted up to `cap`, oldest queued row) and
    the per-account snapshot of due outbound rows (`outbound_account_depth`).

    Cheap enough to run every few hundred milliseconds from one instance (wrap it in
    `try_advisory_lock(STATS_LOCK_KEY)` when several daemons may run it).

    It also keeps the claims' plans sane: when a queue holds at least `analyze_min_depth`
    queued rows while the planner still believes the table to be (nearly) empty — statistics
    gathered while the queue was idle, or never — it runs `ANALYZE` on that table (at most once
    per `analyze_every_s`). Measured here: with such statistics the planner sorts the whole
    queue for every claim (9.5 ms instead of 0.2 ms at 10k queued rows; 60 ms with the
    head-of-line condition), and asyncpg's cached generic plan keeps doing it until the table
    is analyzed again, which also invalidates that plan. It does the same when a table has
    grown to more than 4 times the pages it had at its last ANALYZE (finished rows pile up until the
    retention move): measured, the processor's `ack` kept a generic plan made while `inbound`
    was nearly empty and seq-scanned thousands of finished rows per batch (0.7 to 4.8 ms for 5 to 40
    ids) until autovacuum, whose naptime is a minute, got round to it. Returns the tables
    analyzed.
    """
    rows = await conn.fetch(_stats_sql(), cap)
    # Per-account due depth for fair admission control (services/receiver/admission.py).
    await conn.execute(_SQL["refresh_account_depth"], cap, ACCOUNT_DEPTH_MAX_ACCOUNTS)
    depth: dict[str, int] = {}
    for r in rows:
        depth[r["queue"]] = max(depth.get(r["queue"], 0), int(r["depth"]))
    # outbound's claims plan on its queue table: judged by the same depth
    depth["outbound_queue"] = depth.get("outbound", 0)
    stale = [r["queue"] for r in await conn.fetch(_SQL["planner_stats"], list(depth),
                                                  float(analyze_every_s))
             if r["may_analyze"] and _stale(r, depth[r["queue"]], analyze_min_depth)]
    for table in stale:
        name = table if table == "outbound_queue" else _table(table).name
        await conn.execute(f"ANALYZE {name}")  # whitelisted identifiers
    return stale


async def read_queue_stats(conn: Conn) -> list[QueueStat]:
    """The last snapshot: what admission control and the depth gauges read (never a COUNT)."""
    return [QueueStat.from_record(r) for r in await conn.fetch(_SQL["read_queue_stats"])]


async def read_account_depth(conn: Conn) -> dict[int, int]:
    """The last per-account snapshot of due queued MTs: account id (0: no account) → count."""
    return {int(r["account_id"]): int(r["due"])
            for r in await conn.fetch(_SQL["read_account_depth"])}


async def try_advisory_lock(conn: asyncpg.Connection, key: int) -> bool:
    """Take session advisory lock `key` if free (release with `advisory_unlock`)."""
    db.mark_session_state(conn)  # a pooled connection gets the full reset at release
    return bool(await conn.fetchval(_SQL["try_lock"], key))


async def advisory_unlock(conn: asyncpg.Connection, key: int) -> None:
    """Release a session advisory lock taken with `try_advisory_lock`."""
    await conn.execute(_SQL["unlock"], key)


# -- PREPARE-all support ---------------------------------------------------------------------------


def _statements() -> dict[str, LiteralString]:
    out: dict[str, LiteralString] = {}
    per_table = ("claim_tx", "ack", "retry", "fail", "update_many")
    for table in QUEUE_TABLES:
        spec = TABLES[table]
        out |= {f"{n}[{table}]": _q(n, table) for n in ("requeue_dead", "count_dead")
                if (table, n) != ("outbound", "requeue_dead")}  # outbound.REQUEUE_DEAD
        if table not in CLAIM_TABLES:
            continue
        out |= {f"{n}[{table}]": _q(n, table) for n in per_table}
        out |= {f"claim_tx[{table},{c}]": _q("claim_tx", table, c) for c in HOL_COLUMNS[table]}
        cols = tuple(spec.columns)
        out[f"enqueue[{table}]"] = _enqueue_sql(table, cols, False)
        out[f"enqueue_dedupe[{table}]"] = _enqueue_sql(table, cols, True)
    for table in LEASE_TABLES:
        out |= {f"{n}[{table}]": _q(n, table)
                for n in ("claim_leased", "claim_leased_reclaim", "extend_lease", "release")}
    out |= {f"move_finished[{table}]": _q("move_finished", table) for table in HISTORY_TABLES}
    out |= {f"find_message[{table}]": _q("find_message", table)
            for table in ("inbound", "outbound")}
    out |= {f"purge_bodies[{table}]": _q("purge_bodies", table)
            for table in ("inbound", "outbound", "callbacks")}
    plain = ("read_dedupe_keys", "log_events", "read_events", "purge_dedupe_keys",
             "purge_events", "read_queue_stats", "refresh_account_depth", "read_account_depth",
             "planner_stats", "try_lock", "unlock", "notify")
    out |= {n: _SQL[n] for n in plain}
    out["refresh_queue_stats"] = _stats_sql()
    return out


STATEMENTS: Final[dict[str, LiteralString]] = _statements()
"""Statement label → SQL of every statement the queue core runs, each template filled for
every table it serves (the PREPARE test reads it; the owners have their own). Not here:
`pin_claim_plan`/`unpin_claim_plan`, two SETs each, and `begin_pinned`, which run by the simple
protocol."""


__all__ = [
    "HISTORY_TABLES",
    "LEASE_TABLES",
    "QUEUE_TABLES",
    "RETENTION_LOCK_KEY",
    "STATEMENTS",
    "STATS_LOCK_KEY",
    "DedupeKey",
    "RetentionSettings",
    "ack",
    "advisory_unlock",
    "claim_leased",
    "claim_transaction",
    "claim_tx",
    "claim_tx_sql",
    "enqueue",
    "extend_lease",
    "fail",
    "find_inbound",
    "find_outbound",
    "log_events",
    "move_finished",
    "notify",
    "read_account_depth",
    "read_dedupe_keys",
    "read_events",
    "read_queue_stats",
    "refresh_queue_stats",
    "release",
    "requeue_dead",
    "retry",
    "run_retention",
    "try_advisory_lock",
    "update_many",
]
