-- The statements that write the `inbound` queue beyond the queue core's generic ones
-- (shared/queue/inbound.py owns them). Data goes in $n only; {take_over_expired} is the one
-- dedupe rule (dedupe.sql).

-- name: insert
-- insert whole MO messages, claiming each provider id in dedupe_keys.
-- Returns, per input position, the id drawn and whether the row was inserted.
-- The messages come as one JSON array $1 (one parameter: asyncpg encodes an array per column
-- element by element, which cost more than the rest of the statement's client side).
WITH input AS (
    -- one row per message, in caller order
    SELECT * FROM ROWS FROM (json_to_recordset($1::text::json) AS (
                      channel text, provider text, connector text, from_addr text, to_addr text,
                      body text, raw bytea, data_coding smallint, provider_message_id text,
                      meta jsonb, dedupe_scope text, dedupe_key text))
        WITH ORDINALITY AS t(channel, provider, connector, from_addr, to_addr, body, raw,
                             data_coding, provider_message_id, meta, dedupe_scope, dedupe_key,
                             ord)
), numbered AS MATERIALIZED (
    -- draw ids first so each dedupe key points at its row
    SELECT nextval('inbound_id_seq') AS id, input.* FROM input
), keys AS (
    -- claim provider ids (an expired key is taken over: the dedupe rule, dedupe.sql)
    INSERT INTO dedupe_keys (scope, key, target_table, target_id, expires_at)
    SELECT dedupe_scope, dedupe_key, 'inbound', id, now() + make_interval(secs => $2)
      FROM numbered WHERE dedupe_key IS NOT NULL
    {take_over_expired}
    RETURNING target_id
), ins AS (
    -- rows without a key and rows whose key is new
    INSERT INTO inbound (id, channel, provider, connector, from_addr, to_addr, body, raw,
                         data_coding, provider_message_id, meta)
    OVERRIDING SYSTEM VALUE
    SELECT id, channel, provider, connector, from_addr, to_addr, body, raw, data_coding,
           provider_message_id, meta
      FROM numbered
     WHERE dedupe_key IS NULL OR id IN (SELECT target_id FROM keys)
    RETURNING id
)
-- one NOTIFY on channel $3 when a row was inserted (NULL: none), delivered at commit
SELECT n.ord, n.id, (i.id IS NOT NULL) AS created
  FROM numbered n LEFT JOIN ins i ON i.id = n.id
 CROSS JOIN (SELECT CASE WHEN $3::text IS NOT NULL AND EXISTS (SELECT 1 FROM ins)
                         THEN pg_notify($3::text, '') END) AS wake
 ORDER BY n.ord

-- name: insert_plain
-- insert whole MO messages that carry no provider id to dedupe (SMPP MO without an id TLV):
-- `insert` without its dedupe_keys part, whose setup (that table, its indexes, their locks)
-- every statement paid even for no key. Same input ($1, dedupe fields ignored), same result.
WITH numbered AS MATERIALIZED (
    -- one row per message, ids drawn in caller order
    SELECT nextval('inbound_id_seq') AS id, t.*
      FROM ROWS FROM (json_to_recordset($1::text::json) AS (
                      channel text, provider text, connector text, from_addr text, to_addr text,
                      body text, raw bytea, data_coding smallint, provider_message_id text,
                      meta jsonb))
        WITH ORDINALITY AS t(channel, provider, connector, from_addr, to_addr, body, raw,
                             data_coding, provider_message_id, meta, ord)
), ins AS (
    INSERT INTO inbound (id, channel, provider, connector, from_addr, to_addr, body, raw,
                         data_coding, provider_message_id, meta)
    OVERRIDING SYSTEM VALUE
    SELECT id, channel, provider, connector, from_addr, to_addr, body, raw, data_coding,
           provider_message_id, meta
      FROM numbered
)
-- one NOTIFY on channel $2 (NULL: none), delivered at commit
SELECT n.ord, n.id, true AS created
  FROM numbered n
 CROSS JOIN (SELECT CASE WHEN $2::text IS NOT NULL THEN pg_notify($2::text, '') END) AS wake
 ORDER BY n.ord

-- name: insert_one
-- one reassembled (or timed-out) message.
INSERT INTO inbound (channel, provider, connector, from_addr, to_addr, body, raw, data_coding,
                     provider_message_id, meta, status, last_error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id
