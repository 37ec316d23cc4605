-- The statements of the `esme_deliveries` queue (shared/queue/esme_deliveries.py owns them):
-- deliver_sm PDUs owed to customer ESMEs. Receipt rows are inserted by the `esme_receipt`
-- trigger on outbound (migration 0015); MO rows by `insert_mo`. Data goes in $n only.

-- name: claim
-- Lease up to $2 due rows of the accounts in $1 (those with a receiver bind on this instance),
-- oldest first; a row whose message has an earlier unfinished row waits (in order per
-- message). The ids are picked in a MATERIALIZED CTE, so the claim never returns more than $2.
WITH picked AS MATERIALIZED (
    SELECT d.id FROM esme_deliveries d
     WHERE d.status = 'queued' AND d.account_id = ANY($1::bigint[]) AND d.run_after <= now()
       AND (d.outbound_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM esme_deliveries e
             WHERE e.outbound_id = d.outbound_id AND e.id < d.id
               AND e.status IN ('queued', 'sending')))
     ORDER BY d.run_after, d.id
     LIMIT $2
     FOR UPDATE SKIP LOCKED
)
UPDATE esme_deliveries d
   SET status = 'sending', lease_owner = $3, lease_until = now() + make_interval(secs => $4),
       updated_at = now()
  FROM picked WHERE d.id = picked.id
RETURNING d.id, d.account_id, d.kind, d.outbound_id, d.inbound_id, d.message_ref, d.from_addr,
          d.to_addr, d.stat, d.message_state, d.final, d.err, d.submitted_at, d.done_at,
          d.body, d.raw, d.data_coding, d.esm_class, d.attempts, d.created_at

-- name: reclaim
-- Rows whose lease ran out (a receiver died mid-delivery) go back to queued, one attempt
-- counted.
UPDATE esme_deliveries
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, attempts = attempts + 1,
       updated_at = now()
 WHERE status = 'sending' AND lease_until < now()

-- name: delivered
-- The ESME answered deliver_sm_resp ESME_ROK: finished (only while the lease is ours).
UPDATE esme_deliveries
   SET status = 'delivered', lease_owner = NULL, lease_until = NULL, last_error = NULL,
       updated_at = now()
 WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'sending'
RETURNING id, outbound_id, inbound_id, kind, stat

-- name: retry
-- Not delivered (a transient status, a timeout, the bind went away): queued again after $3
-- seconds; after $4 attempts `dead`.
UPDATE esme_deliveries
   SET status = CASE WHEN attempts + 1 >= $4 THEN 'dead' ELSE 'queued' END,
       attempts = attempts + 1, run_after = now() + make_interval(secs => $3),
       lease_owner = NULL, lease_until = NULL, last_error = $5, updated_at = now()
 WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'sending'
RETURNING id, status, outbound_id, inbound_id

-- name: release
-- Give back rows taken but not sent (the bind closed, the daemon stops): no attempt counted.
UPDATE esme_deliveries
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = now()
 WHERE id = ANY($1::bigint[]) AND lease_owner = $2 AND status = 'sending'

-- name: expire
-- Rows still queued after the retention ($1 seconds: the account had no receiver bind for
-- that long) end `expired`; returns them for the events and the metric.
UPDATE esme_deliveries
   SET status = 'expired', last_error = 'no receiver bind within the retention',
       updated_at = now()
 WHERE id IN (SELECT id FROM esme_deliveries
               WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1)
               ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
RETURNING id, account_id, kind, outbound_id, inbound_id

-- name: purge
-- Finished rows older than $1 seconds are deleted (their events stay for `smsgw trace`).
DELETE FROM esme_deliveries
 WHERE id IN (SELECT id FROM esme_deliveries
               WHERE status IN ('delivered', 'expired', 'dead')
                 AND updated_at < now() - make_interval(secs => $1)
               LIMIT $2)

-- name: insert_mo
-- Queue MO for the ESMEs of the accounts named in $1 (one INSERT per batch; a name no account
-- has queues nothing) and wake the receivers once.
WITH ins AS (
    INSERT INTO esme_deliveries (account_id, kind, inbound_id, from_addr, to_addr, body, raw,
                                 data_coding, esm_class)
    SELECT a.id, 'mo', u.inbound_id, u.from_addr, u.to_addr, u.body, u.raw, u.data_coding,
           u.esm_class
      FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                  $7::int2[], $8::int2[])
           AS u(account, inbound_id, from_addr, to_addr, body, raw, data_coding, esm_class)
      JOIN accounts a ON a.name = u.account
    RETURNING id
)
SELECT count(*) AS n,
       CASE WHEN count(*) > 0 THEN pg_notify('smsgw_esme_deliveries', '') END IS NULL AS woke
  FROM ins

-- name: stats
-- Depth and oldest age of the queued rows, per kind (the gauges and `smsgw status`).
SELECT kind, count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
  FROM esme_deliveries WHERE status IN ('queued', 'sending') GROUP BY kind

-- name: for_message
-- What was (or is to be) delivered back for one message (`smsgw trace`).
SELECT id, kind, stat, message_state, final, status, attempts, last_error, created_at,
       updated_at
  FROM esme_deliveries
 WHERE ($1::text = 'outbound' AND outbound_id = $2) OR ($1::text = 'inbound' AND inbound_id = $2)
 ORDER BY id
