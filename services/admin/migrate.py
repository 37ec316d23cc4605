"""`smsgw migrate [--config PATH] [--target N] [--dry-run]`: apply the database migrations.

Safe to run while daemons run and from several hosts at once: `shared.core.db.migrate` holds an
advisory lock, so a second caller waits and then finds nothing to do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from smsgw.shared.core import db
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.admin_config import TARGET_EPILOG, AdminConfig, add_target_args
from smsgw.shared.runtime.config import redact_url

EXIT_CONFIG = 78


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smsgw migrate", description="Apply the numbered migrations in migrations/.",
        epilog="The database comes from --database-url, [database] url of the config or "
               "SMSGW_DATABASE_URL. " + TARGET_EPILOG)
    add_target_args(parser)
    parser.add_argument("--target", type=int, metavar="N",
                        help="apply migrations up to version N only (default: all)")
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would be applied, change nothing")
    return parser


async def _pending(dsn: str, target: int | None,
                   connect_kwargs: dict[str, Any]) -> tuple[int, list[db.Migration]]:
    conn = await db.connect_primary(dsn, **connect_kwargs)
    try:
        current = await db.current_version(conn)
        done = set()
        if await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL"):
            done = {r["version"] for r in await conn.fetch(
                "SELECT version FROM schema_migrations")}
    finally:
        await conn.close()
    todo = [m for m in db.load_migrations()
            if m.version not in done and (target is None or m.version <= target)]
    return current, todo


async def _run(dsn: str, target: int | None, dry_run: bool,
               connect_kwargs: dict[str, Any]) -> int:
    current, todo = await _pending(dsn, target, connect_kwargs)
    out = sys.stdout
    out.write(f"database {redact_url(dsn)}: schema at version {current}, "
              f"this release has {db.schema_needed()}\n")
    if not todo:
        out.write("nothing to apply: up to date\n")
        return 0
    if dry_run:
        out.write("would apply:\n" + "".join(f"  {m.name}\n" for m in todo))
        return 0
    applied = await db.migrate(dsn, target=target, **connect_kwargs)
    out.write("applied:\n" + "".join(f"  {name}\n" for name in applied) if applied
              else "nothing applied: another migrate ran them first\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `smsgw migrate`; exit 0 on success, 1 on a database error, 78 on a config error."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        url, connect_kwargs = AdminConfig.load(args, os.environ).database()
    except ConfigError as exc:
        for line in exc.errors:
            sys.stderr.write(f"smsgw migrate: config error: {line}\n")
        return EXIT_CONFIG
    try:
        return asyncio.run(_run(url, args.target, args.dry_run, connect_kwargs))
    except db.DATABASE_ERRORS as exc:
        sys.stderr.write(f"smsgw migrate: database error: {type(exc).__name__}: {exc}\n")
        return 1
