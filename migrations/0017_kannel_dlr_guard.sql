-- smsgw: no-transaction
-- 0017: a guard for the receipt matcher's Kannel dlr-url lookup (issue 14).
--
-- Each matching batch asked `receipts.kannel_dlrs` for the Kannel-style messages among its
-- matched receipts: three index probes per receipt (receipt, part, message), about 13 µs of
-- server time per message even when no message had a dlr-url. These partial indexes hold only
-- the messages that ask for a Kannel DLR, so the statement's one-time check "is there any such
-- message at all" is one probe into an index that is empty on a gateway without Kannel
-- applications, and costs an INSERT nothing for every other message.
--
-- Expand only: two indexes, built CONCURRENTLY (outbound is hot on a live system); daemons of
-- the previous release never read them.

CREATE INDEX CONCURRENTLY IF NOT EXISTS outbound_kannel_dlr_idx ON outbound (id)
    WHERE callback_url IS NOT NULL AND coalesce(dlr_mask, 0) <> 0
      AND (meta->>'callback_style') = 'kannel';

CREATE INDEX CONCURRENTLY IF NOT EXISTS outbound_history_kannel_dlr_idx ON outbound_history (id)
    WHERE callback_url IS NOT NULL AND coalesce(dlr_mask, 0) <> 0
      AND (meta->>'callback_style') = 'kannel';
