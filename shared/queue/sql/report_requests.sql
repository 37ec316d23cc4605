-- The statements of the `report_requests` queue and its outputs, `report_chunks`
-- (shared/queue/report_requests.py owns them; migration 0016). Data goes in $n only.

-- name: insert
-- Queue one report request and wake the reporters ($6: the channel) in the same statement.
WITH ins AS (
    INSERT INTO report_requests (kind, params, account_id, requested_by, expires_at)
    VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))
    RETURNING *
)
SELECT ins.*, pg_notify($6::text, '') IS NULL AS woke FROM ins

-- name: claim
-- Lease up to $2 queued reports to $1 for $3 seconds. Fairness: each queued request is ranked
-- by the reports its account already has running (the operator's CLI reports count as
-- account 0) plus its place among that account's queued ones, so the claim takes every
-- account's first request before anyone's second, and one account's big reports never hold
-- back the others; ties go by id. The ranking reads only report requests (a small table) and
-- takes no lock; the pick then locks in that order with SKIP LOCKED in a MATERIALIZED CTE, so
-- concurrent claims never take one row twice nor more than $2 (guarantee 3).
WITH busy AS (
    SELECT coalesce(account_id, 0) AS account, count(*) AS n
      FROM report_requests WHERE status = 'running' GROUP BY 1
), ranked AS MATERIALIZED (
    SELECT r.id, coalesce(b.n, 0) + row_number() OVER (
               PARTITION BY coalesce(r.account_id, 0) ORDER BY r.id) AS rank
      FROM report_requests r
      LEFT JOIN busy b ON b.account = coalesce(r.account_id, 0)
     WHERE r.status = 'queued' AND r.run_after <= now()
), picked AS MATERIALIZED (
    SELECT r.id
      FROM report_requests r
      JOIN ranked k ON k.id = r.id
     WHERE r.status = 'queued'
     ORDER BY k.rank, r.id
     LIMIT $2
       FOR UPDATE OF r SKIP LOCKED
)
UPDATE report_requests r
   SET status = 'running', lease_owner = $1, lease_until = now() + make_interval(secs => $3),
       started_at = now(), rows_scanned = 0, rows_estimated = NULL, progress = 0,
       updated_at = now()
  FROM picked
 WHERE r.id = picked.id
RETURNING r.*

-- name: reclaim
-- Running reports whose lease expired (their reporter died or hung): back to queued with the
-- lost try counted, or failed after $1 attempts, or cancelled when a cancel was asked for.
-- Its own statement on report_requests_lease_idx, never an OR in the claim.
UPDATE report_requests
   SET status = CASE WHEN cancel_requested THEN 'cancelled'
                     WHEN attempts + 1 >= $1 THEN 'failed' ELSE 'queued' END,
       attempts = attempts + 1,
       last_error = CASE WHEN cancel_requested THEN 'cancelled'
                         ELSE 'lease expired: the reporter running it stopped' END,
       finished_at = CASE WHEN cancel_requested OR attempts + 1 >= $1 THEN now() END,
       lease_owner = NULL, lease_until = NULL, updated_at = now()
 WHERE id = ANY(ARRAY(SELECT id FROM report_requests
                       WHERE status = 'running' AND lease_until < now()
                       ORDER BY lease_until LIMIT 100 FOR UPDATE SKIP LOCKED))
RETURNING id, status

-- name: heartbeat
-- Progress of a running report, which also renews its lease; fenced by the owner. Returns
-- whether a cancel was asked for; no row: the lease was lost (another reporter took it).
UPDATE report_requests
   SET rows_scanned = $3, rows_estimated = $4, progress = $5,
       lease_until = now() + make_interval(secs => $6), updated_at = now()
 WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING cancel_requested

-- name: put_chunk
-- One chunk of an output file (in the transaction that then marks the report done).
INSERT INTO report_chunks (report_id, name, chunk_no, data) VALUES ($1, $2, $3, $4)
ON CONFLICT (report_id, name, chunk_no) DO UPDATE SET data = EXCLUDED.data

-- name: drop_chunks
-- The stored outputs of a report (before a rerun stores them again, or when it expires).
DELETE FROM report_chunks WHERE report_id = $1

