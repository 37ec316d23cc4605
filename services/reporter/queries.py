"""The reporter's SQL: read-only, run inside one REPEATABLE READ READ ONLY transaction per
report (`runner.py`), so every figure of a report comes from one snapshot.

How each reads (docs/ARCHITECTURE.md "The reporter"; EXPLAIN output in the README, "Reports"):
time ranges over `outbound`, `inbound` and their `*_history` tables go through the BRIN indexes
on `created_at` of migration 0016, one local day at a time; a campaign's entries through
`campaign_entries_time_idx` (campaign, created_at); over-quota attempts through the partial
`events_over_quota_idx`; suppression changes through the partial `audit_log_suppression_idx`;
latency through `outbound_part`'s unique (outbound_id, part_no) index. Nothing here takes a row
lock, so the queue tables' claims and write-backs never wait for a report.

Parameters: $1, $2 the UTC bounds [from, to) of a slice, then the statement's own.
"""

from __future__ import annotations

from typing import Final

_OUT_COLS = "id, account_id, coalesce(connector, '') AS connector, status, parts_total, " \
            "submitted_at, created_at, source, rule_id"
_OUTBOUND = (f"SELECT {_OUT_COLS} FROM outbound WHERE created_at >= $1 AND created_at < $2 "
             f"UNION ALL SELECT {_OUT_COLS} FROM outbound_history "
             f"WHERE created_at >= $1 AND created_at < $2")
_IN_COLS = "id, to_addr, channel, provider, status, created_at, " \
           "left(upper(split_part(btrim(coalesce(body, '')), ' ', 1)), 20) AS keyword"
_INBOUND = (f"SELECT {_IN_COLS} FROM inbound WHERE created_at >= $1 AND created_at < $2 "
            f"UNION ALL SELECT {_IN_COLS} FROM inbound_history "
            f"WHERE created_at >= $1 AND created_at < $2")
_FAILED = "('undeliverable', 'expired', 'rejected', 'dead', 'submit_unknown')"

TRAFFIC_DAY: Final = f"""
-- traffic_day: one slice (a local day) per account x connector; $3 one account id or NULL.
-- The latency is submit_sm_resp -> final receipt of delivered parts (outbound_part is kept
-- `[retention] parts_s`, so older days have counts but no latency).
WITH m AS (
    SELECT * FROM ({_OUTBOUND}) u WHERE $3::bigint IS NULL OR account_id = $3
), counts AS (
    SELECT account_id, connector, count(*) AS accepted,
           count(*) FILTER (WHERE submitted_at IS NOT NULL) AS submitted,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'undeliverable') AS undeliverable,
           count(*) FILTER (WHERE status = 'expired') AS expired,
           count(*) FILTER (WHERE status = 'rejected') AS rejected,
           count(*) FILTER (WHERE status = 'suppressed') AS suppressed,
           coalesce(sum(parts_total), 0)::bigint AS parts
      FROM m GROUP BY account_id, connector
), lat AS (
    SELECT m.account_id, m.connector,
           percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
               ORDER BY extract(epoch FROM p.done_at - p.submitted_at)) AS pct
      FROM m JOIN outbound_part p ON p.outbound_id = m.id
     WHERE p.status = 'delivered' AND p.done_at IS NOT NULL AND p.submitted_at IS NOT NULL
     GROUP BY m.account_id, m.connector
)
SELECT coalesce(a.name, '') AS account, c.connector, c.accepted, c.submitted, c.delivered,
       c.undeliverable, c.expired, c.rejected, c.suppressed, c.parts, l.pct
  FROM counts c
  LEFT JOIN lat l ON l.account_id IS NOT DISTINCT FROM c.account_id
                 AND l.connector = c.connector
  LEFT JOIN accounts a ON a.id = c.account_id
 ORDER BY 1, 2
"""

CAMPAIGN_RULES: Final = """
-- campaign_rules: the rules that record entries for campaign $1 (ids and names)
SELECT id, name FROM rules
 WHERE actions @> jsonb_build_array(jsonb_build_object('campaign', $1::text))
 ORDER BY id
"""

CAMPAIGN_HOURS: Final = """
-- campaign_hours: entries per local hour ($4 the zone); the DST hour that happens twice is
-- two buckets (date_trunc in the zone keeps the offset)
SELECT date_trunc('hour', created_at, $4) AS bucket, count(*) AS entries
  FROM campaign_entries
 WHERE campaign = $3 AND created_at >= $1 AND created_at < $2
 GROUP BY 1 ORDER BY 1
"""

CAMPAIGN_PARTICIPANTS: Final = """
-- campaign_participants: how many people made how many entries (one row per count)
SELECT n AS entries, count(*) AS participants
  FROM (SELECT count(*) AS n FROM campaign_entries
         WHERE campaign = $3 AND created_at >= $1 AND created_at < $2
         GROUP BY number) per
 GROUP BY n ORDER BY n
"""

