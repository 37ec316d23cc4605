-- smsgw: no-transaction
-- 0018: a cheaper `esme_deliveries` queue (issue 16).
--
-- Measured with `smsgw bench esme --statements`, the receipts' queue cost Postgres ~110 µs
-- per message: every row was inserted with a foreign-key check (a KEY SHARE lock on the
-- account's row per receipt), updated twice (queued → sending at the claim, sending →
-- delivered at the ack: each update changed columns the indexes name — status in the partial
-- indexes' predicates, lease_until, updated_at — so each wrote new entries in every index) and
-- deleted a day later by the purge. From this migration on (with the code of the same
-- release):
--
-- - a claimed row stays `queued` with its lease in lease_owner/lease_until (the claim skips
--   rows whose lease has not run out); no index names a column the claim changes, and the
--   pages keep room (fillfactor 50: one claim updates every row of a page), so the claim is a
--   heap-only update — no index entry is written;
-- - a delivered row is deleted at the ack (its `esme_delivered` event stays for `smsgw trace`),
--   in one statement with the retries and the events; rows past the retention or refused too
--   often are deleted with their `esme_delivery_expired` / `_dead` event and metric;
-- - no foreign key to accounts: accounts are never deleted (they are disabled), `outbound`
--   has none either, and a receipt's account is its message's.
--
-- The statuses `sending`, `delivered`, `expired`, `dead` stay allowed: rows an older receiver
-- wrote in them are still reclaimed (`sending` past its lease) and purged (the finished ones)
-- by the housekeeping, through esme_deliveries_legacy_idx, which holds only such rows (none
-- once every receiver runs this release; its predicate names status, which this release
-- never updates). While receivers of both releases run, an older one may claim a row a newer
-- one has in flight (it reads `queued` as free): that receipt may reach the ESME twice, which
-- at-least-once delivery allows.
--
-- Outside a transaction: the index is built and the old ones dropped CONCURRENTLY (receipts
-- are inserted by a trigger on outbound, which a plain CREATE INDEX would block); the
-- constraint drop and the storage parameter take brief locks and rewrite nothing; pages
-- written from now on keep the room.

ALTER TABLE esme_deliveries DROP CONSTRAINT IF EXISTS esme_deliveries_account_id_fkey;
ALTER TABLE esme_deliveries SET (fillfactor = 50);
CREATE INDEX CONCURRENTLY IF NOT EXISTS esme_deliveries_legacy_idx ON esme_deliveries (id)
    WHERE status <> 'queued';
DROP INDEX CONCURRENTLY IF EXISTS esme_deliveries_lease_idx;
DROP INDEX CONCURRENTLY IF EXISTS esme_deliveries_finished_idx;
