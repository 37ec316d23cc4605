-- 0004: processor additions (additive only: daemons of the previous release keep running).
--
-- 1. rules_version: one row whose counter moves on every change to `rules`. The processor reads
--    it in every batch transaction, so a change made by the CLI (or by hand in psql) applies to
--    the very next batch any processor claims, even before its NOTIFY has arrived.
-- 2. flood_counters: per-number message counts in fixed windows (per-number flood control).
--    Kept in their own small table rather than counted from `inbound`, because the retention
--    move takes finished rows out of `inbound` at any time.
-- 3. periodic_runs: the last run of each periodic job, so several instances run a job once per
--    period (the advisory lock alone only stops them running it at the same moment).

CREATE TABLE IF NOT EXISTS rules_version (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    version    bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO rules_version (id, version) VALUES (true, 0) ON CONFLICT (id) DO NOTHING;

-- One bump and one NOTIFY per statement (not per row): an import of 500 rules wakes each
-- processor once. Postgres folds identical notifications within a transaction.
CREATE OR REPLACE FUNCTION smsgw_rules_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE rules_version SET version = version + 1, updated_at = now() WHERE id;
    PERFORM pg_notify('smsgw_rules', '');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS rules_changed ON rules;
CREATE TRIGGER rules_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rules
    FOR EACH STATEMENT EXECUTE FUNCTION smsgw_rules_changed();

CREATE TABLE IF NOT EXISTS flood_counters (
    number       text NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (number, window_start)
);
CREATE INDEX IF NOT EXISTS flood_counters_age_idx ON flood_counters (window_start);

CREATE TABLE IF NOT EXISTS periodic_runs (
    job         text PRIMARY KEY,
    last_run_at timestamptz NOT NULL,
    last_owner  text,
    runs        bigint NOT NULL DEFAULT 0
);
