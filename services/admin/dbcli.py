"""What the admin commands (accounts, status, trace, requeue, send, erase) share: finding the
database and the secrets, running one async body, printing human text or JSON.

The options `--config`, `--database-url` and `--data-dir` and how they resolve are
`shared.runtime.admin_config` (also used by `smsgw rules`, `migrate` and `check-config`): the
database URL comes from `--database-url`, else the config (`--config`, default `smsgw.toml`
when present, and `SMSGW_*`), else the config `smsgw up` wrote into its data folder
(`--data-dir`, default `./.smsgw`) — so `smsgw trace 42` works next to a running `smsgw up`.
The password comes with the URL's config (`[database] password_file` / `password_env`:
`smsgw up` names its embedded Postgres' password file), never inside the URL; the server
secret likewise (`[security] server_secret_file`: up's `server-secret`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import asyncpg
import orjson

from smsgw.shared.core import db
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.admin_config import (  # re-exported for the admin commands
    TARGET_EPILOG,
    AdminConfig,
    add_target_args,
    data_dir,
)
from smsgw.shared.runtime.config import redact_url

__all__ = ["TARGET_EPILOG", "data_dir"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78


class UsageError(Exception):
    """A command-line mistake; main() prints it and exits 2."""


def add_common_args(parser: argparse.ArgumentParser, *, json_flag: bool = True,
                    subcommand: bool = False) -> None:
    """Add --config, --database-url, --data-dir (and --json) to a command's parser;
    `subcommand=True` for a subcommand's parser (see `admin_config.add_target_args`)."""
    add_target_args(parser, subcommand=subcommand)
    if json_flag:
        parser.add_argument("--json", action="store_true",
                            default=argparse.SUPPRESS if subcommand else False,
                            help="machine-readable JSON output")


def database_url(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> str:
    """Resolve the database URL for an admin command (see the module docstring)."""
    return database_target(args, env)[0]


def database_target(args: argparse.Namespace,
                    env: Mapping[str, str] = os.environ) -> tuple[str, dict[str, Any]]:
    """The database URL and the asyncpg keyword arguments (the password) that go with it."""
    return AdminConfig.load(args, env).database()


def server_secret(args: argparse.Namespace, env: Mapping[str, str] = os.environ) -> bytes:
    """`[security] server_secret` as the daemons have it; ConfigError naming the fix."""
    return AdminConfig.load(args, env).server_secret().get_secret_value().encode()


def report_config_error(exc: ConfigError) -> int:
    """Print every problem of `exc` on stderr; the exit code 78."""
    for err in exc.errors:
        sys.stderr.write(f"{err}\n")
    return EXIT_CONFIG


def run(body: Callable[[asyncpg.Connection], Awaitable[int]], args: argparse.Namespace) -> int:
    """Connect, run `body(conn)`, close; map config and connection errors to exit codes."""
    try:
        url, connect_kwargs = database_target(args)
    except ConfigError as exc:
        return report_config_error(exc)

    async def main() -> int:
        conn = await db.connect(url, timeout=10, **connect_kwargs)
        try:
            return await body(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(main())
    except UsageError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return EXIT_USAGE
    except asyncpg.InvalidAuthorizationSpecificationError as exc:  # wrong password or role
        sys.stderr.write(f"error: database {redact_url(url)} refused the login: {exc} (check "
                         "[database] password_file or password_env in the config, or the "
                         "password in --database-url)\n")
        return EXIT_FAILURE
    except db.CONNECTION_ERRORS as exc:
        sys.stderr.write(f"error: database {redact_url(url)} unreachable: {exc} (is it running? "
                         "--database-url URL or [database] url names the database; next to "
                         "`smsgw up`, up must be running)\n")
        return EXIT_FAILURE
    except db.DATABASE_ERRORS as exc:
        sys.stderr.write(f"error: database: {exc}\n")
        return EXIT_FAILURE


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, bytes | memoryview):
        return bytes(obj).decode("utf-8", "replace")
    if isinstance(obj, dt.timedelta):
        return obj.total_seconds()
    raise TypeError(type(obj).__name__)


def dump_json(data: Any) -> None:
    """Write `data` as indented JSON (datetimes as ISO 8601) to stdout."""
    sys.stdout.write(orjson.dumps(data, default=_default,
                                  option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())
    sys.stdout.write("\n")


def fmt_age(seconds: float | None) -> str:
    """A short human age: 4s, 3m12s, 2h05m, 3d04h; '-' for None."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def fmt_time(value: dt.datetime | None) -> str:
    """A timestamp as UTC with milliseconds, '-' for None."""
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned text table with a header line."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in rows]
    return "\n".join(lines)


def record_dict(rec: asyncpg.Record | None) -> dict[str, Any] | None:
    """An asyncpg record as a plain dict (None stays None)."""
    return None if rec is None else dict(rec.items())
