"""Receipt matching: stored delivery receipts → message parts → message states → callbacks.

Receipts are stored first by the shared intake (any bind, any daemon), already normalised per
connector (`receipts.smsc_id`), then matched here in batches, in transaction mode (no network
I/O in between: `FOR UPDATE SKIP LOCKED`, match, write, commit — a crash rolls it all back):

- A receipt matches the **newest** part with the same normalised SMSC id on its own connector
  or on a sibling connector of the same operator (`[[connectors]] operator`), among parts
  created no earlier than `window_s` before the receipt (ids get reused; the window keeps an
  old part from taking a new receipt).
- Whichever arrives first: a receipt may come before its `submit_sm_resp` was recorded. An
  receipt is first tried `min_age_s` after it arrived (by then the part's write-back has
  normally landed); an unmatched one is retried with exponential backoff
  (`retry_base_s` · 2^attempts). After
  `max_attempts` tries it ends `orphan`; `orphan_receipts` (the processor's periodic job) also
  orphans receipts older than a cut-off, whoever runs.
- Intermediate receipts (ENROUTE, ACCEPTD unless mapped final, esm_class intermediate) update
  the part's error text but never its state. A final receipt sets the part's state.
- A message is final when every part is: all delivered → `delivered`, all expired → `expired`,
  any other mix → `undeliverable` (each part keeps its own state).
- `outbound_part` outlives the retention move, so a late receipt still matches; the message
  row is updated wherever it is now (`outbound` or `outbound_history`).
- Every state change an application asked for (JSON `callback_url`, or a Kannel `dlr-url`
  with its mask) becomes a `callbacks` row in the same transaction; the processor delivers it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, LiteralString

import asyncpg
import orjson
import structlog

from smsgw.shared.domain.kannel import dlr_type_for, render_dlr_url, wants_dlr

log = structlog.get_logger("smsgw.dlr")

RECEIPTS_CHANNEL: Final = "smsgw_receipts"  # = shared.queue.listener.CHANNELS["receipts"]
CALLBACKS_CHANNEL: Final = "smsgw_callbacks"  # = CHANNELS["callbacks"]
FINAL_PART_STATES: Final = frozenset(
    {"delivered", "undeliverable", "expired", "rejected", "unknown_receipt"})

# name: match_receipts
# Match up to $1 due receipts in one statement (run inside the caller's transaction):
# - `sib`: receipt connector → connectors whose parts it may match (same operator group),
#   from the config arrays $2 (names) and $3 (operator groups).
# - `picked`: due queued receipts, oldest first, locked (SKIP LOCKED: matchers never block);
#   a receipt is first tried $7 seconds after it arrived, by when the submit_sm_resp of its
#   part has normally been written back (a receipt racing its own response is common with
#   fast SMSCs, and every premature try is a wasted row update).
# - `res`: each receipt with its newest part (NULL when none) that has its normalised id on a
#   sibling connector and was created at most $4 seconds before the receipt. The updates
#   below join this one CTE only (joining two CTEs made the planner nest loops over both).
# - `winner`: several receipts for one part in a batch — a final one beats an intermediate
#   one, then the newest.
# - `parts`: final receipts set the part's state; every receipt keeps its err.
# - `rcpt`: matched receipts point at their part; the others retry with backoff ($5 base
#   seconds) or end orphan after $6 attempts.
MATCH_RECEIPTS: Final[LiteralString] = """
WITH sib AS (
    SELECT a.connector AS rc, b.connector AS pc
      FROM unnest($2::text[], $3::text[]) AS a(connector, grp)
      JOIN unnest($2::text[], $3::text[]) AS b(connector, grp) ON a.grp = b.grp
), picked AS MATERIALIZED (
    SELECT r.id, r.connector, r.smsc_id, r.state, r.final, r.err, r.created_at
      FROM receipts r
     WHERE r.status = 'queued' AND r.run_after <= now() - make_interval(secs => $7::float8)
     ORDER BY r.run_after, r.id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), res AS MATERIALIZED (
    -- one row per picked receipt with its part (NULL when none): the part lookup is one
    -- index probe on (smsc_id, connector) per receipt, the allowed connectors an array
    SELECT pk.id, pk.state, pk.final, pk.err, m.part_id
      FROM picked pk
      LEFT JOIN LATERAL (
          SELECT p.id AS part_id
            FROM outbound_part p
           WHERE p.smsc_id = pk.smsc_id
             AND p.connector = ANY(coalesce(
                     (SELECT array_agg(s.pc) FROM sib s WHERE s.rc = pk.connector),
                     ARRAY[pk.connector]))
             AND p.created_at >= pk.created_at - make_interval(secs => $4::float8)
           ORDER BY p.id DESC
           LIMIT 1) m ON true
), winner AS (
    SELECT DISTINCT ON (part_id) part_id, state, final, err
      FROM res
     WHERE part_id IS NOT NULL
     ORDER BY part_id, final DESC, id DESC
), parts AS (
    UPDATE outbound_part AS p
       SET status = CASE WHEN w.final AND w.state IN ('delivered', 'undeliverable', 'expired',
                                                      'rejected', 'unknown_receipt')
                         THEN w.state ELSE p.status END,
           err = coalesce(w.err, p.err),
           done_at = CASE WHEN w.final THEN now() ELSE p.done_at END,
           updated_at = now()
      FROM winner w
     WHERE p.id = w.part_id
    RETURNING p.outbound_id, w.final
), rcpt AS (
    UPDATE receipts AS r
       SET status = CASE WHEN res.part_id IS NOT NULL THEN 'matched'
                         WHEN r.attempts + 1 >= $6::int THEN 'orphan'
                         ELSE 'queued' END,
           outbound_part_id = res.part_id,
           attempts = r.attempts + (res.part_id IS NULL)::int,
           run_after = CASE WHEN res.part_id IS NULL
                            THEN now() + make_interval(
                                     secs => $5::float8 * power(2, least(r.attempts, 12)))
                            ELSE r.run_after END,
           last_error = CASE WHEN res.part_id IS NULL THEN 'no part with this smsc id'
                             ELSE r.last_error END,
           updated_at = now()
      FROM res
     WHERE r.id = res.id
    RETURNING r.status
)
SELECT coalesce((SELECT array_agg(DISTINCT outbound_id) FROM parts WHERE final), '{}')
           AS finals,
       coalesce((SELECT array_agg(DISTINCT outbound_id) FROM parts WHERE NOT final), '{}')
           AS intermediates,
       (SELECT count(*) FROM rcpt WHERE status = 'matched') AS matched,
       (SELECT count(*) FROM rcpt WHERE status = 'queued') AS retried,
       (SELECT count(*) FROM rcpt WHERE status = 'orphan') AS orphaned
