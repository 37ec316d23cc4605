"""`smsgw trace ID|NUMBER`: one message's whole history, or the messages of one number.

For an MT (outbound) it shows intake (the row: source, account, client_ref), the rule that made
it (a reply), each submitted part with its SMSC id, the receipts matched to those parts, the
status callbacks, and the event log (`events`). For an MO (inbound) it shows the row, the event
log, the replies it caused and the forwarded callbacks. Every lookup reads the hot table first,
then its history table, so a message moved by retention still traces (docs/ARCHITECTURE.md,
guarantee 10).

An argument starting with `+`, or of at least `NUMBER_MIN_DIGITS` digits, is a phone number;
a shorter one is a message id. Both directions are looked up: MT and MO ids, or the MTs to a
number and the MOs from it; `--mt` or `--mo` picks one.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import asyncpg

from smsgw.services.admin import dbcli

NUMBER_MIN_DIGITS = 8
NUMBER_LIMIT = 20

# One message row, hot table first then history ({t} is inbound or outbound).
SQL_ROW = """
SELECT *, false AS in_history FROM {t} WHERE id = $1
UNION ALL
SELECT *, true FROM {t}_history WHERE id = $1
LIMIT 1
"""
# Parts of an MT (outbound_part is not moved with outbound: kept while receipts can arrive).
SQL_PARTS = """
SELECT id, part_no, parts_total, connector, smsc_id, status, command_status, err, attempts,
       last_error, submitted_at, done_at
  FROM outbound_part WHERE outbound_id = $1 ORDER BY part_no, id
"""
# Receipts matched to any of the parts, hot and history.
SQL_RECEIPTS = """
SELECT id, connector, smsc_id, stat, state, final, err, done_date, status, outbound_part_id,
       created_at FROM receipts WHERE outbound_part_id = ANY($1::bigint[])
UNION ALL
SELECT id, connector, smsc_id, stat, state, final, err, done_date, status, outbound_part_id,
       created_at FROM receipts_history WHERE outbound_part_id = ANY($1::bigint[])
ORDER BY created_at, id
"""
# Callbacks for an MT ({col} = outbound_id) or an MO ({col} = inbound_id), hot and history.
SQL_CALLBACKS = """
SELECT id, kind, url, method, status, attempts, last_error, created_at, updated_at
  FROM callbacks WHERE {col} = $1
UNION ALL
SELECT id, kind, url, method, status, attempts, last_error, created_at, updated_at
  FROM callbacks_history WHERE {col} = $1
ORDER BY id
"""
# The event log of one message (not moved by retention).
SQL_EVENTS = """
SELECT at, event, daemon, detail FROM events
 WHERE message_table = $1 AND message_id = $2 ORDER BY id
"""
# Replies an MO caused, hot and history.
SQL_REPLIES = """
SELECT id, status, to_addr, rule_id, created_at FROM outbound WHERE inbound_id = $1
UNION ALL
SELECT id, status, to_addr, rule_id, created_at FROM outbound_history WHERE inbound_id = $1
ORDER BY id
"""
SQL_RULE = "SELECT id, name, priority, enabled FROM rules WHERE id = $1"
# The newest messages of one number in the directions $3 names ('mt', 'mo'), hot and history.
# The kind test is a constant per branch: the planner skips the branches not asked for.
SQL_BY_NUMBER = """
(SELECT 'mt' AS kind, id, status, from_addr, to_addr, created_at FROM outbound
  WHERE to_addr = $1 AND 'mt' = ANY($3::text[])
 UNION ALL
 SELECT 'mt', id, status, from_addr, to_addr, created_at FROM outbound_history
  WHERE to_addr = $1 AND 'mt' = ANY($3::text[])
 UNION ALL
 SELECT 'mo', id, status, from_addr, to_addr, created_at FROM inbound
  WHERE from_addr = $1 AND 'mo' = ANY($3::text[])
 UNION ALL
 SELECT 'mo', id, status, from_addr, to_addr, created_at FROM inbound_history
  WHERE from_addr = $1 AND 'mo' = ANY($3::text[]))
