-- 0008: fair admission across accounts, and forced connectors only where allowed.
--
-- accounts.allowed_connectors: the connectors an account may force on its messages (Kannel
-- `smsc=`, the JSON API's `connector`). NULL or empty: none; the routes decide (the default).
-- Nullable without a default: a catalog change only, no table rewrite.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS allowed_connectors text[];

-- Per-account snapshot of DUE queued MTs (status 'queued' and run_after <= now(): scheduled
-- messages and retries waiting out their backoff do not count), refreshed with queue_stats by
-- one instance (shared.queue.store.refresh_queue_stats, one grouped statement over
-- outbound_lane_idx) and read by every receiver for per-account admission control, so a
-- request never costs a COUNT. account_id 0 holds the rows without an account (rule replies,
-- `smsgw send --direct`). Only accounts with due rows have a row. UNLOGGED: a snapshot,
-- rebuilt within a refresh interval after a crash.
CREATE UNLOGGED TABLE IF NOT EXISTS outbound_account_depth (
    account_id     bigint PRIMARY KEY,
    due            bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
