-- The statements that write the `outbound` queue and its `outbound_part` rows beyond the
-- queue core's generic ones (shared/queue/outbound.py owns them). Data goes in $n only;
-- {take_over_expired} is the one dedupe rule (dedupe.sql).

-- name: insert
-- insert MTs without a client_ref and wake the senders, in ONE statement
-- (autocommit: one round trip, durable when it returns). RETURNING yields the rows in the
-- order the SELECT produced them (a plain insert from the document), which is the input order.
-- The MTs come as one JSON array $1 (`outbound._document`: one parameter, where asyncpg
-- encoded an array per column element by element); `payload`, `udh` (the binary payload,
-- the client's UDH) and `smpp` (per-message SMPP fields) are NULL for a plain text MT;
-- `due_now` says a scheduled MT is due at once because a connector may pass the schedule to
-- the SMSC (the sender holds it for the others), else it waits for send_at. $2: the channel.
WITH ins AS (
    -- the rows, in input order
    INSERT INTO outbound (account_id, source, from_addr, to_addr, body, category, priority,
                          encoding, callback_url, dlr_mask, send_at, valid_until, route_hint,
                          meta, run_after, to_hash, payload, udh, smpp)
    SELECT account_id, source, from_addr, to_addr, body, category, priority, encoding,
           callback_url, dlr_mask, send_at, valid_until, route_hint, meta,
           CASE WHEN due_now THEN now() ELSE coalesce(send_at, now()) END, to_hash,
           payload, udh, smpp
      FROM json_to_recordset($1::text::json) AS t(
                  account_id bigint, source text, from_addr text, to_addr text, body text,
                  category text, priority smallint, encoding text, client_ref text,
                  callback_url text, dlr_mask smallint, send_at timestamptz,
                  valid_until timestamptz, route_hint text, meta jsonb, fingerprint text,
                  to_hash bytea, payload bytea, udh bytea, smpp jsonb, due_now boolean)
    RETURNING id
)
-- one NOTIFY for the statement (delivered at commit)
SELECT ins.id FROM ins CROSS JOIN (SELECT pg_notify($2, '')) AS wake

-- name: insert_keyed
-- insert a batch of MTs and their client_ref keys in one statement.
-- Returns, per input position, the id drawn for it and whether its row was inserted.
WITH input AS (
    -- one row per MT, in caller order (the document $1 as in `insert`; $2: the keys' ttl)
    SELECT * FROM ROWS FROM (json_to_recordset($1::text::json) AS (
                  account_id bigint, source text, from_addr text, to_addr text, body text,
                  category text, priority smallint, encoding text, client_ref text,
                  callback_url text, dlr_mask smallint, send_at timestamptz,
                  valid_until timestamptz, route_hint text, meta jsonb, fingerprint text,
                  to_hash bytea, payload bytea, udh bytea, smpp jsonb, due_now boolean))
        WITH ORDINALITY AS t(account_id, source, from_addr, to_addr, body, category, priority,
                             encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                             route_hint, meta, fingerprint, to_hash, payload, udh, smpp,
                             due_now, ord)
), numbered AS MATERIALIZED (
    -- draw the row ids first so the dedupe key can point at its row in the same statement
    SELECT nextval('outbound_id_seq') AS id, input.* FROM input
), keys AS (
    -- claim each client_ref; a live key is left alone, an expired one is taken over (the
    -- dedupe rule, dedupe.sql)
    INSERT INTO dedupe_keys (scope, key, target_table, target_id, fingerprint, expires_at)
    SELECT 'mt:' || account_id, client_ref, 'outbound', id, fingerprint,
           now() + make_interval(secs => $2)
      FROM numbered WHERE client_ref IS NOT NULL
    {take_over_expired}
    RETURNING target_id
), ins AS (
    -- rows without a key, and rows whose key was claimed just now
    INSERT INTO outbound (id, account_id, source, from_addr, to_addr, body, category, priority,
                          encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                          route_hint, meta, run_after, to_hash, payload, udh, smpp)
    OVERRIDING SYSTEM VALUE
    SELECT id, account_id, source, from_addr, to_addr, body, category, priority, encoding,
           client_ref, callback_url, dlr_mask, send_at, valid_until, route_hint, meta,
           CASE WHEN due_now THEN now() ELSE coalesce(send_at, now()) END, to_hash,
           payload, udh, smpp
      FROM numbered
     WHERE client_ref IS NULL OR id IN (SELECT target_id FROM keys)
    RETURNING id
)
SELECT n.ord, n.id, (i.id IS NOT NULL) AS created
  FROM numbered n LEFT JOIN ins i ON i.id = n.id
 ORDER BY n.ord

-- name: claim
-- Lease up to $3 messages to owner $1 for $2 seconds, in one statement. The queue's in-flight
-- state lives in `outbound_queue` (migration 0021: one row per queued or sending message, its
-- lease NULL while queued); `outbound` keeps the visible state, updated heap-only here.
-- - `stale`: messages whose lease expired (their sender died or lost its responses) are taken
--   over first, on the outbound_queue_lease_idx branch (an OR in the claim would defeat the
--   lane index); they come back with reclaimed = true and count the lost attempt.
-- - `accts`: a loose index scan (recursive CTE) over outbound_queue_lane_idx lists each
--   (category, account) with queued messages, at most $4 of them.
-- - `cand`: each account's oldest due messages (FIFO by run_after), ranked within the account;
--   a disabled account's lane is skipped (its messages are held until it is enabled: one
--   primary-key probe per lane, never per row).
-- - `fresh`: transactional first, then round-robin across accounts by that rank; the queue
--   rows are materialised and locked with SKIP LOCKED, so concurrent claimers never exceed $3
--   in total and never block each other. Every statement that changes a queued or sending
--   message locks its queue row first, then its `outbound` row: never the other way round.
-- - `decided`: the claim is the authoritative check where messages leave: past valid_until →
--   expired; a marketing MT to a suppressed number (global or for its sender id) → suppressed;
--   a future send_at → back to queued with run_after = send_at, unless $5 (this sender has
--   a connector that passes schedules to the SMSC: it routes the message and holds it
--   itself for the others); else sending.
--   Suppression compares the keyed recipient hash stored on the row at intake (`to_hash`,
--   shared/domain/suppression.py) with `suppressions.number_hash`: one index probe, no hashing here;
--   a legacy entry (keyed = false, not yet re-keyed) matches by sha256 of the number through
--   the partial index suppressions_legacy_idx, which is empty once a daemon has re-keyed.
--   `unhashed`: a leased marketing row written without to_hash (see hash_claimed).
--   `resync`: a queue row that disagrees with its message (changed by a daemon of the previous
--   release, by hand, or moved away) is set right instead of claimed: it follows `outbound`
--   (queued with its run_after, sending with its lease, or gone when the message is neither).
-- - `qlease` / `qback` / `qgone`: the queue rows of leased and re-queued messages get their
--   lease and run_after; those of messages finished here leave the queue. Each finds its rows
--   by one array probe of the primary key (no join of two CTEs: the planner nests those).
-- `done_parts` lists the parts an earlier attempt already got accepted (retries, takeovers).
{queued_lanes}, stale AS MATERIALIZED (
    SELECT id FROM outbound_queue
     WHERE lease_until < now()
       -- never our own: an outcome of ours may still be waiting for its write-back
       AND lease_owner <> $1::text
     ORDER BY lease_until
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), cand AS MATERIALIZED (
    SELECT c.id, a.category,
           row_number() OVER (PARTITION BY a.category, a.acct ORDER BY c.run_after, c.id) AS rn
      FROM (SELECT * FROM accts l
             WHERE NOT EXISTS (SELECT 1 FROM accounts x WHERE x.id = l.acct AND x.disabled)
             LIMIT $4) a
      CROSS JOIN LATERAL (
          SELECT q.id, q.run_after
            FROM outbound_queue q
           WHERE q.lease_owner IS NULL AND q.category = a.category AND q.acct = a.acct
             AND q.run_after <= now()
           ORDER BY q.run_after, q.id
           LIMIT $3) c
), fresh AS MATERIALIZED (
    SELECT id FROM outbound_queue
     WHERE id = ANY(ARRAY(
               SELECT id FROM cand
                ORDER BY (category = 'transactional') DESC, rn, id
                LIMIT greatest(0, $3 - (SELECT count(*) FROM stale))))
       -- lease_until, not lease_owner (NULL together: the table's CHECK): a condition the lane
       -- index's predicate does not name, so the rows are probed on the primary key; with
       -- `lease_owner IS NULL` a generic plan walked the whole lane index (15 ms a claim)
       AND lease_until IS NULL AND run_after <= now()
       FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, true AS reclaimed FROM stale
    UNION ALL
    SELECT id, false FROM fresh
), decided AS MATERIALIZED (
    SELECT p.id, p.reclaimed, o.status AS was, o.run_after, o.send_at, o.lease_owner,
           o.lease_until,
           CASE WHEN o.status IS DISTINCT FROM
                     CASE WHEN p.reclaimed THEN 'sending' ELSE 'queued' END
                     OR (NOT p.reclaimed AND o.run_after > now()) THEN 'resync'
                WHEN o.valid_until <= now() THEN 'expired'
                WHEN o.category = 'marketing' AND (EXISTS (
                         SELECT 1 FROM suppressions s
                          WHERE s.number_hash = o.to_hash
                            AND s.scope IN ('global', o.from_addr))
                      OR EXISTS (
                         SELECT 1 FROM suppressions s
                          WHERE NOT s.keyed
                            AND s.number_hash = sha256(convert_to(o.to_addr, 'UTF8'))
                            AND s.scope IN ('global', o.from_addr))) THEN 'suppressed'
                WHEN o.send_at > now() AND NOT p.reclaimed AND NOT $5::bool THEN 'queued'
                ELSE 'sending' END AS next_status
      -- each message by its primary key (the LATERAL with LIMIT is never flattened into a
      -- join): a join let a generic plan cached while the tables were small hash a
      -- sequential scan of outbound at every claim until the next ANALYZE (measured without
      -- one: 2 ms per claim of 100, 13 ms after 40,000 messages). A picked queue row whose
      -- message is gone is not decided here; `qgone` deletes it.
      FROM picked p
      CROSS JOIN LATERAL (
          SELECT m.status, m.run_after, m.send_at, m.lease_owner, m.lease_until, m.valid_until,
                 m.category, m.to_hash, m.from_addr, m.to_addr
            FROM outbound m WHERE m.id = p.id LIMIT 1) o
), qlease AS (
    -- the leased ones: constants only, no join (a join of the queue with `decided` was
    -- planned as a nested loop over the CTE: ~1 ms per claim of 150)
    UPDATE outbound_queue
       SET lease_owner = $1::text, lease_until = now() + make_interval(secs => $2::float8)
     WHERE id = ANY(ARRAY(SELECT id FROM decided WHERE next_status = 'sending'))
), qback AS (
    -- the rare rest that stays queued (send_at ahead) or is set right from its message
    UPDATE outbound_queue AS q
       SET lease_owner = CASE WHEN d.was = 'sending' AND d.next_status = 'resync'
                              THEN coalesce(d.lease_owner, '(resync)') END,
           lease_until = CASE WHEN d.was = 'sending' AND d.next_status = 'resync'
                              THEN coalesce(d.lease_until, now()) END,
           run_after = CASE WHEN d.next_status = 'queued' THEN d.send_at ELSE d.run_after END
      FROM decided d
     WHERE q.id = d.id
       AND q.id = ANY(ARRAY(SELECT id FROM decided
                             WHERE next_status = 'queued'
                                OR (next_status = 'resync' AND was IN ('queued', 'sending'))))
), qgone AS (
    -- finished here, set right to "gone", or picked with no message left
    DELETE FROM outbound_queue
     WHERE id = ANY(ARRAY(
               SELECT id FROM decided
                WHERE next_status IN ('expired', 'suppressed')
                   OR (next_status = 'resync' AND was NOT IN ('queued', 'sending'))
               UNION ALL
               SELECT id FROM picked WHERE id NOT IN (SELECT id FROM decided)))
)
UPDATE outbound AS m
   SET status = d.next_status,
       run_after = CASE WHEN d.next_status = 'queued' THEN m.send_at ELSE m.run_after END,
       lease_owner = CASE WHEN d.next_status = 'sending' THEN $1::text END,
       lease_until = CASE WHEN d.next_status = 'sending'
                          THEN now() + make_interval(secs => $2::float8) END,
       attempts = m.attempts + d.reclaimed::int,
       done_at = CASE WHEN d.next_status IN ('expired', 'suppressed') THEN now()
                      ELSE m.done_at END,
       last_error = CASE d.next_status WHEN 'expired' THEN 'validity period passed'
                                       WHEN 'suppressed' THEN 'recipient suppressed'
                                       ELSE m.last_error END,
       updated_at = now()
  FROM decided d
 -- the ids as one array too, so the plan can probe outbound_pkey with them once (measured
 -- with the daemons' statistics refresh: 16 µs per message instead of 42-74, whose cached
 -- plans hashed a sequential scan of outbound)
 WHERE m.id = d.id AND d.next_status <> 'resync'
   AND m.id = ANY(ARRAY(SELECT id FROM decided WHERE next_status <> 'resync'))
RETURNING m.id, m.account_id, m.source, m.from_addr, m.to_addr, m.body, m.category,
          m.priority, m.encoding, m.connector, m.route_hint, m.client_ref, m.callback_url,
          m.dlr_mask, m.meta, m.attempts, m.status, m.lease_until, m.valid_until, m.send_at,
          -- NULL for a plain text MT: nothing to decode on the hot path
          m.payload, m.udh, m.smpp, d.reclaimed,
          (m.to_hash IS NULL AND m.category = 'marketing' AND m.status = 'sending') AS unhashed,
          CASE WHEN m.attempts > 0 THEN ARRAY(
              SELECT p.part_no FROM outbound_part p
               WHERE p.outbound_id = m.id AND p.smsc_id IS NOT NULL
                 AND p.status <> 'rejected') END AS done_parts

-- name: hash_claimed
-- Rows the claim leased without a recipient hash (inserted by an earlier release or by hand):
-- store the keyed hashes $2[i] the sender computed and finish a suppressed marketing MT the way
-- the claim would have (its queue row leaves the queue). Fenced by owner $1 on the queue row,
-- locked before the message (the claim's order); one statement per claim, only when such rows
-- exist.
WITH u AS (
    SELECT * FROM unnest($2::bigint[], $3::bytea[]) AS u(id, h)
), hit AS (
    SELECT u.id, EXISTS (SELECT 1 FROM outbound o JOIN suppressions s
                          ON s.number_hash = u.h AND s.scope IN ('global', o.from_addr)
                         WHERE o.id = u.id AND o.category = 'marketing') AS suppressed
      FROM u
), kept AS MATERIALIZED (
    SELECT q.id FROM outbound_queue q JOIN hit USING (id)
     WHERE q.lease_owner = $1::text AND NOT hit.suppressed AND q.id = ANY($2::bigint[])
       FOR UPDATE OF q
), gone AS (
    DELETE FROM outbound_queue AS q
     USING hit
     WHERE q.id = hit.id AND q.lease_owner = $1::text AND hit.suppressed
       AND q.id = ANY($2::bigint[])
    RETURNING q.id
)
UPDATE outbound AS m
   SET to_hash = u.h,
       status = CASE WHEN hit.suppressed THEN 'suppressed' ELSE m.status END,
       lease_owner = CASE WHEN hit.suppressed THEN NULL ELSE m.lease_owner END,
       lease_until = CASE WHEN hit.suppressed THEN NULL ELSE m.lease_until END,
       done_at = CASE WHEN hit.suppressed THEN now() ELSE m.done_at END,
       last_error = CASE WHEN hit.suppressed THEN 'recipient suppressed' ELSE m.last_error END,
       updated_at = now()
  FROM u JOIN hit USING (id)
 WHERE m.id = u.id AND m.status = 'sending'
   AND m.id IN (SELECT id FROM kept UNION ALL SELECT id FROM gone)
RETURNING m.id, m.status

-- name: write_back
-- Record a batch of submit outcomes in one statement, fenced by lease owner $1:
-- - `msg`: one row per finished message (all its parts answered, or given up).
-- - `qdone` / `qretry`: only messages whose queue row is still leased to $1 count as owned
--   (a late response can never overwrite a message another sender has taken over: the
--   takeover changed the queue row's owner). A finished message leaves the queue; a retry
--   stays in it, queued again with run_after = now + its backoff.
-- - `owned`: the owned messages' state in `outbound` (a heap-only update).
-- - `parts_new` / `parts_again`: insert each answered part (smsc id, command_status, whether
--   its message asked for a Kannel dlr-url) of the owned messages; a resubmitted part replaces
--   the earlier attempt's row.
-- The messages come as one JSON array $2, the parts as one JSON array $3 (one parameter each:
-- asyncpg checks every element of an array parameter, ~24 checks per message as 16 arrays);
-- a missing key reads as NULL.
-- A receipt that arrived before its part was recorded (a fast SMSC's receipt racing this
-- write-back) comes with its message and part: the caller read and locked it in this
-- transaction (`receipts.waiting`) and gives its outcome — the message's `receipt_final` (the
-- final state the receipt sets) and `receipt_err`; the part's `receipt_status` (its state from
-- the receipt), `receipt_err` and `receipt_done` (the receipt was final) — and marks it
-- matched afterwards (`receipts.matched_to_parts`). The message is finalised as
-- `outbound.finalize` does for one part, the part updated as `receipt_part_update` does.
WITH msg AS (
    SELECT * FROM json_to_recordset($2::text::json)
             AS u(id bigint, status text, error_code int, error text, delay_s float8,
                  attempts_inc int, parts_total smallint, connector text, receipt_final text,
                  receipt_err text)
), qdone AS (
    -- the ids reach the queue as one array (evaluated once): probed on the primary key, where
    -- a join with `msg` made the generic plan scan the whole queue table
    DELETE FROM outbound_queue AS q
     WHERE q.id = ANY(ARRAY(SELECT id FROM msg WHERE status <> 'queued'))
       AND q.lease_owner = $1::text
    RETURNING q.id
), qretry AS (
    UPDATE outbound_queue AS q
       SET lease_owner = NULL, lease_until = NULL,
           run_after = now() + make_interval(secs => msg.delay_s)
      FROM msg
     WHERE q.id = msg.id AND q.lease_owner = $1::text AND msg.status = 'queued'
       AND q.id = ANY(ARRAY(SELECT id FROM msg WHERE status = 'queued'))
    RETURNING q.id
), owned AS MATERIALIZED (
    UPDATE outbound AS m
       SET status = coalesce(msg.receipt_final, msg.status),
           error_code = coalesce(msg.error_code, m.error_code),
           last_error = CASE WHEN msg.receipt_final IN ('undeliverable', 'expired')
                             THEN coalesce('receipt err ' || msg.receipt_err, msg.error,
                                           m.last_error)
                             ELSE coalesce(msg.error, m.last_error) END,
           attempts = m.attempts + msg.attempts_inc,
           run_after = CASE WHEN msg.status = 'queued'
                            THEN now() + make_interval(secs => msg.delay_s)
                            ELSE m.run_after END,
           parts_total = coalesce(msg.parts_total, m.parts_total),
           -- a retry keeps the column as it was: a forced connector stays forced, and a
           -- connector that failed does not pin the next attempt
           connector = CASE WHEN msg.status = 'queued' THEN m.connector
                            ELSE coalesce(msg.connector, m.connector) END,
           submitted_at = CASE WHEN msg.status = 'submitted' THEN now()
                               ELSE m.submitted_at END,
           done_at = CASE WHEN msg.status IN ('rejected', 'submit_unknown', 'dead', 'expired')
                               OR msg.receipt_final IS NOT NULL
                          THEN now() ELSE m.done_at END,
           lease_owner = NULL, lease_until = NULL, updated_at = now()
      FROM msg
     WHERE m.id = msg.id AND m.status = 'sending'
       AND m.id IN (SELECT id FROM qdone UNION ALL SELECT id FROM qretry)
    RETURNING m.id
), part AS MATERIALIZED (
    -- the owned messages' answered parts, and whether an earlier attempt left a row for it
    -- (one probe of the (outbound_id, part_no) key each)
    SELECT u.*, EXISTS (SELECT 1 FROM outbound_part x
                         WHERE x.outbound_id = u.outbound_id AND x.part_no = u.part_no) AS again
      FROM json_to_recordset($3::text::json)
           AS u(outbound_id bigint, part_no smallint, parts_total smallint, connector text,
                smsc_id text, command_status int, status text, kannel_dlr boolean,
                receipt_status text, receipt_err text, receipt_done boolean)
     WHERE u.outbound_id IN (SELECT id FROM owned)
), parts_new AS (
    -- a first attempt's parts (nearly all): a plain insert. Not ON CONFLICT: a speculative
    -- insertion writes one more WAL record per row (its confirmation). No other transaction
    -- can add a part of an owned message meanwhile: parts are written only here, by the
    -- lease owner, and the fence above holds the lease row.
    INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,
                               command_status, status, submitted_at, done_at, kannel_dlr, err)
    SELECT u.outbound_id, u.part_no, u.parts_total, u.connector, u.smsc_id, u.command_status,
           coalesce(u.receipt_status, u.status), now(),
           CASE WHEN u.status = 'rejected' OR u.receipt_done THEN now() END, u.kannel_dlr,
           u.receipt_err
      FROM part u
     WHERE NOT u.again
    RETURNING 1
), parts_again AS (
    -- a resubmitted part replaces the earlier attempt's row
    INSERT INTO outbound_part AS p (outbound_id, part_no, parts_total, connector, smsc_id,
                                    command_status, status, submitted_at, done_at, kannel_dlr,
                                    err)
    SELECT u.outbound_id, u.part_no, u.parts_total, u.connector, u.smsc_id, u.command_status,
           coalesce(u.receipt_status, u.status), now(),
           CASE WHEN u.status = 'rejected' OR u.receipt_done THEN now() END, u.kannel_dlr,
           u.receipt_err
      FROM part u
     WHERE u.again
    ON CONFLICT (outbound_id, part_no) DO UPDATE
       SET smsc_id = EXCLUDED.smsc_id, connector = EXCLUDED.connector,
           parts_total = EXCLUDED.parts_total, command_status = EXCLUDED.command_status,
           status = EXCLUDED.status, submitted_at = EXCLUDED.submitted_at,
           done_at = EXCLUDED.done_at, kannel_dlr = EXCLUDED.kannel_dlr,
           err = coalesce(EXCLUDED.err, p.err),
           attempts = p.attempts + 1, updated_at = now()
    RETURNING 1
)
SELECT coalesce((SELECT array_agg(id) FROM owned), '{}') AS owned,
       (SELECT count(*) FROM parts_new) + (SELECT count(*) FROM parts_again) AS parts

-- name: defer
-- Give claimed messages back to the queue until run_after = now + $3[i] seconds, without
-- counting an attempt (quiet hours, no bound connector on the route, drain); fenced by $1 on
-- the queue row.
WITH u AS (
    SELECT * FROM unnest($2::bigint[], $3::float8[], $4::text[]) AS u(id, delay_s, reason)
), q AS (
    UPDATE outbound_queue AS q
       SET lease_owner = NULL, lease_until = NULL,
           run_after = now() + make_interval(secs => u.delay_s)
      FROM u
     WHERE q.id = u.id AND q.lease_owner = $1::text AND q.id = ANY($2::bigint[])
    RETURNING q.id, q.run_after
)
UPDATE outbound AS m
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, run_after = q.run_after,
       last_error = coalesce(u.reason, m.last_error), updated_at = now()
  FROM q JOIN u USING (id)
 WHERE m.id = q.id AND m.status = 'sending'
RETURNING m.id

-- name: release
-- Drain: give back every message still leased to owner $1 (claimed, never submitted), or only
-- those in $2.
WITH q AS (
    UPDATE outbound_queue
       SET lease_owner = NULL, lease_until = NULL
     WHERE lease_owner = $1::text
       AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
    RETURNING id
)
UPDATE outbound AS m
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = now()
  FROM q
 WHERE m.id = q.id AND m.status = 'sending'
RETURNING m.id

-- name: current_xid
-- The claim transaction's id (64-bit): if its COMMIT's answer is lost (the primary crashed or
-- failed over), `release_unknown` finds what it leased.
SELECT pg_current_xact_id()::text

-- name: release_unknown
-- A claim whose commit outcome we never learnt: if it committed, its messages are leased to
-- owner $1, their queue rows untouched since (xmin is still that transaction's 32-bit id), and
-- were never submitted (we never saw them): give them back. $2 = the claims' 32-bit xids as
-- text. Needed because the claim never takes over its own owner's expired leases.
WITH q AS (
    UPDATE outbound_queue
       SET lease_owner = NULL, lease_until = NULL
     WHERE lease_owner = $1::text AND xmin::text = ANY($2::text[])
    RETURNING id
)
UPDATE outbound AS m
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = now()
  FROM q
 WHERE m.id = q.id AND m.status = 'sending'
RETURNING m.id

-- name: disown_orphans
-- Messages leased to owner $1 whose lease ran out more than $3 s ago and that the owner does
-- not hold ($2: every id it has in flight or waiting for its write-back): their state was lost
-- (an asynchronous standby promoted without the write-back that finished them). Renamed to
-- another owner, the claim takes them over like any stale lease (counted as a possible
-- duplicate: they may have been submitted).
WITH q AS (
    UPDATE outbound_queue
       SET lease_owner = $1::text || ' (orphaned)'
     WHERE lease_owner = $1::text
       AND lease_until < now() - make_interval(secs => $3::float8)
       AND NOT (id = ANY($2::bigint[]))
    RETURNING id, lease_owner
)
UPDATE outbound AS m
   SET lease_owner = q.lease_owner, updated_at = now()
  FROM q
 WHERE m.id = q.id
RETURNING m.id

-- name: log_events
-- Append message events (trace) in one INSERT.
INSERT INTO events (message_table, message_id, event, detail, daemon)
SELECT 'outbound', u.message_id, u.event, u.detail, $4
  FROM unnest($1::bigint[], $2::text[], $3::jsonb[]) AS u(message_id, event, detail)

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
-- one row per finalised message; `meta` (a jsonb the client decodes in Python) only where a
-- callback was asked for: most messages asked for none and only count
SELECT id, status, account_id, from_addr, to_addr, client_ref, callback_url, dlr_mask,
       CASE WHEN callback_url IS NOT NULL THEN meta END AS meta, parts_total, connector,
       error_code, last_error, delivered
  FROM (SELECT * FROM hot UNION ALL SELECT * FROM hist) c

-- name: cancel_queued
-- Cancel account $1's queued messages in one statement: all of them, or those in $2 (NULL:
-- all), only those to $5 / from $6 when given, at most $7 (NULL: no limit), picked on
-- outbound_account_idx. Only queued messages: a message a sender is claiming has its queue row
-- locked by the claim (FOR UPDATE SKIP LOCKED); `dq` waits for that lock, re-reads the row,
-- finds it leased and leaves it alone, so a message is never both cancelled and submitted
-- (the queue row is locked before the message, as everywhere). Each
-- cancelled row gets a `cancelled` event (reason $3, canceller $4) for the trace. Returns what a
-- status callback needs; `connector` is the one forced on the message (or NULL): a queued
-- message has not been routed yet.
WITH pick AS MATERIALIZED (
    SELECT id FROM outbound
     WHERE account_id = $1::bigint AND status = 'queued'
       AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
       AND ($5::text IS NULL OR to_addr = $5::text)
       AND ($6::text IS NULL OR from_addr = $6::text)
     ORDER BY id
     LIMIT $7::bigint
), dq AS (
    -- the queue rows still without a lease leave the queue
    DELETE FROM outbound_queue AS q
     WHERE q.id = ANY(ARRAY(SELECT id FROM pick)) AND q.lease_until IS NULL
    RETURNING q.id
), gone AS (
    UPDATE outbound AS m
       SET status = 'cancelled', done_at = now(), updated_at = now(), last_error = $3::text,
           lease_owner = NULL, lease_until = NULL
      FROM dq
     WHERE m.id = dq.id AND m.status = 'queued'
    RETURNING m.id, m.status, m.account_id, m.from_addr, m.to_addr, m.client_ref,
              m.callback_url, m.dlr_mask, m.meta, m.parts_total,
              coalesce(m.connector, m.route_hint) AS connector, m.error_code, m.last_error,
              0 AS delivered
), ev AS (
    INSERT INTO events (message_table, message_id, event, detail, daemon)
    SELECT 'outbound', id, 'cancelled', jsonb_build_object('reason', $3::text), $4::text
      FROM gone
)
SELECT * FROM gone

-- name: purge_parts
-- Delete up to $2 outbound_part rows created more than $1 seconds ago (no receipt can still
-- arrive for them: the smsc id → part map is kept that long).
DELETE FROM outbound_part
 WHERE id IN (SELECT id FROM outbound_part
               WHERE created_at < now() - make_interval(secs => $1)
               ORDER BY id LIMIT $2)

-- name: requeue_dead
-- Give dead messages another run (attempts reset, last_error kept), filtered by ids $1, by age
-- $2 seconds since they died, and by an error pattern $3 (LIKE); NULL filters match all. Each
-- goes back into the queue (`outbound_queue`), due now.
WITH back AS (
    UPDATE outbound
       SET status = 'queued', attempts = 0, run_after = now(), updated_at = now()
     WHERE status = 'dead'
       AND ($1::bigint[] IS NULL OR id = ANY($1::bigint[]))
       AND ($2::float8 IS NULL OR updated_at < now() - make_interval(secs => $2::float8))
       AND ($3::text IS NULL OR last_error LIKE $3::text)
    RETURNING id, category, account_id, run_after
)
INSERT INTO outbound_queue (id, category, acct, run_after)
SELECT id, category, coalesce(account_id, 0), run_after FROM back
ON CONFLICT (id) DO UPDATE
   SET lease_owner = NULL, lease_until = NULL, run_after = EXCLUDED.run_after
