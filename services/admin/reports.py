"""`smsgw reports create|list|show|cancel|download`: ask the reporter daemon for reports.

    smsgw reports create campaign --campaign summer --from 2026-06-01 --to 2026-07-01 \\
        --tz Europe/London --wait --json
    smsgw reports create traffic --account shop --from 2026-06-01T00:00 --tz Europe/Berlin
    smsgw reports list [--status done] [--limit 20]
    smsgw reports show 42
    smsgw reports cancel 42
    smsgw reports download 42 csv --out summer.csv

Kinds: `campaign` (needs --campaign), `traffic` (optionally --account), `inbound`, `optouts`.
Times are ISO 8601 (`2026-06-01`, `2026-06-01T08:00`, `2026-06-01T08:00+02:00`); without an
offset they are read in --tz (default UTC), in which days and hours are counted; the range is
[--from, --to), by default the 7 days before now. A request is queued in `report_requests`;
a running `smsgw reporter` makes it and writes the files into its `[reporter] dir` and into
Postgres. `--wait` waits until it is done (a progress bar on a terminal) and exits 1 when it
failed or was cancelled; with `--json` it prints {"id", "status", "files": {"csv": PATH,
"html": PATH, ...}} (`csv` is the main table, `html` the page; a campaign adds `entries_csv`,
the draw list). `download` streams a stored file from Postgres (any host). Creating and
cancelling are written to the audit log (actor: `--actor`, default cli:<OS user>).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import asyncpg

from smsgw.services.admin import dbcli
from smsgw.shared.domain.apikeys import audit
from smsgw.shared.domain.reports import (
    FILE_NAMES,
    KINDS,
    ReportInputError,
    check_names,
    configured_range_days,
    parse_request,
)
from smsgw.shared.queue import report_requests as rq
from smsgw.shared.queue.records import ReportRequest, ReportStatus
from smsgw.shared.runtime.admin_config import TARGET_EPILOG
from smsgw.shared.runtime.config import peer_setting

DEFAULT_KEEP_S: Final = 7 * 86400.0  # until the reporter sets the expiry of a finished one
WAIT_POLL_S: Final = 0.5
FINISHED: Final = (ReportStatus.DONE, ReportStatus.FAILED, ReportStatus.CANCELLED)


def _report_id(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a report id: {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw reports", description=__doc__,
                                     epilog=TARGET_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    dbcli.add_common_args(parser)
    parser.add_argument("--actor", default=None, help="who asks, for the audit log")
    common = argparse.ArgumentParser(add_help=False)
    dbcli.add_common_args(common, subcommand=True)
    common.add_argument("--actor", default=argparse.SUPPRESS, help="who asks, for the audit log")
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              epilog=TARGET_EPILOG)

    create = add("create", "queue a report (a running `smsgw reporter` makes it)")
    create.add_argument("kind", choices=KINDS, help="what to report on")
    create.add_argument("--campaign", metavar="NAME", help="the campaign (kind campaign)")
    create.add_argument("--from", dest="start", metavar="T",
                        help="start of the range, ISO 8601 (default: --to minus 7 days)")
    create.add_argument("--to", dest="end", metavar="T", help="end of the range (default: now)")
    create.add_argument("--tz", metavar="ZONE", default=None,
                        help="IANA time zone days and hours are counted in (default UTC)")
    create.add_argument("--account", metavar="NAME", help="only this account (kind traffic)")
    create.add_argument("--wait", action="store_true",
                        help="wait until it is done; exit 1 if it failed or was cancelled")
    lst = add("list", "the newest reports")
    lst.add_argument("--status", choices=[str(s) for s in ReportStatus], default=None)
    lst.add_argument("--limit", type=int, default=20, help="how many (%(default)s)")
    show = add("show", "one report: status, progress, files")
    show.add_argument("id", type=_report_id)
    cancel = add("cancel", "cancel a queued or running report")
    cancel.add_argument("id", type=_report_id)
    down = add("download", "write a stored report file (from Postgres) to --out or stdout")
    down.add_argument("id", type=_report_id)
    down.add_argument("name", choices=FILE_NAMES, help="which file")
    down.add_argument("--out", type=Path, default=None, help="file to write (default stdout)")
    return parser


def describe(req: ReportRequest) -> dict[str, Any]:
    """A report as `--json` and the HTTP API show it (paths are on the reporter's host)."""
    files = {name: meta["path"] for name, meta in (req.files or {}).items()}
    return {"id": req.id, "kind": req.kind, "status": str(req.status), "params": req.params,
            "progress": {"rows_scanned": req.rows_scanned, "rows_estimated": req.rows_estimated,
                         "percent": round(req.progress, 1)},
            "files": files, "error": req.last_error, "requested_by": req.requested_by,
            "created_at": req.created_at, "started_at": req.started_at,
            "finished_at": req.finished_at, "expires_at": req.expires_at}


def _line(req: ReportRequest) -> str:
    what = req.params.get("campaign") or req.params.get("account") or ""
    return (f"{req.id:>6}  {req.kind:<9} {what[:20]:<20} {req.status!s:<10} "
            f"{req.progress:5.1f}%  {dbcli.fmt_time(req.created_at)}"
            + (f"  {req.last_error}" if req.last_error else ""))


def _print(args: argparse.Namespace, req: ReportRequest) -> None:
    if args.json:
        dbcli.dump_json({"id": req.id, "status": str(req.status),
                         "files": describe(req)["files"]} if args.command == "create"
                        else describe(req))
        return
    d = describe(req)
    sys.stdout.write(f"report {req.id}: {req.kind} {req.status}"
                     f" ({d['progress']['percent']}%, {req.rows_scanned} rows)\n")
    sys.stdout.write(f"  params: {req.params}\n")
    if req.last_error:
        sys.stdout.write(f"  error: {req.last_error}\n")
    for name, path in d["files"].items():
        sys.stdout.write(f"  {name}: {path}\n")


async def _wait(conn: asyncpg.Connection, req: ReportRequest) -> ReportRequest:
    bar = sys.stderr.isatty()
    while req.status not in FINISHED:
        await asyncio.sleep(WAIT_POLL_S)
        found = await rq.get(conn, req.id, account_id=None)
        if found is None:
            raise dbcli.UsageError(f"report {req.id} is gone")
        req = found
        if bar:
            done = int(req.progress / 5)
            est = f"/{req.rows_estimated}" if req.rows_estimated else ""
            sys.stderr.write(f"\r[{'#' * done}{'.' * (20 - done)}] {req.progress:5.1f}% "
                             f"{req.rows_scanned}{est} rows  {req.status!s:<9}")
            sys.stderr.flush()
    if bar:
        sys.stderr.write("\n")
    return req


async def _create(conn: asyncpg.Connection, args: argparse.Namespace, actor: str) -> int:
    try:
        limit = configured_range_days(peer_setting(
            dbcli.AdminConfig.load(args).config_path(), "reporter", "max_range_days"))
        params = parse_request(args.kind, start=args.start, end=args.end, tz=args.tz,
                               campaign=args.campaign, account=args.account,
                               max_range_days=limit)
        await check_names(conn, params)
    except ReportInputError as exc:
        where = "KIND" if exc.field == "kind" else f"--{exc.field}"
        raise dbcli.UsageError(f"{where}: {exc.message}") from None
    async with conn.transaction():
        req = await rq.insert(conn, kind=params.kind, params=params.as_json(), account_id=None,
                              requested_by=actor, keep_s=DEFAULT_KEEP_S)
        await audit(conn, actor=actor, action="report_requested", object_type="report",
                    object_id=str(req.id), detail={"kind": req.kind, **req.params})
    if args.wait:
        req = await _wait(conn, req)
    if not args.json and not args.wait:
        sys.stdout.write(f"report {req.id} queued ({req.kind}); follow it with "
                         f"`smsgw reports show {req.id}`\n")
    else:
        _print(args, req)
    return dbcli.EXIT_OK if not args.wait or req.status == ReportStatus.DONE \
        else dbcli.EXIT_FAILURE


async def _download(conn: asyncpg.Connection, args: argparse.Namespace) -> int:
    req = await rq.get(conn, args.id, account_id=None)
    if req is None:
        raise dbcli.UsageError(f"no report {args.id}")
    if req.status != ReportStatus.DONE or args.name not in (req.files or {}):
        raise dbcli.UsageError(f"report {args.id} has no {args.name} file (status {req.status})")
    # a CLI writing its own output file: blocking is what it does
    out = open(args.out, "wb") if args.out else None  # noqa: SIM115, ASYNC230 - closed below
    try:
        no = 0
        while (data := await conn.fetchval(rq.STATEMENTS["report_requests.chunk"], args.id,
                                           args.name, no)) is not None:
            (out or sys.stdout.buffer).write(bytes(data))
            no += 1
    finally:
        if out is not None:
            out.close()
            os.chmod(args.out, 0o600)
    return dbcli.EXIT_OK


async def _run(conn: asyncpg.Connection, args: argparse.Namespace, actor: str) -> int:
    if args.command == "create":
        return await _create(conn, args, actor)
    if args.command == "download":
        return await _download(conn, args)
    if args.command == "list":
        reqs = await rq.list_reports(conn, account_id=None, status=args.status,
                                     limit=args.limit)
        if args.json:
            dbcli.dump_json([describe(r) for r in reqs])
        else:
            sys.stdout.write("".join(_line(r) + "\n" for r in reqs) or "no reports\n")
        return dbcli.EXIT_OK
    if args.command == "show":
        req = await rq.get(conn, args.id, account_id=None)
    else:
        async with conn.transaction():
            req = await rq.cancel(conn, args.id, account_id=None)
            if req is not None:
                await audit(conn, actor=actor, action="report_cancelled",
                            object_type="report", object_id=str(req.id),
                            detail={"status": str(req.status)})
    if req is None:
        raise dbcli.UsageError(f"no report {args.id}")
    _print(args, req)
    return dbcli.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run `smsgw reports …`; exit 0, 1 (database, or --wait and not done), 2 (usage), 78."""
    args = _parser().parse_args(argv)
    actor = args.actor or f"cli:{getpass.getuser()}"

    async def body(conn: asyncpg.Connection) -> int:
        return await _run(conn, args, actor)

    return dbcli.run(body, args)
