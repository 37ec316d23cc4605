-- 0010: status-callback signing secrets are derived, never stored.
--
-- Each account's secret is HMAC-SHA256(server secret, 'callback:<id>:<generation>')
-- (shared/domain/callback_signing.py); the database keeps only the generation. Every account starts
-- at generation 1, so every account's status callbacks are signed from now on;
-- `smsgw accounts callback-secret NAME` shows the secret, `--rotate` moves to the next one.
-- A constant default: a catalog change only, no table rewrite.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS callback_secret_generation integer NOT NULL
    DEFAULT 1 CHECK (callback_secret_generation >= 1);

-- Contract step for the plaintext column: this release never reads it. Its values are
-- removed now and a constraint keeps it empty, so no secret sits in the database or its
-- backups from here on; the column itself stays for the previous release's processors
-- (which read it and, finding NULL, send unsigned until they are replaced) and is dropped
-- by a later migration. An account that had a secret set by hand must give its application
-- the derived one (`smsgw accounts callback-secret NAME`).
UPDATE accounts SET callback_secret = NULL WHERE callback_secret IS NOT NULL;
ALTER TABLE accounts DROP CONSTRAINT IF EXISTS accounts_callback_secret_unused;
ALTER TABLE accounts ADD CONSTRAINT accounts_callback_secret_unused
    CHECK (callback_secret IS NULL);
COMMENT ON COLUMN accounts.callback_secret IS
    'unused since migration 0010 (secrets are derived; see callback_secret_generation); '
    'always NULL, dropped by a later migration';
