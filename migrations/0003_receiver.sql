-- 0003: receiver additions (additive only; daemons of the previous release ignore them).

-- Which channel/provider/provider id each MO fragment came with, so a reassembled or timed-out
-- message keeps them (fragments of webhooks and of SMPP binds share mo_parts).
ALTER TABLE mo_parts ADD COLUMN IF NOT EXISTS meta jsonb;

-- Per-account request counts per one-second window, shared by every receiver instance: each
-- instance adds its local count every ~200 ms and reads the global total back
-- (services/receiver/ratelimit.py). UNLOGGED: losing it in a crash only resets rate windows.
CREATE UNLOGGED TABLE IF NOT EXISTS account_rate_windows (
    account_id     bigint NOT NULL,
    window_start   bigint NOT NULL,          -- unix second
    count          integer NOT NULL,
    PRIMARY KEY (account_id, window_start)
);
