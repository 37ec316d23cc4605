"""`smsgw accounts`: manage API accounts and their keys.

    smsgw accounts create NAME [--category transactional|marketing] [--rate N|unlimited]
                               [--allowed-sender ID ...] [--allowed-connector NAME ...]
                                                              prints the first key, once
    smsgw accounts update NAME [--category C] [--rate N|unlimited|default]
                               [--allowed-connector NAME ... | --no-allowed-connectors]
    smsgw accounts add-key NAME                               prints a new key, once
    smsgw accounts revoke-key NAME KEY_ID_OR_PREFIX
    smsgw accounts list [--json]
    smsgw accounts callback-secret NAME [--rotate]            prints the callback signing secret

Keys are stored as HMAC-SHA256 under the server secret (`[security] server_secret_env` or
`server_secret_file`; next to a running `smsgw up`, up's `server-secret`), which must be the one
the receivers use. Two keys can be valid at once:
rotate by `add-key`, moving the clients, then `revoke-key` of the old one. Every change is
written to `audit_log` (actor: `--actor`, default the OS user).

An account without its own `--rate` gets the receivers' `[receiver] default_account_rate`
(50 messages/s unless configured). By default an account may not force a connector (Kannel
`smsc=`, the JSON API's `connector`): its routes decide; `--allowed-connector` (repeatable)
names the ones it may force. `update` replaces only what it is given; receivers see the change
within their `auth_cache_s`.

Every account's status callbacks are signed (`X-Smsgw-Signature`, see
`shared.domain.callback_signing`) with a secret derived from the server secret and the account's
secret generation; the database holds only the generation. `callback-secret NAME` prints the
current secret for the application (audited); `--rotate` moves to the next generation, and the
processor signs with the new secret from its next callback on.
"""

from __future__ import annotations

import argparse
import getpass
import math
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from smsgw.services.admin import dbcli
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.domain.apikeys import audit, create_key, list_keys, revoke_key
from smsgw.shared.domain.callback_signing import account_secret
from smsgw.shared.domain.numbers import InvalidNumber, normalise_sender
from smsgw.shared.runtime.admin_config import TARGET_EPILOG

ACTOR_HELP = "who makes the change, for the audit log (default: cli:<OS user>)"

# insert_account: a new account; the name is unique.
INSERT_ACCOUNT = """
INSERT INTO accounts (name, default_category, rate_per_s, allowed_senders, allowed_connectors)
VALUES ($1, $2, $3, $4, $5)
RETURNING id, name, default_category, rate_per_s, allowed_senders, allowed_connectors
"""

# find_account_by_name: an account's id and settings.
FIND_ACCOUNT_BY_NAME = "SELECT id, name FROM accounts WHERE name = $1"

# list_accounts: every account with its number of valid keys.
LIST_ACCOUNTS = """
SELECT a.id, a.name, a.default_category, a.rate_per_s, a.allowed_senders,
       a.allowed_connectors, a.disabled, a.created_at,
       (SELECT count(*) FROM api_keys k WHERE k.account_id = a.id AND k.revoked_at IS NULL)
           AS valid_keys
  FROM accounts a ORDER BY a.id
"""


async def create_account(conn: asyncpg.Connection, server_secret: bytes, name: str, *,
                         category: str = "transactional", rate_per_s: float | None = None,
                         allowed_senders: Sequence[str] | None = None,
                         allowed_connectors: Sequence[str] | None = None,
                         actor: str = "cli") -> tuple[int, str]:
    """Create an account and its first key (audited); return (account id, the key)."""
    senders = [normalise_sender(s) for s in allowed_senders] if allowed_senders else None
    connectors = list(dict.fromkeys(allowed_connectors)) if allowed_connectors else None
    async with conn.transaction():
        rec = await conn.fetchrow(INSERT_ACCOUNT, name, category, rate_per_s, senders,
                                  connectors)
        assert rec is not None
        await audit(conn, actor=actor, action="account_created", object_type="account",
                    object_id=str(rec["id"]),
                    detail={"name": name, "category": category,
                            "rate_per_s": _rate_detail(rate_per_s),
                            "allowed_senders": senders, "allowed_connectors": connectors})
        key, _ = await create_key(conn, server_secret, rec["id"], actor=actor)
    return int(rec["id"]), key


