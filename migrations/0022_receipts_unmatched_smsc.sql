-- smsgw: no-transaction
-- 0022: the SMSC ids of the receipts not matched yet (issue 14).
--
-- From this release the sender stores a receipt already `matched` when its part is written
-- back and nothing else is owed for it (`receipts.store`: the part updated and the message
-- finalised in the statement that stores the receipt). It may do so only when no earlier
-- receipt of the same SMSC id still waits for the matcher: the matcher would apply that older
-- receipt after the newer one, and the part would end with the older state. This index
-- answers that with one probe per stored receipt.
--
-- Partial on `outbound_part_id IS NULL` (queued and orphan receipts), not on `status =
-- 'queued'`: `receipts.store` asks `outbound_part_id IS NULL AND status <> 'orphan'`, which
-- only this index can serve. Asked with `status = 'queued'`, the planner could also walk
-- receipts_claim_idx, and with statistics taken while no receipt was queued it did: every
-- queued receipt read for every receipt stored (~100 µs a receipt in `smsgw bench mt`).
--
-- Cost: a receipt stored `matched` (most of them) adds no entry; a queued one adds one. No
-- update loses HOT: the matcher's updates of a queued receipt (matched, retried, orphaned)
-- change run_after or status, which receipts_claim_idx names, so they were never heap-only;
-- smsc_id is never updated.
--
-- Outside a transaction: built CONCURRENTLY, so receipts keep being stored while it builds.

CREATE INDEX CONCURRENTLY IF NOT EXISTS receipts_unmatched_smsc_idx ON receipts (smsc_id)
    WHERE outbound_part_id IS NULL;
