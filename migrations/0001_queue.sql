-- 0001: the queue tables and the tables every daemon shares.
-- Statuses are text with CHECK constraints (not ENUMs): easier to extend while old daemons run.
-- Every queue table carries the same queue columns: status, attempts, run_after, lease_owner,
-- lease_until, last_error, created_at, updated_at.

-- MO messages waiting for the processor (transaction-mode claims, head-of-line per from_addr).
CREATE TABLE inbound (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel        text NOT NULL CHECK (channel IN ('smpp', 'http', 'cli')),
    provider       text NOT NULL,            -- connector name (smpp) or webhook provider (twilio, vonage, generic)
    connector      text,                     -- SMPP connector, when channel = 'smpp'
    from_addr      text NOT NULL,            -- E.164, normalised at intake
    to_addr        text NOT NULL,            -- short code or E.164
    body           text,                     -- decoded text (NULL after body retention)
    raw            bytea,                    -- raw short_message / payload bytes where the text is not all
    data_coding    smallint,
    provider_message_id text,
    meta           jsonb,
    status         text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'failed', 'dead')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX inbound_claim_idx ON inbound (id) WHERE status = 'queued';
-- head-of-line: "is there an earlier unfinished row of this number?"
CREATE INDEX inbound_hol_idx ON inbound (from_addr, id) WHERE status = 'queued';
CREATE INDEX inbound_from_idx ON inbound (from_addr);

-- MT messages waiting for the sender (lease claims).
CREATE TABLE outbound (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     bigint,                   -- NULL for system replies
    source         text NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'sendsms', 'rule', 'cli', 'bench')),
    from_addr      text NOT NULL,
    to_addr        text NOT NULL,            -- E.164
    body           text,
    category       text NOT NULL DEFAULT 'transactional' CHECK (category IN ('transactional', 'marketing')),
    priority       smallint NOT NULL DEFAULT 0,
    encoding       text,                     -- requested: NULL/auto, gsm7, latin1, ucs2
    parts_total    smallint,                 -- set by the sender when split
    connector      text,                     -- connector that took it (or a forced one)
    route_hint     text,                     -- e.g. Kannel smsc=
    client_ref     text,
    callback_url   text,
    dlr_mask       smallint,
    send_at        timestamptz,
    valid_until    timestamptz,
    inbound_id     bigint,                   -- the MO that caused this reply
    rule_id        bigint,
    meta           jsonb,
    error_code     integer,                  -- SMPP command_status of a rejection
    status         text NOT NULL DEFAULT 'queued' CHECK (status IN (
                      'queued', 'sending', 'submitted', 'delivered', 'undeliverable', 'expired',
                      'rejected', 'suppressed', 'submit_unknown', 'dead')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    submitted_at   timestamptz,
    done_at        timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- claim: transactional (priority) first, then by id
CREATE INDEX outbound_claim_idx ON outbound (priority DESC, id) WHERE status = 'queued';
-- reclaim of expired leases: its own branch and index, not an OR in the claim
CREATE INDEX outbound_lease_idx ON outbound (lease_until) WHERE status = 'sending';
CREATE INDEX outbound_to_idx ON outbound (to_addr);
CREATE INDEX outbound_account_idx ON outbound (account_id, id);

-- One row per submitted part; kept as long as receipts can arrive (not moved with outbound).
CREATE TABLE outbound_part (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    outbound_id    bigint NOT NULL,
    part_no        smallint NOT NULL,
    parts_total    smallint NOT NULL,
    connector      text NOT NULL,
    smsc_id        text,                     -- normalised SMSC message id (NULL until submit_sm_resp)
    command_status integer,
    err            text,                     -- receipt err / network error
    status         text NOT NULL DEFAULT 'sending' CHECK (status IN (
                      'sending', 'submitted', 'delivered', 'undeliverable', 'expired', 'rejected',
                      'unknown_receipt')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    submitted_at   timestamptz,
    done_at        timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (outbound_id, part_no)
);
CREATE INDEX outbound_part_smsc_idx ON outbound_part (smsc_id, connector) WHERE smsc_id IS NOT NULL;

-- Delivery receipts, stored first, then matched to parts by the sender.
CREATE TABLE receipts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector      text NOT NULL,
    smsc_id        text NOT NULL,            -- normalised per connector
    raw_id         text,
    stat           text,                     -- stat text / message_state as received
    state          text,                     -- mapped part state (delivered, undeliverable, ..., enroute, accepted)
    final          boolean NOT NULL DEFAULT true,
    err            text,
    done_date      timestamptz,
    body           text,                     -- the receipt text
    outbound_part_id bigint,                 -- set when matched
    status         text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'matched', 'orphan')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX receipts_claim_idx ON receipts (run_after, id) WHERE status = 'queued';

-- HTTP calls to applications: forwarded MO and MT status reports (lease claims).
CREATE TABLE callbacks (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('mo', 'status')),
    account_id     bigint,
    outbound_id    bigint,
    inbound_id     bigint,
    url            text NOT NULL,
    method         text NOT NULL DEFAULT 'POST' CHECK (method IN ('GET', 'POST')),
    body           bytea,
    headers        jsonb,
    secret_ref     text,                     -- which secret signs it (resolved at send time)
    status         text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sending', 'done', 'dead')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX callbacks_claim_idx ON callbacks (run_after, id) WHERE status = 'queued';
CREATE INDEX callbacks_lease_idx ON callbacks (lease_until) WHERE status = 'sending';

-- Concatenated-MO fragments awaiting reassembly (fragments can arrive on any bind/instance).
CREATE TABLE mo_parts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connector      text NOT NULL,
    from_addr      text NOT NULL,
    to_addr        text NOT NULL,
    ref            integer NOT NULL,
    total          smallint NOT NULL,
    seq            smallint NOT NULL,
    body           text,
    raw            bytea,
    data_coding    smallint,
    inbound_id     bigint,                   -- the reassembled message
    status         text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'done', 'failed')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX mo_parts_key_idx ON mo_parts (connector, from_addr, to_addr, ref, total, seq) WHERE status = 'queued';
