"""`smsgw rules`: import, export, list, test and delete processor rules.

    smsgw rules import FILE [--replace] [--dry-run]   validate FILE (JSON or TOML, see rules.py),
                                                     upsert by name; --replace also deletes the
                                                     rules FILE does not name
    smsgw rules export [-o FILE]                     every rule as re-importable JSON
    smsgw rules list                                 one line per rule, in evaluation order
    smsgw rules test "TEXT" --from N --to N [--channel C] [--connector X] [--at ISO-TIME]
                                                     which rule fires and what it would do
                                                     (reads quotas, writes nothing)
    smsgw rules delete NAME

Common options, before or after the subcommand: `--config FILE`, `--database-url URL` and
`--data-dir DIR`, as for every admin command (`shared.runtime.admin_config`: with none of them,
next to a running `smsgw up`, its database), and `--actor NAME` (audit log; default $USER).
Every change writes one `audit_log` row per rule (old and new definitions) in the same
transaction; the `rules` trigger bumps `rules_version` and NOTIFYs 'smsgw_rules', so running
processors apply the change to their next batch without a restart.
Exit codes: 0 ok, 1 nothing matched (test) or not found (delete), 65 invalid rule file,
78 bad configuration, 69 database unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import asyncpg

from smsgw.services.processor import engine
from smsgw.services.processor.options import ProcessorKeys
from smsgw.services.processor.optout import OptOutKeywords
from smsgw.services.processor.rules import Message, Rule, RuleError, parse_rules, rule_from_row
from smsgw.shared.core import db
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.queue import store
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.runtime.admin_config import TARGET_EPILOG, AdminConfig, add_target_args
from smsgw.shared.runtime.config import load_config

EX_DATAERR: Final = 65
EX_UNAVAILABLE: Final = 69
EX_CONFIG: Final = 78

SELECT_RULES: Final = """
-- select_rules_for_update: every rule, locked against a concurrent import
SELECT id, name, priority, enabled, match, actions FROM rules ORDER BY id FOR UPDATE
"""
INSERT_RULE: Final = """
-- insert_rule: a new rule
INSERT INTO rules (name, priority, enabled, match, actions) VALUES ($1, $2, $3, $4, $5)
RETURNING id
"""
UPDATE_RULE: Final = """
-- update_rule: replace a rule's definition (matched by id)
UPDATE rules SET priority = $2, enabled = $3, match = $4, actions = $5, updated_at = now()
 WHERE id = $1
"""
DELETE_RULES: Final = """
-- delete_rules: remove rules by id
DELETE FROM rules WHERE id = ANY($1::int8[])
"""
INSERT_AUDIT: Final = """
-- insert_audit: one audit row per changed rule
INSERT INTO audit_log (actor, action, object_type, object_id, detail)
SELECT $1, u.action, 'rule', u.object_id, u.detail
  FROM unnest($2::text[], $3::text[], $4::jsonb[]) AS u(action, object_id, detail)