ORDER BY created_at DESC, id DESC LIMIT $2
"""
KINDS = ("mt", "mo")


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r.items()) for r in records]


async def trace_outbound(conn: asyncpg.Connection, msg_id: int) -> dict[str, Any] | None:
    """Everything known about MT `msg_id`, or None when there is no such message."""
    row = dbcli.record_dict(await conn.fetchrow(SQL_ROW.format(t="outbound"), msg_id))
    if row is None:
        return None
    for key in ("payload", "udh"):  # binary content and the client's UDH, shown as hex
        if isinstance(row.get(key), bytes):
            row[key] = row[key].hex()
    parts = _rows(await conn.fetch(SQL_PARTS, msg_id))
    part_ids = [p["id"] for p in parts]
    rule = None
    if row.get("rule_id") is not None:
        rule = dbcli.record_dict(await conn.fetchrow(SQL_RULE, row["rule_id"]))
    return {
        "kind": "mt", "id": msg_id, "message": row, "rule": rule, "parts": parts,
        "receipts": _rows(await conn.fetch(SQL_RECEIPTS, part_ids)),
        "callbacks": _rows(await conn.fetch(SQL_CALLBACKS.format(col="outbound_id"), msg_id)),
        "events": _rows(await conn.fetch(SQL_EVENTS, "outbound", msg_id)),
    }


async def trace_inbound(conn: asyncpg.Connection, msg_id: int) -> dict[str, Any] | None:
    """Everything known about MO `msg_id`, or None when there is no such message."""
    row = dbcli.record_dict(await conn.fetchrow(SQL_ROW.format(t="inbound"), msg_id))
    if row is None:
        return None
    return {
        "kind": "mo", "id": msg_id, "message": row,
        "replies": _rows(await conn.fetch(SQL_REPLIES, msg_id)),
        "callbacks": _rows(await conn.fetch(SQL_CALLBACKS.format(col="inbound_id"), msg_id)),
        "events": _rows(await conn.fetch(SQL_EVENTS, "inbound", msg_id)),
    }


def looks_like_number(arg: str) -> bool:
    """True for `+…` or at least NUMBER_MIN_DIGITS digits."""
    digits = arg.lstrip("+").replace(" ", "")
    return arg.startswith("+") or (digits.isdigit() and len(digits) >= NUMBER_MIN_DIGITS)


def number_candidates(arg: str) -> list[str]:
    """The forms a number may be stored in: E.164 (with +), and as typed."""
    raw = arg.replace(" ", "")
    plus = raw if raw.startswith("+") else "+" + raw
    return list(dict.fromkeys([plus, raw]))


async def trace_number(conn: asyncpg.Connection, arg: str, limit: int,
                       kinds: tuple[str, ...] = KINDS) -> dict[str, Any]:
    """The newest messages of a number (MTs to it, MOs from it; `kinds` picks), each traced
    in full."""
    found: list[dict[str, Any]] = []
    for cand in number_candidates(arg):
        found = _rows(await conn.fetch(SQL_BY_NUMBER, cand, limit, list(kinds)))
        if found:
            break
    traces = []
    for m in found:
        fn = trace_outbound if m["kind"] == "mt" else trace_inbound
        traces.append(await fn(conn, m["id"]))
    return {"number": arg, "messages": found, "traces": traces}


# --- human output -------------------------------------------------------------------------

def _kv(row: dict[str, Any], keys: list[str]) -> str:
    return "  ".join(f"{k}={_short(row.get(k))}" for k in keys if row.get(k) is not None)


def _short(v: Any) -> str:
    if hasattr(v, "astimezone"):
        return dbcli.fmt_time(v)
    text = str(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _hex(value: str) -> str:
    """Hex, cut after 64 octets (the length then follows)."""
    return value if len(value) <= 128 else f"{value[:128]}…({len(value) // 2} octets)"


def render_trace(t: dict[str, Any]) -> str:
    """One message's history as text."""
    m = t["message"]
    where = " (history)" if m.get("in_history") else ""
    lines = [f"{t['kind'].upper()} {t['id']}{where}: status={m['status']}"]
    if t["kind"] == "mt":
        lines.append("  intake   " + _kv(m, ["source", "account_id", "client_ref", "from_addr",
                                              "to_addr", "category", "created_at"]))
        if m.get("payload") is not None or m.get("udh") is not None or m.get("smpp"):
            # a binary message (hex), the client's UDH (hex), its SMPP fields
            lines.append("  content  " + "  ".join(
                f"{k}={m[k] if k == 'smpp' else _hex(m[k])}"
                for k in ("udh", "payload", "smpp") if m.get(k) is not None))
        if t.get("rule"):
            lines.append("  rule     " + _kv(t["rule"], ["id", "name"]) +
                         f"  (reply to MO {m.get('inbound_id')})")
        lines.append("  result   " + _kv(m, ["connector", "parts_total", "attempts",
                                              "submitted_at", "done_at", "error_code",
                                              "last_error"]))
        for p in t["parts"]:
            lines.append(f"  part {p['part_no']}/{p['parts_total']}  " +
                         _kv(p, ["connector", "smsc_id", "status", "command_status", "err",
                                 "submitted_at", "done_at"]))
        for r in t["receipts"]:
            lines.append("  receipt  " + _kv(r, ["connector", "smsc_id", "stat", "state",
                                                 "final", "err", "status", "created_at"]))
    else:
        lines.append("  intake   " + _kv(m, ["channel", "provider", "from_addr", "to_addr",
                                              "provider_message_id", "attempts", "last_error",
                                              "created_at"]))
        for r in t["replies"]:
            lines.append("  reply    " + _kv(r, ["id", "status", "rule_id", "created_at"]))
    for c in t["callbacks"]:
        lines.append("  callback " + _kv(c, ["id", "kind", "method", "url", "status",
                                             "attempts", "last_error"]))
    for e in t["events"]:
        detail = "" if e.get("detail") is None else f"  {_short(e['detail'])}"
        lines.append(f"  {dbcli.fmt_time(e['at'])}  {e['event']}"
                     f"{' [' + e['daemon'] + ']' if e.get('daemon') else ''}{detail}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw trace", epilog=dbcli.TARGET_EPILOG,
        description="Show a message's whole history (intake, rule, parts, receipts, callbacks, "
                    "events), hot and history tables. ID is a message id (MT and MO are both "
                    "looked up); NUMBER (+E.164 or 8+ digits) lists that number's newest "
                    "messages (MTs to it, MOs from it), each traced. --mt or --mo picks one "
                    "direction for either.")
    p.add_argument("target", metavar="ID|NUMBER")
    dbcli.add_common_args(p)
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--mt", action="store_true",
                      help="MT (outbound) only: ID is an MT id; NUMBER's messages to it")
    kind.add_argument("--mo", action="store_true",
                      help="MO (inbound) only: ID is an MO id; NUMBER's messages from it")
    p.add_argument("--limit", type=int, default=NUMBER_LIMIT,
                   help="messages shown for a NUMBER (%(default)s)")
    return p


