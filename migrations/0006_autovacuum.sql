-- 0006: planner statistics and vacuum that keep up with the hot queue tables.
-- The default thresholds (analyze after 10 % of the table changed) leave a fast-growing queue
-- table with statistics from when it was nearly empty; the end-to-end profile then showed the
-- sender's write-back joining every 'sending' row (80 ms per batch of 200 instead of 11 ms)
-- and receipt matching scanning outbound_part. Fixed small thresholds make autovacuum analyze
-- and vacuum them every few thousand changed rows, whatever their size. Storage parameters
-- only: no table rewrite, a brief SHARE UPDATE EXCLUSIVE lock, safe on a running system.
ALTER TABLE inbound       SET (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                               autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);
ALTER TABLE outbound      SET (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                               autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);
ALTER TABLE outbound_part SET (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                               autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);
ALTER TABLE receipts      SET (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                               autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);
ALTER TABLE callbacks     SET (autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000,
                               autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);
