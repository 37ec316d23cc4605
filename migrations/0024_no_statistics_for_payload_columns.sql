-- 0024: no planner statistics for the columns no statement filters, joins or groups on
-- (issue 14).
--
-- ANALYZE (autovacuum's, and the daemons' re-analyze of a queue table that grew past 4× the
-- pages its statistics saw) computes a histogram, the most common values and a distinct count
-- for every column of its sample. For the message texts, raw receipts, callback bodies and
-- other payload columns that is most of its work — sorting thousands of 100-byte strings —
-- and nothing reads the result: no query plan depends on these columns (the bodies are
-- matched in Python, the JSON fields through expressions, whose estimates column statistics
-- do not feed). Measured on 12,000 MTs and receipts: ANALYZE receipts 33 → 17 ms, outbound 19.5 →
-- 14.5 ms of Postgres CPU; `smsgw bench mt` re-analyzes both once per 20,000 MTs.
--
-- A catalog setting (SHARE UPDATE EXCLUSIVE: reads and writes go on); the statistics already
-- gathered stay until the next ANALYZE. Undo per column with SET STATISTICS -1.

DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT a.attrelid::regclass AS tbl, a.attname AS col
          FROM pg_attribute a
          JOIN (VALUES ('outbound', 'body'), ('outbound', 'meta'), ('outbound', 'smpp'),
                       ('outbound', 'payload'), ('outbound', 'udh'),
                       ('outbound_history', 'body'), ('outbound_history', 'meta'),
                       ('outbound_history', 'smpp'), ('outbound_history', 'payload'),
                       ('outbound_history', 'udh'),
                       ('receipts', 'body'), ('receipts', 'raw_id'), ('receipts', 'stat'),
                       ('receipts', 'err'), ('receipts', 'done_date'),
                       ('receipts', 'network_error'),
                       ('receipts_history', 'body'), ('receipts_history', 'raw_id'),
                       ('receipts_history', 'stat'), ('receipts_history', 'err'),
                       ('receipts_history', 'done_date'),
                       ('receipts_history', 'network_error'),
                       ('inbound', 'body'), ('inbound', 'raw'), ('inbound', 'meta'),
                       ('inbound_history', 'body'), ('inbound_history', 'raw'),
                       ('inbound_history', 'meta'),
                       ('callbacks', 'body'), ('callbacks', 'headers'), ('callbacks', 'reply'),
                       ('callbacks_history', 'body'), ('callbacks_history', 'headers'),
                       ('callbacks_history', 'reply')) AS w(t, n)
            ON a.attrelid = to_regclass(w.t) AND a.attname = w.n
         WHERE NOT a.attisdropped
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER COLUMN %I SET STATISTICS 0', c.tbl, c.col);
    END LOOP;
END;
$$;