-- name: finish
-- Done: the files' descriptions, final counts, expiry from now; fenced by the owner.
UPDATE report_requests
   SET status = 'done', files = $3, rows_scanned = $4, rows_estimated = $4, progress = 100,
       finished_at = now(), expires_at = now() + make_interval(secs => $5),
       lease_owner = NULL, lease_until = NULL, last_error = NULL, updated_at = now()
 WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING id

-- name: fail
-- Failed ($3 = 'failed', the reason in $4) or cancelled ($3 = 'cancelled'); fenced by owner.
UPDATE report_requests
   SET status = $3, last_error = $4, finished_at = now(),
       expires_at = now() + make_interval(secs => $5),
       lease_owner = NULL, lease_until = NULL, updated_at = now()
 WHERE id = $1 AND lease_owner = $2 AND status = 'running'
RETURNING id

-- name: release
-- Drain: hand reports this instance still runs back to the queue (no attempt counted);
-- another reporter, or this one after its restart, runs them again from the start.
UPDATE report_requests
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, rows_scanned = 0,
       progress = 0, updated_at = now()
 WHERE lease_owner = $1 AND status = 'running' AND id = ANY($2::bigint[])
RETURNING id

-- name: cancel
-- Cancel: a queued report ends cancelled at once; a running one is asked to stop (its
-- reporter sees cancel_requested at its next progress update). Scoped: $2 NULL = any report
-- (operator), else only that account's. Returns the row as it is now.
UPDATE report_requests
   SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
       finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END,
       last_error = CASE WHEN status = 'queued' THEN 'cancelled' ELSE last_error END,
       cancel_requested = (status IN ('queued', 'running')) OR cancel_requested,
       updated_at = now()
 WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2)
RETURNING *

-- name: get
-- One report; $2 NULL = any (operator), else only that account's.
SELECT * FROM report_requests WHERE id = $1 AND ($2::bigint IS NULL OR account_id = $2)

-- name: list
-- The newest $1 reports, optionally one account's ($2) and one status ($3).
SELECT * FROM report_requests
 WHERE ($2::bigint IS NULL OR account_id = $2) AND ($3::text IS NULL OR status = $3)
 ORDER BY id DESC LIMIT $1

-- name: chunk
-- One chunk of a stored output file (a reader streams them in order, one at a time).
SELECT data FROM report_chunks WHERE report_id = $1 AND name = $2 AND chunk_no = $3

-- name: purge
-- Retention: finished reports past their expiry, with their chunks (ON DELETE CASCADE), up to
-- $1 per run; returns their ids so each reporter can remove the files it wrote.
DELETE FROM report_requests
 WHERE id = ANY(ARRAY(SELECT id FROM report_requests
                       WHERE expires_at < now() AND status IN ('done', 'failed', 'cancelled')
                       ORDER BY expires_at LIMIT $1))
RETURNING id

-- name: known_ids
-- Which of these ids still have stored outputs (a reporter's sweep of its reports folder).
SELECT id FROM report_requests WHERE id = ANY($1::bigint[]) AND status IN ('queued', 'running', 'done')

-- name: erase_naming
-- `smsgw erase`: delete every report one of whose stored files holds $1 (the number's
-- national significant digits, in every form it is written; a match across two chunks is
-- found through the last 32 bytes of one and the first 32 of the next). Their files in the
-- reports areas go with the reporters' next sweep (a folder without a report is removed).
DELETE FROM report_requests
 WHERE id IN (SELECT c.report_id
                FROM report_chunks c
                LEFT JOIN report_chunks n ON n.report_id = c.report_id AND n.name = c.name
                                         AND n.chunk_no = c.chunk_no + 1
               WHERE position($1::bytea IN c.data) > 0
                  OR position($1::bytea IN substring(c.data FROM greatest(length(c.data) - 31, 1))
                              || coalesce(substring(n.data FROM 1 FOR 32), ''::bytea)) > 0)
RETURNING id

-- name: restart_running
-- `smsgw erase`: reports running now read a snapshot taken before the erasure; hand them back
-- to the queue (their reporter loses the lease at its next progress update and stores
-- nothing), so they run again without the erased rows.
UPDATE report_requests
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, rows_scanned = 0,
       progress = 0, updated_at = now()
 WHERE status = 'running'
RETURNING id
