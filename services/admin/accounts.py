"""`smsgw accounts`: manage API accounts and their keys.

    smsgw accounts create NAME [--category transactional|marketing] [--rate N]
                               [--allowed-sender ID ...]      prints the first key, once
    smsgw accounts add-key NAME                               prints a new key, once
    smsgw accounts revoke-key NAME KEY_ID_OR_PREFIX
    smsgw accounts list [--json]

Keys are stored as HMAC-SHA256 under the server secret (`[security] server_secret_env` or
`server_secret_file`), which must be the one the receivers use. Two keys can be valid at once:
rotate by `add-key`, moving the clients, then `revoke-key` of the old one. Every change is
written to `audit_log` (actor: `--actor`, default the OS user).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from services.admin import dbcli
from shared.apikeys import audit, create_key, list_keys, revoke_key
from shared.config import load_shared
from shared.errors import ConfigError
from shared.numbers import InvalidNumber, normalise_sender

# insert_account: a new account; the name is unique.
INSERT_ACCOUNT = """
INSERT INTO accounts (name, default_category, rate_per_s, allowed_senders)
VALUES ($1, $2, $3, $4)
RETURNING id, name, default_category, rate_per_s, allowed_senders
"""

# find_account_by_name: an account's id and settings.
FIND_ACCOUNT_BY_NAME = "SELECT id, name FROM accounts WHERE name = $1"

# list_accounts: every account with its number of valid keys.
LIST_ACCOUNTS = """
SELECT a.id, a.name, a.default_category, a.rate_per_s, a.allowed_senders, a.disabled,
       a.created_at,
       (SELECT count(*) FROM api_keys k WHERE k.account_id = a.id AND k.revoked_at IS NULL)
           AS valid_keys
  FROM accounts a ORDER BY a.id
"""


async def create_account(conn: asyncpg.Connection, server_secret: bytes, name: str, *,
                         category: str = "transactional", rate_per_s: float | None = None,
                         allowed_senders: Sequence[str] | None = None,
                         actor: str = "cli") -> tuple[int, str]:
    """Create an account and its first key (audited); return (account id, the key)."""
    senders = [normalise_sender(s) for s in allowed_senders] if allowed_senders else None
    async with conn.transaction():
        rec = await conn.fetchrow(INSERT_ACCOUNT, name, category, rate_per_s, senders)
        assert rec is not None
        await audit(conn, actor=actor, action="account_created", object_type="account",
                    object_id=str(rec["id"]),
                    detail={"name": name, "category": category, "rate_per_s": rate_per_s,
                            "allowed_senders": senders})
        key, _ = await create_key(conn, server_secret, rec["id"], actor=actor)
    return int(rec["id"]), key


async def _account_id(conn: asyncpg.Connection, name: str) -> int:
    rec = await conn.fetchrow(FIND_ACCOUNT_BY_NAME, name)
    if rec is None:
        raise dbcli.UsageError(f"no account named {name!r}")
    return int(rec["id"])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smsgw accounts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    # The common options go on every subcommand, so they may follow it (`create X --json`).
    common = argparse.ArgumentParser(add_help=False)
    dbcli.add_common_args(common)
    common.add_argument("--actor", default=None, help="who makes the change (audit log)")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", parents=[common],
                            help="create an account and print its first key")
    create.add_argument("name")
    create.add_argument("--category", choices=["transactional", "marketing"],
                        default="transactional")
    create.add_argument("--rate", type=float, default=None, help="messages per second")
    create.add_argument("--allowed-sender", action="append", default=None,
                        help="allowed sender id (repeat; default: any)")
    add = sub.add_parser("add-key", parents=[common], help="add a key to an account and print it")
    add.add_argument("name")
    revoke = sub.add_parser("revoke-key", parents=[common],
                            help="revoke a key by id or listing prefix")
    revoke.add_argument("name")
    revoke.add_argument("key")
    sub.add_parser("list", parents=[common], help="list accounts")
    return parser


def _server_secret(args: argparse.Namespace) -> bytes:
    secret = load_shared(args.config).server_secret
    if secret is None:
        raise ConfigError(["security.server_secret: not configured (set [security] "
                           "server_secret_env or server_secret_file)"])
    return secret.get_secret_value().encode()


def main(argv: Sequence[str] | None = None) -> int:
    """Run `smsgw accounts …`; exit 0, 1 (database), 2 (usage), 78 (config)."""
    args = _parser().parse_args(argv)
    actor = args.actor or f"cli:{getpass.getuser()}"
    needs_secret = args.command in ("create", "add-key")
    try:
        secret = _server_secret(args) if needs_secret else b""
    except ConfigError as exc:
        for err in exc.errors:
            sys.stderr.write(f"{err}\n")
        return dbcli.EXIT_CONFIG

    async def body(conn: asyncpg.Connection) -> int:
        return await _run(conn, args, secret, actor)

    return dbcli.run(body, args)


async def _run(conn: asyncpg.Connection, args: argparse.Namespace, secret: bytes,
               actor: str) -> int:
    if args.command == "create":
        try:
            account_id, key = await create_account(
                conn, secret, args.name, category=args.category, rate_per_s=args.rate,
                allowed_senders=args.allowed_sender, actor=actor)
        except InvalidNumber as exc:
            raise dbcli.UsageError(f"--allowed-sender: {exc}") from exc
        except asyncpg.UniqueViolationError as exc:
            raise dbcli.UsageError(f"an account named {args.name!r} exists") from exc
        _print_key(args, {"account_id": account_id, "name": args.name, "key": key})
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
    else:
        await _list(conn, args)
    return dbcli.EXIT_OK


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
