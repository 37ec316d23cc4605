"""`smsgw accounts`: manage API accounts and their keys.

    smsgw accounts create NAME [--category transactional|marketing] [--rate N|unlimited]
                               [--allowed-sender ID ...] [--allowed-connector NAME ...]
                                                              prints the first key, once
    smsgw accounts update NAME [--category C] [--rate N|unlimited|default]
                               [--allowed-sender ID ... | --any-sender]
                               [--allowed-connector NAME ... | --no-allowed-connectors]
    smsgw accounts show NAME [--json]                         keys, limits, today's counts
    smsgw accounts disable NAME [--cancel-queued] [--reason TEXT] [--yes]
    smsgw accounts enable NAME
    smsgw accounts add-key NAME                               prints a new key, once
    smsgw accounts revoke-key NAME KEY_ID_OR_PREFIX
    smsgw accounts list [--json]
    smsgw accounts callback-secret NAME [--rotate]            prints the callback signing secret
    smsgw accounts smpp-password NAME                         prints the SMPP password, once
    (`update` also takes --smpp-allowed-network, --smpp-max-binds, --smpp-bind-mode: the
    SMPP server for customer ESMEs, services/admin/accounts_smpp.py)

Keys are stored as HMAC-SHA256 under the server secret (`[security] server_secret_env` or
`server_secret_file`; next to a running `smsgw up`, up's `server-secret`), which must be the one
the receivers use. Two keys can be valid at once:
rotate by `add-key`, moving the clients, then `revoke-key` of the old one. Every change is
written to `audit_log` (actor: `--actor`, default the OS user).

An account without its own `--rate` gets the receivers' `[receiver] default_account_rate`
(50 messages/s unless configured). By default an account may not force a connector (Kannel
`smsc=`, the JSON API's `connector`): its routes decide; `--allowed-connector` (repeatable)
names the ones it may force. `update` replaces only what it is given; receivers see the change
within their `auth_cache_s` (at most 5 s).

`disable` takes effect without a restart: the account's API keys are refused within the
receivers' `auth_cache_s` (and its SMPP binds within the same bound), and no sender claims its
queued messages any more: they are held, and sent after `enable` (which wakes the senders), or
cancelled at once with `--cancel-queued` (status `cancelled`, with the status callbacks they
asked for). With queued messages it asks first, saying how many (`--yes` skips the question;
without a terminal it refuses). `show` prints the account's settings, its keys by listing prefix,
and today's messages by status (UTC day).

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

from smsgw.services.admin import accounts_smpp, dbcli
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.domain.apikeys import audit, create_key, list_keys, revoke_key
from smsgw.shared.domain.callback_signing import account_secret
from smsgw.shared.domain.numbers import InvalidNumber, normalise_sender
from smsgw.shared.domain.status_callbacks import cancel_queued
from smsgw.shared.queue.listener import CHANNELS
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
    "allowed_sender": "allowed_senders",
    "allowed_connector": "allowed_connectors",
    "operator": "operator",
    **accounts_smpp.UPDATABLE_SMPP,
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
    senders = update.add_mutually_exclusive_group()
    senders.add_argument("--allowed-sender", action="append", default=None, metavar="ID",
                         help="a sender id the account may use (repeat; replaces the list)")
    senders.add_argument("--any-sender", action="store_true",
                         help="the account may use any sender id")
    forced = update.add_mutually_exclusive_group()
    forced.add_argument("--allowed-connector", action="append", default=None,
                        type=_connector_arg, metavar="NAME",
                        help="a connector the account may force (repeat; replaces the list)")
    forced.add_argument("--no-allowed-connectors", action="store_true",
                        help="the account may force no connector (the routes decide)")
    show = add("show", "an account's settings, keys (by prefix) and today's messages")
    show.add_argument("name", help="the account's name")
    disable = add("disable", "refuse the account's keys and binds and hold its queued "
                             "messages (or cancel them with --cancel-queued)")
    disable.add_argument("name", help="the account's name")
    disable.add_argument("--cancel-queued", action="store_true",
                         help="cancel its queued messages (status cancelled, with the status "
                              "callbacks they asked for) instead of holding them")
    disable.add_argument("--reason", type=_reason_arg, default=None,
                         help="why, for the audit log and the cancelled messages (≤ 200 "
                              "characters)")
    disable.add_argument("--yes", action="store_true",
                         help="do not ask when the account has queued messages")
    enable = add("enable", "accept the account's keys and binds again and send its held "
                           "messages")
    enable.add_argument("name", help="the account's name")
    add_key = add("add-key", "add a key to an account and print it (shown once)", secret=True)
    add_key.add_argument("name", help="the account's name")
    revoke = add("revoke-key", "revoke a key by id or listing prefix")
    revoke.add_argument("name", help="the account's name")
    revoke.add_argument("key", help="the key's id, or the prefix `list` shows")
    accounts_smpp.add_update_args(update)
    operator = update.add_mutually_exclusive_group()
    operator.add_argument("--operator", dest="operator", action="store_true", default=None,
                          help="its API keys may ask for every report kind (campaign, "
                               "inbound, opt-outs) and see every report")
    operator.add_argument("--no-operator", dest="operator", action="store_false",
                          help="its API keys see only its own traffic reports (the default)")
    accounts_smpp.add_password_parser(add)
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
    needs_secret = args.command in ("create", "add-key", "callback-secret", "smpp-password")
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
    elif args.command in ("show", "disable", "enable"):
        return await _run_live(conn, args, actor)
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
    elif args.command == "smpp-password":
        await accounts_smpp.run_password(conn, args, secret, actor)
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
    if args.allowed_sender is not None:
        try:
            changes[UPDATABLE["allowed_sender"]] = list(dict.fromkeys(
                normalise_sender(s) for s in args.allowed_sender))
        except InvalidNumber as exc:
            raise dbcli.UsageError(f"--allowed-sender: {exc}") from exc
    elif args.any_sender:
        changes[UPDATABLE["allowed_sender"]] = None
    if args.allowed_connector is not None:
        changes[UPDATABLE["allowed_connector"]] = list(dict.fromkeys(args.allowed_connector))
    elif args.no_allowed_connectors:
        changes[UPDATABLE["allowed_connector"]] = None
    if args.operator is not None:
        changes[UPDATABLE["operator"]] = args.operator
    changes.update(accounts_smpp.update_changes(args))
    return changes


# -- show, disable, enable ------------------------------------------------------------------

# show_account: an account's settings by name.
SHOW_ACCOUNT = """
SELECT id, name, default_category, rate_per_s, allowed_senders, allowed_connectors, disabled,
       disabled_at, operator, created_at, updated_at
  FROM accounts WHERE name = $1
