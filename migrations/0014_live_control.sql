-- 0014: live control (issue 19): the `cancelled` outbound state, connector state changed at
-- run time, accounts disabled at run time.
--
-- 1. outbound.status gains `cancelled` (terminal): a queued message an operator cancelled
--    (`smsgw accounts disable --cancel-queued`) or an ESME withdrew with cancel_sm; never a
--    message already claimed or submitted. Same set on outbound_history (LIKE … INCLUDING
--    CONSTRAINTS copied the constraint), so the retention move takes cancelled rows along.
--    The constraint is replaced NOT VALID: the new set holds the old one, so every existing
--    row satisfies it, and skipping the validation scan keeps the ACCESS EXCLUSIVE lock of
--    this transaction short on a large history table. New rows are checked as before.
-- 2. connector_state: the run-time state an operator set on a connector (`smsgw connectors
--    stop|start|isolate`); no row = running. Every sender and receiver keeps it in memory and
--    re-reads it on the NOTIFY `smsgw_connectors` the statement trigger sends (one per
--    statement), so a change takes effect everywhere within a second and a daemon started
--    later starts with the stored state. The last change wins; each is in audit_log.
-- 3. accounts.disabled_at: when `smsgw accounts disable` disabled it (the `disabled` flag
--    itself dates from 0001; the API-key lookup already refuses a disabled account).
--
-- Expand only: daemons of the previous release never write `cancelled` and never read the new
-- table or column.

ALTER TABLE outbound DROP CONSTRAINT IF EXISTS outbound_status_check;
ALTER TABLE outbound ADD CONSTRAINT outbound_status_check CHECK (status IN (
    'queued', 'sending', 'submitted', 'delivered', 'undeliverable', 'expired', 'rejected',
    'suppressed', 'submit_unknown', 'dead', 'cancelled')) NOT VALID;
ALTER TABLE outbound_history DROP CONSTRAINT IF EXISTS outbound_status_check;
ALTER TABLE outbound_history ADD CONSTRAINT outbound_status_check CHECK (status IN (
    'queued', 'sending', 'submitted', 'delivered', 'undeliverable', 'expired', 'rejected',
    'suppressed', 'submit_unknown', 'dead', 'cancelled')) NOT VALID;

CREATE TABLE IF NOT EXISTS connector_state (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    state       text NOT NULL CHECK (state IN ('running', 'stopped', 'isolated')),
    changed_by  text NOT NULL,
    reason      text CHECK (length(reason) <= 500),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE OR REPLACE FUNCTION smsgw_connectors_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('smsgw_connectors', '');
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS connectors_changed ON connector_state;
CREATE TRIGGER connectors_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON connector_state
    FOR EACH STATEMENT EXECUTE FUNCTION smsgw_connectors_changed();

ALTER TABLE accounts ADD COLUMN IF NOT EXISTS disabled_at timestamptz;
