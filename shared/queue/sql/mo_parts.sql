-- The statements that write the `mo_parts` queue (concatenated MO waiting for its other
-- fragments; shared/queue/mo_parts.py owns them). Data goes in $n only; {take_over_expired} is
-- the one dedupe rule (dedupe.sql).

-- name: claim_key
-- claim one key for a fragment (target filled in when known); a row if new or expired
-- (the dedupe rule, dedupe.sql).
INSERT INTO dedupe_keys (scope, key, target_table, target_id, expires_at)
VALUES ($1, $2, 'mo_parts', $3, now() + make_interval(secs => $4))
{take_over_expired}
RETURNING key

-- name: lock_message
-- serialise the fragments of one concatenated MO across instances.
SELECT pg_advisory_xact_lock($1)

-- name: insert
-- store one fragment unless the same seq is already waiting.
INSERT INTO mo_parts (connector, from_addr, to_addr, ref, total, seq, body, raw, data_coding,
                      meta)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (connector, from_addr, to_addr, ref, total, seq) WHERE status = 'queued' DO NOTHING
RETURNING id

-- name: recently_reassembled
-- was this very fragment (same key, seq and content) part of a message
-- completed within the window? An SMSC that did not see our deliver_sm_resp sends it again; a
-- new message reusing the reference differs in content (or comes after the window).
SELECT inbound_id FROM mo_parts
 WHERE connector = $1 AND from_addr = $2 AND to_addr = $3 AND ref = $4 AND total = $5
   AND seq = $6 AND status = 'done' AND updated_at > now() - make_interval(secs => $7)
   AND body IS NOT DISTINCT FROM $8 AND raw IS NOT DISTINCT FROM $9 AND id <> $10
 ORDER BY id DESC LIMIT 1

-- name: waiting
-- the queued fragments of one message, in sequence order.
SELECT id, seq, body, raw, data_coding, meta FROM mo_parts
 WHERE connector = $1 AND from_addr = $2 AND to_addr = $3 AND ref = $4 AND total = $5
   AND status = 'queued'
 ORDER BY seq

-- name: finish
-- mark a message's fragments reassembled ('done') or timed out ('failed').
UPDATE mo_parts SET status = $2, inbound_id = $3, updated_at = now()
 WHERE id = ANY($1::bigint[])

-- name: expired_messages
-- messages whose oldest waiting fragment is older than $1 s.
SELECT connector, from_addr, to_addr, ref, total
  FROM mo_parts
 WHERE status = 'queued'
 GROUP BY connector, from_addr, to_addr, ref, total
HAVING min(created_at) < now() - make_interval(secs => $1)
 LIMIT $2

-- name: purge
-- Delete reassembled or timed-out MO fragments older than $1 seconds (up to $2 rows).
DELETE FROM mo_parts
 WHERE id IN (SELECT id FROM mo_parts
               WHERE status <> 'queued' AND updated_at < now() - make_interval(secs => $1)
               ORDER BY id LIMIT $2)
