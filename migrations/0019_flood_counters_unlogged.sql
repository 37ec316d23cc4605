-- 0019: the processor's flood-control counters are UNLOGGED and have no index on window_start.
-- Every MO adds to its number's counter in the batch's claim (engine.claim_batch); with many
-- numbers that is one new row per MO: a heap insert and two index inserts, all of them WAL
-- records. Losing the counters in a crash (or a failover: a standby holds no unlogged rows)
-- only restarts the windows, as for account_rate_windows (0003): a number flooding then gets at
-- most flood_max more answers. The cleanup (flood_cleanup, every 5 minutes) now reads the
-- table, which holds about two windows of numbers, instead of an index every MO paid for.
ALTER TABLE flood_counters SET UNLOGGED;
DROP INDEX IF EXISTS flood_counters_age_idx;
