"""Apply a batch of inbound messages in ONE transaction (docs/ARCHITECTURE.md, guarantee 3,
transaction mode).

One batch, in a `store.claim_transaction` (BEGIN with the claim plan pinned: one round trip):

1. `claim_batch`, one statement: the `claim_tx(inbound, limit, hol_column='from_addr')` claim
   locks up to `batch` due rows (`FOR UPDATE SKIP LOCKED`); head-of-line: a row is claimable
   only when no earlier unfinished row of the same number exists — also not one waiting for
   its retry — so one number's messages are applied in arrival order across any number of
   processors (guarantee 7). The same statement reads
   - the rules version (`rules_version`, moved by a trigger on every change to `rules`); a
     changed version reloads the rule set before evaluating, so a CLI change applies to the
     very next batch whether or not its NOTIFY has arrived yet;
   - flood control: an upsert adds the batch to per-number counters (fixed windows by arrival
     time); messages over `flood_max` per window are recorded (event, outcome `flooded`), not
     answered. Opt-out keywords are still honoured for them (a STOP is never ignored), without
     the confirmation;
   - whether a queued row waits behind a claimed one (`Engine.more`: the consume loop claims
     again after a short batch only then; a row that arrives later sends its own NOTIFY).
2. in memory: opt-out keywords, then the rules (first match wins) -> a `Plan`. Campaign quotas
   need one lookup of the entries already recorded (one query for the batch).
3. writes, one statement each for the whole batch: replies (`outbound`, one multi-row insert +
   one NOTIFY), campaign entries, suppression adds/removes (with their audit rows), forwards
   beyond the delivery's free room (`callbacks` + NOTIFY); then `finish_batch`, one statement:
   the other forwards inserted leased to this process's delivery, the inbound rows advanced
   to done/failed and their events.
4. commit. A crash anywhere before it rolls everything back and the row locks vanish with the
   connection: no reply without its inbound row advanced, and no advanced row without its reply.
   A plain forwarding batch is four round trips: BEGIN, `claim_batch`, `finish_batch`, COMMIT.

A batch that fails in the database (a constraint, a trigger, a deadlock…) is rolled back and
re-run one message per savepoint in a new transaction: the messages that fail again get a
retry with backoff (`dead` after `max_attempts`), the others are applied. Only a failed batch
pays for per-message round trips.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, Protocol

import asyncpg
import orjson
import structlog

from smsgw.services.processor import kannel_reply, templates
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.options import ProcessorKeys
from smsgw.services.processor.optout import OptOp, OptOutHit, OptOutKeywords
from smsgw.services.processor.rules import (
    CampaignAction,
    DeliverToAccountAction,
    ForwardAction,
    Hit,
    Message,
    OptOutAction,
    ReplyAction,
    RuleError,
    RuleSet,
    period_key,
    rule_from_row,
)
from smsgw.shared.domain import suppression
from smsgw.shared.domain.numbers import is_recipient
from smsgw.shared.domain.suppression import NumberHasher, SuppressionChange
from smsgw.shared.queue import callbacks as callbacks_queue
from smsgw.shared.queue import esme_deliveries, store
from smsgw.shared.queue.esme_deliveries import MoForEsme
from smsgw.shared.queue.records import Callback, InboundMessage, InboundStatus, QueueStat

log = structlog.get_logger("smsgw.processor.engine")
DAEMON: Final = "processor"

RULES_VERSION: Final = """
-- rules_version: the counter the rules trigger moves on every change
SELECT version FROM rules_version
"""
LOAD_RULES: Final = """
-- load_rules: every stored rule with the version it belongs to (one snapshot)
SELECT r.id, r.name, r.priority, r.enabled, r.match, r.actions, v.version
  FROM rules_version v LEFT JOIN rules r ON true
 ORDER BY r.id
"""
FLOOD_COUNT: Final = """
-- flood_count: add this batch's messages to each (number, window) counter; return the totals
INSERT INTO flood_counters AS f (number, window_start, count)
SELECT u.number, u.window_start, u.n
  FROM unnest($1::text[], $2::timestamptz[], $3::int4[]) AS u(number, window_start, n)
ON CONFLICT (number, window_start) DO UPDATE SET count = f.count + EXCLUDED.count
RETURNING number, window_start, count
"""
QUOTA_COUNTS: Final = """
-- quota_counts: entries already recorded per (campaign, number, period). A correlated count
-- per key, so each is one probe of campaign_entries_quota_idx whatever the table's size (a
-- join may be planned as a hash join over the whole, growing table).
SELECT u.campaign, u.number, u.period_key,
       (SELECT count(*) FROM campaign_entries e
         WHERE e.campaign = u.campaign AND e.number = u.number
           AND e.period_key = u.period_key)::int AS n
  FROM unnest($1::text[], $2::text[], $3::text[]) AS u(campaign, number, period_key)
