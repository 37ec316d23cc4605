-- Named queries of the queue core. `{t}` is a whitelisted queue table, the other {placeholders}
-- are constant SQL fragments chosen by shared/queue/store.py per table; data goes in $n only.

-- name: enqueue
-- Insert a batch in one statement; ids are allocated in input order so row i gets ids[i] back.
-- Unnest of one typed array per column is the bulk path (faster than jsonb_to_recordset here:
-- see bench.py) and keeps bytea/jsonb/timestamptz typed without text round trips.
WITH src AS MATERIALIZED (
    -- one row per input row, ids taken from the identity's sequence in input order
    SELECT nextval('{t}_id_seq') AS id, u.*
      FROM unnest({unnest}) WITH ORDINALITY AS u({ucols}, ord)
), ins AS (
    INSERT INTO {t} (id, {cols}) OVERRIDING SYSTEM VALUE
    SELECT src.id, {exprs} FROM src
)
SELECT array_agg(src.id ORDER BY src.ord) AS ids,
       -- one NOTIFY per statement (Postgres folds equal ones per transaction) when asked
       CASE WHEN $1::text IS NOT NULL THEN pg_notify($1::text, '') END IS NULL AS notified
  FROM src

-- name: enqueue_dedupe
-- Insert a batch whose rows may carry dedupe keys: a row is inserted only when its key is new
-- or expired (the dedupe rule, dedupe.sql). The first row of a key in the batch wins; later
-- ones (and keys still live) report the original target id and fingerprint. The ON CONFLICT
-- clause waits for a concurrent inserter of the same key and then leaves its key alone, so no
-- unique violation reaches the caller; the original id of a key committed concurrently is not
-- in this statement's snapshot and is read back afterwards.
WITH src AS MATERIALIZED (
    -- one row per input row, ids taken from the identity's sequence in input order
    SELECT nextval('{t}_id_seq') AS id, u.*
      FROM unnest({unnest}) WITH ORDINALITY AS u({ucols}, ord)
), dk AS MATERIALIZED (
    -- the dedupe key of each input row (all NULL when the row has none)
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::float8[])
                  WITH ORDINALITY AS d(scope, key, fingerprint, ttl_s, ord)
), keys AS (
    -- claim the new (and expired) keys; DISTINCT ON passes only the first row of a repeated
    -- key (the ON CONFLICT clause may touch a key once per statement)
    INSERT INTO dedupe_keys (scope, key, target_table, target_id, fingerprint, expires_at)
    SELECT DISTINCT ON (dk.scope, dk.key) dk.scope, dk.key, '{t}', src.id, dk.fingerprint,
           now() + make_interval(secs => coalesce(dk.ttl_s, 604800))
      FROM dk JOIN src USING (ord)
     WHERE dk.key IS NOT NULL
     ORDER BY dk.scope, dk.key, dk.ord
    {take_over_expired}
    RETURNING scope, key, target_id, fingerprint
), ins AS (
    -- the rows without a key, and those whose key was new
    INSERT INTO {t} (id, {cols}) OVERRIDING SYSTEM VALUE
    SELECT src.id, {exprs}
      FROM src JOIN dk USING (ord)
     WHERE dk.key IS NULL OR src.id IN (SELECT target_id FROM keys)
    RETURNING id
), notified AS (
    -- one NOTIFY per statement, only when a row was inserted
    SELECT CASE WHEN $1::text IS NOT NULL AND EXISTS (SELECT 1 FROM ins)
                THEN pg_notify($1::text, '') END IS NULL AS done
)
SELECT src.ord::int AS ord, src.id, dk.key IS NOT NULL AS keyed, dk.fingerprint,
       coalesce(k.target_id, old.target_id) AS target_id,
       CASE WHEN k.target_id IS NOT NULL THEN k.fingerprint ELSE old.fingerprint END
           AS target_fingerprint
  FROM src JOIN dk USING (ord)
  CROSS JOIN notified
  -- the key as inserted by this statement (this row's own, or an earlier row of the batch)
  LEFT JOIN keys k ON k.scope = dk.scope AND k.key = dk.key
  -- the key as stored before this statement
  LEFT JOIN dedupe_keys old ON old.scope = dk.scope AND old.key = dk.key
 ORDER BY src.ord

-- name: read_dedupe_keys
-- Read stored keys (the originals of keys a concurrent transaction committed during enqueue).
SELECT d.scope, d.key, d.target_id, d.fingerprint
  FROM unnest($1::text[], $2::text[]) AS u(scope, key)
  JOIN dedupe_keys d ON d.scope = u.scope AND d.key = u.key

-- name: claim_tx
-- Lock up to $1 due queued rows for the caller's transaction, in claim order; rows another
-- transaction holds are skipped. {hol} optionally adds the head-of-line condition: no earlier
-- unfinished row (queued or in flight, also one waiting for its retry) with the same key.
SELECT m.*
  FROM {t} m
 WHERE m.status = 'queued' AND m.run_after <= now() {hol}
 ORDER BY {order}
 LIMIT $1
   FOR UPDATE OF m SKIP LOCKED

-- name: pin_claim_plan
-- Before claim_tx, in the caller's transaction: forbid the sort/bitmap plans, so the claim walks
-- its index in order and stops at the limit whatever the statistics say (a queue's row count
-- swings from 0 to millions; a plan chosen while it looked empty sorted the whole queue).
SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off

-- name: unpin_claim_plan
-- After claim_tx: the caller's own queries in the same transaction plan normally again.
RESET enable_sort; RESET enable_bitmapscan

-- name: begin_pinned
-- Open a claim transaction with the claim plan pinned for all of it (claim_transaction): BEGIN
-- and pin_claim_plan's two SET LOCALs in one round trip, no unpin (the simple protocol runs
-- them all; the transaction stays open after them). And no JIT: a statement of the
-- transaction that can only sort gets the planner's "disabled" cost (10^10), far above
-- jit_above_cost, and compiling it took ~0.9 s (measured: a claim whose rows were then
-- ordered by id).
BEGIN; SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off; SET LOCAL jit = off