"""

# today_counts: the account's MTs created since the start of today (UTC) by status, hot and
# history; both scans are bounded by the account's rows (outbound*_account_idx).
TODAY_COUNTS = """
SELECT status, count(*) AS n
  FROM (SELECT status FROM outbound
         WHERE account_id = $1 AND created_at >= date_trunc('day', now(), 'UTC')
        UNION ALL
        SELECT status FROM outbound_history
         WHERE account_id = $1 AND created_at >= date_trunc('day', now(), 'UTC')) m
 GROUP BY status ORDER BY status
"""

# count_queued: the account's queued MTs (what disable holds or cancels).
COUNT_QUEUED = "SELECT count(*) FROM outbound WHERE account_id = $1 AND status = 'queued'"

# set_disabled: disable ($2 true) or enable an account by name; returns its id and whether it
# was disabled before (so a repeated command says nothing changed).
SET_DISABLED = """
WITH prev AS (SELECT id, disabled FROM accounts WHERE name = $1 FOR UPDATE)
UPDATE accounts AS a
   SET disabled = $2::bool,
       disabled_at = CASE WHEN NOT $2::bool THEN NULL
                          WHEN prev.disabled THEN a.disabled_at ELSE now() END,
       updated_at = now()
  FROM prev
 WHERE a.id = prev.id
