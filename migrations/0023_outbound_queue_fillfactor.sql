-- 0023: room on each outbound_queue page for the claim's version of its rows (issue 14).
--
-- The claim sets a queued row's lease (lease_owner, lease_until): a longer tuple, and not
-- heap-only (both columns are named by the queue's partial indexes). With the table packed
-- full (fillfactor 100, the default) the new version never fit on its page, so each claimed
-- row also wrote a lock record while Postgres looked for a page with room (heap_update marks
-- the old version locked before it lets go of the page), dirtied a second page and searched
-- the free space map: measured with pg_waldump in `smsgw bench mt`, a claim of 100 messages
-- wrote 150-200 LOCK records instead of its 100 FOR UPDATE ones. With half of each page free
-- the new version goes on the same page. Rows live for seconds (inserted, leased, deleted),
-- so the table stays small either way.
--
-- A storage parameter: no rewrite; pages written from now on keep the room.

ALTER TABLE outbound_queue SET (fillfactor = 50);