"""

# name: finalize_outbound
# Messages $1 whose every part is now final get their state: all delivered → delivered, all
# expired → expired, else undeliverable. The row is updated where it lives: outbound (from
# submitted), or outbound_history after the retention move (a late receipt). Returns what a
# status callback needs.
FINALIZE_OUTBOUND: Final[LiteralString] = """
WITH agg AS (
    SELECT p.outbound_id AS id, max(p.parts_total) AS total, count(*) AS n,
           count(*) FILTER (WHERE p.status IN ('delivered', 'undeliverable', 'expired',
                                               'rejected', 'unknown_receipt')) AS finals,
           count(*) FILTER (WHERE p.status = 'delivered') AS delivered,
           count(*) FILTER (WHERE p.status = 'expired') AS expired,
           max(p.err) AS err
      -- a join with the unnested ids keeps this on the (outbound_id, part_no) index: with
      -- `= ANY($1)` the generic plan of the prepared statement guessed thousands of rows
      -- and scanned the whole table
      FROM unnest($1::bigint[]) AS u(id)
      JOIN outbound_part p ON p.outbound_id = u.id
     GROUP BY p.outbound_id
), done AS (
    SELECT id, delivered, err,
           CASE WHEN delivered = n THEN 'delivered'
                WHEN expired = n THEN 'expired'
                ELSE 'undeliverable' END AS status
      FROM agg
     WHERE n >= total AND finals = n
), hot AS (
    UPDATE outbound AS o
       SET status = d.status, done_at = now(), updated_at = now(),
           last_error = CASE WHEN d.status = 'delivered' THEN o.last_error
                             ELSE coalesce('receipt err ' || d.err, o.last_error) END
      FROM done d
     WHERE o.id = d.id AND o.status = 'submitted'
    RETURNING o.id, o.status, o.account_id, o.from_addr, o.to_addr, o.client_ref,
              o.callback_url, o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code,
              o.last_error, d.delivered
), hist AS (
    UPDATE outbound_history AS o
       SET status = d.status, done_at = now(), updated_at = now()
      FROM done d
     WHERE o.id = d.id AND o.status <> d.status
       AND o.status IN ('submitted', 'delivered', 'undeliverable', 'expired')
    RETURNING o.id, o.status, o.account_id, o.from_addr, o.to_addr, o.client_ref,
              o.callback_url, o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code,
              o.last_error, d.delivered
)
SELECT * FROM hot
UNION ALL
SELECT * FROM hist
"""

# name: insert_callbacks
# Queue status callbacks (one INSERT per batch) and wake the callback workers once.
INSERT_CALLBACKS: Final[LiteralString] = """
WITH ins AS (
    INSERT INTO callbacks (kind, account_id, outbound_id, url, method, body, headers, secret_ref)
    SELECT 'status', u.account_id, u.outbound_id, u.url, u.method, u.body, u.headers,
           u.secret_ref
      FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bytea[],
                  $6::jsonb[], $7::text[])
           AS u(account_id, outbound_id, url, method, body, headers, secret_ref)
    RETURNING id
)
SELECT count(*) AS n,
       CASE WHEN count(*) > 0 THEN pg_notify($8::text, '') END IS NULL AS woke
  FROM ins