# The columns `update` may change: option dest → column. A later flag adds one entry here and
# its argument in `_parser` (values are validated by argparse before they get here).
UPDATABLE: dict[str, str] = {
    "category": "default_category",
    "rate": "rate_per_s",
    "allowed_connector": "allowed_connectors",
}


async def update_account(conn: asyncpg.Connection, name: str, changes: dict[str, Any], *,
                         actor: str = "cli") -> dict[str, Any]:
    """Set the given columns (keys of `UPDATABLE`'s values) of the named account, audited;
    return the account's new settings. Raises `UsageError` for an unknown account."""
    if not changes:
        raise dbcli.UsageError("nothing to update: give at least one flag")
    if set(changes) - set(UPDATABLE.values()):
        raise ValueError(f"not updatable: {sorted(set(changes) - set(UPDATABLE.values()))}")
    cols = sorted(changes)  # whitelisted identifiers only; values travel as parameters
    sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(cols, start=2))
    sql = (f"UPDATE accounts SET {sets}, updated_at = now() WHERE name = $1 "
           "RETURNING id, name, default_category, rate_per_s, allowed_senders, "
           "allowed_connectors")
    async with conn.transaction():
        rec = await conn.fetchrow(sql, name, *(changes[c] for c in cols))
        if rec is None:
            raise dbcli.UsageError(f"no account named {name!r}")
        detail = {c: _rate_detail(changes[c]) if c == "rate_per_s" else changes[c]
                  for c in cols}
        await audit(conn, actor=actor, action="account_updated", object_type="account",
                    object_id=str(rec["id"]), detail={"name": name, **detail})
    return dict(rec)


def _rate_detail(rate: float | None) -> float | str | None:
    return "unlimited" if rate is not None and math.isinf(rate) else rate


def _rate_arg(value: str) -> float | None:
    """`--rate`: messages per second (> 0), `unlimited`, or `default` (the config's)."""
    if value == "unlimited":
        return math.inf
    if value == "default":
        return None
    try:
        rate = float(value)
    except ValueError:
        rate = math.nan
    if not (rate > 0 and math.isfinite(rate)):
        raise argparse.ArgumentTypeError("a number of messages per second above 0, "
                                         "'unlimited' or 'default'")
    return rate


def _connector_arg(value: str) -> str:
    if not value or len(value) > 64 or not value.isprintable() or value.strip() != value:
        raise argparse.ArgumentTypeError("a connector name from [[connectors]]")
    return value