"""
INSERT_ENTRIES: Final = """
-- insert_entries: the batch's campaign entries in one statement
INSERT INTO campaign_entries (rule_id, campaign, number, period_key, inbound_id, data)
SELECT * FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::jsonb[])
"""
FLOOD_CLEANUP: Final = """
-- flood_cleanup: drop counters of windows that ended more than $1 seconds ago
DELETE FROM flood_counters WHERE window_start < now() - make_interval(secs => $1)
"""
_FLOOD_WINDOW: Final = ("to_timestamp(floor(extract(epoch FROM c.created_at)::float8 / $3::float8)"
                        " * $3::float8)")  # `flood_window` in SQL (the same float arithmetic)
CLAIM_BATCH: Final = f"""
-- claim_batch: a batch's claim (in a claim_transaction: its plan pinned) with everything the
-- batch must read before deciding, in one round trip: the claimed rows (in no order: a sort
-- here costs the pinned plan's "disabled" cost; the caller orders them by id); flood
-- control ($2 > 0: at most $2 per number per $3-second window) adds the batch to each
-- (number, window) counter and returns the total; the rules version; and `blocked`: whether a
-- queued row waits behind a claimed one (head-of-line), so that the consume loop claims again
-- once this batch has committed.
WITH claimed AS MATERIALIZED (
{store.claim_tx_sql("inbound", "from_addr")}
), flood AS (
    -- the batch's messages counted into their (number, window) counters
    INSERT INTO flood_counters AS f (number, window_start, count)
    SELECT c.from_addr, {_FLOOD_WINDOW}, count(*)::int4
      FROM claimed c WHERE $2::int4 > 0
     GROUP BY 1, 2
    ON CONFLICT (number, window_start) DO UPDATE SET count = f.count + EXCLUDED.count
    RETURNING number, window_start, count
)
SELECT c.*, f.window_start AS flood_window, f.count AS flood_total,
       (SELECT version FROM rules_version) AS rules_version,
       -- one probe of inbound_hol_idx per claimed row (LIMIT keeps it a nested loop)
       EXISTS (SELECT 1 FROM claimed b, LATERAL (
                   SELECT 1 FROM inbound e WHERE e.from_addr = b.from_addr
                      AND e.status = 'queued' AND e.id > b.id LIMIT 1) w) AS blocked
  FROM claimed c
  LEFT JOIN flood f ON f.number = c.from_addr AND f.window_start = {_FLOOD_WINDOW}
"""
_TERMINAL: Final = ", ".join(f"'{s}'" for s in (InboundStatus.DONE, InboundStatus.FAILED,
                                                  InboundStatus.DEAD))
FINISH_BATCH: Final = f"""
-- finish_batch: a batch's last write, one statement: the forwards inserted leased to this
-- processor's delivery ($1-$3, callbacks.insert_leased: '[]' for none), each claimed row's
-- outcome ($4, a JSON array of id, status, error, detail: done, or failed keeping its error)
-- and, when $5, its `processed` event (the detail); and the callbacks $6 that the delivery
-- (owner $2) delivered, acknowledged as `store.ack` does (fenced by the lease, never out of
-- a terminal state).
WITH fwd AS (
{callbacks_queue.INSERT_LEASED}
), outcome AS MATERIALIZED (
    SELECT * FROM json_to_recordset($4::text::json)
                  AS o(id bigint, status text, error text, detail jsonb)
), ev AS (
    INSERT INTO events (message_table, message_id, event, detail, daemon)
    SELECT 'inbound', o.id, 'processed', o.detail, '{DAEMON}' FROM outcome o WHERE $5::bool
), fin AS (
    UPDATE inbound m
       SET status = o.status, last_error = coalesce(o.error, m.last_error),
           lease_owner = NULL, lease_until = NULL, updated_at = now()
      FROM outcome o
     -- the ids as an array: a probe of the primary key each (a join on them was planned as
     -- a scan of every row the table still holds)
     WHERE m.id = ANY (ARRAY(SELECT id FROM outcome)) AND m.id = o.id
       AND m.status NOT IN ({_TERMINAL})
), acked AS (
    UPDATE callbacks
       SET status = 'done', lease_owner = NULL, lease_until = NULL, updated_at = now()
     WHERE id = ANY ($6::bigint[]) AND lease_owner = $2 AND status NOT IN ('done', 'dead')
)
SELECT * FROM fwd
"""
STATEMENTS: Final = {"rules_version": RULES_VERSION, "load_rules": LOAD_RULES,
                      "flood_count": FLOOD_COUNT, "quota_counts": QUOTA_COUNTS,
                      "insert_entries": INSERT_ENTRIES, "flood_cleanup": FLOOD_CLEANUP,
                      "claim_batch": CLAIM_BATCH, "finish_batch": FINISH_BATCH}


# --- the plan of a batch (pure data) ----------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reply:
    """An MT reply to queue in `outbound`."""

    from_addr: str
    to_addr: str
    body: str
    category: str
    priority: int
    inbound_id: int
    rule_id: int | None
    reason: str  # 'rule', 'over_quota', 'optout'

    def row(self) -> dict[str, Any]:
        """The `outbound` columns of this reply."""
        return {"source": "rule", "from_addr": self.from_addr, "to_addr": self.to_addr,
                "body": self.body, "category": self.category, "priority": self.priority,
                "inbound_id": self.inbound_id, "rule_id": self.rule_id,
                "meta": {"reply": self.reason}}


@dataclass(frozen=True, slots=True)
class Entry:
    """A campaign entry to record."""

    rule_id: int
    campaign: str
    number: str
    period_key: str
    inbound_id: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Forward:
    """A forwarded MO: one `callbacks` row (kind 'mo')."""

    inbound_id: int
    url: str
    method: Literal["GET", "POST"]
    body: bytes | None
    secret_ref: str | None
    batch: int = 1
    reply: dict[str, Any] | None = None  # `reply_from_body`: `kannel_reply.snapshot`

    def row(self) -> dict[str, Any]:
        """The `callbacks` columns of this forward."""
        headers = {"Content-Type": "application/json"} if self.body is not None else None
        return {"kind": "mo", "inbound_id": self.inbound_id, "url": self.url,
                "method": self.method, "body": self.body, "headers": headers,
                "secret_ref": self.secret_ref,
                "batch_max": self.batch if self.batch > 1 else None, "reply": self.reply}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one inbound message (the metrics outcome and the event detail)."""

    inbound_id: int
    outcome: str  # applied, no_rule, optout, flooded, over_quota, failed
    rule: str | None = None
    error: str | None = None

    @property
    def status(self) -> str:
        """The inbound row's new status."""
        return "failed" if self.outcome == "failed" else "done"

    def detail(self) -> dict[str, Any]:
        """Its `processed` event's detail."""
        return {"outcome": self.outcome, "rule": self.rule,
                **({"error": self.error} if self.error else {})}


@dataclass(slots=True)
class Plan:
    """Everything a batch writes, built in memory before any write."""

    replies: list[Reply] = field(default_factory=list)
    entries: list[Entry] = field(default_factory=list)
    forwards: list[Forward] = field(default_factory=list)
    to_esmes: list[MoForEsme] = field(default_factory=list)  # deliver_to_account
    outcomes: list[Outcome] = field(default_factory=list)
    # (number, scope) -> the last opt-out operation on it in this batch (in message order)
    suppression_ops: dict[tuple[str, str], tuple[str, SuppressionChange]] = field(
        default_factory=dict)

    @property
    def adds(self) -> list[SuppressionChange]:
        """Suppression entries to add."""
        return [c for op, c in self.suppression_ops.values() if op == "add"]

    @property
    def removes(self) -> list[SuppressionChange]:
        """Suppression entries to remove."""
        return [c for op, c in self.suppression_ops.values() if op == "remove"]


@dataclass(frozen=True, slots=True)
class Decision:
    """Phase 1 of a message: the opt-out command or the rule it triggers (or an error)."""

    msg: Message
    optout: OptOutHit | None = None
    hit: Hit | None = None
    error: str | None = None


QuotaKey = tuple[str, str, str]  # (campaign, number, period_key)


def to_message(row: InboundMessage) -> Message:
    """The rule-facing view of an inbound row (arrival time decides campaign windows)."""
    return Message(id=row.id, from_addr=row.from_addr, to_addr=row.to_addr,
                   text=row.body or "", channel=row.channel,
                   connector=row.connector or row.provider, at=row.created_at,
                   coding=templates.kannel_coding(row.data_coding), raw=row.raw)


def decide(messages: Iterable[Message], rules: RuleSet,
           keywords: OptOutKeywords) -> list[Decision]:
    """Phase 1, pure: each message's opt-out command or first matching rule.

    Built-in opt-out keywords win over rules (a STOP must never be taken as a promo entry).
    A message whose evaluation raises is recorded as failed (permanent), not retried.
    """
    out = []
    for msg in messages:
        try:
            opt = keywords.classify(msg.keyword[1])
            out.append(Decision(msg, optout=opt) if opt else Decision(msg, hit=rules.evaluate(msg)))
        except Exception as exc:  # per-message boundary: one bad message never fails a batch
            log.exception("rule_evaluation_failed", inbound_id=msg.id)
            out.append(Decision(msg, error=f"evaluation failed: {exc!r}"[:500]))
    return out


def quota_keys(decisions: Iterable[Decision]) -> dict[tuple[int, int], QuotaKey]:
    """The campaign period of each (message id, action index) with a campaign action.

    Phase 2 reads the recorded entries of these periods (one query) and reuses the keys.
    """
    keys: dict[tuple[int, int], QuotaKey] = {}
    for d in decisions:
        if d.hit is None or not d.hit.rule.campaigns:
            continue
        rule = d.hit.rule.rule
        for i in d.hit.rule.campaigns:
            a = rule.actions[i]
            assert isinstance(a, CampaignAction)
            keys[(d.msg.id, i)] = (a.campaign, d.msg.from_addr,
                                   period_key(a.quota, rule.match.window, d.msg.at))
    return keys


class Planner:
    """Phase 2, pure: turn decisions into a `Plan`, given recorded quota counts and floods."""

    def __init__(self, keywords: OptOutKeywords, counts: dict[QuotaKey, int],
                 flooded: set[int], keys: dict[tuple[int, int], QuotaKey],
                 mo_accounts: Mapping[str, str] | None = None) -> None:
        self.keywords = keywords
        self.mo_accounts = mo_accounts or {}
        self.counts = counts
        self.flooded = flooded
        self.keys = keys
        self.plan = Plan()

    def build(self, decisions: Iterable[Decision]) -> Plan:
        """Plan every decision in message order."""
        for d in decisions:
            self.plan.outcomes.append(self._one(d))
        return self.plan

    def _one(self, d: Decision) -> Outcome:
        msg = d.msg
        if d.error is not None:
            return Outcome(msg.id, "failed", error=d.error)
        flooded = msg.id in self.flooded
        if d.optout is not None:
            self._optout(msg, d.optout.op, scope=None, reply=None if flooded else
                         d.optout.reply_template, rule_id=None)
            return Outcome(msg.id, "optout", rule=f"optout:{d.optout.op}")
        if flooded:
            return Outcome(msg.id, "flooded")
        if d.hit is None:
            return Outcome(msg.id, "no_rule")
        return self._rule(msg, d.hit)

    # -- rules ------------------------------------------------------------------------------

    def _context(self, msg: Message, hit: Hit) -> dict[str, object]:
        ctx: dict[str, object] = {"from": msg.from_addr, "to": msg.to_addr,
                                  "keyword": hit.keyword, "rest": hit.rest, "text": msg.text,
                                  "rule": hit.rule.rule.name}
        ctx.update({k: v or "" for k, v in hit.groups.items()})
        return ctx

    def _quota(self, msg: Message, hit: Hit,
               ctx: dict[str, object]) -> tuple[CampaignAction | None, list[QuotaKey]]:
        """Fill the campaign placeholders; return the campaign over quota (if any) and keys."""
        rule = hit.rule.rule
        keys: list[QuotaKey] = []
        for i in hit.rule.campaigns:
            a = rule.actions[i]
            assert isinstance(a, CampaignAction)
            key = self.keys.get((msg.id, i)) or (
                a.campaign, msg.from_addr, period_key(a.quota, rule.match.window, msg.at))
            keys.append(key)
            n = self.counts.get(key, 0)
            ctx.update(a.data)
            ctx.update(campaign=a.campaign, entries=n + 1,
                       quota_max=a.quota.max if a.quota else "",
                       quota_left=max(0, a.quota.max - n - 1) if a.quota else "")
            if a.quota is not None and n >= a.quota.max:
                ctx.update(entries=n, quota_left=0)
                return a, keys
        return None, keys

    def _rule(self, msg: Message, hit: Hit) -> Outcome:
        rule = hit.rule
        ctx = self._context(msg, hit)
        over, keys = self._quota(msg, hit, ctx)
        if over is not None:
            if over.over_quota_reply:
                self._reply(msg, templates.render(over.over_quota_reply, ctx), over.category,
                            0, rule.id, "over_quota")
            return Outcome(msg.id, "over_quota", rule=rule.rule.name)
        campaign_no = 0
        for i, action in enumerate(rule.rule.actions):
            if isinstance(action, ReplyAction):
                self._reply(msg, templates.render(action.template, ctx), action.category,
                            action.priority, rule.id, "rule", sender=action.from_)
            elif isinstance(action, CampaignAction):
                self._entry(msg, rule.id, action, keys[campaign_no])
                campaign_no += 1
            elif isinstance(action, ForwardAction):
                self.plan.forwards.append(self._forward(msg, hit, i, action))
            elif isinstance(action, DeliverToAccountAction):
                binary = msg.coding == 1 and msg.raw is not None
                self.plan.to_esmes.append(MoForEsme(
                    account=action.account, inbound_id=msg.id, from_addr=msg.from_addr,
                    to_addr=msg.to_addr, body=None if binary else msg.text,
                    raw=msg.raw if binary else None, data_coding=4 if binary else None))
            elif isinstance(action, OptOutAction):
                reply = templates.render(action.reply, ctx) if action.reply else None
                op: OptOp = action.op
                self._optout(msg, op, scope=action.scope, reply=reply, rule_id=rule.id,
                             rendered=True)
        return Outcome(msg.id, "applied", rule=rule.rule.name)

    def _reply(self, msg: Message, body: str, category: str, priority: int,
               rule_id: int | None, reason: str, sender: str | None = None) -> None:
        if not is_recipient(msg.from_addr):
            # An MO from an alphanumeric or malformed address ("+447700900999x") gets no
            # reply: an MT goes only to E.164 or a short code, as at every other intake.
            return
        self.plan.replies.append(Reply(
            from_addr=sender or msg.to_addr, to_addr=msg.from_addr, body=body,
            category=category, priority=priority, inbound_id=msg.id, rule_id=rule_id,
            reason=reason))

    def _entry(self, msg: Message, rule_id: int, action: CampaignAction, key: QuotaKey) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        self.plan.entries.append(Entry(rule_id=rule_id, campaign=action.campaign,
                                       number=msg.from_addr, period_key=key[2],
                                       inbound_id=msg.id, data=dict(action.data)))

    def _forward(self, msg: Message, hit: Hit, index: int, action: ForwardAction) -> Forward:
        rule = hit.rule
        # Kannel sms-service: the reply goes from the number the MO was sent to back to its
        # sender (gw/smsbox.c obey_request_thread swaps them), unless the answer says otherwise
        reply = None if action.reply_from_body is None else kannel_reply.snapshot(
            options=action.reply_from_body, sender=msg.to_addr, recipient=msg.from_addr,
            rule_id=rule.id, service=rule.rule.name)
        if action.get_url is not None:
            url = templates.render_get_url(
                action.get_url, sender=msg.from_addr, receiver=msg.to_addr, text=msg.text,
                at=msg.at, smsc=msg.connector, message_id=msg.id, service=rule.rule.name,
                coding=msg.coding, raw=msg.raw,
                reply_sender=reply["from"] if reply is not None else None,
                # Kannel's SMPP MO: account = the bind's system-id, meta-data its "?smpp?"
                # group (the MO's TLVs, which smsgw does not keep)
                account=self.mo_accounts.get(msg.connector or ""),
                meta_data="?smpp?" if msg.channel == "smpp" else None)
            return Forward(msg.id, url, "GET", None, None, reply=reply)
        body = orjson.dumps({
            "id": msg.id, "from": msg.from_addr, "to": msg.to_addr, "text": msg.text,
            "keyword": hit.keyword, "rest": hit.rest, "channel": msg.channel,
            "connector": msg.connector, "received_at": msg.at.isoformat(),
            "rule": rule.rule.name, "groups": dict(hit.groups)})
        secret_ref = f"rule:{rule.id}:{index}" if action.secret_env else None
        assert action.url is not None
        return Forward(msg.id, action.url, "POST", body, secret_ref, action.batch, reply=reply)

    # -- opt-out ----------------------------------------------------------------------------

    def _optout(self, msg: Message, op: OptOp, *, scope: str | None, reply: str | None,
                rule_id: int | None, rendered: bool = False) -> None:
        evidence = {"short_code": msg.to_addr, "text": msg.text, "at": msg.at.isoformat(),
                    "inbound_id": msg.id, "keyword": msg.keyword[0], "op": op,
                    "channel": msg.channel, "connector": msg.connector}
        if op in ("stop", "stop_all"):
            target = "global" if scope == "global" else (
                msg.to_addr if scope == "short_code" else self.keywords.stop_scope(op, msg.to_addr))
            change = SuppressionChange(number=msg.from_addr, scope=target, source="sms",
                                       evidence=evidence)
            self.plan.suppression_ops[(msg.from_addr, target)] = ("add", change)
        elif op == "start":
            for target in dict.fromkeys((msg.to_addr, "global")):
                change = SuppressionChange(number=msg.from_addr, scope=target, source="sms",
                                           evidence=evidence)
                self.plan.suppression_ops[(msg.from_addr, target)] = ("remove", change)
        if reply:
            body = reply if rendered else templates.render(reply, {
                "from": msg.from_addr, "to": msg.to_addr, "keyword": msg.keyword[0].upper(),
                "rest": msg.keyword[2], "text": msg.text})
            # Confirmations are transactional: they must reach a number that just opted out.
            self._reply(msg, body, "transactional", 0, rule_id, "optout")


def plan_batch(decisions: Sequence[Decision], keywords: OptOutKeywords,
               counts: dict[QuotaKey, int], flooded: set[int],
               keys: dict[tuple[int, int], QuotaKey] | None = None,
               mo_accounts: Mapping[str, str] | None = None) -> Plan:
    """Phase 2, pure: the `Plan` of a batch (see `Planner`); `keys` from `quota_keys`;
    `mo_accounts` the system-id of each connector (a get-url's `%o`, as Kannel fills it)."""
    return Planner(keywords, dict(counts), flooded, keys or {}, mo_accounts).build(decisions)


# --- database side ----------------------------------------------------------------------------

async def load_rules(conn: asyncpg.Connection | asyncpg.Pool) -> RuleSet:
    """Read and compile every stored rule; an invalid stored rule is logged and skipped."""
    rows = await conn.fetch(LOAD_RULES)
    version = rows[0]["version"] if rows else 0
    parsed = []
    for r in rows:
        if r["id"] is None:
            continue
        try:
            parsed.append((r["id"], rule_from_row(r)))
        except (ValueError, RuleError) as exc:  # pydantic's ValidationError is a ValueError
            log.error("rule_invalid", rule_id=r["id"], rule=r["name"], error=str(exc)[:500])
    return RuleSet.build(parsed, version=version)


async def quota_counts(conn: asyncpg.Connection | asyncpg.Pool,
                       keys: Iterable[QuotaKey]) -> dict[QuotaKey, int]:
    """Entries already recorded for each (campaign, number, period), one query."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = await conn.fetch(QUOTA_COUNTS, [k[0] for k in wanted], [k[1] for k in wanted],
                            [k[2] for k in wanted])
    return {(r["campaign"], r["number"], r["period_key"]): r["n"] for r in rows}


def flood_window(at: datetime, window_s: float) -> datetime:
    """The start of the fixed flood window an arrival time falls in."""
    ts = at.timestamp()
    return datetime.fromtimestamp(math.floor(ts / window_s) * window_s, UTC)


async def flood_check(conn: asyncpg.Connection, messages: Sequence[Message], *,
                      limit: int, window_s: float) -> set[int]:
    """Count the batch into the per-number windows; return the ids over `limit` (one upsert).

    Fixed windows by arrival time: a burst across a boundary may get up to 2 x `limit`
    answers, which is what a loop-breaker needs and costs no per-message state.
    """
    if limit <= 0 or not messages:
        return set()
    keyed: dict[tuple[str, datetime], list[int]] = {}
    for m in messages:
        keyed.setdefault((m.from_addr, flood_window(m.at, window_s)), []).append(m.id)
    rows = await conn.fetch(FLOOD_COUNT, [k[0] for k in keyed], [k[1] for k in keyed],
                            [len(v) for v in keyed.values()])
    return over_limit(keyed, {(r["number"], r["window_start"]): r["count"] for r in rows},
                      limit)


def over_limit(keyed: Mapping[tuple[str, datetime], list[int]],
               totals: Mapping[tuple[str, datetime], int], limit: int) -> set[int]:
    """The message ids past `limit` in their (number, window): `keyed` holds the batch's ids
    per window, `totals` each window's count with the batch added (the batch's messages
    count in id order, after what the window held before)."""
    flooded: set[int] = set()
    for key, total in totals.items():
        ids = keyed[key]
        before = total - len(ids)
        flooded.update(i for k, i in enumerate(sorted(ids), start=1) if before + k > limit)
    return flooded


@dataclass(frozen=True, slots=True)
class Claimed:
    """What `claim_batch` returned: the rows, which are flooded, the rules version, and
    whether a queued row waits behind one of them (head-of-line)."""

    rows: list[InboundMessage]
    flooded: set[int]
    rules_version: int | None
    blocked: bool

    @classmethod
    def from_records(cls, records: Sequence[asyncpg.Record], *, flood_max: int) -> Claimed:
        """Decode `claim_batch`'s rows."""
        keyed: dict[tuple[str, datetime], list[int]] = {}
        totals: dict[tuple[str, datetime], int] = {}
        for r in records:
            if r["flood_total"] is not None:
                key = (r["from_addr"], r["flood_window"])
                keyed.setdefault(key, []).append(r["id"])
                totals[key] = r["flood_total"]
        first = records[0] if records else None
        rows = sorted((InboundMessage.from_record(r) for r in records), key=lambda m: m.id)
        return cls(rows=rows,
                   flooded=over_limit(keyed, totals, flood_max) if flood_max > 0 else set(),
                   rules_version=None if first is None else first["rules_version"],
                   blocked=bool(first is not None and first["blocked"]))