-- name: claim_leased
-- Lease up to $1 due queued rows to owner $2 for $3 seconds (status 'sending'). The ids are
-- picked in a MATERIALIZED CTE, so the UPDATE can never touch more than $1 rows even when the
-- planner would re-run a bare IN (subquery).
WITH picked AS MATERIALIZED (
    -- due queued rows in claim order, skipping rows other claimers hold
    SELECT id FROM {t}
     WHERE status = 'queued' AND run_after <= now()
     ORDER BY {order}
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS m
   SET status = 'sending', lease_owner = $2, lease_until = now() + make_interval(secs => $3),
       updated_at = now()
  FROM picked
 WHERE m.id = picked.id
RETURNING m.*, false AS reclaimed

-- name: claim_leased_reclaim
-- Like claim_leased, but first takes over rows whose lease expired (their owner died): a
-- separate branch on the {t}_lease_idx partial index (an OR in one WHERE would defeat the claim
-- index). Reclaimed rows count the lost attempt and come back with reclaimed = true.
-- The ids reach the UPDATE as one array (= ANY(ARRAY(...)), evaluated once): joining the two
-- CTEs made the planner misjudge their size and hash-join a sequential scan of the table.
WITH stale AS MATERIALIZED (
    -- expired leases, oldest expiry first
    SELECT id FROM {t}
     WHERE status = 'sending' AND lease_until < now()
     ORDER BY lease_until
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), fresh AS MATERIALIZED (
    -- due queued rows for the rest of the limit
    SELECT id FROM {t}
     WHERE status = 'queued' AND run_after <= now()
     ORDER BY {order}
     LIMIT $1 - (SELECT count(*) FROM stale)
       FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS m
   SET status = 'sending', lease_owner = $2, lease_until = now() + make_interval(secs => $3),
       -- the old status: 'sending' only for a reclaimed row, whose lost try counts
       attempts = m.attempts + (m.status = 'sending')::int, updated_at = now()
 WHERE m.id = ANY(ARRAY(SELECT id FROM stale UNION ALL SELECT id FROM fresh))
RETURNING m.*, m.id = ANY(ARRAY(SELECT id FROM stale)) AS reclaimed

-- name: extend_lease
-- Push the lease of owner $2's in-flight rows $1 to now + $3 seconds (a heartbeat).
UPDATE {t}
   SET lease_until = now() + make_interval(secs => $3), updated_at = now()
 WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'sending'

-- name: ack
-- Move rows $1 to status $2 (the success path), clear the lease. Fenced: with an owner $3 only
-- rows still leased to it change; rows already in a terminal state never change.
UPDATE {t}
   SET status = $2, lease_owner = NULL, lease_until = NULL, updated_at = now() {stamp}
 WHERE id = ANY($1::bigint[])
   AND ($3::text IS NULL OR lease_owner = $3::text)
   AND status NOT IN {terminal}

-- name: retry
-- Count a failed attempt of rows $1: back to queued with run_after = now + backoff (full jitter
-- above a floor: uniform in [base $5, min(cap $6, base * 2^attempts)]), or dead once attempts
-- reach $4. Error $3 kept. Fenced by owner $2 as in ack.
UPDATE {t}
   SET attempts = attempts + 1,
       status = CASE WHEN attempts + 1 >= $4 THEN 'dead' ELSE 'queued' END,
       run_after = CASE WHEN attempts + 1 >= $4 THEN run_after
                        ELSE now() + make_interval(secs => $5 + random()
                             * greatest(0, least($6, $5 * power(2, least(attempts, 60))) - $5))
                   END,
       last_error = $3, lease_owner = NULL, lease_until = NULL, updated_at = now()
 WHERE id = ANY($1::bigint[])
   AND ($2::text IS NULL OR lease_owner = $2::text)
   AND status IN {pending}
RETURNING id, status

-- name: fail
-- Put rows $1 in the permanent terminal state $2 with error $3 kept; fenced by owner $4.
UPDATE {t}
   SET status = $2, last_error = $3, lease_owner = NULL, lease_until = NULL,
       updated_at = now() {stamp}
 WHERE id = ANY($1::bigint[])
   AND ($4::text IS NULL OR lease_owner = $4::text)
   AND status NOT IN {terminal}

-- name: update_many
-- Per-row outcomes (id, status, error) in one statement; fenced by owner $4. The lease is
-- cleared; an error NULL keeps the previous one.
UPDATE {t} AS m
   SET status = u.status, last_error = coalesce(u.error, m.last_error),
       lease_owner = NULL, lease_until = NULL, updated_at = now() {stamp_u}
  FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, status, error)
 WHERE m.id = u.id
   AND ($4::text IS NULL OR m.lease_owner = $4::text)
   AND m.status NOT IN {terminal}
RETURNING m.id

-- name: release
-- Give owner $1's leased rows (all, or only ids $2) back to the queue without counting an
-- attempt: used on drain and when a claimed row was never tried.
UPDATE {t}
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = now()
 WHERE lease_owner = $1 AND status = 'sending'
   AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))

