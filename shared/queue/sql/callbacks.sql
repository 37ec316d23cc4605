-- The statements that write the `callbacks` queue beyond the queue core's generic ones
-- (shared/queue/callbacks.py owns them). Data goes in $n only.

-- name: insert_status
-- Queue status callbacks (one INSERT per batch) and wake the callback workers once.
WITH ins AS (
    INSERT INTO callbacks (kind, account_id, outbound_id, url, method, body, headers, secret_ref)
    SELECT 'status', u.account_id, u.outbound_id, u.url, u.method, u.body, u.headers,
           u.secret_ref
      FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::bytea[],
                  $6::jsonb[], $7::text[])
           AS u(account_id, outbound_id, url, method, body, headers, secret_ref)
    RETURNING id
)
SELECT count(*) AS n,
       CASE WHEN count(*) > 0 THEN pg_notify($8::text, '') END IS NULL AS woke
  FROM ins
