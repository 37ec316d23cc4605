-- 0015: the SMPP server for customer ESMEs (issue 16).
--
-- accounts.smpp_password_hash: HMAC-SHA256 under the server secret of the account's SMPP
--   password (`smsgw accounts smpp-password NAME`); NULL: the account cannot bind. The
--   system_id is the account's name (SMPP 3.4: at most 15 characters).
-- accounts.smpp_allowed_networks: the source networks (CIDR) binds may come from; NULL: any.
-- accounts.smpp_max_binds: concurrent binds of the account over every receiver; NULL: the
--   listener's default (`[receiver.smpp_server] account_max_binds`).
-- accounts.smpp_bind_modes: the bind modes allowed (transmitter, receiver, transceiver);
--   NULL: all three.
--
-- outbound.source 'smpp': an MT an ESME submitted (submit_sm, data_sm, submit_multi). Its
--   `meta` holds `esme_rd` (the ESME's registered_delivery, when it asked for receipts) and,
--   for submit_multi's further destinations, `esme_id` (the one id submit_multi_resp gave).
--
-- esme_deliveries: deliver_sm PDUs owed to ESMEs (receipts, and MO routed to an account), a
--   leased queue like `callbacks`: queued → sending → delivered · expired (no bind within the
--   retention) · dead (refused too often). The receipt rows are written by a trigger on
--   outbound's status, so every path that changes an ESME message's state (the sender's
--   write-back and claim, receipt matching, cancelling) reports it without knowing about
--   ESMEs; the trigger's WHEN makes it free for every other message.
--
-- Expand only: new nullable columns, a widened CHECK, a new table; older daemons never name
-- any of them.

ALTER TABLE accounts ADD COLUMN IF NOT EXISTS smpp_password_hash bytea;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS smpp_allowed_networks cidr[];
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS smpp_max_binds integer
    CHECK (smpp_max_binds IS NULL OR smpp_max_binds > 0);
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS smpp_bind_modes text[]
    CHECK (smpp_bind_modes <@ ARRAY['transmitter', 'receiver', 'transceiver']);

ALTER TABLE outbound DROP CONSTRAINT IF EXISTS outbound_source_check;
ALTER TABLE outbound ADD CONSTRAINT outbound_source_check
    CHECK (source IN ('api', 'sendsms', 'rule', 'cli', 'bench', 'smpp'));
ALTER TABLE outbound_history DROP CONSTRAINT IF EXISTS outbound_source_check;
ALTER TABLE outbound_history ADD CONSTRAINT outbound_source_check
    CHECK (source IN ('api', 'sendsms', 'rule', 'cli', 'bench', 'smpp'));

CREATE TABLE IF NOT EXISTS esme_deliveries (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     bigint NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    kind           text NOT NULL CHECK (kind IN ('receipt', 'mo')),
    outbound_id    bigint,                   -- the receipt's message
    inbound_id     bigint,                   -- the MO's message
    message_ref    text,                     -- receipt: the id the ESME got in its submit_sm_resp
    from_addr      text NOT NULL,            -- deliver_sm source_addr (receipt: the recipient)
    to_addr        text NOT NULL,            -- deliver_sm destination_addr
    stat           text,                     -- receipt: DELIVRD, UNDELIV, ...
    message_state  smallint,                 -- receipt: the message_state TLV
    final          boolean,                  -- receipt: final or intermediate
    err            integer,                  -- receipt: the error code (err:)
    submitted_at   timestamptz,              -- receipt: submit date
    done_at        timestamptz,              -- receipt: done date
    body           text,                     -- receipt: the message's first 20 characters; MO text
    raw            bytea,                    -- MO: the user data as received (binary, UDH)
    data_coding    smallint,
    esm_class      smallint,
    status         text NOT NULL DEFAULT 'queued'
                   CHECK (status IN ('queued', 'sending', 'delivered', 'expired', 'dead')),
    attempts       integer NOT NULL DEFAULT 0,
    run_after      timestamptz NOT NULL DEFAULT now(),
    lease_owner    text,
    lease_until    timestamptz,
    last_error     text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- the claim: per account, due rows in order
CREATE INDEX IF NOT EXISTS esme_deliveries_claim_idx ON esme_deliveries (account_id, run_after, id)
    WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS esme_deliveries_lease_idx ON esme_deliveries (lease_until)
    WHERE status = 'sending';
-- in order per message: "is an earlier row of this message still unfinished?"
CREATE INDEX IF NOT EXISTS esme_deliveries_outbound_idx ON esme_deliveries (outbound_id, id)
    WHERE outbound_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS esme_deliveries_finished_idx ON esme_deliveries (updated_at)
    WHERE status IN ('delivered', 'expired', 'dead');
ALTER TABLE esme_deliveries SET (autovacuum_vacuum_scale_factor = 0.02,
                                 autovacuum_analyze_scale_factor = 0.02);

-- A receipt for the ESME when its message reaches a state its registered_delivery asked for
-- (SMPP 3.4 5.2.17: bits 0-1 = 1 final outcome, 2 failure only; bit 4 intermediate).
CREATE OR REPLACE FUNCTION esme_receipt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    rd    integer := (NEW.meta ->> 'esme_rd')::integer;
    stat  text;
    state smallint;
    fin   boolean := true;
BEGIN
    CASE NEW.status
        WHEN 'delivered'      THEN stat := 'DELIVRD'; state := 2;
        WHEN 'expired'        THEN stat := 'EXPIRED'; state := 3;
        WHEN 'cancelled'      THEN stat := 'DELETED'; state := 4;
        WHEN 'undeliverable'  THEN stat := 'UNDELIV'; state := 5;
        WHEN 'dead'           THEN stat := 'UNDELIV'; state := 5;
        WHEN 'submit_unknown' THEN stat := 'UNKNOWN'; state := 7;
        WHEN 'rejected'       THEN stat := 'REJECTD'; state := 8;
        WHEN 'suppressed'     THEN stat := 'REJECTD'; state := 8;
        WHEN 'submitted'      THEN stat := 'ENROUTE'; state := 1; fin := false;
        ELSE RETURN NULL;
    END CASE;
    IF fin THEN
        IF (rd & 3) = 0 OR ((rd & 3) = 2 AND state = 2) THEN
            RETURN NULL;
        END IF;
    ELSIF (rd & 16) = 0 THEN
        RETURN NULL;
    END IF;
    INSERT INTO esme_deliveries (account_id, kind, outbound_id, message_ref, from_addr, to_addr,
                                 stat, message_state, final, err, submitted_at, done_at, body)
    VALUES (NEW.account_id, 'receipt', NEW.id, coalesce(NEW.meta ->> 'esme_id', NEW.id::text),
            NEW.to_addr, NEW.from_addr, stat, state, fin, coalesce(NEW.error_code, 0),
            NEW.created_at, now(), left(coalesce(NEW.body, ''), 20));
    PERFORM pg_notify('smsgw_esme_deliveries', '');
    RETURN NULL;
END;
$$;

DROP TRIGGER IF EXISTS outbound_esme_receipt ON outbound;
CREATE TRIGGER outbound_esme_receipt AFTER UPDATE OF status ON outbound
    FOR EACH ROW
    WHEN (NEW.source = 'smpp' AND NEW.status IS DISTINCT FROM OLD.status
          AND NEW.account_id IS NOT NULL AND NEW.meta ? 'esme_rd')
    EXECUTE FUNCTION esme_receipt();
