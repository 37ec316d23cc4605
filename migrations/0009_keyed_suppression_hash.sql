-- 0009: keyed suppression hashes, and each MT's recipient hash (issue 12, finding 8).
--
-- Until now `suppressions.number_hash` was sha256(number): unsalted, so a copy of the database
-- gave every opted-out (and every erased) number back by brute force in under a second. From
-- this release the hash is HMAC-SHA256(K, sha256(number)) with K derived from the
-- `[security] server_secret` (shared/domain/suppression.py); the key never sits in the database, so
-- Postgres cannot compute it (no hmac() without pgcrypto): the daemons do.
--
-- 1. outbound.to_hash: the recipient's keyed hash, written by whoever inserts the MT (receiver,
--    processor replies, `smsgw send`). The sender's claim compares it with the suppressions in
--    the same single statement as before (no extra round trip). Nullable: a row written without
--    it (an earlier release's daemon during an upgrade, a hand-written INSERT) is hashed by the
--    sender right after its claim, in one statement per claim and only when there are such rows.
--    Added to outbound_history too, at the end of both, so the retention move's
--    `INSERT INTO outbound_history SELECT * FROM moved` keeps matching column for column.
-- 2. suppressions.keyed: every existing entry is legacy (keyed = false, the default, so rows an
--    earlier release still inserts are legacy as well). Checks match a legacy entry by its old
--    sha256 until a daemon holding the key re-keys it: the processor and the sender do at start
--    and periodically (`shared.domain.suppression.rekey_legacy`), and `smsgw erase` does. Re-keying
--    needs no number: HMAC(K, sha256(number)) is computed from the stored sha256 itself, so the
--    entries of erased numbers (number NULL) are re-keyed as well and keep suppressing, and no
--    unkeyed hash is left once any new daemon has started.
-- 3. Erased entries (number NULL) still carried the number in evidence.number: dropped here.
-- 4. Audit rows that name a number hash (suppression_add/remove 'hex:scope', erase 'hex') are
--    flagged legacy_hash; the same re-keying rewrites their object_id to the keyed hash.
-- Catalog changes plus two small UPDATEs: safe on a running system.

ALTER TABLE outbound         ADD COLUMN IF NOT EXISTS to_hash bytea;
ALTER TABLE outbound_history ADD COLUMN IF NOT EXISTS to_hash bytea;

ALTER TABLE suppressions ADD COLUMN IF NOT EXISTS keyed boolean NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS suppressions_legacy_idx ON suppressions (number_hash) WHERE NOT keyed;

UPDATE suppressions SET evidence = evidence - 'number'
 WHERE number IS NULL AND evidence ? 'number';

UPDATE audit_log SET detail = coalesce(detail, '{}'::jsonb) || '{"legacy_hash": true}'::jsonb
 WHERE action IN ('suppression_add', 'suppression_remove', 'erase');
CREATE INDEX IF NOT EXISTS audit_log_legacy_hash_idx ON audit_log (id) WHERE detail ? 'legacy_hash';