async def _account_id(conn: asyncpg.Connection, name: str) -> int:
    rec = await conn.fetchrow(FIND_ACCOUNT_BY_NAME, name)
    if rec is None:
        raise dbcli.UsageError(f"no account named {name!r}")
    return int(rec["id"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw accounts", description=__doc__,
                                     epilog=TARGET_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # The common options go before the subcommand or after it (`create X --json`): the
    # subcommands' copies default to SUPPRESS, so they never reset one given before.
    dbcli.add_common_args(parser)
    parser.add_argument("--actor", default=None, help=ACTOR_HELP)
    common = argparse.ArgumentParser(add_help=False)
    dbcli.add_common_args(common, subcommand=True)
    common.add_argument("--actor", default=argparse.SUPPRESS, help=ACTOR_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    secret_note = (" Needs the server secret the receivers use ([security] server_secret_file "
                   "or server_secret_env; next to `smsgw up`, up's).")

    def add(name: str, help_: str, *, secret: bool = False) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              epilog=TARGET_EPILOG + (secret_note if secret else ""))

    create = add("create", "create an account and print its first key (shown once)",
                 secret=True)
    create.add_argument("name", help="the account's name (unique)")
    create.add_argument("--category", choices=["transactional", "marketing"],
                        default="transactional",
                        help="the category of its messages (%(default)s)")
    create.add_argument("--rate", type=_rate_arg, default=None,
                        help="messages per second, or 'unlimited' (default: the receivers' "
                             "[receiver] default_account_rate)")
    create.add_argument("--allowed-sender", action="append", default=None, metavar="ID",
                        help="allowed sender id (repeat; default: any)")
    create.add_argument("--allowed-connector", action="append", default=None,
                        type=_connector_arg, metavar="NAME",
                        help="a connector the account may force with smsc= / connector "
                             "(repeat; default: none, the routes decide)")
    update = add("update", "change an account's settings (only the flags given)")
    update.add_argument("name", help="the account's name")
    update.add_argument("--category", choices=["transactional", "marketing"], default=None,
                        help="the category of its messages")
    update.add_argument("--rate", type=_rate_arg, default=argparse.SUPPRESS,
                        help="messages per second, 'unlimited', or 'default' (the receivers' "
                             "default_account_rate)")
    forced = update.add_mutually_exclusive_group()
    forced.add_argument("--allowed-connector", action="append", default=None,
                        type=_connector_arg, metavar="NAME",
                        help="a connector the account may force (repeat; replaces the list)")
    forced.add_argument("--no-allowed-connectors", action="store_true",
                        help="the account may force no connector (the routes decide)")
    add_key = add("add-key", "add a key to an account and print it (shown once)", secret=True)
    add_key.add_argument("name", help="the account's name")
    revoke = add("revoke-key", "revoke a key by id or listing prefix")
    revoke.add_argument("name", help="the account's name")
    revoke.add_argument("key", help="the key's id, or the prefix `list` shows")
    add("list", "list accounts with their settings and number of valid keys")
    cbs = add("callback-secret", "print the account's status-callback signing secret",
              secret=True)
    cbs.add_argument("name", help="the account's name")
    cbs.add_argument("--rotate", action="store_true",
                     help="move to a new secret (the old one stops working at once)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run `smsgw accounts …`; exit 0, 1 (database), 2 (usage), 78 (config)."""
    args = _parser().parse_args(argv)
    actor = args.actor or f"cli:{getpass.getuser()}"
    needs_secret = args.command in ("create", "add-key", "callback-secret")
    try:
        secret = dbcli.server_secret(args) if needs_secret else b""
    except ConfigError as exc:
        return dbcli.report_config_error(exc)

    async def body(conn: asyncpg.Connection) -> int:
        return await _run(conn, args, secret, actor)

    return dbcli.run(body, args)


async def _run(conn: asyncpg.Connection, args: argparse.Namespace, secret: bytes,
               actor: str) -> int:
    if args.command == "create":
        try:
            account_id, key = await create_account(
                conn, secret, args.name, category=args.category, rate_per_s=args.rate,
                allowed_senders=args.allowed_sender,
                allowed_connectors=args.allowed_connector, actor=actor)
        except InvalidNumber as exc:
            raise dbcli.UsageError(f"--allowed-sender: {exc}") from exc
        except asyncpg.UniqueViolationError as exc:
            raise dbcli.UsageError(f"an account named {args.name!r} exists") from exc
        _print_key(args, {"account_id": account_id, "name": args.name, "key": key})
    elif args.command == "update":
        updated = await update_account(conn, args.name, _update_changes(args), actor=actor)
        if args.json:
            dbcli.dump_json({**updated, "rate_per_s": _rate_detail(updated["rate_per_s"])})
        else:
            sys.stdout.write(f"updated account {args.name}\n")
    elif args.command == "add-key":
        key, stored = await create_key(conn, secret, await _account_id(conn, args.name),
                                       actor=actor)
        _print_key(args, {"name": args.name, "key_id": stored.id, "key": key})
    elif args.command == "revoke-key":
        revoked = await revoke_key(conn, await _account_id(conn, args.name), args.key,
                                   actor=actor)
        if not revoked:
            raise dbcli.UsageError(f"no valid key {args.key!r} for account {args.name!r}")
        sys.stdout.write(f"revoked {len(revoked)} key(s)\n")
    elif args.command == "callback-secret":
        _print_callback_secret(args, await callback_secret(conn, secret, args.name,
                                                           rotate=args.rotate, actor=actor))
    else:
        await _list(conn, args)
    return dbcli.EXIT_OK


def _update_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The columns `update` sets, from the flags given (an absent flag changes nothing)."""
    changes: dict[str, Any] = {}
    if args.category is not None:
        changes[UPDATABLE["category"]] = args.category
    if hasattr(args, "rate"):
        changes[UPDATABLE["rate"]] = args.rate
    if args.allowed_connector is not None:
        changes[UPDATABLE["allowed_connector"]] = list(dict.fromkeys(args.allowed_connector))
    elif args.no_allowed_connectors:
        changes[UPDATABLE["allowed_connector"]] = None
    return changes


# callback_secret_generation: an account's id and secret generation (--rotate: the next one).
CALLBACK_GENERATION = "SELECT id, callback_secret_generation FROM accounts WHERE name = $1"
ROTATE_CALLBACK_GENERATION = """
UPDATE accounts SET callback_secret_generation = callback_secret_generation + 1,
                    updated_at = now()
 WHERE name = $1
RETURNING id, callback_secret_generation
"""


async def callback_secret(conn: asyncpg.Connection, server_secret: bytes, name: str, *,
                          rotate: bool = False, actor: str = "cli") -> dict[str, Any]:
    """The account's status-callback signing secret (audited), after moving to the next
    generation when `rotate`. The secret is derived from the server secret and the generation
    (`shared.domain.callback_signing`), never stored."""
    async with conn.transaction():
        rec = await conn.fetchrow(ROTATE_CALLBACK_GENERATION if rotate else CALLBACK_GENERATION,
                                  name)
        if rec is None:
            raise dbcli.UsageError(f"no account named {name!r}")
        generation = int(rec["callback_secret_generation"])
        await audit(conn, actor=actor,
                    action="callback_secret_rotated" if rotate else "callback_secret_shown",
                    object_type="account", object_id=str(rec["id"]),
                    detail={"name": name, "generation": generation})
    return {"account_id": int(rec["id"]), "name": name, "generation": generation,
            "callback_secret": account_secret(server_secret, rec["id"], generation)}


def _print_callback_secret(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        dbcli.dump_json(data)
        return
    sys.stdout.write(f"Status-callback signing secret for {data['name']} (generation "
                     f"{data['generation']}; give it to the application, which checks "
                     f"X-Smsgw-Signature with it):\n{data['callback_secret']}\n")


def _print_key(args: argparse.Namespace, data: dict[str, Any]) -> None:
    if args.json:
        dbcli.dump_json(data)
        return
    sys.stdout.write(f"API key for {data['name']} (shown once, store it now):\n{data['key']}\n")


async def _list(conn: asyncpg.Connection, args: argparse.Namespace) -> None:
    rows = await conn.fetch(LIST_ACCOUNTS)
    out = []
    for r in rows:
        keys = await list_keys(conn, r["id"])
        item = dbcli.record_dict(r) or {}
        item["keys"] = [{"id": k.id, "prefix": k.prefix, "revoked": k.revoked_at is not None}
                        for k in keys]
        out.append(item)
    if args.json:
        dbcli.dump_json(out)
        return
    header = ["id", "name", "category", "rate/s", "valid keys", "keys (id:prefix)"]
    lines = [[str(a["id"]), a["name"], a["default_category"], str(a["rate_per_s"] or "-"),
              str(a["valid_keys"]),
              " ".join(f"{k['id']}:{k['prefix']}" for k in a["keys"] if not k["revoked"])
              or "-"]
             for a in out]
    sys.stdout.write(dbcli.table(lines, header) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