"""

# name: orphan_receipts
# Periodic job: receipts still unmatched $1 seconds after they arrived end orphan (at most
# $2 per run). It walks the queued receipts on receipts_claim_idx (few: most match within a
# second) rather than keeping an index by age that every receipt insert would pay for.
ORPHAN_RECEIPTS: Final[LiteralString] = """
WITH old AS (
    SELECT id FROM receipts
     WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1::float8)
     ORDER BY run_after, id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE receipts AS r
   SET status = 'orphan', last_error = coalesce(r.last_error, 'no part with this smsc id'),
       updated_at = now()
  FROM old
 WHERE r.id = old.id
"""

# name: buffered_watchers
# Of messages $1 that got an intermediate receipt, those whose application asked for Kannel
# "queued on SMSC" reports (dlr-mask bit 4), wherever the row lives.
BUFFERED_WATCHERS: Final[LiteralString] = """
SELECT o.id, 'enroute' AS status, o.account_id, o.from_addr, o.to_addr, o.client_ref,
       o.callback_url, o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code,
       o.last_error, 0 AS delivered
  FROM unnest($1::bigint[]) AS u(id) JOIN outbound o ON o.id = u.id
 WHERE o.callback_url IS NOT NULL AND o.dlr_mask & 4 <> 0
   AND o.meta->>'callback_style' = 'kannel'
UNION ALL
SELECT o.id, 'enroute', o.account_id, o.from_addr, o.to_addr, o.client_ref, o.callback_url,
       o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code, o.last_error, 0
  FROM unnest($1::bigint[]) AS u(id) JOIN outbound_history o ON o.id = u.id
 WHERE o.callback_url IS NOT NULL AND o.dlr_mask & 4 <> 0
   AND o.meta->>'callback_style' = 'kannel'
