-- smsgw: no-transaction
-- 0005: sender additions (claim lanes, ported numbers). Additive only: no
-- column is added to outbound, so `INSERT INTO outbound_history SELECT * FROM outbound` (the
-- retention move) keeps working. Indexes are built CONCURRENTLY: outbound is hot on a live
-- system, and a plain CREATE INDEX would block every writer while it builds.

-- The sender's claim: per lane (category) and per account, FIFO by run_after. The claim walks
-- the distinct (category, account) pairs with a loose index scan on this index's prefix and
-- takes each account's oldest due rows from the rest, so one account's promotion never
-- starves another's, and transactional traffic goes first. run_after comes before id so that
-- rows deferred into the future (retries, quiet hours, send_at) sit at the end of each account's
-- range instead of being re-scanned by every claim.
CREATE INDEX CONCURRENTLY IF NOT EXISTS outbound_lane_idx
    ON outbound (category, (coalesce(account_id, 0)), run_after, id) WHERE status = 'queued';

-- Ported numbers: an E.164 number that moved to another operator is sent through the
-- connectors named here, ahead of the prefix routes (the sender reads the table per batch).
CREATE TABLE IF NOT EXISTS ported_numbers (
    number         text PRIMARY KEY,           -- E.164
    connectors     text[] NOT NULL,            -- ordered failover list for this number
    operator       text,                       -- informational (the operator it ported to)
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