async def claim_batch(conn: asyncpg.Connection, *, limit: int, flood_max: int,
                      flood_window_s: float) -> Claimed:
    """Claim a batch with `CLAIM_BATCH`, inside a `store.claim_transaction`."""
    records = await conn.fetch(CLAIM_BATCH, limit, flood_max, float(flood_window_s))
    return Claimed.from_records(records, flood_max=flood_max)


class ForwardLease(Protocol):
    """Where forwarded MO go straight to delivery (the processor's `CallbackDelivery`)."""

    owner: str

    @property
    def lease_s(self) -> float:
        """How long a row inserted for it stays leased to `owner`."""
        ...

    def free(self) -> int:
        """How many more rows it can start delivering now."""
        ...

    async def take(self, rows: list[Callback]) -> None:
        """Start delivering rows leased to `owner` (after their transaction committed)."""
        ...

    def take_acks(self) -> list[int]:
        """Ids of callbacks it delivered that a batch starting now may acknowledge."""
        ...

    def acks_committed(self, committed: bool) -> None:
        """How the batch that took them ended (not committed: it acknowledges them itself)."""
        ...


async def write_plan(conn: asyncpg.Connection, plan: Plan, *, events: bool,
                     hasher: NumberHasher, lease: ForwardLease | None = None,
                     acks: Sequence[int] = ()) -> list[Callback]:
    """Write a plan inside the caller's transaction: one statement per kind of row.

    Each reply carries its recipient's keyed hash (`to_hash`, for the sender's suppression
    check); suppression changes are keyed by the same hasher. With `lease`, as many forwards
    as it has room for are inserted already leased to it (`callbacks.insert_leased`) and
    returned, for the caller to hand over once the transaction has committed; the rest are
    queued with a NOTIFY as before. `acks`: callbacks its delivery delivered, acknowledged in
    the same statement.
    """
    if plan.replies:
        await store.enqueue(conn, "outbound", [r.row() | {"to_hash": hasher(r.to_addr)}
                                               for r in plan.replies], notify=True)
    if plan.entries:
        e = plan.entries
        await conn.execute(INSERT_ENTRIES, [x.rule_id for x in e], [x.campaign for x in e],
                           [x.number for x in e], [x.period_key for x in e],
                           [x.inbound_id for x in e], [x.data for x in e])
    if plan.suppression_ops:
        await suppression.add_suppressions(conn, plan.adds, actor=DAEMON, hasher=hasher)
        await suppression.remove_suppressions(conn, plan.removes, actor=DAEMON, hasher=hasher)
    leased: list[dict[str, Any]] = []
    if plan.forwards:
        rows = [f.row() for f in plan.forwards]
        room = min(lease.free(), len(rows)) if lease is not None else 0
        leased = rows[:room]
        if rows[room:]:
            await store.enqueue(conn, "callbacks", rows[room:], notify=True)
    if plan.to_esmes:
        await esme_deliveries.insert_mo(conn, plan.to_esmes)
    # the leased forwards, the outcomes and their events: one statement
    outcomes = orjson.dumps([{"id": o.inbound_id, "status": o.status, "error": o.error,
                              "detail": o.detail()} for o in plan.outcomes]).decode()
    records = await conn.fetch(
        FINISH_BATCH, callbacks_queue.leased_document(leased),
        lease.owner if lease is not None else None,
        lease.lease_s if lease is not None else None, outcomes, events,
        list(acks) if lease is not None else [])
    return [Callback.from_record(r) for r in records]