"""
STATEMENTS: Final = {"select_rules_for_update": SELECT_RULES, "insert_rule": INSERT_RULE,
                      "update_rule": UPDATE_RULE, "delete_rules": DELETE_RULES,
                      "insert_audit": INSERT_AUDIT}


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportResult:
    """What an import changed (rule names)."""

    created: tuple[str, ...]
    updated: tuple[str, ...]
    unchanged: tuple[str, ...]
    deleted: tuple[str, ...]


def read_rule_file(path: str) -> list[Rule]:
    """Parse and validate a rule file (.toml as TOML, anything else as JSON)."""
    text = Path(path).read_text("utf-8")
    try:
        raw = tomllib.loads(text) if path.endswith(".toml") else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise RuleError([f"{path}: not valid {'TOML' if path.endswith('.toml') else 'JSON'}: "
                         f"{exc}"]) from exc
    return parse_rules(raw)


async def import_rules(conn: asyncpg.Connection, rules: Sequence[Rule], *, actor: str,
                       replace: bool = False) -> ImportResult:
    """Upsert `rules` by name (and with `replace` delete the others) in one transaction.

    Each created, updated or deleted rule gets an audit row with its old and new definition.
    """
    created, updated, unchanged, deleted = [], [], [], []
    audit: list[tuple[str, str, dict[str, Any]]] = []
    async with conn.transaction():
        existing = {r["name"]: r for r in await conn.fetch(SELECT_RULES)}
        for rule in rules:
            new = rule.stored()
            old = existing.get(rule.name)
            args = (new["priority"], new["enabled"], new["match"], new["actions"])
            if old is None:
                rid = await conn.fetchval(INSERT_RULE, rule.name, *args)
                created.append(rule.name)
                audit.append(("rule_create", rule.name, {"id": rid, "new": rule.exported()}))
                continue
            before = _safe_export(old)
            if before == rule.exported():
                unchanged.append(rule.name)
                continue
            await conn.execute(UPDATE_RULE, old["id"], *args)
            updated.append(rule.name)
            audit.append(("rule_update", rule.name, {"id": old["id"], "old": before,
                                                     "new": rule.exported()}))
        if replace:
            keep = {r.name for r in rules}
            gone = [r for name, r in existing.items() if name not in keep]
            if gone:
                await conn.execute(DELETE_RULES, [r["id"] for r in gone])
            for r in gone:
                deleted.append(r["name"])
                audit.append(("rule_delete", r["name"], {"id": r["id"], "old": _safe_export(r)}))
        await _audit(conn, actor, audit)
    return ImportResult(created=tuple(created), updated=tuple(updated),
                        unchanged=tuple(unchanged), deleted=tuple(deleted))


async def delete_rule(conn: asyncpg.Connection, name: str, *, actor: str) -> bool:
    """Delete one rule by name (audited); False when there is none."""
    async with conn.transaction():
        row = next((r for r in await conn.fetch(SELECT_RULES) if r["name"] == name), None)
        if row is None:
            return False
        await conn.execute(DELETE_RULES, [row["id"]])
        await _audit(conn, actor, [("rule_delete", name, {"id": row["id"],
                                                          "old": _safe_export(row)})])
    return True


def _safe_export(row: Any) -> dict[str, Any]:
    try:
        return rule_from_row(row).exported()
    except (ValueError, RuleError):  # an invalid stored rule: keep the raw columns
        return {"name": row["name"], "match": row["match"], "actions": row["actions"]}


async def _audit(conn: asyncpg.Connection, actor: str,
                 rows: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    if not rows:
        return
    await conn.execute(INSERT_AUDIT, actor, [r[0] for r in rows], [r[1] for r in rows],
                       [r[2] for r in rows])
    # The rules trigger NOTIFYs too; an explicit one keeps the contract visible (folded).
    await store.notify(conn, CHANNELS["rules"])


async def export_rules(conn: asyncpg.Connection | asyncpg.Pool) -> list[dict[str, Any]]:
    """Every stored rule as re-importable dicts, in id order."""
    rows = await conn.fetch("SELECT id, name, priority, enabled, match, actions FROM rules "
                            "ORDER BY id")
    return [_safe_export(r) for r in rows]


# --- rules test -------------------------------------------------------------------------------

async def test_message(conn: asyncpg.Connection | asyncpg.Pool, *, text: str, sender: str,
                       to: str, channel: str = "smpp", connector: str | None = None,
                       at: datetime | None = None,
                       settings: ProcessorKeys | None = None) -> dict[str, Any]:
    """What the processor would do with one message now: the rule and the planned writes.

    Reads the stored rules and the recorded quota counts; writes nothing. Flood control is
    not simulated.
    """
    settings = settings or ProcessorKeys()
    rules = await engine.load_rules(conn)
    keywords = OptOutKeywords.build(settings.optout)
    msg = Message(id=0, from_addr=sender, to_addr=to, text=text, channel=channel,
                  connector=connector, at=at or datetime.now(UTC))
    decisions = engine.decide([msg], rules, keywords)
    keys = engine.quota_keys(decisions)
    counts = await engine.quota_counts(conn, keys.values())
    plan = engine.plan_batch(decisions, keywords, counts, set(), keys)
    d, outcome = decisions[0], plan.outcomes[0]
    return {
        "outcome": outcome.outcome,
        "rule": outcome.rule,
        "priority": d.hit.rule.rule.priority if d.hit else None,
        "keyword": d.hit.keyword if d.hit else d.msg.keyword[0],
        "replies": [{"from": r.from_addr, "to": r.to_addr, "category": r.category,
                     "body": r.body} for r in plan.replies],
        "campaign_entries": [{"campaign": e.campaign, "period": e.period_key,
                              "entry_no": counts.get((e.campaign, e.number, e.period_key), 0) + 1}
                             for e in plan.entries],
        "forwards": [{"method": f.method, "url": f.url, "signed": f.secret_ref is not None,
                      "body": f.body.decode() if f.body else None,
                      # the answer's body becomes the reply: from -> to, unless it says otherwise
                      "reply_from_body": ({"from": f.reply["from"], "to": f.reply["to"]}
                                          if f.reply else None)} for f in plan.forwards],
        "suppression_add": [c.scope for c in plan.adds],
        "suppression_remove": [c.scope for c in plan.removes],
        "error": outcome.error,
    }


def _print_test(result: dict[str, Any]) -> None:
    out = sys.stdout
    if result["rule"] is None:
        out.write(f"no rule matches (outcome: {result['outcome']})\n")
        return
    prio = f" (priority {result['priority']})" if result["priority"] is not None else ""
    out.write(f"rule: {result['rule']}{prio}  outcome: {result['outcome']}  "
              f"keyword: {result['keyword']!r}\n")
    for r in result["replies"]:
        out.write(f"  reply {r['category']} {r['from']} -> {r['to']}: {r['body']}\n")
    for e in result["campaign_entries"]:
        out.write(f"  campaign entry {e['campaign']} period {e['period']} "
                  f"(entry #{e['entry_no']})\n")
    for f in result["forwards"]:
        out.write(f"  forward {f['method']} {f['url']}{' (signed)' if f['signed'] else ''}\n")
        if f["reply_from_body"]:
            reply = f["reply_from_body"]
            out.write(f"    reply from the answer's body {reply['from']} -> {reply['to']}\n")
    for scope in result["suppression_add"]:
        out.write(f"  suppress in scope {scope}\n")
    for scope in result["suppression_remove"]:
        out.write(f"  unsuppress in scope {scope}\n")


# --- command line -----------------------------------------------------------------------------

ACTOR_HELP = "who makes the change, for the audit log (default: $USER)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="smsgw rules", description="Manage processor rules.",
                                epilog=TARGET_EPILOG)
    # The common options go before the subcommand or after it (`import F --config C`): the
    # subcommands' copies default to SUPPRESS, so they never reset one given before.
    add_target_args(p)
    p.add_argument("--actor", default=os.environ.get("USER") or "cli", help=ACTOR_HELP)
    common = argparse.ArgumentParser(add_help=False)
    add_target_args(common, subcommand=True)
    common.add_argument("--actor", default=argparse.SUPPRESS, help=ACTOR_HELP)
    sub = p.add_subparsers(dest="cmd", required=True)

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              epilog=TARGET_EPILOG)

    imp = add("import", "validate a rule file (JSON or TOML) and upsert its rules by name")
    imp.add_argument("file", help="the rule file")
    imp.add_argument("--replace", action="store_true", help="delete rules the file lacks")
    imp.add_argument("--dry-run", action="store_true", help="validate only")
    exp = add("export", "print every rule as re-importable JSON")
    exp.add_argument("-o", "--output", default=None, metavar="FILE",
                     help="write to FILE instead of stdout")
    add("list", "list rules in evaluation order")
    t = add("test", "show which rule fires for a message and what it would do (reads quotas, "
                    "writes nothing)")
    t.add_argument("text", help="the message text")
    t.add_argument("--from", dest="sender", required=True, metavar="NUMBER",
                   help="the sender's number")
    t.add_argument("--to", required=True, metavar="NUMBER", help="the number it was sent to")
    t.add_argument("--channel", default="smpp", choices=["smpp", "http", "cli"],
                   help="how it arrived (%(default)s)")
    t.add_argument("--connector", default=None, help="the connector it arrived on")
    t.add_argument("--at", default=None, help="arrival time (ISO 8601; default now)")
    t.add_argument("--json", action="store_true", help="machine-readable JSON output")
    d = add("delete", "delete a rule by name")
    d.add_argument("name", help="the rule's name")
    return p


def _settings(args: argparse.Namespace) -> tuple[str, dict[str, Any], ProcessorKeys]:
    """The database URL, its connect arguments (the configured password, which goes with the
    config's URL only) and the processor keys."""
    target = AdminConfig.load(args)
    keys = ProcessorKeys()
    if args.cmd == "test":  # the processor's own keys (opt-out words, quotas) matter here
        keys = load_config("processor", ProcessorKeys, path=target.config_path(),
                           require_database=False).daemon
    url, connect_kwargs = target.database()
    return url, connect_kwargs, keys


async def _run(args: argparse.Namespace, url: str, connect_kwargs: dict[str, Any],
               settings: ProcessorKeys) -> int:
    conn = await db.connect(url, **connect_kwargs)
    try:
        return await _dispatch(conn, args, settings)
    finally:
        await conn.close()


async def _dispatch(conn: asyncpg.Connection, args: argparse.Namespace,
                    settings: ProcessorKeys) -> int:
    out = sys.stdout
    if args.cmd == "import":
        rules = read_rule_file(args.file)
        if args.dry_run:
            out.write(f"{len(rules)} rule(s) valid\n")
            return 0
        res = await import_rules(conn, rules, actor=args.actor, replace=args.replace)
        out.write(f"created {len(res.created)}, updated {len(res.updated)}, "
                  f"unchanged {len(res.unchanged)}, deleted {len(res.deleted)}\n")
        return 0
    if args.cmd == "export":
        text = json.dumps({"rules": await export_rules(conn)}, indent=2, ensure_ascii=False)
        if args.output:
            Path(args.output).write_text(text + "\n", "utf-8")  # noqa: ASYNC240 - a CLI
        else:
            out.write(text + "\n")
        return 0
    if args.cmd == "list":
        for r in (await engine.load_rules(conn)).rules:
            m = r.rule.match
            out.write(f"{r.rule.priority:>6}  {r.rule.name:<30} "
                      f"{'default ' if r.rule.default else ''}to={','.join(m.to or ['*'])} "
                      f"keyword={','.join(m.keyword or ['*'])} "
                      f"actions={','.join(a.type for a in r.rule.actions)}\n")
        return 0
    if args.cmd == "delete":
        found = await delete_rule(conn, args.name, actor=args.actor)
        out.write("deleted\n" if found else f"no rule named {args.name!r}\n")
        return 0 if found else 1
    at = datetime.fromisoformat(args.at) if args.at else None
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    result = await test_message(conn, text=args.text, sender=args.sender, to=args.to,
                                channel=args.channel, connector=args.connector, at=at,
                                settings=settings)
    if args.json:
        out.write(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    else:
        _print_test(result)
    return 0 if result["rule"] is not None else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `smsgw rules`; returns the exit code."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        url, connect_kwargs, settings = _settings(args)
    except ConfigError as exc:
        for e in exc.errors:
            sys.stderr.write(f"{e}\n")
        return EX_CONFIG
    try:
        return asyncio.run(_run(args, url, connect_kwargs, settings))
    except RuleError as exc:
        for e in exc.errors:
            sys.stderr.write(f"{e}\n")
        return EX_DATAERR
    except FileNotFoundError as exc:
        sys.stderr.write(f"{exc.filename}: file not found\n")
        return EX_DATAERR
    except db.CONNECTION_ERRORS as exc:
        sys.stderr.write(f"database unavailable: {exc} (is it running? --database-url URL or "
                         "[database] url names the database; next to `smsgw up`, up must be "
                         "running)\n")
        return EX_UNAVAILABLE
    except asyncpg.InvalidAuthorizationSpecificationError as exc:  # wrong password or role
        sys.stderr.write(f"database refused the login: {exc} (check [database] password_file "
                         "or password_env, or the password in --database-url)\n")
        return EX_CONFIG


if __name__ == "__main__":
    sys.exit(main())