-- name: requeue_dead
-- Give dead rows another run (attempts reset, last_error kept), filtered by ids $1, by age
-- $2 seconds since they died, and by an error pattern $3 (LIKE); NULL filters match all.
UPDATE {t}
   SET status = 'queued', attempts = 0, run_after = now(), updated_at = now()
 WHERE status = 'dead'
   AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
   AND ($2::float8 IS NULL OR updated_at < now() - make_interval(secs => $2::float8))
   AND ($3::text IS NULL OR last_error LIKE $3::text)

-- name: count_dead
-- How many rows requeue_dead would requeue with the same filters (its dry run).
SELECT count(*)
  FROM {t}
 WHERE status = 'dead'
   AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
   AND ($2::float8 IS NULL OR updated_at < now() - make_interval(secs => $2::float8))
   AND ($3::text IS NULL OR last_error LIKE $3::text)

-- name: log_events
-- Append many events in one INSERT ($5 = the daemon writing them).
INSERT INTO events (message_table, message_id, event, detail, daemon)
SELECT u.message_table, u.message_id, u.event, u.detail, $5
  FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[])
       AS u(message_table, message_id, event, detail)

-- name: read_events
-- One message's event log in order (events are not moved by retention).
SELECT id, message_table, message_id, event, detail, daemon, at
  FROM events
 WHERE message_table = $1 AND message_id = $2
 ORDER BY id

-- name: find_message
-- One message by id from the hot table, else from its history table.
SELECT * FROM {t} WHERE id = $1
UNION ALL
SELECT * FROM {h} WHERE id = $1
LIMIT 1

-- name: move_finished
-- Move up to $3 rows that ended more than $1 seconds ago ($2 seconds for dead rows, which stay
-- longer so they can be requeued) to the history table, in one statement.
WITH moved AS (
    -- DELETE … RETURNING hands the rows to the INSERT; locked rows are left for the next run
    DELETE FROM {t}
     WHERE id IN (SELECT id FROM {t}
                   WHERE (status IN {done} AND updated_at < now() - make_interval(secs => $1))
                      OR (status = 'dead' AND updated_at < now() - make_interval(secs => $2))
                   ORDER BY id
                   LIMIT $3
                     FOR UPDATE SKIP LOCKED)
    RETURNING *
)
INSERT INTO {h} SELECT * FROM moved

