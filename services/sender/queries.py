"""The sender's named SQL: the outbound claim and the batched `submit_sm_resp` write-back.

Each constant is one query; its comment says what it does and why it is shaped that way. Data
always travels as `$n` parameters (arrays for batches: one statement per batch, never one per
message). The receipt-matching SQL is `shared/queue/receipts.py`'s and `shared/queue/outbound.py`'s.
"""

from typing import Final, LiteralString

# name: claim_outbound
# Lease up to $3 messages to owner $1 for $2 seconds, in one statement:
# - `stale`: rows whose lease expired (their sender died or lost its responses) are taken over
#   first, on the outbound_lease_idx branch (an OR in the claim would defeat the claim index);
#   they come back with reclaimed = true and count the lost attempt.
# - `accts`: a loose index scan (recursive CTE) over outbound_lane_idx lists each
#   (category, account) with queued rows, at most $4 of them.
# - `cand`: each account's oldest due rows (FIFO by run_after), ranked within the account.
# - `fresh`: transactional first, then round-robin across accounts by that rank; the ids are
#   materialised and locked with SKIP LOCKED, so concurrent claimers never exceed $3 in total
#   and never block each other.
# - `decided`: the claim is the authoritative check where messages leave: past valid_until →
#   expired; a marketing MT to a suppressed number (global or for its sender id) → suppressed;
#   a future send_at → back to queued with run_after = send_at; else sending.
#   Suppression compares the keyed recipient hash stored on the row at intake (`to_hash`,
#   shared/domain/suppression.py) with `suppressions.number_hash`: one index probe, no hashing here;
#   a legacy entry (keyed = false, not yet re-keyed) matches by sha256 of the number through
#   the partial index suppressions_legacy_idx, which is empty once a daemon has re-keyed.
#   `unhashed`: a leased marketing row written without to_hash (see HASH_CLAIMED).
# `done_parts` lists the parts an earlier attempt already got accepted (retries, takeovers).
CLAIM_OUTBOUND: Final[LiteralString] = """
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
), stale AS MATERIALIZED (
    SELECT id FROM outbound
     WHERE status = 'sending' AND lease_until < now()
       -- never our own: an outcome of ours may still be waiting for its write-back
       AND lease_owner IS DISTINCT FROM $1::text
     ORDER BY lease_until
     LIMIT $3
       FOR UPDATE SKIP LOCKED
), cand AS MATERIALIZED (
    SELECT c.id, a.category,
           row_number() OVER (PARTITION BY a.category, a.acct ORDER BY c.run_after, c.id) AS rn
      FROM (SELECT * FROM accts LIMIT $4) a
      CROSS JOIN LATERAL (
          SELECT o.id, o.run_after
            FROM outbound o
           WHERE o.status = 'queued' AND o.category = a.category
             AND coalesce(o.account_id, 0) = a.acct AND o.run_after <= now()
           ORDER BY o.run_after, o.id
           LIMIT $3) c
), fresh AS MATERIALIZED (
    SELECT id FROM outbound
     WHERE id = ANY(ARRAY(
               SELECT id FROM cand
                ORDER BY (category = 'transactional') DESC, rn, id
                LIMIT greatest(0, $3 - (SELECT count(*) FROM stale))))
       AND status = 'queued' AND run_after <= now()
       FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT id, true AS reclaimed FROM stale
    UNION ALL
    SELECT id, false FROM fresh
), decided AS MATERIALIZED (
    SELECT o.id, p.reclaimed,
           CASE WHEN o.valid_until <= now() THEN 'expired'
                WHEN o.category = 'marketing' AND (EXISTS (
                         SELECT 1 FROM suppressions s
                          WHERE s.number_hash = o.to_hash
                            AND s.scope IN ('global', o.from_addr))
                      OR EXISTS (
                         SELECT 1 FROM suppressions s
                          WHERE NOT s.keyed
                            AND s.number_hash = sha256(convert_to(o.to_addr, 'UTF8'))
                            AND s.scope IN ('global', o.from_addr))) THEN 'suppressed'
                WHEN o.send_at > now() AND NOT p.reclaimed THEN 'queued'
                ELSE 'sending' END AS next_status
      FROM picked p JOIN outbound o USING (id)
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
 WHERE m.id = d.id
RETURNING m.id, m.account_id, m.source, m.from_addr, m.to_addr, m.body, m.category,
          m.priority, m.encoding, m.connector, m.route_hint, m.client_ref, m.callback_url,
          m.dlr_mask, m.meta, m.attempts, m.status, m.lease_until, m.valid_until, d.reclaimed,
          (m.to_hash IS NULL AND m.category = 'marketing' AND m.status = 'sending') AS unhashed,
          CASE WHEN m.attempts > 0 THEN ARRAY(
              SELECT p.part_no FROM outbound_part p
               WHERE p.outbound_id = m.id AND p.smsc_id IS NOT NULL
                 AND p.status <> 'rejected') END AS done_parts
"""

