"""`smsgw erase NUMBER`: remove a number's messages, keep a hashed suppression entry.

In one transaction: every MO from the number and every MT to it, hot and history, with the rows
hanging off them (parts, receipts, callbacks, events, dedupe keys), its MO fragments and
campaign entries; suppressions keep only `number_hash` (the number itself is blanked) and a
global one is added when none exists, so an erased person is not messaged again (DESIGN.md
"Security"). The audit log records the erasure under the hash, never the number. `--dry-run`
counts what would go; without `--yes` the command asks before deleting.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import sys
from typing import Any

import asyncpg

from services.admin import dbcli
from shared.numbers import InvalidNumber, normalise

# The ids of everything to erase, collected once into temp tables so each DELETE is one
# statement over a known id set (and the dry run counts exactly what would go).
SQL_COLLECT = [
    "CREATE TEMP TABLE erase_mt ON COMMIT DROP AS"
    " SELECT id FROM outbound WHERE to_addr = $1"
    " UNION SELECT id FROM outbound_history WHERE to_addr = $1",
    "CREATE TEMP TABLE erase_mo ON COMMIT DROP AS"
    " SELECT id FROM inbound WHERE from_addr = $1"
    " UNION SELECT id FROM inbound_history WHERE from_addr = $1",
]
SQL_PARTS = ("CREATE TEMP TABLE erase_parts ON COMMIT DROP AS"
             " SELECT id FROM outbound_part WHERE outbound_id IN (SELECT id FROM erase_mt)")
# (label, statement): each deletes one table's rows belonging to the number.
SQL_DELETES: list[tuple[str, str]] = [
    ("receipts", "DELETE FROM receipts WHERE outbound_part_id IN (SELECT id FROM erase_parts)"),
    ("receipts_history",
     "DELETE FROM receipts_history WHERE outbound_part_id IN (SELECT id FROM erase_parts)"),
    ("outbound_part", "DELETE FROM outbound_part WHERE id IN (SELECT id FROM erase_parts)"),
    ("callbacks", "DELETE FROM callbacks WHERE outbound_id IN (SELECT id FROM erase_mt)"
                  " OR inbound_id IN (SELECT id FROM erase_mo)"),
    ("callbacks_history",
     "DELETE FROM callbacks_history WHERE outbound_id IN (SELECT id FROM erase_mt)"
     " OR inbound_id IN (SELECT id FROM erase_mo)"),
    ("events", "DELETE FROM events WHERE (message_table = 'outbound'"
               " AND message_id IN (SELECT id FROM erase_mt)) OR (message_table = 'inbound'"
               " AND message_id IN (SELECT id FROM erase_mo))"),
    ("dedupe_keys", "DELETE FROM dedupe_keys WHERE (target_table = 'outbound'"
                    " AND target_id IN (SELECT id FROM erase_mt)) OR (target_table = 'inbound'"
                    " AND target_id IN (SELECT id FROM erase_mo))"),
    ("outbound", "DELETE FROM outbound WHERE id IN (SELECT id FROM erase_mt)"),
    ("outbound_history", "DELETE FROM outbound_history WHERE id IN (SELECT id FROM erase_mt)"),
    ("inbound", "DELETE FROM inbound WHERE id IN (SELECT id FROM erase_mo)"),
    ("inbound_history", "DELETE FROM inbound_history WHERE id IN (SELECT id FROM erase_mo)"),
    ("mo_parts", "DELETE FROM mo_parts WHERE from_addr = $1"),
    ("campaign_entries", "DELETE FROM campaign_entries WHERE number = $1"),
]
# Keep the hash, drop the number, from every existing suppression of it.
SQL_BLANK_SUPPRESSIONS = ("UPDATE suppressions SET number = NULL"
                          " WHERE number_hash = sha256(convert_to($1, 'UTF8'))")
# Add a global suppression by hash alone, unless one exists.
SQL_ADD_SUPPRESSION = """
INSERT INTO suppressions (number_hash, number, scope, source, evidence)
VALUES (sha256(convert_to($1, 'UTF8')), NULL, 'global', 'erase', $2)
ON CONFLICT (number_hash, scope) DO NOTHING
"""
SQL_AUDIT = """
INSERT INTO audit_log (actor, action, object_type, object_id, detail)
VALUES ($1, 'erase', 'number', $2, $3)
"""


def number_hash_hex(number: str) -> str:
    """sha256 of the E.164 number as UTF-8, hex (the suppressions.number_hash contract)."""
    return hashlib.sha256(number.encode("utf-8")).hexdigest()


def _uses_number(stmt: str) -> bool:
    return "$1" in stmt


async def erase(conn: asyncpg.Connection, number: str, *, actor: str,
                dry_run: bool) -> dict[str, int]:
    """Erase `number` (E.164) in one transaction; return rows removed per table.

    With `dry_run` the same statements run and the transaction is rolled back, so the counts
    are exact.
    """
    counts: dict[str, int] = {}
    tx = conn.transaction()
    await tx.start()
    try:
        for stmt in SQL_COLLECT:
            await conn.execute(stmt, number)
        await conn.execute(SQL_PARTS)
        for label, stmt in SQL_DELETES:
            status = await (conn.execute(stmt, number) if _uses_number(stmt)
                            else conn.execute(stmt))
            counts[label] = int(status.split()[-1])
        counts["suppressions_blanked"] = int(
            (await conn.execute(SQL_BLANK_SUPPRESSIONS, number)).split()[-1])
        counts["suppression_added"] = int((await conn.execute(
            SQL_ADD_SUPPRESSION, number, {"reason": "erase"})).split()[-1])
        await conn.execute(SQL_AUDIT, actor, number_hash_hex(number),
                           {"counts": counts, "dry_run": dry_run})
    except BaseException:
        await tx.rollback()
        raise
    if dry_run:
        await tx.rollback()
    else:
        await tx.commit()
    return counts


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw erase",
        description="Erase a number's messages (MO from it, MT to it; hot and history tables, "
                    "with parts, receipts, callbacks, events), keep a hashed global "
                    "suppression so it is not messaged again, and write the audit log.")
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
    if not (args.dry_run or args.yes or _confirm(number)):
        return dbcli.EXIT_FAILURE
    actor = args.actor or getpass.getuser()

    async def body(conn: asyncpg.Connection) -> int:
        counts = await erase(conn, number, actor=actor, dry_run=args.dry_run)
        result: dict[str, Any] = {"number_hash": number_hash_hex(number),
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