"""

QUERIES: Final[dict[str, LiteralString]] = {
    "buffered_watchers": BUFFERED_WATCHERS,
    "match_receipts": MATCH_RECEIPTS,
    "finalize_outbound": FINALIZE_OUTBOUND,
    "insert_callbacks": INSERT_CALLBACKS,
    "orphan_receipts": ORPHAN_RECEIPTS,
}
"""Query name → SQL, for the PREPARE-everything test."""


# --- settings and results -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MatchSettings:
    """How receipts are matched.

    `operators` maps connector name → operator group (siblings share a group; a connector
    missing from the map matches only its own parts); `window_s` bounds how old a matching
    part may be; a receipt is first tried `min_age_s` after it arrived (its part's write-back
    normally lands before); unmatched receipts retry after `retry_base_s` · 2^attempts until
    `max_attempts`, then end orphan.
    """

    operators: Mapping[str, str] = field(default_factory=dict)
    window_s: float = 3 * 86400.0
    retry_base_s: float = 0.5
    max_attempts: int = 12
    min_age_s: float = 0.5

    @classmethod
    def from_connectors(cls, connectors: Iterable[Any], **kwargs: Any) -> MatchSettings:
        """Build the operator map from `[[connectors]]` models (their `operator_name`)."""
        ops = {c.name: getattr(c, "operator_name", None) or c.name for c in connectors}
        return cls(operators=ops, **kwargs)


@dataclass(frozen=True, slots=True)
class MatchResult:
    """One matching pass: receipts matched, retried and orphaned; messages finalised."""

    matched: int
    retried: int
    orphaned: int
    finalized: int
    callbacks: int

    @property
    def processed(self) -> int:
        """Receipts this pass took (0 means the due queue was empty)."""
        return self.matched + self.retried + self.orphaned


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A message state change an application may want to hear about."""

    outbound_id: int
    status: str
    account_id: int | None
    from_addr: str
    to_addr: str
    client_ref: str | None
    callback_url: str | None
    dlr_mask: int | None
    meta: Any
    parts_total: int | None
    delivered_parts: int
    connector: str | None
    error_code: int | None
    error: str | None

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> StatusChange:
        """From a finalize_outbound row."""
        return cls(outbound_id=r["id"], status=r["status"], account_id=r["account_id"],
                   from_addr=r["from_addr"], to_addr=r["to_addr"], client_ref=r["client_ref"],
                   callback_url=r["callback_url"], dlr_mask=r["dlr_mask"], meta=r["meta"],
                   parts_total=r["parts_total"], delivered_parts=int(r["delivered"] or 0),
                   connector=r["connector"], error_code=r["error_code"],
                   error=r["last_error"])


# --- status callbacks ------------------------------------------------------------------------


def _style(meta: Any) -> str:
    if isinstance(meta, dict):
        return str(meta.get("callback_style") or "json")
    return "json"


def callback_row(change: StatusChange, at: datetime | None = None) -> tuple[Any, ...] | None:
    """The `callbacks` row for one state change, or None when the application did not ask.

    JSON style: a POST of the contract's body on every state change. Kannel style: a GET of
    the dlr-url template with its escapes rendered, only for states its `dlr_mask` selects.
    Returns (account_id, outbound_id, url, method, body, headers, secret_ref).
    """
    if not change.callback_url:
        return None
    at = at or datetime.now(UTC)
    secret = f"account:{change.account_id}" if change.account_id is not None else None
    if _style(change.meta) == "kannel":
        if not wants_dlr(change.dlr_mask, change.status):
            return None
        url = render_dlr_url(change.callback_url, dlr=dlr_type_for(change.status),
                             to=change.to_addr, from_addr=change.from_addr, at=at,
                             smsc_reply=change.status, connector=change.connector,
                             message_id=change.outbound_id, err=change.error_code or "")
        return (change.account_id, change.outbound_id, url, "GET", None, None, secret)
    body = orjson.dumps({
        "id": change.outbound_id, "client_ref": change.client_ref, "status": change.status,
        "to": change.to_addr, "from": change.from_addr, "parts": change.parts_total,
        "delivered_parts": change.delivered_parts, "error_code": change.error_code,
        "error": change.error if change.status != "delivered" else None,
        "connector": change.connector, "at": at.isoformat()})
    return (change.account_id, change.outbound_id, change.callback_url, "POST", body,
            {"Content-Type": "application/json"}, secret)


