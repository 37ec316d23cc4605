"""`smsgw erase NUMBER`: remove every trace of a number, keep a keyed suppression entry.

In one transaction:
- every MO from the number and every MT to it (or caused by one of its MOs), hot and history,
  with the rows hanging off them: parts, receipts, callbacks (their rendered URLs and bodies),
  events (of the messages, their callbacks and receipts) and dedupe keys;
- the rows that name the number itself: MO reassembly fragments, campaign entries, flood
  counters, a ported-number entry;
- the rows kept, with the number removed: suppressions keep only the keyed `number_hash`
  (`number` blanked, every evidence value naming the number replaced by "[erased]") and a
  global one is added when none exists, so an erased person is not messaged again; audit rows
  whose detail names the number are scrubbed the same way.

`COVERAGE` classifies every column of the schema that can hold text; the erasure-coverage test
checks it against the live schema (a new column must be classified here) and, after real
traffic, that no column still holds the number in any form. The audit log records the erasure
under the keyed hash, never the number. `--dry-run` counts what would go; without `--yes` the
command asks before deleting. Needs `[security] server_secret` (the suppression key).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping
from typing import Any, Final

import asyncpg
import phonenumbers

from smsgw.services.admin import dbcli
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.domain.numbers import InvalidNumber, normalise
from smsgw.shared.domain.suppression import NumberHasher, legacy_hash, rekey_legacy
from smsgw.shared.queue import report_requests

ERASED: Final = "[erased]"

# How each kind of column is covered (the values of COVERAGE).
MESSAGE: Final = "deleted with the number's messages (by id)"
BY_NUMBER: Final = "deleted where the row names the number"
SCRUBBED: Final = "kept; the number blanked or scrubbed from it"
KEYED_HASH: Final = "kept: the keyed hash only (shared/domain/suppression.py), not reversible"
CONFIG: Final = "operator configuration, not traffic: never written from a message"
INTERNAL: Final = "internal bookkeeping: statuses, names, ids, hashes of secrets"

_MSG = MESSAGE
_CFG = CONFIG
_INT = INTERNAL
_OUT = {c: _MSG for c in ("body", "callback_url", "category", "client_ref", "connector",
                          "encoding", "from_addr", "last_error", "lease_owner", "meta",
                          "route_hint", "source", "status", "to_addr", "to_hash",
                          "payload", "udh", "smpp")}
_IN = {c: _MSG for c in ("body", "channel", "connector", "from_addr", "last_error",
                         "lease_owner", "meta", "provider", "provider_message_id", "raw",
                         "status", "to_addr")}
_RCPT = {c: _MSG for c in ("body", "connector", "err", "last_error", "lease_owner",
                           "network_error", "raw_id", "smsc_id", "stat", "state", "status")}
_CB = {c: _MSG for c in ("body", "headers", "kind", "last_error", "lease_owner", "method",
                         "reply", "secret_ref", "status", "url")}
# Every text / varchar / json / jsonb / bytea / array column, by table.
COVERAGE: Final[Mapping[str, Mapping[str, str]]] = {
    "outbound": _OUT, "outbound_history": _OUT,
    # a queued or sending message's lane and lease (migration 0021), deleted with it
    "outbound_queue": {"category": _MSG, "lease_owner": _MSG},
    "inbound": _IN, "inbound_history": _IN,
    "outbound_part": {c: _MSG for c in ("connector", "err", "last_error", "lease_owner",
                                        "smsc_id", "status")},
    "receipts": _RCPT, "receipts_history": _RCPT,
    "callbacks": _CB, "callbacks_history": _CB,
    "events": {c: _MSG for c in ("daemon", "detail", "event", "message_table")},
    "dedupe_keys": {c: _MSG for c in ("fingerprint", "key", "scope", "target_table")},
    "mo_parts": {c: BY_NUMBER for c in ("body", "connector", "from_addr", "last_error",
                                        "lease_owner", "meta", "raw", "status", "to_addr")},
    "campaign_entries": {c: BY_NUMBER for c in ("campaign", "data", "number", "period_key")},
    "flood_counters": {"number": BY_NUMBER},
    "ported_numbers": {"number": BY_NUMBER, "connectors": BY_NUMBER, "operator": BY_NUMBER},
    "suppressions": {"number": SCRUBBED, "evidence": SCRUBBED, "number_hash": KEYED_HASH,
                     "scope": _CFG, "source": _INT},
    "audit_log": {"detail": SCRUBBED, "object_id": SCRUBBED, "action": _INT, "actor": _INT,
                  "object_type": _INT},
    "accounts": {**{c: _CFG for c in ("name", "default_category", "callback_secret",
                                      "allowed_senders", "allowed_connectors",
                                      "smpp_allowed_networks", "smpp_bind_modes")},
                 "smpp_password_hash": _INT},
    "esme_deliveries": {c: _MSG for c in ("kind", "message_ref", "from_addr", "to_addr", "stat",
                                          "body", "raw", "status", "lease_owner",
                                          "last_error")},
    "api_keys": {"key_hash": _INT, "prefix": _INT},
    "rules": {"name": _CFG, "match": _CFG, "actions": _CFG},
    "schema_migrations": {"name": _INT},
    "periodic_runs": {"job": _INT, "last_owner": _INT},
    "queue_stats": {"queue": _INT, "status": _INT},
    "connector_state": {"name": _CFG, "state": _CFG, "changed_by": _INT, "reason": _CFG},
    # reports (migration 0016): a report whose files hold the number is deleted whole
    # (shared/queue/report_requests.py erase_naming), running ones are restarted
    "report_requests": {"kind": _INT, "params": _CFG, "requested_by": _INT, "status": _INT,
                        "lease_owner": _INT, "last_error": _INT, "files": _INT},
    "report_chunks": {"name": _INT, "data": BY_NUMBER},
}

# The ids of everything to erase, collected once into temp tables so each DELETE is one
# statement over a known id set (and the dry run counts exactly what would go). An MT caused
# by one of the number's MOs (a rule's reply or notification, which may quote it) goes too.
SQL_COLLECT = [
    "CREATE TEMP TABLE erase_mo ON COMMIT DROP AS"
    " SELECT id FROM inbound WHERE from_addr = $1"
    " UNION SELECT id FROM inbound_history WHERE from_addr = $1",
    "CREATE TEMP TABLE erase_mt ON COMMIT DROP AS"
    " SELECT id FROM outbound WHERE to_addr = $1"
    " OR inbound_id IN (SELECT id FROM erase_mo)"
    " UNION SELECT id FROM outbound_history WHERE to_addr = $1"
    " OR inbound_id IN (SELECT id FROM erase_mo)",
]
SQL_COLLECT_LINKED = [
    "CREATE TEMP TABLE erase_parts ON COMMIT DROP AS"
    " SELECT id FROM outbound_part WHERE outbound_id IN (SELECT id FROM erase_mt)",
    "CREATE TEMP TABLE erase_rc ON COMMIT DROP AS"
    " SELECT id FROM receipts WHERE outbound_part_id IN (SELECT id FROM erase_parts)"
    " UNION SELECT id FROM receipts_history"
    " WHERE outbound_part_id IN (SELECT id FROM erase_parts)",
    "CREATE TEMP TABLE erase_cb ON COMMIT DROP AS"
    " SELECT id FROM callbacks WHERE outbound_id IN (SELECT id FROM erase_mt)"
    " OR inbound_id IN (SELECT id FROM erase_mo)"
    " UNION SELECT id FROM callbacks_history WHERE outbound_id IN (SELECT id FROM erase_mt)"
    " OR inbound_id IN (SELECT id FROM erase_mo)",
]
# (label, statement): each deletes one table's rows belonging to the number.
SQL_DELETES: list[tuple[str, str]] = [
    ("receipts", "DELETE FROM receipts WHERE id IN (SELECT id FROM erase_rc)"),
    ("receipts_history", "DELETE FROM receipts_history WHERE id IN (SELECT id FROM erase_rc)"),
    ("outbound_part", "DELETE FROM outbound_part WHERE id IN (SELECT id FROM erase_parts)"),
    ("callbacks", "DELETE FROM callbacks WHERE id IN (SELECT id FROM erase_cb)"),
    ("callbacks_history",
     "DELETE FROM callbacks_history WHERE id IN (SELECT id FROM erase_cb)"),
    ("esme_deliveries", "DELETE FROM esme_deliveries WHERE outbound_id IN (SELECT id FROM"
                        " erase_mt) OR inbound_id IN (SELECT id FROM erase_mo)"),
    ("events", "DELETE FROM events WHERE (message_table = 'outbound'"
               " AND message_id IN (SELECT id FROM erase_mt)) OR (message_table = 'inbound'"
               " AND message_id IN (SELECT id FROM erase_mo)) OR (message_table = 'callbacks'"
               " AND message_id IN (SELECT id FROM erase_cb)) OR (message_table = 'receipts'"
               " AND message_id IN (SELECT id FROM erase_rc))"),
    ("dedupe_keys", "DELETE FROM dedupe_keys WHERE (target_table = 'outbound'"
                    " AND target_id IN (SELECT id FROM erase_mt)) OR (target_table = 'inbound'"
                    " AND target_id IN (SELECT id FROM erase_mo))"),
    ("outbound_queue", "DELETE FROM outbound_queue WHERE id IN (SELECT id FROM erase_mt)"),
    ("outbound", "DELETE FROM outbound WHERE id IN (SELECT id FROM erase_mt)"),
    ("outbound_history", "DELETE FROM outbound_history WHERE id IN (SELECT id FROM erase_mt)"),
    ("inbound", "DELETE FROM inbound WHERE id IN (SELECT id FROM erase_mo)"),
    ("inbound_history", "DELETE FROM inbound_history WHERE id IN (SELECT id FROM erase_mo)"),
    ("mo_parts", "DELETE FROM mo_parts WHERE from_addr = $1"
                 " OR inbound_id IN (SELECT id FROM erase_mo)"),
    ("campaign_entries", "DELETE FROM campaign_entries WHERE number = $1"
                         " OR inbound_id IN (SELECT id FROM erase_mo)"),
    ("flood_counters", "DELETE FROM flood_counters WHERE number = $1"),
    ("ported_numbers", "DELETE FROM ported_numbers WHERE number = $1"),
]
# The number's suppression entries (keyed, or legacy until re-keyed): blank the number; the
# evidence is scrubbed in Python (any value naming the number).
SQL_SUPPRESSIONS = ("SELECT id, evidence FROM suppressions WHERE number_hash = $1"
                    " OR (NOT keyed AND number_hash = $2) FOR UPDATE")
SQL_BLANK_SUPPRESSIONS = """
UPDATE suppressions AS s SET number = NULL, evidence = u.evidence
  FROM unnest($1::bigint[], $2::jsonb[]) AS u(id, evidence)
 WHERE s.id = u.id
