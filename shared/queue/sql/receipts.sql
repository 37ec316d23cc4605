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

-- name: store
-- The sender's receipt store: store a batch of receipts and match, in the same statement, the
-- ones that need nothing else (autocommit: one round trip, durable when it returns, as
-- `insert`). A receipt is stored `matched` with its part here when
-- - its part is written back and still open (`submitted`: a second receipt for a final part,
--   or a receipt whose part is not written yet while an older part has its reused id, goes to
--   the matcher, which tries it later, as before): the newest part with its normalised id on
--   one of the receipt's sibling connectors (its `siblings` in $1: the connectors of its
--   operator group, as `match` reads them from its arrays), created at most $3 seconds ago;
-- - its message is one part (its state follows from this part alone: a message of several
--   parts could have its other parts matched by a concurrent statement whose effects this
--   one's snapshot does not see), is still in `outbound` (a late receipt of a moved message
--   goes to the matcher), and owes no report: no callback_url, no Kannel dlr-url
--   (kannel_dlr false; NULL, a part older than migration 0017, counts as maybe);
-- - no earlier receipt with its SMSC id is still `queued` (receipts_unmatched_smsc_idx): the
--   matcher would apply that older receipt after this one.
-- Every other receipt is stored `queued`, exactly as `insert` stores it, and the matcher is
-- woken (one NOTIFY, only then). The part is updated as `match` updates it (`winner`: a
-- final receipt beats an intermediate one, then the newest), and a final state finalises
-- the message as `outbound.finalize` does for one part (delivered → delivered, expired →
-- expired, any other final state → undeliverable; from `submitted` only); the ESME receipt
-- trigger on outbound fires as for any status change.
-- Returns one row per receipt, in input order (ids follow the insert order): its id and
-- whether it was matched; `finalized` (the same on every row) counts the messages finalised.
WITH inp AS MATERIALIZED (
    -- json_to_recordset, not json_populate_recordset: a receipt also brings its siblings
    -- and its position `n`
    SELECT r.connector, r.smsc_id, r.raw_id, r.stat, r.state, r.final, r.err, r.done_date,
           r.body, r.message_state, r.network_error, r.siblings, r.n
      FROM json_to_recordset($1::text::json)
           AS r(connector text, smsc_id text, raw_id text, stat text, state text,
                final boolean, err text, done_date timestamptz, body text,
                message_state smallint, network_error bytea, siblings text[], n int)
), hit AS MATERIALIZED (
    -- the receipts matched here, with their part: one index probe on (smsc_id, connector),
    -- one on the message's primary key and one on receipts_unmatched_smsc_idx per receipt.
    -- Every lookup is a LATERAL subquery with LIMIT 1, which the planner cannot flatten:
    -- as joins, it planned them (and cached the generic plan) while the tables were small,
    -- as hash joins over whole-table scans, and kept them while the tables grew. (The
    -- siblings come with each receipt and the cut-off is computed once so that the generic
    -- plan costs no more than a custom one: else Postgres planned this statement anew at
    -- every execution.)
    SELECT i.n, m.part_id
      FROM inp i
      CROSS JOIN LATERAL (
          SELECT p.id AS part_id, p.outbound_id, p.parts_total, p.kannel_dlr, p.status
            FROM outbound_part p
           WHERE p.smsc_id = i.smsc_id
             AND p.connector = ANY(i.siblings)
             AND p.created_at >= (SELECT now() - make_interval(secs => $3::float8))
           ORDER BY p.id DESC
           LIMIT 1) m
      CROSS JOIN LATERAL (
          SELECT o.callback_url IS NULL AS quiet
            FROM outbound o
           WHERE o.id = m.outbound_id
           LIMIT 1) o
      -- an earlier receipt of this SMSC id still waiting (unmatched, not orphan), asked so
      -- that only receipts_unmatched_smsc_idx can answer (with `status = 'queued'` the
      -- planner, trusting statistics taken while none was queued, walked receipts_claim_idx:
      -- every queued receipt, for every receipt stored)
      LEFT JOIN LATERAL (
          SELECT true AS waiting
            FROM receipts q
           WHERE q.smsc_id = i.smsc_id AND q.outbound_part_id IS NULL
             AND q.status <> 'orphan'
           LIMIT 1) q ON true
     WHERE m.parts_total = 1 AND m.kannel_dlr IS FALSE AND m.status = 'submitted' AND o.quiet
       AND q.waiting IS NULL
), ins AS (
    INSERT INTO receipts (connector, smsc_id, raw_id, stat, state, final, err, done_date, body,
                          message_state, network_error, status, outbound_part_id)
    SELECT i.connector, i.smsc_id, i.raw_id, i.stat, i.state, i.final, i.err, i.done_date,
           i.body, i.message_state, i.network_error,
           CASE WHEN h.part_id IS NULL THEN 'queued' ELSE 'matched' END, h.part_id
      FROM inp i
      LEFT JOIN hit h ON h.n = i.n
     ORDER BY i.n
    RETURNING id, status
), winner AS (
    SELECT DISTINCT ON (h.part_id) h.part_id, i.state, i.final, i.err
      FROM hit h
      JOIN inp i ON i.n = h.n
     ORDER BY h.part_id, i.final DESC, i.n DESC
), parts AS (
    -- as `match`'s `parts` (heap-only: no indexed column changes); one primary-key probe
    -- per part (`hit` is estimated at a row or so, and a nested loop is the cheapest join)
    {receipt_part_update}
    RETURNING p.outbound_id, p.status, p.err, w.final
), done AS (
    -- `outbound.finalize` for a one-part message (one primary-key probe per message)
    UPDATE outbound AS o
       SET status = CASE p.status WHEN 'delivered' THEN 'delivered'
                                  WHEN 'expired' THEN 'expired'
                                  ELSE 'undeliverable' END,
           done_at = now(), updated_at = now(),
           last_error = CASE WHEN p.status = 'delivered' THEN o.last_error
                             ELSE coalesce('receipt err ' || p.err, o.last_error) END
      FROM parts p
     WHERE o.id = p.outbound_id AND o.status = 'submitted' AND p.final
       AND p.status IN ('delivered', 'undeliverable', 'expired', 'rejected', 'unknown_receipt')
    RETURNING o.id
), wake AS (
    -- one NOTIFY for the statement (delivered at commit), only when the matcher has work
    SELECT pg_notify($2, '') FROM (SELECT 1 FROM ins WHERE status = 'queued' LIMIT 1) q
)
SELECT ins.id, ins.status = 'matched' AS matched, f.finalized
  FROM ins
 CROSS JOIN (SELECT count(*) AS finalized FROM done) f
 CROSS JOIN (SELECT count(*) AS woken FROM wake) w
 ORDER BY ins.id