async def insert_callbacks(conn: asyncpg.Connection, changes: Iterable[StatusChange]) -> int:
    """Queue the callbacks the applications asked for (one INSERT); return how many."""
    rows = [row for row in (callback_row(c) for c in changes) if row is not None]
    if not rows:
        return 0
    cols = list(zip(*rows, strict=True))
    result = await conn.fetchrow(INSERT_CALLBACKS, *[list(c) for c in cols], CALLBACKS_CHANNEL)
    return int(result["n"])


# --- matching ----------------------------------------------------------------------------------


def _operator_arrays(settings: MatchSettings) -> tuple[list[str], list[str]]:
    names = sorted(settings.operators)
    return names, [settings.operators[n] for n in names]


async def match_batch(conn: asyncpg.Connection, settings: MatchSettings, *,
                      limit: int = 1000) -> MatchResult:
    """Match up to `limit` due receipts, finalise messages, queue callbacks; one transaction.

    `conn` must not be inside a transaction already (this opens one). Returns the counts;
    `processed == 0` means nothing was due.
    """
    names, groups = _operator_arrays(settings)
    async with conn.transaction():
        row = await conn.fetchrow(MATCH_RECEIPTS, limit, names, groups, settings.window_s,
                                  settings.retry_base_s, settings.max_attempts,
                                  settings.min_age_s)
        assert row is not None
        finals: Sequence[int] = row["finals"]
        changes: list[StatusChange] = []
        if finals:
            changes = [StatusChange.from_record(r)
                       for r in await conn.fetch(FINALIZE_OUTBOUND, list(finals))]
        notify = list(changes)
        if row["intermediates"]:
            notify += [StatusChange.from_record(r) for r in await conn.fetch(
                BUFFERED_WATCHERS, list(row["intermediates"]))]
        n_callbacks = await insert_callbacks(conn, notify) if notify else 0
    return MatchResult(matched=int(row["matched"]), retried=int(row["retried"]),
                       orphaned=int(row["orphaned"]), finalized=len(changes),
                       callbacks=n_callbacks)


async def orphan_receipts(conn: asyncpg.Connection, *, older_than_s: float,
                          limit: int = 10_000) -> int:
    """Mark receipts still unmatched `older_than_s` after arrival as `orphan`; return how many.

    For the processor's periodic job (run under its advisory lock); bounded per run by `limit`.
    """
    status = await conn.execute(ORPHAN_RECEIPTS, older_than_s, limit)
    return int(status.split()[-1])


async def run_matcher(pool: asyncpg.Pool, settings: MatchSettings, *, stop: asyncio.Event,
                      wait_for_work: Callable[[], Awaitable[Any]], limit: int = 1000,
                      on_result: Callable[[MatchResult], None] | None = None) -> None:
    """Match receipts until `stop` (an asyncio.Event) is set.

    Runs `match_batch` while batches come back non-empty, then awaits `wait_for_work()` (a
    NOTIFY on the receipts channel, or the fallback timer that also picks up retries whose
    run_after has come). `on_result(MatchResult)` feeds the metrics. A database error is this
    loop's boundary: logged, then retried after a second.
    """
    while not stop.is_set():
        try:
            async with pool.acquire() as conn:
                result = await match_batch(conn, settings, limit=limit)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            log.exception("receipt_match_failed")
            result = None
        if result is not None and on_result is not None:
            on_result(result)
        if result is not None and result.processed >= limit:
            continue  # more may be due right now
        waiter = asyncio.ensure_future(wait_for_work())
        stopper = asyncio.ensure_future(stop.wait())
        try:
            done, _ = await asyncio.wait((waiter, stopper),
                                         timeout=None if result is not None else 1.0,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if waiter in done and not stop.is_set() and settings.min_age_s > 0:
            # The receipts that woke us are first due `min_age_s` after they arrived: wait that
            # long (interruptibly) instead of missing them until the fallback timer.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), settings.min_age_s)
