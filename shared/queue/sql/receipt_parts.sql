-- A fragment, not a statement (shared/queue/sql/__init__.py): `{receipt_part_update}` in
-- receipts.sql, the one rule by which a receipt changes its part, shared by the matcher's
-- `match` and the sender's `store`.

-- name: receipt_part_update
-- The winning receipt of each part (`winner`: part_id, state, final, err) sets the part's
-- state when it is final and a final state, keeps its err, and stamps done_at; heap-only
-- (no indexed column of outbound_part changes). The caller adds its RETURNING list.
UPDATE outbound_part AS p
   SET status = CASE WHEN w.final AND w.state IN ('delivered', 'undeliverable', 'expired',
                                                  'rejected', 'unknown_receipt')
                     THEN w.state ELSE p.status END,
       err = coalesce(w.err, p.err),
       done_at = CASE WHEN w.final THEN now() ELSE p.done_at END,
       updated_at = now()
  FROM winner w
 WHERE p.id = w.part_id
