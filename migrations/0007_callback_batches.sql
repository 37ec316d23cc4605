-- 0007: batched MO forwards. A forward action with `batch = N` (N > 1) marks its callbacks
-- rows with batch_max = N; the delivery sends up to N rows queued for the same URL and secret
-- as one JSON array POST. NULL (every existing row, every status callback) means one request
-- per row, as before. Added at the end of both tables so the retention move's
-- `INSERT INTO callbacks_history SELECT * FROM moved` keeps matching column for column.
-- Nullable without a default: a catalog change only, no table rewrite.
ALTER TABLE callbacks         ADD COLUMN IF NOT EXISTS batch_max smallint
    CHECK (batch_max IS NULL OR batch_max BETWEEN 1 AND 1000);
ALTER TABLE callbacks_history ADD COLUMN IF NOT EXISTS batch_max smallint;