-- name: purge_dedupe_keys
-- Delete up to $1 dedupe keys past their expires_at (never earlier: dedupe outlives the move).
DELETE FROM dedupe_keys
 WHERE (scope, key) IN (SELECT scope, key FROM dedupe_keys
                         WHERE expires_at < now() ORDER BY expires_at LIMIT $1)

-- name: purge_events
-- Delete up to $2 events older than $1 seconds.
DELETE FROM events
 WHERE id IN (SELECT id FROM events
               WHERE at < now() - make_interval(secs => $1)
               ORDER BY id LIMIT $2)

-- name: purge_bodies
-- Drop the message text of up to $2 history rows created more than $1 seconds ago (metadata
-- stays for trace; bodies may be kept for less time).
UPDATE {h}
   SET {body_null}
 WHERE id IN (SELECT id FROM {h}
               WHERE created_at < now() - make_interval(secs => $1) AND {body_kept}
               ORDER BY id LIMIT $2)

-- name: refresh_queue_stats
-- Snapshot depth (capped at $1) and oldest row per queue/status into queue_stats, each part
-- from a partial index; one statement, read by admission control and the gauges.
WITH snap (queue, status, depth, oldest_at) AS (
    {parts}
)
INSERT INTO queue_stats (queue, status, depth, oldest_at, updated_at)
SELECT queue, status, depth, oldest_at, now() FROM snap
ON CONFLICT (queue, status) DO UPDATE
   SET depth = EXCLUDED.depth, oldest_at = EXCLUDED.oldest_at, updated_at = EXCLUDED.updated_at
RETURNING queue, status, depth

-- name: refresh_account_depth
-- Snapshot each account's DUE queued MTs (run_after <= now(): scheduled rows and rows waiting
-- out a retry backoff do not count) into outbound_account_depth, for per-account admission
-- control; one statement per refresh, never a COUNT per request. A loose index scan over
-- outbound_queue_lane_idx lists the (category, account) pairs with queued messages (at most
-- $2), each pair's due ones are counted on the same index up to $1 (a range: messages
-- scheduled ahead are not read); accounts with nothing due lose their row.
{queued_lanes}, snap AS MATERIALIZED (
    SELECT a.acct AS account_id, sum(d.n)::bigint AS due
      FROM (SELECT * FROM accts LIMIT $2) a
      CROSS JOIN LATERAL (
          SELECT count(*) AS n
            FROM (SELECT 1 FROM outbound_queue q
                   WHERE q.lease_owner IS NULL AND q.category = a.category
                     AND q.acct = a.acct AND q.run_after <= now()
                   LIMIT $1) c) d
     GROUP BY a.acct
    HAVING sum(d.n) > 0
), gone AS (
    DELETE FROM outbound_account_depth
     WHERE account_id NOT IN (SELECT account_id FROM snap)
)
INSERT INTO outbound_account_depth (account_id, due, updated_at)
SELECT account_id, due, now() FROM snap
ON CONFLICT (account_id) DO UPDATE SET due = EXCLUDED.due, updated_at = EXCLUDED.updated_at

-- name: read_account_depth
-- The last per-account snapshot of due queued MTs (only accounts with due rows).
SELECT account_id, due, updated_at FROM outbound_account_depth

-- name: planner_stats
-- What the planner believes about queue tables $1: row estimate (-1: never analyzed), pages
-- then and now, and when statistics were last gathered.
SELECT c.relname::text AS queue, c.reltuples::float8 AS reltuples,
       c.relpages::int8 AS relpages,
       pg_relation_size(c.oid) / current_setting('block_size')::int8 AS pages_now,
       greatest(s.last_analyze, s.last_autoanalyze) AS analyzed_at,
       greatest(s.last_analyze, s.last_autoanalyze) < now() - make_interval(secs => $2)
           OR greatest(s.last_analyze, s.last_autoanalyze) IS NULL AS may_analyze
  FROM pg_class c
  JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE c.relname = ANY($1::text[]) AND c.relnamespace = to_regnamespace(current_schema())

-- name: read_queue_stats
-- The last snapshot of every queue/status.
SELECT queue, status, depth, oldest_at, updated_at FROM queue_stats ORDER BY queue, status

-- name: try_lock
-- Take a session advisory lock if free (periodic jobs: one instance at a time).
SELECT pg_try_advisory_lock($1)

-- name: unlock
-- Release a session advisory lock taken with try_lock.
SELECT pg_advisory_unlock($1)

-- name: notify
-- Wake the consumers listening on channel $1 (delivered at commit).
SELECT pg_notify($1, '')
