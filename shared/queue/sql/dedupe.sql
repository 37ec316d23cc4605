-- The one dedupe rule, a fragment (not a statement): the ON CONFLICT clause of every statement
-- that claims an idempotency key in `dedupe_keys` (queue.sql `enqueue_dedupe`, outbound.sql
-- `insert_keyed`, inbound.sql `insert`, mo_parts.sql `claim_key`), where their SQL says
-- {take_over_expired}. docs/ARCHITECTURE.md, guarantee 2.

-- name: take_over_expired
-- A key still live (expires_at in the future) is left alone: the new row is a duplicate of the
-- key's target. A key past its expires_at is taken over by the new row, whether or not the
-- retention job has purged it yet: after its window a resubmit is a new message, which is what
-- the key's expiry promises a client, and the answer no longer depends on when retention last
-- ran (the target of an expired key may already be in history or erased). ON CONFLICT DO
-- UPDATE locks the conflicting key either way, so concurrent claimers of one key wait for each
-- other and agree on one row. It may touch a key once per statement: each statement claims a
-- key at most once (the callers pass the first row of a repeated key only).
ON CONFLICT (scope, key) DO UPDATE
   SET target_table = EXCLUDED.target_table, target_id = EXCLUDED.target_id,
       fingerprint = EXCLUDED.fingerprint, created_at = now(),
       expires_at = EXCLUDED.expires_at
 WHERE dedupe_keys.expires_at <= now()
