-- 0013: the receipt TLVs a Kannel dlr-url report is made from (issue 15).
--
-- receipts.message_state: the message_state TLV (0x0427) of a receipt that also carried
--   receipted_message_id (0x001E), as received; NULL otherwise. Kannel 1.4.5's `handle_dlr`
--   (gw/smsc/smsc_smpp.c) types such a receipt from the TLV, not from the text: EXPIRED (3) is
--   DLR type 34 (`DLR_EXPIRED`, 0x20|0x02), where the text's "stat:EXPIRED" is type 2.
-- receipts.network_error: the network_error_code TLV (0x0423), its 3 octets as received; NULL
--   without it. Kannel puts them in the DLR's meta-data (`?smpp?dlr_err=`) in preference to
--   the text's err.
--
-- Expand only: nullable columns without defaults (catalog changes, no rewrite); daemons of the
-- previous release never name them. Added to receipts_history too, at the end of both and in
-- the same order, so the retention move's `SELECT *` keeps matching column for column.

ALTER TABLE receipts         ADD COLUMN IF NOT EXISTS message_state smallint;
ALTER TABLE receipts         ADD COLUMN IF NOT EXISTS network_error bytea;
ALTER TABLE receipts_history ADD COLUMN IF NOT EXISTS message_state smallint;
ALTER TABLE receipts_history ADD COLUMN IF NOT EXISTS network_error bytea;
