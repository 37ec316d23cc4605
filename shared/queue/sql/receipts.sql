-- The statements that write the `receipts` queue (shared/queue/receipts.py owns them).
-- Data goes in $n only.

-- name: insert
-- store a batch of receipts for the sender to match and wake it, in one
-- statement (autocommit: one round trip). RETURNING follows the input order (plain insert).
-- The receipts come as one JSON array $1 read through the table's row type (one parameter:
-- asyncpg encodes an array per column element by element).
WITH ins AS (
    -- the receipts, in input order
    INSERT INTO receipts (connector, smsc_id, raw_id, stat, state, final, err, done_date, body,
                          message_state, network_error)
    SELECT r.connector, r.smsc_id, r.raw_id, r.stat, r.state, r.final, r.err, r.done_date,
           r.body, r.message_state, r.network_error
      FROM json_populate_recordset(NULL::receipts, $1::text::json) AS r
    RETURNING id
)
-- one NOTIFY for the statement (delivered at commit)
SELECT ins.id FROM ins CROSS JOIN (SELECT pg_notify($2, '')) AS wake

-- name: match
-- Match up to $1 due receipts in one statement (run inside the caller's transaction):
-- - `sib`: receipt connector → connectors whose parts it may match (same operator group),
--   from the config arrays $2 (names) and $3 (operator groups).
-- - `picked`: due queued receipts, oldest first, locked (SKIP LOCKED: matchers never block);
--   a receipt is first tried $7 seconds after it arrived, by when the submit_sm_resp of its
--   part has normally been written back (a receipt racing its own response is common with
--   fast SMSCs, and every premature try is a wasted row update).
-- - `res`: each receipt with its newest part (NULL when none) that has its normalised id on a
--   sibling connector and was created at most $4 seconds before the receipt. The updates
--   below join this one CTE only (joining two CTEs made the planner nest loops over both).
-- - `winner`: several receipts for one part in a batch — a final one beats an intermediate
--   one, then the newest.
-- - `parts`: final receipts set the part's state; every receipt keeps its err.
-- - `rcpt`: matched receipts point at their part; the others retry with backoff ($5 base
--   seconds) or end orphan after $6 attempts.
-- `reported`: the matched receipts whose part was not final before (Kannel dlr-url reports).
WITH sib AS (
    SELECT a.connector AS rc, b.connector AS pc
      FROM unnest($2::text[], $3::text[]) AS a(connector, grp)
      JOIN unnest($2::text[], $3::text[]) AS b(connector, grp) ON a.grp = b.grp
), picked AS MATERIALIZED (
    SELECT r.id, r.connector, r.smsc_id, r.state, r.final, r.err, r.created_at
      FROM receipts r
     WHERE r.status = 'queued' AND r.run_after <= now() - make_interval(secs => $7::float8)
     ORDER BY r.run_after, r.id
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), res AS MATERIALIZED (
    -- one row per picked receipt with its part (NULL when none): the part lookup is one
    -- index probe on (smsc_id, connector) per receipt, the allowed connectors an array
    SELECT pk.id, pk.state, pk.final, pk.err, m.part_id, m.part_done, m.kannel_dlr
      FROM picked pk
      LEFT JOIN LATERAL (
          SELECT p.id AS part_id,
                 p.status IN ('delivered', 'undeliverable', 'expired', 'rejected',
                              'unknown_receipt') AS part_done,
                 p.kannel_dlr
            FROM outbound_part p
           WHERE p.smsc_id = pk.smsc_id
             AND p.connector = ANY(coalesce(
                     (SELECT array_agg(s.pc) FROM sib s WHERE s.rc = pk.connector),
                     ARRAY[pk.connector]))
             AND p.created_at >= pk.created_at - make_interval(secs => $4::float8)
           ORDER BY p.id DESC
           LIMIT 1) m ON true
), winner AS (
    SELECT DISTINCT ON (part_id) part_id, state, final, err
      FROM res
     WHERE part_id IS NOT NULL
     ORDER BY part_id, final DESC, id DESC
), parts AS (
    UPDATE outbound_part AS p
       SET status = CASE WHEN w.final AND w.state IN ('delivered', 'undeliverable', 'expired',
                                                      'rejected', 'unknown_receipt')
                         THEN w.state ELSE p.status END,
           err = coalesce(w.err, p.err),
           done_at = CASE WHEN w.final THEN now() ELSE p.done_at END,
           updated_at = now()
      FROM winner w
     WHERE p.id = w.part_id
    RETURNING p.outbound_id, w.final
), rcpt AS (
    UPDATE receipts AS r
       SET status = CASE WHEN res.part_id IS NOT NULL THEN 'matched'
                         WHEN r.attempts + 1 >= $6::int THEN 'orphan'
                         ELSE 'queued' END,
           outbound_part_id = res.part_id,
           attempts = r.attempts + (res.part_id IS NULL)::int,
           run_after = CASE WHEN res.part_id IS NULL
                            THEN now() + make_interval(
                                     secs => $5::float8 * power(2, least(r.attempts, 12)))
                            ELSE r.run_after END,
           last_error = CASE WHEN res.part_id IS NULL THEN 'no part with this smsc id'
                             ELSE r.last_error END,
           updated_at = now()
      FROM res
     WHERE r.id = res.id
    RETURNING r.status
)
SELECT coalesce((SELECT array_agg(DISTINCT outbound_id) FROM parts WHERE final), '{}')
           AS finals,
       coalesce((SELECT array_agg(DISTINCT outbound_id) FROM parts WHERE NOT final), '{}')
           AS intermediates,
       -- the matched receipts of parts that were not final yet, in arrival order: the ones a
       -- Kannel dlr-url reports (Kannel drops its DLR entry at the first final receipt); only
       -- parts whose message asked for one (NULL: a part written before migration 0017)
       coalesce((SELECT array_agg(id ORDER BY id) FROM res
                  WHERE part_id IS NOT NULL AND NOT part_done
                    AND coalesce(kannel_dlr, true)), '{}') AS reported,
       (SELECT count(*) FROM rcpt WHERE status = 'matched') AS matched,
       (SELECT count(*) FROM rcpt WHERE status = 'queued') AS retried,
       (SELECT count(*) FROM rcpt WHERE status = 'orphan') AS orphaned

-- name: kannel_dlrs
-- The receipts $1 (matched just now, in arrival order) of messages that asked for a Kannel
-- dlr-url, with what a Kannel DLR carries: the receipt (text, state, err, when it arrived, the
-- connector it came on), its part (number, SMSC id, connector) and the message (wherever it
-- lives: outbound, or outbound_history after the retention move). Read-only; one statement per
-- matching batch. `match` passes only the receipts of parts whose message asked for a Kannel
-- DLR (outbound_part.kannel_dlr).
--
-- Each lookup is a LATERAL subquery with LIMIT 1 (a primary key: at most one row anyway) so
-- that the planner cannot flatten it into the join tree: with plain joins it estimated the
-- message filter at one row and answered by hashing the whole receipts and outbound_part
-- tables at every call (a sequential scan of both per matching batch: 10-30 ms on a bench's
-- 10,000 rows, growing with the tables).
SELECT r.id AS receipt_id, r.created_at AS received_at, r.state, r.err, r.body,
       r.message_state, r.network_error, r.connector AS receipt_connector, p.part_no, p.parts_total, p.smsc_id, p.connector,
       o.id AS outbound_id, o.account_id, o.from_addr, o.to_addr, o.callback_url, o.dlr_mask,
       o.meta
  FROM unnest($1::bigint[]) WITH ORDINALITY AS u(id, n)
  CROSS JOIN LATERAL (
      SELECT r.* FROM receipts r WHERE r.id = u.id LIMIT 1) r
  CROSS JOIN LATERAL (
      SELECT p.* FROM outbound_part p WHERE p.id = r.outbound_part_id LIMIT 1) p
  JOIN LATERAL (
      SELECT m.id, m.account_id, m.from_addr, m.to_addr, m.callback_url, m.dlr_mask, m.meta
        FROM outbound m WHERE m.id = p.outbound_id
      UNION ALL
      SELECT h.id, h.account_id, h.from_addr, h.to_addr, h.callback_url, h.dlr_mask, h.meta
        FROM outbound_history h WHERE h.id = p.outbound_id
      LIMIT 1) o ON true
 WHERE o.callback_url IS NOT NULL AND coalesce(o.dlr_mask, 0) <> 0
   AND o.meta->>'callback_style' = 'kannel'
 ORDER BY u.n

-- name: orphan
-- Periodic job: receipts still unmatched $1 seconds after they arrived end orphan (at most
-- $2 per run). It walks the queued receipts on receipts_claim_idx (few: most match within a
-- second) rather than keeping an index by age that every receipt insert would pay for.
WITH old AS (
    SELECT id FROM receipts
     WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1::float8)
     ORDER BY run_after, id
     LIMIT $2
       FOR UPDATE SKIP LOCKED
)
UPDATE receipts AS r
   SET status = 'orphan', last_error = coalesce(r.last_error, 'no part with this smsc id'),
       updated_at = now()
  FROM old
 WHERE r.id = old.id