"""
# Add a global suppression by keyed hash alone, unless one exists.
SQL_ADD_SUPPRESSION = """
INSERT INTO suppressions (number_hash, keyed, number, scope, source, evidence)
VALUES ($1, true, NULL, 'global', 'erase', $2)
ON CONFLICT (number_hash, scope) DO NOTHING
"""
# Audit rows naming the number anywhere (the national significant number $1 is in every form:
# E.164 with or without '+', national with a trunk prefix, URL-encoded).
SQL_AUDIT_NAMING = ("SELECT id, object_id, detail FROM audit_log"
                    " WHERE strpos(detail::text, $1) > 0 OR strpos(object_id, $1) > 0"
                    " FOR UPDATE")
SQL_SCRUB_AUDIT = """
UPDATE audit_log AS a SET object_id = u.object_id, detail = u.detail
  FROM unnest($1::bigint[], $2::text[], $3::jsonb[]) AS u(id, object_id, detail)
 WHERE a.id = u.id
"""
SQL_AUDIT = """
INSERT INTO audit_log (actor, action, object_type, object_id, detail)
VALUES ($1, 'erase', 'number', $2, $3)
"""


def national_digits(number: str) -> str:
    """The national significant number of an E.164 number: a substring of every form."""
    try:
        return phonenumbers.national_significant_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return number.lstrip("+")


def scrub(value: Any, needle: str) -> Any:
    """`value` (JSON) with every string containing `needle` replaced by "[erased]" and every
    key named `number` dropped."""
    if isinstance(value, str):
        return ERASED if needle in value else value
    if isinstance(value, list):
        return [scrub(v, needle) for v in value]
    if isinstance(value, dict):
        return {scrub(k, needle): scrub(v, needle) for k, v in value.items() if k != "number"}
    return value


def _uses_number(stmt: str) -> bool:
    return "$1" in stmt


async def erase(conn: asyncpg.Connection, number: str, *, hasher: NumberHasher, actor: str,
                dry_run: bool) -> dict[str, int]:
    """Erase `number` (E.164) in one transaction; return rows removed per table.

    With `dry_run` the same statements run and the transaction is rolled back, so the counts
    are exact.
    """
    if not dry_run:
        await rekey_legacy(conn, hasher)  # no unkeyed hash outlives an erase
    keyed = hasher(number)
    needle = national_digits(number)
    counts: dict[str, int] = {}
    tx = conn.transaction()
    await tx.start()
    try:
        for stmt in SQL_COLLECT:
            await conn.execute(stmt, number)
        for stmt in SQL_COLLECT_LINKED:
            await conn.execute(stmt)
        for label, stmt in SQL_DELETES:
            status = await (conn.execute(stmt, number) if _uses_number(stmt)
                            else conn.execute(stmt))
            counts[label] = int(status.split()[-1])
        counts["reports"] = await report_requests.erase_naming(conn, needle)
        sups = await conn.fetch(SQL_SUPPRESSIONS, keyed, legacy_hash(number))
        await conn.execute(SQL_BLANK_SUPPRESSIONS, [r["id"] for r in sups],
                           [scrub(r["evidence"], needle) for r in sups])
        counts["suppressions_blanked"] = len(sups)
        counts["suppression_added"] = int((await conn.execute(
            SQL_ADD_SUPPRESSION, keyed, {"reason": "erase"})).split()[-1])
        audit = await conn.fetch(SQL_AUDIT_NAMING, needle)
        await conn.execute(SQL_SCRUB_AUDIT, [r["id"] for r in audit],
                           [scrub(r["object_id"], needle) for r in audit],
                           [scrub(r["detail"], needle) for r in audit])
        counts["audit_scrubbed"] = len(audit)
        await conn.execute(SQL_AUDIT, actor, keyed.hex(),
                           {"counts": counts, "dry_run": dry_run})
    except BaseException:
        await tx.rollback()
        raise
    if dry_run:
        await tx.rollback()
    else:
        await tx.commit()
    return counts


def load_hasher(args: argparse.Namespace,
                env: Mapping[str, str] = os.environ) -> NumberHasher:
    """The suppression hasher from the server secret, found as the database is (the config,
    else `smsgw up`'s data folder); a ConfigError naming the fix when there is none."""
    return NumberHasher.from_secret(dbcli.server_secret(args, env))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw erase", epilog=dbcli.TARGET_EPILOG + " Needs the server secret: it keys "
        "the suppression entry erase keeps.",
        description="Erase a number: its messages (MO from it, MT to it; hot and history "
                    "tables, with parts, receipts, callbacks, events), fragments, campaign "
                    "entries, flood counters, the reports whose files hold it; keep only a "
                    "keyed global suppression so it is not messaged again, and write the "
                    "audit log.")
    p.add_argument("number", help="the phone number (E.164, or national with --country)")
    dbcli.add_common_args(p)
    p.add_argument("--country", help="ISO country for a national number (e.g. GB)")
    p.add_argument("--dry-run", action="store_true", help="count what would be erased, change "
                                                          "nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--actor", default=None, help="who asked, for the audit log (default: the "
                                                 "OS user)")
    return p


