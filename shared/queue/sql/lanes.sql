-- Fragments (not statements) about outbound's lanes, filled in where a statement says
-- {queued_lanes}: the sender's claim (outbound.sql `claim`) and the per-account admission
-- snapshot (queue.sql `refresh_account_depth`).

-- name: queued_lanes
-- `accts`: the (category, account) pairs that have queued outbound rows, found by a loose
-- index scan over outbound_lane_idx (one index probe per pair, however many rows each holds),
-- in (category, account) order; account 0 stands for rows without an account.
WITH RECURSIVE accts(category, acct) AS (
    (SELECT category, coalesce(account_id, 0)
       FROM outbound
      WHERE status = 'queued'
      ORDER BY category, coalesce(account_id, 0)
      LIMIT 1)
    UNION ALL
    SELECT n.category, n.acct
      FROM accts a
      CROSS JOIN LATERAL (
          SELECT o.category, coalesce(o.account_id, 0) AS acct
            FROM outbound o
           WHERE o.status = 'queued'
             AND (o.category, coalesce(o.account_id, 0)) > (a.category, a.acct)
           ORDER BY o.category, coalesce(o.account_id, 0)
           LIMIT 1) n
)