RETURNING a.id, prev.disabled AS was_disabled, a.disabled_at
"""

CANCEL_BATCH = 10_000  # queued messages cancelled per transaction by disable --cancel-queued
MAX_REASON = 200


def _reason_arg(value: str) -> str:
    if not value.strip() or len(value) > MAX_REASON or not value.isprintable():
        raise argparse.ArgumentTypeError(f"1-{MAX_REASON} printable characters")
    return value.strip()


async def show_account(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    """The account's settings, its keys (prefix only), queued messages and today's counts."""
    rec = await conn.fetchrow(SHOW_ACCOUNT, name)
    if rec is None:
        raise dbcli.UsageError(f"no account named {name!r}")
    out = dbcli.record_dict(rec) or {}
    out["rate_per_s"] = _rate_detail(out["rate_per_s"])
    out["keys"] = [{"id": k.id, "prefix": k.prefix, "created_at": k.created_at,
                    "revoked_at": k.revoked_at} for k in await list_keys(conn, rec["id"])]
    out["queued"] = int(await conn.fetchval(COUNT_QUEUED, rec["id"]))
    out["today"] = {r["status"]: int(r["n"]) for r in await conn.fetch(TODAY_COUNTS, rec["id"])}
    return out


async def count_queued(conn: asyncpg.Connection, name: str) -> tuple[int, int]:
    """(account id, its queued messages); `UsageError` for an unknown account."""
    account_id = await _account_id(conn, name)
    return account_id, int(await conn.fetchval(COUNT_QUEUED, account_id))


async def set_disabled(conn: asyncpg.Connection, name: str, disabled: bool, *, actor: str,
                       detail: dict[str, Any] | None = None) -> dict[str, Any]:
    """Disable or enable the named account (audited; enabling wakes the senders); return
    {id, name, disabled, changed, disabled_at}."""
    async with conn.transaction():
        rec = await conn.fetchrow(SET_DISABLED, name, disabled)
        if rec is None:
            raise dbcli.UsageError(f"no account named {name!r}")
        if not disabled:  # wake the senders (at commit): they claim what the account held
            await conn.execute("SELECT pg_notify($1, '')", CHANNELS["outbound"])
        changed = rec["was_disabled"] != disabled
        await audit(conn, actor=actor,
                    action="account_disabled" if disabled else "account_enabled",
                    object_type="account", object_id=str(rec["id"]),
                    detail={"name": name, "changed": changed, **(detail or {})})
    return {"id": rec["id"], "name": name, "disabled": disabled, "changed": changed,
            "disabled_at": rec["disabled_at"]}


async def set_enabled(conn: asyncpg.Connection, name: str, *, actor: str) -> dict[str, Any]:
    """Enable the named account: its keys work again and the senders send what it held."""
    return await set_disabled(conn, name, False, actor=actor)


async def disable_account(conn: asyncpg.Connection, name: str, *, actor: str,
                          cancel: bool = False, reason: str | None = None) -> dict[str, Any]:
    """Disable the named account (audited); with `cancel`, then cancel its queued messages in
    batches of `CANCEL_BATCH` (each batch one transaction with its status callbacks). Return
    the `set_disabled` result with `cancelled` (how many)."""
    account_id, queued = await count_queued(conn, name)
    result = await set_disabled(conn, name, True, actor=actor,
                                detail={"queued": queued, "cancel_queued": cancel,
                                        "reason": reason})
    cancelled = 0
    if cancel:
        why = reason or "account disabled"
        while True:
            ids = await cancel_queued(conn, account_id, reason=why, daemon=actor,
                                      limit=CANCEL_BATCH)
            cancelled += len(ids)
            if len(ids) < CANCEL_BATCH:
                break
        async with conn.transaction():
            await audit(conn, actor=actor, action="account_queued_cancelled",
                        object_type="account", object_id=str(account_id),
                        detail={"name": name, "cancelled": cancelled, "reason": why})
    return {**result, "queued": queued, "cancelled": cancelled}


def _confirm_disable(name: str, queued: int, cancel: bool) -> bool:
    what = ("cancelled (status cancelled, not sent)" if cancel
            else f"held until `smsgw accounts enable {name}`")
    question = f"account {name} has {queued} queued message(s); they will be {what}."
    if not sys.stdin.isatty():
        sys.stderr.write(f"{question} Refusing without --yes (stdin is not a terminal).\n")
        return False
    answer = input(f"{question} Disable it? [y/N] ")
    return answer.strip().lower() in ("y", "yes")


async def _disable(conn: asyncpg.Connection, args: argparse.Namespace, actor: str) -> int:
    _, queued = await count_queued(conn, args.name)
    if queued and not args.yes and not _confirm_disable(args.name, queued, args.cancel_queued):
        return dbcli.EXIT_FAILURE
    result = await disable_account(conn, args.name, actor=actor, cancel=args.cancel_queued,
                                   reason=args.reason)
    _print_state(args, result)
    return dbcli.EXIT_OK


async def _run_live(conn: asyncpg.Connection, args: argparse.Namespace, actor: str) -> int:
    if args.command == "show":
        _print_show(args, await show_account(conn, args.name))
    elif args.command == "disable":
        return await _disable(conn, args, actor)
    else:
        _print_state(args, await set_enabled(conn, args.name, actor=actor))
    return dbcli.EXIT_OK


def _print_state(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        dbcli.dump_json(result)
        return
    state = "disabled" if result["disabled"] else "enabled"
    line = f"account {result['name']} {state}" if result["changed"] else \
        f"account {result['name']} was already {state}"
    if result["disabled"]:
        queued, cancelled = result.get("queued", 0), result.get("cancelled", 0)
        line += (f"; {cancelled} queued message(s) cancelled" if args.cancel_queued
                 else f"; {queued} queued message(s) held")
    sys.stdout.write(line + "\n")


def _print_show(args: argparse.Namespace, a: dict[str, Any]) -> None:
    if args.json:
        dbcli.dump_json(a)
        return
    valid = [f"{k['id']}:{k['prefix']}" for k in a["keys"] if k["revoked_at"] is None]
    revoked = [f"{k['id']}:{k['prefix']}" for k in a["keys"] if k["revoked_at"] is not None]
    state = "enabled" if not a["disabled"] else \
        f"DISABLED since {dbcli.fmt_time(a['disabled_at'])}"
    lines = [
        f"account {a['name']} (id {a['id']}): {state}",
        f"  category           {a['default_category']}",
        f"  rate/s             {a['rate_per_s'] or 'default ([receiver] default_account_rate)'}",
        f"  allowed senders    {' '.join(a['allowed_senders'] or []) or 'any'}",
        f"  allowed connectors {' '.join(a['allowed_connectors'] or []) or 'none (routes)'}",
        f"  reports            "
        f"{'operator (every kind and report)' if a.get('operator') else 'own traffic'}",
        f"  keys               {' '.join(valid) or '-'}"
        + (f"  (revoked: {' '.join(revoked)})" if revoked else ""),
        f"  queued now         {a['queued']}" + (" (held)" if a["disabled"] and a["queued"]
                                                 else ""),
        "  today (UTC)        " + (" ".join(f"{k}={v}" for k, v in a["today"].items()) or "-"),
    ]
    sys.stdout.write("\n".join(lines) + "\n")


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