class OutboundGate:
    """Pause claiming while outbound is above its high watermark (hysteresis to the low one).

    Reads the `queue_stats` snapshot (never a COUNT), at most every `refresh_s`.
    """

    def __init__(self, high: int, low: int, *, refresh_s: float = 0.5,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.high = high
        self.low = low
        self.refresh_s = refresh_s
        self.paused = False
        self._monotonic = monotonic
        self._checked = -math.inf

    def depth_of(self, stats: Iterable[QueueStat]) -> int:
        """Outbound rows waiting to be sent (queued) in a snapshot."""
        return sum(s.depth for s in stats if s.queue == "outbound" and s.status == "queued")

    async def is_open(self, conn: asyncpg.Connection | asyncpg.Pool) -> bool:
        """True when claiming may go on; re-reads the snapshot when `refresh_s` has passed."""
        now = self._monotonic()
        if now - self._checked >= self.refresh_s:
            self._checked = now
            depth = self.depth_of(await store.read_queue_stats(conn))
            if self.paused and depth <= self.low:
                self.paused = False
                log.info("processor_resumed", outbound_depth=depth)
            elif not self.paused and depth >= self.high:  # the snapshot stops counting at its cap
                self.paused = True
                log.warning("processor_paused", outbound_depth=depth, high=self.high)
        return not self.paused


_DB_ERRORS: Final = (asyncpg.PostgresError,)


# SQLSTATE classes that say nothing about the messages: connection (08), insufficient
# resources (53, e.g. disk full), operator intervention (57, e.g. shutdown), system error (58).
# They go to the loop boundary (back off, try again) instead of costing the messages attempts.
_SYSTEMIC_CLASSES: Final = ("08", "53", "57", "58")


def _is_systemic(exc: BaseException) -> bool:
    sqlstate = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, asyncpg.InterfaceError | OSError) or sqlstate[:2] in _SYSTEMIC_CLASSES