# name: hash_claimed
# Rows the claim leased without a recipient hash (inserted by an earlier release or by hand):
# store the keyed hashes $2[i] the sender computed and finish a suppressed marketing MT the way
# the claim would have. Fenced by owner $1; one statement per claim, only when such rows exist.
HASH_CLAIMED: Final[LiteralString] = """
WITH u AS (
    SELECT * FROM unnest($2::bigint[], $3::bytea[]) AS u(id, h)
), hit AS (
    SELECT u.id, EXISTS (SELECT 1 FROM outbound o JOIN suppressions s
                          ON s.number_hash = u.h AND s.scope IN ('global', o.from_addr)
                         WHERE o.id = u.id AND o.category = 'marketing') AS suppressed
      FROM u
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
 WHERE m.id = u.id AND m.lease_owner = $1::text AND m.status = 'sending'
RETURNING m.id, m.status
"""

# name: write_back
# Record a batch of submit outcomes in one statement, fenced by lease owner $1:
# - `msg`: one row per finished message (all its parts answered, or given up).
# - `owned`: update only the messages still leased to $1 and still sending, so a late response
#   can never overwrite a row another sender has taken over; retries go back to queued with
#   run_after = now + their backoff.
# - `parts`: insert each answered part (smsc id, command_status) of the owned messages; a
#   resubmitted part replaces the earlier attempt's row.
# Receipts that arrived before their part was recorded are not woken here: the matcher tries
# a receipt only after a short minimum age and retries unmatched ones with backoff, which
# costs less than probing the receipts for every recorded part.
WRITE_BACK: Final[LiteralString] = """
WITH msg AS (
    SELECT * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::text[], $6::float8[],
                         $7::int[], $8::smallint[], $9::text[])
             AS u(id, status, error_code, error, delay_s, attempts_inc, parts_total, connector)
), owned AS MATERIALIZED (
    UPDATE outbound AS m
       SET status = msg.status,
           error_code = coalesce(msg.error_code, m.error_code),
           last_error = coalesce(msg.error, m.last_error),
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
                          THEN now() ELSE m.done_at END,
           lease_owner = NULL, lease_until = NULL, updated_at = now()
      FROM msg
     WHERE m.id = msg.id AND m.lease_owner = $1::text AND m.status = 'sending'
    RETURNING m.id
), parts AS (
    INSERT INTO outbound_part AS p (outbound_id, part_no, parts_total, connector, smsc_id,
                                    command_status, status, submitted_at, done_at)
    SELECT u.outbound_id, u.part_no, u.parts_total, u.connector, u.smsc_id, u.command_status,
           u.status, now(), CASE WHEN u.status = 'rejected' THEN now() END
      FROM unnest($10::bigint[], $11::smallint[], $12::smallint[], $13::text[], $14::text[],
                  $15::int[], $16::text[])
           AS u(outbound_id, part_no, parts_total, connector, smsc_id, command_status, status)
     WHERE u.outbound_id IN (SELECT id FROM owned)
    ON CONFLICT (outbound_id, part_no) DO UPDATE
       SET smsc_id = EXCLUDED.smsc_id, connector = EXCLUDED.connector,
           parts_total = EXCLUDED.parts_total, command_status = EXCLUDED.command_status,
           status = EXCLUDED.status, submitted_at = EXCLUDED.submitted_at,
           done_at = EXCLUDED.done_at, attempts = p.attempts + 1, updated_at = now()
    RETURNING p.smsc_id
)
SELECT coalesce((SELECT array_agg(id) FROM owned), '{}') AS owned,
       (SELECT count(*) FROM parts) AS parts
"""

# name: defer_outbound
# Give claimed messages back to the queue until run_after = now + $3[i] seconds, without
# counting an attempt (quiet hours, no bound connector on the route, drain); fenced by $1.
DEFER_OUTBOUND: Final[LiteralString] = """
UPDATE outbound AS m
   SET status = 'queued', lease_owner = NULL, lease_until = NULL,
       run_after = now() + make_interval(secs => u.delay_s),
       last_error = coalesce(u.reason, m.last_error), updated_at = now()
  FROM unnest($2::bigint[], $3::float8[], $4::text[]) AS u(id, delay_s, reason)
 WHERE m.id = u.id AND m.lease_owner = $1::text AND m.status = 'sending'
RETURNING m.id
"""

# name: release_all
# Drain: give back every row still leased to owner $1 (claimed, never submitted).
RELEASE_ALL: Final[LiteralString] = """
UPDATE outbound
   SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = now()
 WHERE lease_owner = $1::text AND status = 'sending'
   AND ($2::bigint[] IS NULL OR id = ANY($2::bigint[]))
RETURNING id
"""

# name: ported_lookup
# The override routes of ported numbers among $1 (E.164).
PORTED_LOOKUP: Final[LiteralString] = """
SELECT number, connectors FROM ported_numbers WHERE number = ANY($1::text[])
"""

# name: log_events
# Append message events (trace) in one INSERT.
LOG_EVENTS: Final[LiteralString] = """
INSERT INTO events (message_table, message_id, event, detail, daemon)
SELECT 'outbound', u.message_id, u.event, u.detail, $4
  FROM unnest($1::bigint[], $2::text[], $3::jsonb[]) AS u(message_id, event, detail)
"""

ALL: Final[dict[str, LiteralString]] = {
    "claim_outbound": CLAIM_OUTBOUND,
    "hash_claimed": HASH_CLAIMED,
    "write_back": WRITE_BACK,
    "defer_outbound": DEFER_OUTBOUND,
    "release_all": RELEASE_ALL,
    "ported_lookup": PORTED_LOOKUP,
    "log_events": LOG_EVENTS,
}
"""Query name → SQL, for the PREPARE-everything test."""
