-- Fragments (not statements) about outbound's lanes, filled in where a statement says
-- {queued_lanes}: the sender's claim (outbound.sql `claim`) and the per-account admission
-- snapshot (queue.sql `refresh_account_depth`).

-- name: queued_lanes
-- `accts`: the (category, account) pairs that have queued messages, found by a loose index scan
-- over outbound_queue_lane_idx (one index probe per pair, however many rows each holds), in
-- (category, account) order; account 0 stands for messages without an account. A queue row
-- without a lease is a queued message (migration 0021).
WITH RECURSIVE accts(category, acct) AS (
    (SELECT category, acct
       FROM outbound_queue
      WHERE lease_owner IS NULL
      ORDER BY category, acct
      LIMIT 1)
    UNION ALL
    SELECT n.category, n.acct
      FROM accts a
      CROSS JOIN LATERAL (
          SELECT q.category, q.acct
            FROM outbound_queue q
           WHERE q.lease_owner IS NULL
             AND (q.category, q.acct) > (a.category, a.acct)
           ORDER BY q.category, q.acct
           LIMIT 1) n
)
