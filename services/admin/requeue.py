"""`smsgw requeue TABLE`: put dead rows back in the queue (docs/ARCHITECTURE.md, guarantee 5).

Goes through the queue core's `requeue_dead` (attempts reset, last error kept, one NOTIFY so a
consumer picks the rows up at once). Filters combine: `--ids`, `--older-than` (dead for longer
than a duration such as 30m, 2h, 1d), `--error-like` (SQL LIKE on last_error). `--dry-run`
counts the rows that would be requeued and changes nothing. Without any filter the command
refuses unless `--all` is given, so a typo never requeues a whole table by accident.
"""

from __future__ import annotations

import argparse
import re
import sys

import asyncpg

from smsgw.services.admin import dbcli
from smsgw.shared.queue import store
from smsgw.shared.queue.listener import CHANNELS

_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90' / '90s' / '30m' / '2h' / '1d' -> seconds."""
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 30m, 2h, 1d)")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def parse_ids(text: str) -> list[int]:
    """'1,2,3' or '1 2 3' -> [1, 2, 3]."""
    try:
        return [int(x) for x in re.split(r"[,\s]+", text.strip()) if x]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"ids must be integers: {text!r}") from exc


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw requeue", epilog=dbcli.TARGET_EPILOG,
        description="Requeue dead rows of a queue table (attempts reset, last error kept).")
    p.add_argument("table", choices=[t for t in store.QUEUE_TABLES if t != "mo_parts"],
                   help="queue table")
    dbcli.add_common_args(p)
    p.add_argument("--ids", type=parse_ids, action="extend", default=None,
                   help="only these ids (comma-separated; repeatable)")
    p.add_argument("--older-than", type=parse_duration, metavar="DURATION",
                   help="only rows dead for longer than this (90s, 30m, 2h, 1d)")
    p.add_argument("--error-like", metavar="PATTERN",
                   help="only rows whose last_error matches this SQL LIKE pattern (%% = any)")
    p.add_argument("--all", action="store_true", help="requeue every dead row (no filter)")
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `smsgw requeue`."""
    args = _parser().parse_args(argv)
    if not (args.ids or args.older_than is not None or args.error_like or args.all):
        sys.stderr.write("error: give a filter (--ids, --older-than, --error-like) or --all\n")
        return dbcli.EXIT_USAGE

    async def body(conn: asyncpg.Connection) -> int:
        async with conn.transaction():
            n = await store.requeue_dead(conn, args.table, ids=args.ids,
                                         older_than_s=args.older_than,
                                         error_like=args.error_like, dry_run=args.dry_run)
            if n and not args.dry_run and args.table in CHANNELS:
                # Wake the consumers now (delivered at commit) rather than at their poll timer.
                await store.notify(conn, CHANNELS[args.table])
        if args.json:
            dbcli.dump_json({"table": args.table, "dry_run": args.dry_run,
                             "would_requeue" if args.dry_run else "requeued": n})
        else:
            verb = "would requeue" if args.dry_run else "requeued"
            sys.stdout.write(f"{verb} {n} dead row(s) of {args.table}\n")
        return dbcli.EXIT_OK

    return dbcli.run(body, args)