def _confirm(number: str) -> bool:
    if not sys.stdin.isatty():
        sys.stderr.write("refusing to erase without --yes (stdin is not a terminal)\n")
        return False
    answer = input(f"Erase every message of {number}? This cannot be undone. [y/N] ")
    return answer.strip().lower() in ("y", "yes")


def main(argv: list[str]) -> int:
    """Entry point of `smsgw erase`."""
    args = _parser().parse_args(argv)
    try:
        number = normalise(args.number, default_country=args.country)
    except InvalidNumber as exc:
        sys.stderr.write(f"error: {args.number!r}: {exc}\n")
        return dbcli.EXIT_USAGE
    try:
        hasher = load_hasher(args)  # it keys the suppression entry erase keeps
    except ConfigError as exc:
        return dbcli.report_config_error(exc)
    if not (args.dry_run or args.yes or _confirm(number)):
        return dbcli.EXIT_FAILURE
    actor = args.actor or getpass.getuser()

    async def body(conn: asyncpg.Connection) -> int:
        counts = await erase(conn, number, hasher=hasher, actor=actor, dry_run=args.dry_run)
        result: dict[str, Any] = {"number_hash": hasher(number).hex(),
                                  "dry_run": args.dry_run, "removed": counts}
        if args.json:
            dbcli.dump_json(result)
        else:
            verb = "would remove" if args.dry_run else "removed"
            rows = [[k, str(v)] for k, v in counts.items() if v]
            sys.stdout.write(f"{verb} (number hash {result['number_hash'][:16]}…):\n"
                             + (dbcli.table(rows, ["table", "rows"]) if rows else "  nothing")
                             + "\n")
        return dbcli.EXIT_OK

    return dbcli.run(body, args)
