-- 0011: binary MTs, a user data header, and the per-message SMPP fields (issue 15).
--
-- outbound.payload: the 8-bit user data of a binary MT (Kannel `coding=1`, the JSON API's
--   "binary"), without its UDH; `body` is NULL for such a message. NULL for text.
-- outbound.udh: the client's user data header, its length octet included (Kannel `udh`, the
--   JSON API's "udh"), validated at intake (the length octet matches, the elements are well
--   formed, it fits 140 octets with the content). The sender puts it in front of every part
--   and adds its concatenation element to it when the message needs several parts, as
--   Kannel's `sms_split` / `prepend_catenation_udh` do. NULL for a message without one.
-- outbound.smpp: the rarely used per-message SMPP fields, as one JSON object
--   (`shared/smpp/fields.py` names its keys: pid, mclass, mwi, alt_dcs, rpi, service_type,
--   priority_flag, registered_delivery, tlvs). NULL for a plain message.
--
-- Typed columns for the octets (bytea keeps them exact and costs nothing when NULL), one jsonb
-- for the rest: a field set that grows with every SMSC's wishes stays one column, the claim
-- returns it as it is (NULL for a plain text MT, so its decoding costs nothing), and the
-- validity, schedule and queue priority keep their existing columns (valid_until, send_at,
-- priority), which now also reach the wire.
--
-- Expand only: nullable columns without defaults are catalog changes (no rewrite, no scan);
-- daemons of the previous release never name them and keep working. Added to
-- outbound_history too, at the end of both and in the same order, so the retention move's
-- `INSERT INTO outbound_history SELECT * FROM moved` keeps matching column for column.

ALTER TABLE outbound         ADD COLUMN IF NOT EXISTS payload bytea;
ALTER TABLE outbound         ADD COLUMN IF NOT EXISTS udh bytea;
ALTER TABLE outbound         ADD COLUMN IF NOT EXISTS smpp jsonb;
ALTER TABLE outbound_history ADD COLUMN IF NOT EXISTS payload bytea;
ALTER TABLE outbound_history ADD COLUMN IF NOT EXISTS udh bytea;
ALTER TABLE outbound_history ADD COLUMN IF NOT EXISTS smpp jsonb;