CREATE INDEX mo_parts_age_idx ON mo_parts (created_at) WHERE status = 'queued';

-- Idempotency keys; outlive the retention move of the rows they point to.
CREATE TABLE dedupe_keys (
    scope          text NOT NULL,            -- e.g. 'mt:<account_id>', 'mo:twilio', 'mo:smpp:<connector>'
    key            text NOT NULL,
    target_table   text NOT NULL,
    target_id      bigint NOT NULL,
    fingerprint    text,                     -- content hash, to tell a retry from a conflicting reuse
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX dedupe_keys_expiry_idx ON dedupe_keys (expires_at);

-- Each message's event log (read by `smsgw trace`); not moved by retention.
CREATE TABLE events (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_table  text NOT NULL CHECK (message_table IN ('inbound', 'outbound', 'receipts', 'callbacks')),
    message_id     bigint NOT NULL,
    event          text NOT NULL,
    detail         jsonb,
    daemon         text,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_message_idx ON events (message_table, message_id, id);

-- History tables: the finished rows the retention job moves out of the hot tables.
CREATE TABLE inbound_history (LIKE inbound INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE inbound_history ADD PRIMARY KEY (id);
CREATE INDEX inbound_history_from_idx ON inbound_history (from_addr);
CREATE TABLE outbound_history (LIKE outbound INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE outbound_history ADD PRIMARY KEY (id);
CREATE INDEX outbound_history_to_idx ON outbound_history (to_addr);
CREATE INDEX outbound_history_account_idx ON outbound_history (account_id, id);
CREATE TABLE receipts_history (LIKE receipts INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE receipts_history ADD PRIMARY KEY (id);
CREATE TABLE callbacks_history (LIKE callbacks INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE callbacks_history ADD PRIMARY KEY (id);

-- Accounts and API keys (keys stored as HMAC-SHA256 under a server secret).
CREATE TABLE accounts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    default_category text NOT NULL DEFAULT 'transactional' CHECK (default_category IN ('transactional', 'marketing')),
    rate_per_s     double precision,         -- NULL: no account rate limit
    allowed_senders text[],                  -- NULL: any sender id
    callback_secret text,                    -- signs status callbacks to this account's URLs
    transliterate  boolean NOT NULL DEFAULT false,
    disabled       boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE api_keys (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_hash       bytea NOT NULL UNIQUE,
    prefix         text NOT NULL,            -- first characters, to recognise a key in listings
    created_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz
);

-- Processor rules (match and actions as JSON, validated by the processor).
CREATE TABLE rules (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           text NOT NULL UNIQUE,
    priority       integer NOT NULL DEFAULT 100,
    enabled        boolean NOT NULL DEFAULT true,
    match          jsonb NOT NULL DEFAULT '{}',
    actions        jsonb NOT NULL DEFAULT '[]',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Opt-outs. Looked up by number_hash = sha256(number), so an erased number (number NULL) still
-- suppresses. scope: 'global' or a short code.
CREATE TABLE suppressions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    number_hash    bytea NOT NULL,
    number         text,
    scope          text NOT NULL DEFAULT 'global',
    source         text,
    evidence       jsonb,                    -- opt-out evidence: text, short code, time (kept longer than bodies)
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (number_hash, scope)
);

CREATE TABLE campaign_entries (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id        bigint,
    campaign       text NOT NULL,
    number         text NOT NULL,
    period_key     text NOT NULL,            -- e.g. the day, for per-period quotas
    inbound_id     bigint,
    data           jsonb,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX campaign_entries_quota_idx ON campaign_entries (campaign, number, period_key);

CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    action         text NOT NULL,
    object_type    text NOT NULL,
    object_id      text,
    detail         jsonb
);

-- Depth/oldest-age snapshot per queue, refreshed by one daemon at a time (advisory lock) and
-- read by admission control and the queue gauges, so no request ever runs a COUNT.
CREATE TABLE queue_stats (
    queue          text NOT NULL,
    status         text NOT NULL,
    depth          bigint NOT NULL,
    oldest_at      timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, status)
);