CAMPAIGN_OVER_QUOTA: Final = """
-- campaign_over_quota: over-quota attempts per local hour ($3: the campaign's rule names,
-- $4: the zone), from the processor's events (events_over_quota_idx)
SELECT date_trunc('hour', at, $4) AS bucket, count(*) AS attempts
  FROM events
 WHERE event = 'processed' AND detail ->> 'outcome' = 'over_quota'
   AND at >= $1 AND at < $2 AND detail ->> 'rule' = ANY($3::text[])
 GROUP BY 1 ORDER BY 1
"""

CAMPAIGN_REPLIES: Final = f"""
-- campaign_replies: replies of the campaign's rules ($3 their ids) per local hour ($4):
-- sent (queued at all), delivered, failed (a final state other than delivered), suppressed
SELECT date_trunc('hour', created_at, $4) AS bucket, count(*) AS sent,
       count(*) FILTER (WHERE status = 'delivered') AS delivered,
       count(*) FILTER (WHERE status IN {_FAILED}) AS failed,
       count(*) FILTER (WHERE status = 'suppressed') AS suppressed
  FROM ({_OUTBOUND}) m
 WHERE source = 'rule' AND rule_id = ANY($3::bigint[])
 GROUP BY 1 ORDER BY 1
"""

OPTOUT_CHANGES: Final = """
-- optout_changes: STOP (suppression added) and START (removed) per local day ($3 the zone)
-- x keyword x scope x source, from the audit log (audit_log_suppression_idx). A START counts
-- only where it removed an entry.
SELECT date_trunc('day', at, $3) AS bucket,
       CASE action WHEN 'suppression_add' THEN 'STOP' ELSE 'START' END AS op,
       upper(coalesce(detail -> 'evidence' ->> 'keyword', detail -> 'reason' ->> 'keyword',
                      '')) AS keyword,
       coalesce(detail ->> 'scope', '') AS scope, coalesce(detail ->> 'source', '') AS source,
       count(*) AS n
  FROM audit_log
 WHERE action IN ('suppression_add', 'suppression_remove') AND at >= $1 AND at < $2
 GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
"""

CAMPAIGN_STOPS: Final = """
-- campaign_stops: opt-outs (suppressions added, any scope) per local hour ($3 the zone)
SELECT date_trunc('hour', at, $3) AS bucket, count(*) AS n
  FROM audit_log
 WHERE action = 'suppression_add' AND at >= $1 AND at < $2
 GROUP BY 1 ORDER BY 1
"""

CAMPAIGN_KEYWORDS: Final = """
-- campaign_keywords: the first word of the MO behind each entry, top 20 (bodies blanked by
-- retention count as '')
SELECT coalesce(left(upper(split_part(btrim(coalesce(i.body, h.body, '')), ' ', 1)), 20), '')
           AS keyword, count(*) AS entries
  FROM campaign_entries e
  LEFT JOIN inbound i ON i.id = e.inbound_id
  LEFT JOIN inbound_history h ON h.id = e.inbound_id
 WHERE e.campaign = $3 AND e.created_at >= $1 AND e.created_at < $2
 GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20
"""

CAMPAIGN_ENTRIES: Final = """
-- campaign_entries: the draw list, one row per valid (recorded) entry, streamed by a cursor
SELECT id, created_at, number, period_key, inbound_id, data
  FROM campaign_entries
 WHERE campaign = $3 AND created_at >= $1 AND created_at < $2
 ORDER BY created_at, id
"""

INBOUND_DAY: Final = f"""
-- inbound_day: MO of one slice (a local day) per short code x keyword x channel x provider
SELECT to_addr AS short_code, keyword, channel, provider, count(*) AS total,
       count(*) FILTER (WHERE status = 'done') AS processed,
       count(*) FILTER (WHERE status = 'failed') AS failed,
       count(*) FILTER (WHERE status = 'dead') AS dead,
       count(*) FILTER (WHERE status = 'queued') AS queued
  FROM ({_INBOUND}) m
 GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
"""

ESTIMATE_OUTBOUND: Final = f"""
-- estimate_outbound: for EXPLAIN only (the planner's row estimate is the progress total)
SELECT 1 FROM ({_OUTBOUND}) m
"""
ESTIMATE_INBOUND: Final = f"""
-- estimate_inbound: for EXPLAIN only
SELECT 1 FROM ({_INBOUND}) m
"""
ESTIMATE_ENTRIES: Final = """
-- estimate_entries: for EXPLAIN only
SELECT 1 FROM campaign_entries WHERE campaign = $3 AND created_at >= $1 AND created_at < $2
"""

STATEMENTS: Final = {
    name.lower(): sql for name, sql in globals().items()
    if name.isupper() and isinstance(sql, str) and sql.lstrip().startswith("--")}
"""Statement name → SQL (the PREPARE test reads it)."""