class Engine:
    """Claims and applies inbound batches; holds the current rule set and settings.

    `pool`, `settings` and `metrics` are injected; nothing is global, so tests run engines
    side by side in one process. No clock is needed: windows, quotas and flood control all
    use each message's arrival time (`created_at`), so a backlog is judged as it arrived.
    Not safe for concurrent `run_batch` calls on one instance (run several engines for that,
    as several processes would).
    """

    def __init__(self, pool: asyncpg.Pool, settings: ProcessorKeys, *, hasher: NumberHasher,
                 metrics: ProcessorMetrics | None = None,
                 mo_accounts: Mapping[str, str] | None = None) -> None:
        self.pool = pool
        self.mo_accounts = dict(mo_accounts or {})  # connector → system-id (get-url %o)
        self.hasher = hasher  # keyed number hashes: suppressions and replies' to_hash
        self.settings = settings
        self.metrics = metrics
        self.rules = RuleSet.build([], version=-1)
        self.keywords = OptOutKeywords.build(settings.optout)
        self.gate = OutboundGate(settings.outbound_high_watermark, settings.low_watermark,
                                 refresh_s=settings.queue_stats_s)
        # forwards inserted already leased to this process's delivery (None: queued for any)
        self.forward_lease: ForwardLease | None = None
        self._leased: list[Callback] = []
        self.more = False  # see run_batch

    def update_settings(self, settings: ProcessorKeys) -> None:
        """Apply reloaded settings (SIGHUP): batch size, opt-out lists, flood, watermarks."""
        self.settings = settings
        self.keywords = OptOutKeywords.build(settings.optout)
        self.gate.high = settings.outbound_high_watermark
        self.gate.low = settings.low_watermark
        self.invalidate_rules()

    def invalidate_rules(self) -> None:
        """Force a reload of the rules before the next batch (NOTIFY 'smsgw_rules', SIGHUP)."""
        self.rules = RuleSet(rules=self.rules.rules, version=-1)

    async def ensure_rules(self, conn: asyncpg.Connection, version: int | None = None) -> RuleSet:
        """Reload the rules when the stored version (read now, or `version` as the batch's
        claim read it) moved; inside the batch transaction."""
        if version is None:
            version = await conn.fetchval(RULES_VERSION)
        if version != self.rules.version:
            self.rules = await load_rules(conn)
            if self.metrics:
                self.metrics.rules_loaded.set(len(self.rules.rules))
                self.metrics.rules_reloads.labels(outcome="ok").inc()
            log.info("rules_loaded", version=self.rules.version, rules=len(self.rules.rules))
        return self.rules

    async def run_batch(self) -> int:
        """Claim and apply one batch; returns the rows claimed (0: nothing due) and sets
        `more`: whether a claim now may find rows (a full batch, or a queued row that waited
        behind one of this batch's, head-of-line). Rows that arrive later send a NOTIFY.

        One batch is four round trips: BEGIN with the claim plan pinned, `claim_batch` (rows,
        flood counts, rules version), `finish_batch` (leased forwards, outcomes, events), and
        COMMIT; replies, campaign entries, opt-outs and queued forwards add a statement each.

        Paused (returns 0) while outbound is above its high watermark. Connection errors
        propagate to the caller's loop boundary.
        """
        self.more = False
        if not await self.gate.is_open(self.pool):
            if self.metrics:
                self.metrics.paused.set(1)
            return 0
        if self.metrics:
            self.metrics.paused.set(0)
        started = time.perf_counter()
        lease = self.forward_lease
        acks = lease.take_acks() if lease is not None else []
        acked = False
        try:
            async with self.pool.acquire() as conn:
                self._leased = []
                try:
                    async with store.claim_transaction(conn):
                        outcomes = await self._batch(conn, acks)
                    acked = bool(outcomes)  # rows claimed: finish_batch acknowledged them
                except _DB_ERRORS as exc:
                    self._leased = []  # rolled back: never inserted
                    if _is_systemic(exc):
                        raise
                    log.warning("batch_failed", error=str(exc)[:300], sqlstate=exc.sqlstate)
                    if self.metrics:
                        self.metrics.batch_failures.inc()
                    async with conn.transaction():
                        outcomes = await self._one_by_one(conn)
                    self.more = bool(outcomes)
        finally:
            if lease is not None:
                lease.acks_committed(acked)
        leased, self._leased = self._leased, []
        if leased and self.forward_lease is not None:  # committed: deliver them now
            await self.forward_lease.take(leased)
        duration = time.perf_counter() - started
        self._count(outcomes, duration)
        if outcomes:  # one line per batch (debug): per-message lines would dwarf the work
            log.debug("inbound_processed", count=len(outcomes), duration_s=round(duration, 4))
        return len(outcomes)

    async def _claim(self, conn: asyncpg.Connection) -> list[InboundMessage]:
        rows: list[InboundMessage] = await store.claim_tx(
            conn, "inbound", limit=self.settings.batch, hol_column="from_addr")
        return rows

    async def _batch(self, conn: asyncpg.Connection, acks: Sequence[int]) -> list[Outcome]:
        s = self.settings
        claimed = await claim_batch(conn, limit=s.batch, flood_max=s.flood_max,
                                    flood_window_s=s.flood_window_s)
        self.more = claimed.blocked or len(claimed.rows) >= s.batch
        if not claimed.rows:
            return []
        return await self.apply(conn, claimed.rows, lease=self.forward_lease, claimed=claimed,
                                acks=acks)

    async def apply(self, conn: asyncpg.Connection, rows: Sequence[InboundMessage], *,
                    lease: ForwardLease | None = None, claimed: Claimed | None = None,
                    acks: Sequence[int] = ()) -> list[Outcome]:
        """Evaluate and write `rows` (already locked by this transaction); return outcomes.
        With `lease`, forwards it has room for are inserted leased to it (`write_plan`) and
        kept for `run_batch` to hand over after the commit, and `acks` (callbacks it
        delivered) are acknowledged. `claimed`: what `claim_batch` already read for these
        rows (flood counts, rules version); else read here."""
        s = self.settings
        messages = [to_message(r) for r in rows]
        if claimed is not None:
            rules = await self.ensure_rules(conn, claimed.rules_version)
            flooded = claimed.flooded
        else:
            rules = await self.ensure_rules(conn)
            flooded = await flood_check(conn, messages, limit=s.flood_max,
                                        window_s=s.flood_window_s)
        decisions = decide(messages, rules, self.keywords)
        keys = quota_keys(decisions)
        counts = await quota_counts(conn, keys.values())
        plan = plan_batch(decisions, self.keywords, counts, flooded, keys, self.mo_accounts)
        self._leased += await write_plan(conn, plan, events=s.events, hasher=self.hasher,
                                         lease=lease, acks=acks)
        if self.metrics:
            for category, n in Counter(r.category for r in plan.replies).items():
                self.metrics.replies.labels(category=category).inc(n)
        return plan.outcomes

    async def _one_by_one(self, conn: asyncpg.Connection) -> list[Outcome]:
        """Re-run a failed batch one message per savepoint; failing ones get a retry."""
        rows = await self._claim(conn)
        outcomes: list[Outcome] = []
        blocked: set[str] = set()  # numbers with a failed message: later ones must wait
        for row in rows:
            if row.from_addr in blocked:
                continue
            try:
                async with conn.transaction():  # a savepoint
                    outcomes += await self.apply(conn, [row])
            except _DB_ERRORS as exc:
                if _is_systemic(exc):
                    raise
                blocked.add(row.from_addr)
                outcomes.append(await self._retry(conn, row, exc))
        return outcomes

    async def _retry(self, conn: asyncpg.Connection, row: InboundMessage,
                     exc: asyncpg.PostgresError) -> Outcome:
        s = self.settings
        error = f"{type(exc).__name__}: {exc}"[:500]
        _, dead = await store.retry(conn, "inbound", [row.id], error=error,
                                    max_attempts=s.max_attempts, base_s=s.retry_base_s,
                                    cap_s=s.retry_max_s)
        outcome = "dead" if dead else "retried"
        log.warning("message_retry", inbound_id=row.id, outcome=outcome, attempts=row.attempts + 1,
                    error=error[:200])
        if s.events:
            await store.log_events(conn, [("inbound", row.id, outcome, {"error": error})],
                                   DAEMON)
        return Outcome(row.id, outcome, error=error)

    def _count(self, outcomes: Sequence[Outcome], duration_s: float) -> None:
        if not self.metrics or not outcomes:
            return
        self.metrics.batch_rows.observe(len(outcomes))
        self.metrics.batch_duration.observe(duration_s)
        for outcome, n in Counter(o.outcome for o in outcomes).items():
            self.metrics.messages.labels(outcome=outcome).inc(n)


async def flood_cleanup(conn: asyncpg.Connection, *, window_s: float) -> int:
    """Delete flood counters of windows long gone (periodic job)."""
    tag = await conn.execute(FLOOD_CLEANUP, float(window_s) * 2)
    return int(tag.rsplit(" ", 1)[-1])
