-- The statements that write the `outbound` queue and its `outbound_part` rows beyond the
-- queue core's generic ones (shared/queue/outbound.py owns them). Data goes in $n only.

-- name: finalize
-- Messages $1 whose every part is now final get their state: all delivered → delivered, all
-- expired → expired, else undeliverable. The row is updated where it lives: outbound (from
-- submitted), or outbound_history after the retention move (a late receipt). Returns what a
-- status callback needs.
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

-- name: buffered_watchers
-- Of messages $1 that got an intermediate receipt, those whose application asked for Kannel
-- "queued on SMSC" reports (dlr-mask bit 4), wherever the row lives.
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
