"""`smsgw connectors`: list the connectors; stop, start or isolate one in every daemon, live.

    smsgw connectors list [--json]                 config, run-time state, who set it and when
    smsgw connectors stop NAME... [--reason TEXT]  no new submits; the window finishes, then
                                                   every bind of it (tx, trx, rx) unbinds
    smsgw connectors isolate NAME... [--reason T]  no new submits; binds kept (receipts, MO)
    smsgw connectors start NAME...                 binds and submits again

The state is stored in the database (`connector_state`) and every sender and receiver
instance applies it within a second, without a restart (a NOTIFY wakes them; a daemon that
was down starts with the stored state). Messages routed to a stopped or isolated connector
go to the next connector of their route, or wait for it when the route says
`when_stopped = "wait"`; messages forced onto it wait. The state stays until `start`, across
restarts and SIGHUPs. Two operators changing one connector at once: the later change wins and
both are in the audit log (actor: `--actor`, default cli:<OS user>).

Names are checked against the `[[connectors]]` of the config (`--config`, ./smsgw.toml, or
`smsgw up`'s); an unknown name is an error listing the known ones. `start` also takes a name
that is no longer configured but still has a stored state (`list` shows it), to clear it.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from smsgw.services.admin import dbcli
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.domain.connector_state import (
    MAX_REASON,
    ConnectorState,
    read_states,
    set_state,
)
from smsgw.shared.runtime.admin_config import TARGET_EPILOG, AdminConfig
from smsgw.shared.smpp.connector import ConnectorSettings

ACTIONS = {"stop": ConnectorState.STOPPED, "start": ConnectorState.RUNNING,
           "isolate": ConnectorState.ISOLATED}
EFFECT = {ConnectorState.STOPPED: "no new submits; binds close once the window has finished",
          ConnectorState.ISOLATED: "no new submits; binds kept for receipts and MO",
          ConnectorState.RUNNING: "binding and submitting"}


def configured(cfg: AdminConfig) -> list[ConnectorSettings]:
    """The `[[connectors]]` of the config, else of `smsgw up`'s generated config."""
    if cfg.config.connectors:
        return list(cfg.config.connectors)
    up = cfg.up_config()
    return list(up.connectors) if up is not None else []


def check_names(names: Sequence[str], known: Sequence[ConnectorSettings],
                extra: Sequence[str] = ()) -> None:
    """`UsageError` naming each unknown connector and listing the known ones (`extra`: other
    names accepted too)."""
    known_names = [c.name for c in known]
    names = [n for n in names if n not in extra]
    if not names:
        return
    unknown = [n for n in dict.fromkeys(names) if n not in known_names]
    if not known_names:
        raise dbcli.UsageError("no [[connectors]] in the config: give --config FILE (the one "
                               "the daemons run with) or run this next to `smsgw up`")
    if unknown:
        raise dbcli.UsageError(
            f"unknown connector{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(n) for n in unknown)}; known: {', '.join(known_names)}")


async def list_connectors(conn: asyncpg.Connection,
                          known: Sequence[ConnectorSettings]) -> list[dict[str, Any]]:
    """Every configured connector with its state (and stored states of names no longer
    configured, marked so)."""
    stored = await read_states(conn)
    out: list[dict[str, Any]] = []
    for c in known:
        s = stored.get(c.name)
        out.append({"name": c.name, "configured": True, "bind_mode": c.bind_mode.value,
                    "host": c.host, "port": c.port, "binds": c.binds, "tps": c.tps,
                    "state": (s.state if s else ConnectorState.RUNNING).value,
                    "changed_by": s.changed_by if s else None,
                    "reason": s.reason if s else None,
                    "updated_at": s.updated_at if s else None})
    names = {c.name for c in known}
    for name, s in stored.items():
        if name not in names and s.state != ConnectorState.RUNNING:
            out.append({"name": name, "configured": False, "state": s.state.value,
                        "changed_by": s.changed_by, "reason": s.reason,
                        "updated_at": s.updated_at})
    return out


def _reason_arg(value: str) -> str:
    if not value.strip() or len(value) > MAX_REASON or not value.isprintable():
        raise argparse.ArgumentTypeError(f"1-{MAX_REASON} printable characters")
    return value.strip()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw connectors", description=__doc__,
                                     epilog=TARGET_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    dbcli.add_common_args(parser)
    parser.add_argument("--actor", default=None,
                        help="who makes the change, for the audit log (default: cli:<OS user>)")
    common = argparse.ArgumentParser(add_help=False)
    dbcli.add_common_args(common, subcommand=True)
    common.add_argument("--actor", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", parents=[common], epilog=TARGET_EPILOG,
                   help="connectors with their run-time state",
                   description="The configured connectors, their run-time state, who set it "
                               "and when (and stored states of connectors no longer "
                               "configured).")
    for action, state in ACTIONS.items():
        p = sub.add_parser(action, parents=[common], epilog=TARGET_EPILOG,
                           help=EFFECT[state], description=f"{action}: {EFFECT[state]}, in "
                           "every sender and receiver within a second.")
        p.add_argument("names", nargs="+", metavar="NAME", help="a [[connectors]] name")
        p.add_argument("--reason", type=_reason_arg, default=None,
                       help=f"why, for the audit log and `list` (≤ {MAX_REASON} characters)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `smsgw connectors …`; exit 0, 1 (database), 2 (usage), 78 (config)."""
    args = _parser().parse_args(argv)
    actor = args.actor or f"cli:{getpass.getuser()}"
    try:
        known = configured(AdminConfig.load(args))
    except ConfigError as exc:
        return dbcli.report_config_error(exc)

    async def body(conn: asyncpg.Connection) -> int:
        if args.command == "list":
            _print_list(args, await list_connectors(conn, known))
            return dbcli.EXIT_OK
        state = ACTIONS[args.command]
        stale = [n for n, s in (await read_states(conn)).items()
                 if s.state != ConnectorState.RUNNING] if state is ConnectorState.RUNNING else []
        check_names(args.names, known, stale)
        before = await set_state(conn, list(dict.fromkeys(args.names)), state, actor=actor,
                                 reason=getattr(args, "reason", None))
        if args.json:
            dbcli.dump_json({"state": state.value,
                             "previous": {n: s.value for n, s in before.items()}})
        else:
            for name, prev in before.items():
                sys.stdout.write(f"connector {name}: {state.value} (was {prev.value}): "
                                 f"{EFFECT[state]}\n")
        return dbcli.EXIT_OK

    return dbcli.run(body, args)


def _print_list(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    if args.json:
        dbcli.dump_json(rows)
        return
    table = [[r["name"], r.get("bind_mode") or "-",
              f"{r['host']}:{r['port']}" if r["configured"] else "(not configured)",
              str(r.get("binds") or "-"), str(r.get("tps") or "-"),
              r["state"].upper() if r["state"] != "running" else "running",
              r["changed_by"] or "-", dbcli.fmt_time(r["updated_at"]) if r["updated_at"]
              else "-", r["reason"] or ""] for r in rows]
    sys.stdout.write(dbcli.table(table, ["name", "bind", "smsc", "binds", "tps", "state",
                                         "changed by", "at", "reason"]) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
