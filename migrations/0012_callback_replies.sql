-- 0012: Kannel sms-service replies for forwards (issue 15). A `forward` action with
-- `reply_from_body` snapshots what its reply needs into callbacks.reply when the MO is
-- forwarded: the reply's sender and recipient (the MO's numbers swapped), the rule, and the
-- action's Kannel sms-service settings (max-messages, omit-empty, accept-x-kannel-headers,
-- concatenation, header/footer, the body size limit ...). The callback delivery turns the
-- application's HTTP answer into the reply MT(s) in the transaction that marks the row done
-- (services/processor/callbacks.py, services/processor/kannel_reply.py). A snapshot, not a
-- lookup of the rule at delivery time: a reply follows the rule as it was when the MO came,
-- and delivery needs no extra query. NULL (every status callback, every other forward): the
-- response body is not read.
--
-- Expand only: a nullable column without a default is a catalog change (no rewrite). Added at
-- the end of both tables, in the same order, so the retention move's
-- `INSERT INTO callbacks_history SELECT * FROM moved` keeps matching column for column.
ALTER TABLE callbacks         ADD COLUMN IF NOT EXISTS reply jsonb;
ALTER TABLE callbacks_history ADD COLUMN IF NOT EXISTS reply jsonb;
