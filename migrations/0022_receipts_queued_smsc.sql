-- smsgw: no-transaction
-- 0022: the SMSC ids of the receipts still waiting for the matcher (issue 14).
--
-- From this release the sender stores a receipt already `matched` when its part is written
-- back and nothing else is owed for it (`receipts.store`: the part updated and the message
-- finalised in the statement that stores the receipt). It may do so only when no earlier
-- receipt for the same SMSC id is still `queued`: the matcher would apply that older receipt
-- after the newer one, and the part would end with the older state. This index answers that
-- question with one probe per stored receipt.
--
-- Partial on `status = 'queued'`, like receipts_claim_idx: a receipt stored `matched` (most of
-- them) adds no entry, a queued one adds one, and the matcher's queued → matched update is
-- already not heap-only (receipts_claim_idx's predicate names status), so this index makes no
-- update lose HOT. The indexed column, smsc_id, is never updated.
--
-- Outside a transaction: built CONCURRENTLY, so receipts keep being stored while it builds.

CREATE INDEX CONCURRENTLY IF NOT EXISTS receipts_queued_smsc_idx ON receipts (smsc_id)
    WHERE status = 'queued';
