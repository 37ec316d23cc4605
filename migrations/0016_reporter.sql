-- 0016: the reporter daemon — report requests as a leased queue table, their outputs kept in
-- Postgres, and the indexes the reports' time-range scans use.
--
-- report_requests: one row per requested report. Statuses (ReportStatus in
-- shared/queue/records.py): queued -> running (leased: lease_owner, lease_until, renewed by
-- every progress update) -> done | failed | cancelled. A running row whose lease expired is
-- taken back by another reporter (shared/queue/report_requests.py `claim`, its own branch on
-- report_requests_lease_idx), which runs the report again from the start: a report is written
-- in one read-only snapshot, so it is never resumed half-way. `cancel_requested` asks the
-- running instance to stop at its next progress update. `account_id` is the account a report
-- is scoped to (traffic reports made through the API); NULL for an operator's report.
-- `params` holds the validated request (kind-specific: campaign, from, to, tz, account).
CREATE TABLE IF NOT EXISTS report_requests (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind             text NOT NULL
                     CHECK (kind IN ('campaign', 'traffic', 'inbound', 'optouts')),
    params           jsonb NOT NULL,
    account_id       bigint,
    requested_by     text NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    run_after        timestamptz NOT NULL DEFAULT now(),
    lease_owner      text,
    lease_until      timestamptz,
    last_error       text,
    cancel_requested boolean NOT NULL DEFAULT false,
    rows_scanned     bigint NOT NULL DEFAULT 0,
    rows_estimated   bigint,
    progress         real NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    files            jsonb,
    started_at       timestamptz,
    finished_at      timestamptz,
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- the claim: queued rows in order (the fairness ordering sorts this small set)
CREATE INDEX IF NOT EXISTS report_requests_claim_idx ON report_requests (id)
    WHERE status = 'queued';
-- the reclaim of expired leases, its own branch (docs/ARCHITECTURE.md, guarantee 3)
CREATE INDEX IF NOT EXISTS report_requests_lease_idx ON report_requests (lease_until)
    WHERE status = 'running';
-- retention: finished reports past their expiry
CREATE INDEX IF NOT EXISTS report_requests_expires_idx ON report_requests (expires_at)
    WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS report_requests_account_idx ON report_requests (account_id, id);

-- accounts.operator: an operator's API keys may ask for the kinds whose data carries no account
-- (campaign, inbound, opt-outs) and see every report; other keys only their own account's
-- traffic reports. Set with `smsgw accounts update NAME --operator`. A constant default: a
-- catalog change only, no table rewrite.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS operator boolean NOT NULL DEFAULT false;

-- report_chunks: each output file of a finished report, in chunks of at most 1 MiB, so a
-- receiver on another host can stream it and neither side holds a whole file in memory.
-- Written in the transaction that marks the report done (nothing half-written is served).
CREATE TABLE IF NOT EXISTS report_chunks (
    report_id  bigint NOT NULL REFERENCES report_requests (id) ON DELETE CASCADE,
    name       text NOT NULL,
    chunk_no   integer NOT NULL,
    data       bytea NOT NULL,
    PRIMARY KEY (report_id, name, chunk_no)
);

-- Indexes the reports read through (each checked with EXPLAIN, see docs/ARCHITECTURE.md
-- "The reporter"). History tables are append-only and filled in id (≈ time) order by the
-- retention move, so a BRIN index on created_at is a few pages, costs next to nothing per
-- insert, and turns a time range into a range of heap blocks. The hot tables get one too:
-- they hold the last `finished_after_s` of traffic plus what is queued, a report slices its
-- range by day, and without it every slice would read the whole hot table. A BRIN index is
-- never updated by an UPDATE of a row (created_at does not change, so updates stay HOT) and
-- an INSERT touches at most its range's summary: the message path pays next to nothing
-- (measured in the README, "Reports").
CREATE INDEX IF NOT EXISTS outbound_history_created_brin ON outbound_history
    USING brin (created_at) WITH (pages_per_range = 32);
CREATE INDEX IF NOT EXISTS inbound_history_created_brin ON inbound_history
    USING brin (created_at) WITH (pages_per_range = 32);
CREATE INDEX IF NOT EXISTS outbound_created_brin ON outbound
    USING brin (created_at) WITH (pages_per_range = 32);
CREATE INDEX IF NOT EXISTS inbound_created_brin ON inbound
    USING brin (created_at) WITH (pages_per_range = 32);
-- campaign reports: one campaign's entries in a time range (the quota index leads with
-- campaign but then number, which a range over time cannot use)
CREATE INDEX IF NOT EXISTS campaign_entries_time_idx ON campaign_entries (campaign, created_at);
-- over-quota attempts are events of the processor; only these few rows are indexed
CREATE INDEX IF NOT EXISTS events_over_quota_idx ON events (at)
    WHERE event = 'processed' AND detail ->> 'outcome' = 'over_quota';
-- opt-out reports read the suppression changes of the audit log by time
CREATE INDEX IF NOT EXISTS audit_log_suppression_idx ON audit_log (at)
    WHERE action IN ('suppression_add', 'suppression_remove');
