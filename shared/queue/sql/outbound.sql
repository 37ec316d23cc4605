-- The statements that write the `outbound` queue and its `outbound_part` rows beyond the
-- queue core's generic ones (shared/queue/outbound.py owns them). Data goes in $n only;
-- {take_over_expired} is the one dedupe rule (dedupe.sql).

-- name: insert
-- insert MTs without a client_ref and wake the senders, in ONE statement
-- (autocommit: one round trip, durable when it returns). RETURNING yields the rows in the
-- order the SELECT produced them (a plain insert from unnest), which is the input order.
WITH ins AS (
    -- the rows, in input order
    INSERT INTO outbound (account_id, source, from_addr, to_addr, body, category, priority,
                          encoding, callback_url, dlr_mask, send_at, valid_until, route_hint,
                          meta, run_after, to_hash)
    SELECT account_id, source, from_addr, to_addr, body, category, priority, encoding,
           callback_url, dlr_mask, send_at, valid_until, route_hint, meta::jsonb,
           coalesce(send_at, now()), to_hash
      FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                  $7::smallint[], $8::text[], $9::text[], $10::text[], $11::smallint[],
                  $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[],
                  $16::text[], $18::bytea[])
               AS t(account_id, source, from_addr, to_addr, body, category, priority,
                    encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                    route_hint, meta, fingerprint, to_hash)
    RETURNING id
)
-- one NOTIFY for the statement (delivered at commit)
SELECT ins.id FROM ins CROSS JOIN (SELECT pg_notify($17, '')) AS wake

-- name: insert_keyed
-- insert a batch of MTs and their client_ref keys in one statement.
-- Returns, per input position, the id drawn for it and whether its row was inserted.
WITH input AS (
    -- one row per MT, in caller order
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::text[], $7::smallint[], $8::text[], $9::text[], $10::text[],
                         $11::smallint[], $12::timestamptz[], $13::timestamptz[], $14::text[],
                         $15::text[], $16::text[], $18::bytea[])
        WITH ORDINALITY AS t(account_id, source, from_addr, to_addr, body, category, priority,
                             encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                             route_hint, meta, fingerprint, to_hash, ord)
), numbered AS MATERIALIZED (
    -- draw the row ids first so the dedupe key can point at its row in the same statement
    SELECT nextval('outbound_id_seq') AS id, input.* FROM input
), keys AS (
    -- claim each client_ref; a live key is left alone, an expired one is taken over (the
    -- dedupe rule, dedupe.sql)
    INSERT INTO dedupe_keys (scope, key, target_table, target_id, fingerprint, expires_at)
    SELECT 'mt:' || account_id, client_ref, 'outbound', id, fingerprint,
           now() + make_interval(secs => $17)
      FROM numbered WHERE client_ref IS NOT NULL
    {take_over_expired}
    RETURNING target_id
), ins AS (
    -- rows without a key, and rows whose key was claimed just now
    INSERT INTO outbound (id, account_id, source, from_addr, to_addr, body, category, priority,
                          encoding, client_ref, callback_url, dlr_mask, send_at, valid_until,
                          route_hint, meta, run_after, to_hash)
    OVERRIDING SYSTEM VALUE
    SELECT id, account_id, source, from_addr, to_addr, body, category, priority, encoding,
           client_ref, callback_url, dlr_mask, send_at, valid_until, route_hint, meta::jsonb,
           coalesce(send_at, now()), to_hash
      FROM numbered
     WHERE client_ref IS NULL OR id IN (SELECT target_id FROM keys)
    RETURNING id
)
SELECT n.ord, n.id, (i.id IS NOT NULL) AS created
  FROM numbered n LEFT JOIN ins i ON i.id = n.id
 ORDER BY n.ord

-- name: finalize
-- Messages $1 whose every part is now final get their state: all delivered → delivered, all
-- expired → expired, else undeliverable. The row is updated where it lives: outbound (from
-- submitted), or outbound_history after the retention move (a late receipt). Returns what a
-- status callback needs.
WITH agg AS (
    SELECT p.outbound_id AS id, max(p.parts_total) AS total, count(*) AS n,
           count(*) FILTER (WHERE p.status IN ('delivered', 'undeliverable', 'expired',
                                               'rejected', 'unknown_receipt')) AS finals,
           count(*) FILTER (WHERE p.status = 'delivered') AS delivered,
           count(*) FILTER (WHERE p.status = 'expired') AS expired,
           max(p.err) AS err
      -- a join with the unnested ids keeps this on the (outbound_id, part_no) index: with
      -- `= ANY($1)` the generic plan of the prepared statement guessed thousands of rows
      -- and scanned the whole table
      FROM unnest($1::bigint[]) AS u(id)
      JOIN outbound_part p ON p.outbound_id = u.id
     GROUP BY p.outbound_id
), done AS (
    SELECT id, delivered, err,
           CASE WHEN delivered = n THEN 'delivered'
                WHEN expired = n THEN 'expired'
                ELSE 'undeliverable' END AS status
      FROM agg
     WHERE n >= total AND finals = n
), hot AS (
    UPDATE outbound AS o
       SET status = d.status, done_at = now(), updated_at = now(),
           last_error = CASE WHEN d.status = 'delivered' THEN o.last_error
                             ELSE coalesce('receipt err ' || d.err, o.last_error) END
      FROM done d
     WHERE o.id = d.id AND o.status = 'submitted'
    RETURNING o.id, o.status, o.account_id, o.from_addr, o.to_addr, o.client_ref,
              o.callback_url, o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code,
              o.last_error, d.delivered
), hist AS (
    UPDATE outbound_history AS o
       SET status = d.status, done_at = now(), updated_at = now()
      FROM done d
     WHERE o.id = d.id AND o.status <> d.status
       AND o.status IN ('submitted', 'delivered', 'undeliverable', 'expired')
    RETURNING o.id, o.status, o.account_id, o.from_addr, o.to_addr, o.client_ref,
              o.callback_url, o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code,
              o.last_error, d.delivered
)
SELECT * FROM hot
UNION ALL
SELECT * FROM hist

-- name: buffered_watchers
-- Of messages $1 that got an intermediate receipt, those whose application asked for Kannel
-- "queued on SMSC" reports (dlr-mask bit 4), wherever the row lives.
SELECT o.id, 'enroute' AS status, o.account_id, o.from_addr, o.to_addr, o.client_ref,
       o.callback_url, o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code,
       o.last_error, 0 AS delivered
  FROM unnest($1::bigint[]) AS u(id) JOIN outbound o ON o.id = u.id
 WHERE o.callback_url IS NOT NULL AND o.dlr_mask & 4 <> 0
   AND o.meta->>'callback_style' = 'kannel'
UNION ALL
SELECT o.id, 'enroute', o.account_id, o.from_addr, o.to_addr, o.client_ref, o.callback_url,
       o.dlr_mask, o.meta, o.parts_total, o.connector, o.error_code, o.last_error, 0
  FROM unnest($1::bigint[]) AS u(id) JOIN outbound_history o ON o.id = u.id
 WHERE o.callback_url IS NOT NULL AND o.dlr_mask & 4 <> 0
   AND o.meta->>'callback_style' = 'kannel'

-- name: purge_parts
-- Delete up to $2 outbound_part rows created more than $1 seconds ago (no receipt can still
-- arrive for them: the smsc id → part map is kept that long).
DELETE FROM outbound_part
 WHERE id IN (SELECT id FROM outbound_part
               WHERE created_at < now() - make_interval(secs => $1)
               ORDER BY id LIMIT $2)
