"""The SMPP side of `smsgw accounts` (the SMPP server for customer ESMEs).

    smsgw accounts smpp-password NAME        generates the account's SMPP password, prints it once
    smsgw accounts update NAME [--smpp-allowed-network CIDR ... | --smpp-any-network]
                               [--smpp-max-binds N|default]
                               [--smpp-bind-mode transmitter|receiver|transceiver ... |
                                --smpp-any-bind-mode]

An ESME binds with system_id = the account's name (SMPP 3.4 allows at most 15 characters: a
longer name cannot bind, and `smpp-password` refuses it) and the password `smpp-password`
printed (8 characters, ~52 bits, stored only as a keyed hash under the server secret; a new
one replaces the old at once). `--smpp-allowed-network` (repeatable) limits where binds may
come from; `--smpp-max-binds` caps the account's concurrent binds over every receiver
(default: the receivers' `[receiver.smpp_server] account_max_binds`); `--smpp-bind-mode`
(repeatable) names the bind modes it may use. Every change is audited.
"""

from __future__ import annotations

import argparse
import sys
from ipaddress import ip_network
from typing import Any

import asyncpg

from smsgw.services.admin import dbcli
from smsgw.shared.domain import esme as E

# `update` flag dest → accounts column (merged into accounts.UPDATABLE)
UPDATABLE_SMPP: dict[str, str] = {
    "smpp_allowed_network": "smpp_allowed_networks",
    "smpp_max_binds": "smpp_max_binds",
    "smpp_bind_mode": "smpp_bind_modes",
}


def _network_arg(value: str) -> Any:
    try:
        return ip_network(value, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError("a network in CIDR form, e.g. 192.0.2.0/24 or "
                                         "2001:db8::/32") from None


def _max_binds_arg(value: str) -> int | None:
    if value == "default":
        return None
    if not value.isdigit() or not 1 <= int(value) <= 10_000:
        raise argparse.ArgumentTypeError("a number of binds from 1 to 10000, or 'default'")
    return int(value)


def add_update_args(update: argparse.ArgumentParser) -> None:
    """The SMPP flags of `accounts update`."""
    nets = update.add_mutually_exclusive_group()
    nets.add_argument("--smpp-allowed-network", action="append", default=None,
                      type=_network_arg, metavar="CIDR",
                      help="a source network SMPP binds may come from (repeat; replaces the "
                           "list)")
    nets.add_argument("--smpp-any-network", action="store_true",
                      help="SMPP binds from any address (the default)")
    update.add_argument("--smpp-max-binds", type=_max_binds_arg, default=argparse.SUPPRESS,
                        metavar="N|default",
                        help="concurrent SMPP binds of the account over every receiver "
                             "('default': [receiver.smpp_server] account_max_binds)")
    modes = update.add_mutually_exclusive_group()
    modes.add_argument("--smpp-bind-mode", action="append", default=None, choices=E.BIND_MODES,
                       help="a bind mode the account may use (repeat; replaces the list)")
    modes.add_argument("--smpp-any-bind-mode", action="store_true",
                       help="all three bind modes (the default)")


def update_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The columns the SMPP flags of `update` set (an absent flag changes nothing)."""
    changes: dict[str, Any] = {}
    if args.smpp_allowed_network is not None:
        changes["smpp_allowed_networks"] = list(dict.fromkeys(
            str(n) for n in args.smpp_allowed_network))
    elif args.smpp_any_network:
        changes["smpp_allowed_networks"] = None
    if hasattr(args, "smpp_max_binds"):
        changes["smpp_max_binds"] = args.smpp_max_binds
    if args.smpp_bind_mode is not None:
        changes["smpp_bind_modes"] = list(dict.fromkeys(args.smpp_bind_mode))
    elif args.smpp_any_bind_mode:
        changes["smpp_bind_modes"] = None
    return changes


def add_password_parser(add: Any) -> None:
    """`accounts smpp-password NAME` (`add` is accounts' subcommand factory)."""
    p = add("smpp-password", "generate the account's SMPP password and print it (shown once; "
                             "system_id is the account's name)", secret=True)
    p.add_argument("name", help="the account's name (at most 15 characters: SMPP's system_id)")


async def run_password(conn: asyncpg.Connection, args: argparse.Namespace, secret: bytes,
                       actor: str) -> None:
    """Set and print a new SMPP password (audited)."""
    try:
        password = await E.set_password(conn, secret, args.name, actor=actor)
    except LookupError:
        raise dbcli.UsageError(f"no account named {args.name!r}") from None
    except ValueError as exc:
        raise dbcli.UsageError(str(exc)) from None
    if args.json:
        dbcli.dump_json({"name": args.name, "system_id": args.name, "password": password})
        return
    sys.stdout.write(f"SMPP password for {args.name} (system_id {args.name}; shown once, store "
                     f"it now; it replaces any earlier one):\n{password}\n")
