-- smsgw: no-transaction
-- 0021: the outbound queue's in-flight state in a narrow table, so that every later update of
-- an `outbound` row is heap-only (HOT) (issue 14).
--
-- Until now an MT wrote `outbound` four times (insert; the claim queued → sending with its
-- lease; the write-back sending → submitted; the receipt's finalize submitted → delivered) and
-- none of the three updates was HOT: outbound_claim_idx, outbound_lease_idx and
-- outbound_lane_idx name `status` in their predicates and index lease_until / run_after, so each
-- update wrote a whole new tuple on another page and an entry in every index of the table
-- (measured: 37 WAL records, 3.96 KB of WAL and ~150 Postgres CPU-µs per MT).
--
-- From this migration on (with the code of the same release):
--
-- - `outbound_queue` holds one narrow row per message while it is queued or sending: its lane
--   (category, account), run_after, and the lease (lease_owner NULL: queued; else sending,
--   leased until lease_until). The sender's claim, lease takeover, lanes, deferrals, fencing
--   and the per-account admission snapshot read and write this table; a message leaves it when
--   it leaves the queue (submitted, rejected, expired, suppressed, cancelled, …).
-- - `outbound` keeps only indexes on columns that never change after the insert (primary key,
--   to_addr, account_id, the created_at BRIN) and leaves 60 % of each page free, so its
--   updates (status, lease, timestamps, errors — still written, still the visible state the
--   API, trace, reports and query_sm read) are HOT: written on the same page, no index entry.
-- - every row inserted into `outbound` gets its queue row from the statement-level trigger
--   `outbound_enqueue` (in the inserting statement's transaction), whoever inserts it: the
--   receiver's intake, the processor's replies, `smsgw send`, a test or an operator's psql.
--   No insert path can leave a queued message that no sender would ever find.
--
-- On a live system: the table, its indexes and the trigger are created first (the trigger
-- takes a brief lock on outbound that waits for running inserts); the backfill then copies
-- every queued/sending row committed before it (ON CONFLICT: rows the trigger already queued
-- are left alone); the old indexes are dropped CONCURRENTLY (a plain DROP INDEX would block
-- every reader of outbound). The fillfactor is a storage parameter (no rewrite; pages written
-- from now on keep the room). Senders of the previous release still running after this
-- migration claim through `outbound.status` without its partial indexes (slower, still
-- correct); a queue row whose message such a sender changed is set right by the first claim
-- of this release that picks it (the claim checks each picked row against `outbound`).

CREATE TABLE IF NOT EXISTS outbound_queue (
    id             bigint PRIMARY KEY,       -- outbound.id
    category       text NOT NULL,            -- outbound.category (the claim's lane)
    acct           bigint NOT NULL,          -- coalesce(outbound.account_id, 0)
    run_after      timestamptz NOT NULL,     -- not claimed before (backoff, send_at, deferral)
    lease_owner    text,                     -- NULL: queued, else sending (leased to this owner)
    lease_until    timestamptz,              -- the lease's end (NULL while queued)
    CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
);

-- The claim: per lane (category) and per account, FIFO by run_after (as outbound_lane_idx was).
CREATE INDEX IF NOT EXISTS outbound_queue_lane_idx
    ON outbound_queue (category, acct, run_after, id) WHERE lease_owner IS NULL;
-- Takeover of expired leases: its own branch and index. Its predicate names lease_until (set
-- and cleared together with lease_owner), so a statement fenced by `lease_owner = $1` cannot
-- mistake it for a way to find its rows: it probes them by id.
CREATE INDEX IF NOT EXISTS outbound_queue_lease_idx
    ON outbound_queue (lease_until) WHERE lease_until IS NOT NULL;

-- Every row of this table is inserted, updated about once and deleted within seconds: vacuum
-- and analyze it every few thousand changes, like the other queue tables (0006).
ALTER TABLE outbound_queue SET (autovacuum_analyze_scale_factor = 0,
                                autovacuum_analyze_threshold = 5000,
                                autovacuum_vacuum_scale_factor = 0.02,
                                autovacuum_vacuum_threshold = 5000);

-- One INSERT per inserting statement (a statement-level trigger over the new rows: no
-- per-row function call). A row inserted as `sending` (only by hand) keeps its lease, or gets
-- an expired one so the claim takes it over.
CREATE OR REPLACE FUNCTION outbound_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbound_queue (id, category, acct, run_after, lease_owner, lease_until)
    SELECT n.id, n.category, coalesce(n.account_id, 0), n.run_after,
           CASE WHEN n.status = 'sending' THEN coalesce(n.lease_owner, '(inserted)') END,
           CASE WHEN n.status = 'sending' THEN coalesce(n.lease_until, now()) END
      FROM outbound_new n
     WHERE n.status IN ('queued', 'sending');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbound_enqueue ON outbound;
CREATE TRIGGER outbound_enqueue AFTER INSERT ON outbound
    REFERENCING NEW TABLE AS outbound_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbound_enqueue();

-- The messages already queued or in flight.
INSERT INTO outbound_queue (id, category, acct, run_after, lease_owner, lease_until)
SELECT id, category, coalesce(account_id, 0), run_after,
       CASE WHEN status = 'sending' THEN coalesce(lease_owner, '(migrated)') END,
       CASE WHEN status = 'sending' THEN coalesce(lease_until, now()) END
  FROM outbound
 WHERE status IN ('queued', 'sending')
ON CONFLICT (id) DO NOTHING;

ANALYZE outbound_queue;

-- Room on each page for the next version of its rows (as outbound_part since 0020). Not 50:
-- the claim's version is a little longer than the inserted one (the lease is set), and with
-- half a page free the last rows of a page did not fit (200 MTs claimed in one transaction:
-- 188 of the updates heap-only at 50, all 200 at 40; the older versions are pruned by the next
-- statement that reads the page, so room for one more version per row is enough).
ALTER TABLE outbound SET (fillfactor = 40);

DROP INDEX CONCURRENTLY IF EXISTS outbound_claim_idx;
DROP INDEX CONCURRENTLY IF EXISTS outbound_lease_idx;
DROP INDEX CONCURRENTLY IF EXISTS outbound_lane_idx;
