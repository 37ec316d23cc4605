-- The statements of the `esme_deliveries` queue (shared/queue/esme_deliveries.py owns them):
-- deliver_sm PDUs owed to customer ESMEs. Receipt rows are inserted by the `esme_receipt`
-- trigger on outbound (migration 0015); MO rows by `insert_mo`. Data goes in $n only.

-- name: claim
-- Lease up to $2 due rows of the accounts in $1 (those with a receiver bind on this instance),
-- oldest first; a row whose message has an earlier unfinished row waits (in order per
-- message). A leased row stays `queued` with lease_owner/lease_until set (a lease that ran out
-- is free again, one attempt counted: its receiver died mid-delivery); no indexed column
-- changes, so the update is heap-only. Per account in index order (LATERAL), so a claim reads
-- about $2 rows whatever the backlog; the ids are picked in a MATERIALIZED CTE, so the claim
-- never returns more than $2, and updated through the primary key (= ANY of an array: a join
-- with the CTE may be planned as a hash join over the whole table).
WITH picked AS MATERIALIZED (
    SELECT p.id FROM unnest($1::bigint[]) AS a(account_id)
    CROSS JOIN LATERAL (
        SELECT d.id, d.run_after FROM esme_deliveries d
         WHERE d.status = 'queued' AND d.account_id = a.account_id AND d.run_after <= now()
           AND (d.lease_until IS NULL OR d.lease_until < now())
           AND (d.outbound_id IS NULL OR NOT EXISTS (
                SELECT 1 FROM esme_deliveries e
                 WHERE e.outbound_id = d.outbound_id AND e.id < d.id
                   AND e.status IN ('queued', 'sending')))
         ORDER BY d.run_after, d.id
         LIMIT $2
         FOR UPDATE SKIP LOCKED) p
     ORDER BY p.run_after, p.id
     LIMIT $2
)
UPDATE esme_deliveries d
   SET lease_owner = $3, lease_until = now() + make_interval(secs => $4),
       attempts = d.attempts + CASE WHEN d.lease_until IS NULL THEN 0 ELSE 1 END,
       updated_at = now()
 WHERE d.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING d.id, d.account_id, d.kind, d.outbound_id, d.inbound_id, d.message_ref, d.from_addr,
          d.to_addr, d.stat, d.message_state, d.final, d.err, d.submitted_at, d.done_at,
          d.body, d.raw, d.data_coding, d.esm_class, d.attempts, d.created_at

-- name: finish
-- The outcomes of one delivered batch in one statement (only rows whose lease is $2's):
-- - rows the ESME took (ids $1) are deleted, each with an `esme_delivered` event;
-- - rows not taken (ids $3, why in $4: a transient status, a timeout, the bind went away) are
--   queued again after $5 seconds, their lease given up; the ones reaching $6 attempts are
--   deleted instead, each with an `esme_delivery_dead` event.
-- Events are written as daemon $7. Returns (outcome, kind, n) for the metrics.
WITH failed AS (
    SELECT u.id, u.reason FROM unnest($3::bigint[], $4::text[]) AS u(id, reason)
), done AS (
    DELETE FROM esme_deliveries d
     WHERE d.id = ANY($1::bigint[]) AND d.lease_owner = $2 AND d.status = 'queued'
    RETURNING d.kind, d.outbound_id, d.inbound_id, d.stat
), dead AS (
    DELETE FROM esme_deliveries d USING failed f
     WHERE d.id = f.id AND d.lease_owner = $2 AND d.status = 'queued' AND d.attempts + 1 >= $6
    RETURNING d.kind, d.outbound_id, d.inbound_id, f.reason
), again AS (
    UPDATE esme_deliveries d
       SET attempts = d.attempts + 1, run_after = now() + make_interval(secs => $5),
           lease_owner = NULL, lease_until = NULL, last_error = f.reason, updated_at = now()
      FROM failed f
     WHERE d.id = f.id AND d.lease_owner = $2 AND d.status = 'queued' AND d.attempts + 1 < $6
    RETURNING d.kind
), ev AS (
    INSERT INTO events (message_table, message_id, event, detail, daemon)
    SELECT CASE WHEN x.outbound_id IS NOT NULL THEN 'outbound' ELSE 'inbound' END,
           coalesce(x.outbound_id, x.inbound_id), x.event, x.detail, $7::text
      FROM (SELECT outbound_id, inbound_id, 'esme_delivered' AS event,
                   jsonb_build_object('kind', kind, 'stat', stat) AS detail FROM done
            UNION ALL
            SELECT outbound_id, inbound_id, 'esme_delivery_dead',
                   jsonb_build_object('kind', kind, 'error', reason) FROM dead) x
     WHERE coalesce(x.outbound_id, x.inbound_id) IS NOT NULL
)
SELECT outcome, kind, count(*)::int AS n FROM (
    SELECT 'delivered' AS outcome, kind FROM done
    UNION ALL SELECT 'dead', kind FROM dead
    UNION ALL SELECT 'retried', kind FROM again) o
 GROUP BY outcome, kind

-- name: expire
-- Rows still waiting after the retention ($1 seconds: the account had no receiver bind for
-- that long; a row in flight under a live lease is left to its outcome) are deleted, each
-- with an `esme_delivery_expired` event (daemon $3); returns their kinds for the metric.
WITH gone AS (
    DELETE FROM esme_deliveries
     WHERE id IN (SELECT id FROM esme_deliveries
                   WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1)
                     AND (lease_until IS NULL OR lease_until < now())
                   ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
    RETURNING kind, outbound_id, inbound_id
), ev AS (
    INSERT INTO events (message_table, message_id, event, detail, daemon)
    SELECT CASE WHEN outbound_id IS NOT NULL THEN 'outbound' ELSE 'inbound' END,
           coalesce(outbound_id, inbound_id), 'esme_delivery_expired',
           jsonb_build_object('kind', kind), $3::text
      FROM gone WHERE coalesce(outbound_id, inbound_id) IS NOT NULL
)
SELECT kind FROM gone

-- name: reclaim
-- Rows an older receiver (before migration 0018) left `sending` past their lease go back to
-- queued, one attempt counted (`status <> 'queued'`: through esme_deliveries_legacy_idx).
UPDATE esme_deliveries
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, attempts = attempts + 1,
       updated_at = now()
 WHERE status <> 'queued' AND status = 'sending' AND lease_until < now()

-- name: purge
-- Finished rows an older receiver left (`delivered`, `expired`, `dead`: this release deletes
-- a row when it finishes) are deleted once $1 seconds old (their events stay for `smsgw trace`;
-- `status <> 'queued'`: through esme_deliveries_legacy_idx).
DELETE FROM esme_deliveries
 WHERE id IN (SELECT id FROM esme_deliveries
               WHERE status <> 'queued' AND status IN ('delivered', 'expired', 'dead')
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
-- Depth and oldest age of the rows waiting or in flight, per kind (the gauges and
-- `smsgw status`).
SELECT kind, count(*) AS depth,
       coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS oldest_age_s
  FROM esme_deliveries WHERE status IN ('queued', 'sending') GROUP BY kind