async def _trace_id(conn: asyncpg.Connection, args: argparse.Namespace) -> list[dict[str, Any]]:
    if not args.target.isdigit():
        raise dbcli.UsageError(f"{args.target!r} is neither a message id nor a number")
    msg_id = int(args.target)
    found = []
    if not args.mo:
        found.append(await trace_outbound(conn, msg_id))
    if not args.mt:
        found.append(await trace_inbound(conn, msg_id))
    return [t for t in found if t is not None]


def main(argv: list[str]) -> int:
    """Entry point of `smsgw trace`."""
    args = _parser().parse_args(argv)

    async def body(conn: asyncpg.Connection) -> int:
        if looks_like_number(args.target):
            kinds = ("mt",) if args.mt else ("mo",) if args.mo else KINDS
            result = await trace_number(conn, args.target, args.limit, kinds)
            traces = result["traces"]
            payload: Any = result
        else:
            traces = await _trace_id(conn, args)
            payload = traces
        if args.json:
            dbcli.dump_json(payload)
        elif not traces:
            sys.stdout.write(f"no message found for {args.target}\n")
        else:
            sys.stdout.write("\n\n".join(render_trace(t) for t in traces) + "\n")
        return dbcli.EXIT_OK if traces else dbcli.EXIT_FAILURE

    return dbcli.run(body, args)