-- name: waiting
-- The receipts still waiting (queued, not orphan) for SMSC ids $1: the ones that arrived
-- before the write-back recorded their part. Locked for the caller's transaction, skipping
-- any a matcher holds (it matches those itself later). One probe of
-- receipts_unmatched_smsc_idx per id (asked so that only it can answer, as in `store`), a
-- LATERAL subquery the planner cannot flatten: as `smsc_id = ANY($1)` a generic plan cached
-- while the table was empty scanned it whole.
SELECT r.id, r.smsc_id, r.connector, r.state, r.final, r.err
  FROM unnest($1::text[]) AS s(smsc_id)
  CROSS JOIN LATERAL (
      SELECT r.id, r.smsc_id, r.connector, r.state, r.final, r.err
        FROM receipts r
       WHERE r.smsc_id = s.smsc_id AND r.outbound_part_id IS NULL AND r.status <> 'orphan'
         FOR UPDATE SKIP LOCKED) r

-- name: matched_to_parts
-- Receipts $1 matched to part 1 of messages $2 (pairwise; the write-back recorded those parts
-- with the receipts' state, in the caller's transaction, which holds the receipts' locks since
-- `waiting` read them). Each receipt is found by one primary-key probe, in a LATERAL subquery
-- the planner cannot flatten, and updated by its ctid (a TID scan per receipt: the row cannot
-- move, its lock is ours); its part by one probe of (outbound_id, part_no). Asked as `id =
-- ANY($1)` or as a join with the arrays, a generic plan cached while the table was small read
-- the whole table, or a bitmap of receipts_unmatched_smsc_idx: every waiting receipt.
UPDATE receipts AS r
   SET status = 'matched', outbound_part_id = u.part_id, updated_at = now()
  FROM (SELECT x.tid, p.id AS part_id
          FROM unnest($1::bigint[], $2::bigint[]) AS u(id, outbound_id)
          CROSS JOIN LATERAL (
              SELECT q.ctid AS tid FROM receipts q WHERE q.id = u.id LIMIT 1) x
          CROSS JOIN LATERAL (
              SELECT p.id FROM outbound_part p
               WHERE p.outbound_id = u.outbound_id AND p.part_no = 1
               LIMIT 1) p) u
 WHERE r.ctid = u.tid

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
    {receipt_part_update}
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
