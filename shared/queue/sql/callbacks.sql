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

-- name: insert_leased
-- Forwarded MO that the inserting processor delivers itself, right after its transaction
-- commits: inserted already leased to owner $2 for $3 seconds (status 'sending'), so there is
-- no claim statement, no NOTIFY and no second row version per MO. If that processor dies
-- before delivering, the lease expires and any processor's claim takes the rows over, as for
-- a crash in the middle of a delivery. The rows come as one JSON array $1 read through the
-- table's own row type (a bytea body as "\x<hex>"): one parameter instead of one array per
-- column, which asyncpg encodes element by element.
INSERT INTO callbacks (kind, inbound_id, url, method, body, headers, secret_ref, batch_max,
                       reply, status, lease_owner, lease_until)
SELECT r.kind, r.inbound_id, r.url, r.method, r.body, r.headers, r.secret_ref, r.batch_max,
       r.reply, 'sending', $2, now() + make_interval(secs => $3::float8)
  FROM json_populate_recordset(NULL::callbacks, $1::text::json) AS r
RETURNING *, false AS reclaimed
