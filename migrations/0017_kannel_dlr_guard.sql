-- 0017: which parts a Kannel dlr-url reports on (issue 14).
--
-- outbound_part.kannel_dlr: true when the part's message asked for a Kannel dlr-url (a
--   callback_url, a non-zero dlr_mask, callback_style 'kannel'), false when it did not; NULL
--   for parts written before this migration (read as "maybe"). The sender knows it when it
--   records the part (it holds the claimed message), so receipt matching reports only the
--   receipts of such parts to `receipts.kannel_dlrs`, instead of looking up three rows per
--   matched receipt (~13 µs of server time per message) to find that nobody asked.
--
-- Expand only: a nullable column without a default (a catalog change, no rewrite); daemons of
-- the previous release never name it.

ALTER TABLE outbound_part ADD COLUMN IF NOT EXISTS kannel_dlr boolean;
