"""Database access shared by every daemon: pool creation, migrations and the schema check.

Migrations are numbered, forward-only `.sql` files in the `migrations` package
(`0001_queue.sql`, ...). `migrate()` applies the missing ones in order under a session advisory
lock, so several daemons starting at once are safe, and records each in `schema_migrations`.
A file whose first line is `-- smsgw: no-transaction` runs statement by statement outside a
transaction (for `CREATE INDEX CONCURRENTLY`); the others run in one transaction each.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import re
import weakref
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import asyncpg
import orjson

from smsgw.shared.core.errors import SchemaVersionError

MIGRATION_LOCK_KEY = 0x736D7367_0001  # 'smsg' + 1: the advisory lock held while migrating
# A daemon accepts a schema up to this many versions newer than its own newest migration:
# migrations are written expand-then-contract, so the previous release keeps running while the
# next one's expand steps are applied. A contract step that breaks old daemons must raise the
# floor by shipping a migration that old daemons do not know AND documenting it in the README.
SCHEMA_COMPATIBLE_AHEAD = 10

# What "the database is not reachable" looks like from asyncpg and the socket layer. The
# receiver answers 503 (retry later) to these, never 401 or 500; a CLI names the URL it tried.
CONNECTION_ERRORS: Final[tuple[type[BaseException], ...]] = (
    OSError,  # refused, reset, unreachable (ConnectionError is a subclass)
    TimeoutError,  # pool.acquire(timeout=…) or connect timeout
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.AdminShutdownError,
    asyncpg.InterfaceError,  # connection closed under us
    # a query issued while the server's termination of the connection is being read ("cannot
    # switch to state …"): the connection is gone all the same (seen with pg_terminate_backend)
    asyncpg.exceptions._base.InternalClientError,
    asyncpg.ReadOnlySQLTransactionError,  # a failed-over standby
    # no host of a multi-host URL takes writes (all standbys, or the primary is being
    # promoted): an InternalClientError too, named for the reader
    asyncpg.exceptions.TargetServerAttributeNotMatched,
)
# A failed round trip of any kind: unreachable (above) or an error the server raised. What a
# loop boundary catches, logs and retries after a pause, so a consumer outlives an outage.
DATABASE_ERRORS: Final[tuple[type[BaseException], ...]] = (*CONNECTION_ERRORS,
                                                           asyncpg.PostgresError)
_NAME_RE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# The session attributes of a server smsgw may use: every daemon writes, so only a primary.
WRITABLE_SESSION_ATTRS: Final = ("read-write", "primary")
# Is this session on a server that takes writes now? (the readiness check and the primary
# watch: a connection made to a primary stays open when the server is fenced read-only)
WRITABLE_SQL = ("SELECT NOT pg_is_in_recovery()"
                " AND current_setting('default_transaction_read_only') = 'off'")


def primary_url(url: str) -> str:
    """`url` with `target_session_attrs=read-write` added when it names none.

    With several hosts (`postgresql://a:5432,b:5432/smsgw`) asyncpg tries them in order and
    keeps the first that takes writes, on every new connection: so a pool, a LISTEN connection
    or a bind-slot connection opened after a failover finds the new primary, and never settles
    on a standby (asyncpg's default, `any`, would take the first host that answers). Raises
    ValueError when the URL asks for a server that may refuse writes (`standby`, `read-only`,
    `prefer-standby`, `any`).
    """
    parts = urlsplit(url)
    attrs = [v for k, v in parse_qsl(parts.query, keep_blank_values=True)
             if k == "target_session_attrs"]
    if attrs:
        if attrs[-1] not in WRITABLE_SESSION_ATTRS:
            raise ValueError(f"target_session_attrs={attrs[-1]}: smsgw writes, so it needs "
                             f"read-write or primary (or leave it out: read-write is the "
                             f"default)")
        return url
    # appended as text: urlunsplit would drop the empty host of "postgresql:///db?host=/run"
    sep = "&" if parts.query else ("" if url.endswith("?") else "?")
    return f"{url}{sep}target_session_attrs=read-write"


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version number, name and SQL."""

    version: int
    name: str
    sql: str

    @property
    def transactional(self) -> bool:
        """False when the file asks to run outside a transaction."""
        return not self.sql.lstrip().startswith("-- smsgw: no-transaction")


def load_migrations() -> list[Migration]:
    """Read the migration files shipped in the `migrations` package, in version order."""
    found = []
    for entry in importlib.resources.files("smsgw.migrations").iterdir():
        m = _NAME_RE.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda mig: mig.version)
    return found


def schema_needed() -> int:
    """The schema version this code needs: its newest migration."""
    migrations = load_migrations()
    return migrations[-1].version if migrations else 0


async def _init_connection(conn: asyncpg.Connection) -> None:
    # No JIT compilation in smsgw's sessions: its statements are short queue statements, and
    # when the planner over-estimates one (a generic plan, fresh statistics) past
    # jit_above_cost, Postgres compiles it at every execution: 50-100 ms each. Measured: the
    # sender's Kannel dlr-url lookup cost 105 server-µs per message with JIT (88 ms per call),
    # under 4 without; the whole `bench sendsms --status-callback` 647 -> 563 CPU-µs/msg. A
    # session SET (not a startup parameter, which connection poolers refuse).
    await conn.execute("SET jit = off")
    # jsonb/json columns go in and out as Python objects, encoded with orjson (fast, strict).
    for typ in ("jsonb", "json"):
        await conn.set_type_codec(
            typ, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads,
            schema="pg_catalog",
        )


# Pooled connections that were left with session state (a session advisory lock): the pool
# runs asyncpg's full reset on them at release. See `mark_session_state`.
_SESSION_STATE: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


def mark_session_state(conn: Any) -> None:
    """Say that `conn` (a pooled connection or its proxy) now holds session state — a session
    advisory lock, a session SET — so its release runs the full reset (advisory locks
    released, settings reset). Call it before taking the lock."""
    _SESSION_STATE.add(getattr(conn, "_con", None) or conn)


async def _reset(conn: asyncpg.Connection) -> None:
    # asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    # RESET ALL` on every release: one round trip per transaction, a few thousand a second at
    # a promotion's rates. smsgw leaves no session state on pooled connections except where
    # `mark_session_state` says so (LISTEN has its own connection, settings are SET LOCAL).
    # An open transaction is rolled back by asyncpg before this runs.
    if conn in _SESSION_STATE:
        _SESSION_STATE.discard(conn)
        await conn.execute(conn.get_reset_query() + ";\nSET jit = off")  # RESET ALL undid it


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      **kwargs: Any) -> asyncpg.Pool:
    """Open an asyncpg pool, to a primary (`primary_url`), whose connections decode
    json/jsonb with orjson. Every new connection (also one replacing a broken one after a
    failover) goes through the URL's host list again.

    `min_size`/`max_size` bound the connections this process holds; the pool size is a limit
    (acquire waits), never an unbounded queue. A released connection is reset only if it was
    marked with `mark_session_state` (see `_reset`). `kwargs` go to asyncpg (e.g. `password`,
    which never belongs in `dsn`: see `DatabaseSettings.connect_kwargs`).
    """
    return await asyncpg.create_pool(primary_url(dsn), min_size=min_size, max_size=max_size,
                                     init=_init_connection, reset=_reset,
                                     connect=_connect_hosts, **kwargs)


async def connect(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """Open one dedicated connection, to a primary (`primary_url`), with the pool's codecs."""
    conn = await connect_primary(dsn, **kwargs)
    await _init_connection(conn)
    return conn


async def connect_primary(dsn: str, **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect to the primary among `dsn`'s hosts (`primary_url`, `host_urls`), no
    codecs (the LISTEN connection)."""
    return await _connect_hosts(primary_url(dsn), **kwargs)


def host_urls(url: str) -> list[str]:
    """One URL per host of a multi-host URL (`postgresql://u@a:5432,b:5432/db?…` →
    `postgresql://u@a:5432/db?…`, `postgresql://u@b:5432/db?…`); `[url]` for one host."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return [url]
    head = f"{parts.scheme}://{userinfo}{at}"
    rest = url[len(parts.scheme) + 3 + len(parts.netloc):]
    return [head + host + rest for host in hosts.split(",") if host]


# The host of each multi-host URL that last gave a connection: tried first next time, so after a
# failover only the first new connection pays for the hosts that no longer answer.
_LAST_GOOD: dict[str, int] = {}


async def _connect_hosts(dsn: str, *,
                         timeout: float = 60.0,  # noqa: ASYNC109 - asyncpg.connect's own
                         **kwargs: Any) -> asyncpg.Connection:
    """asyncpg.connect to each host of `dsn` in turn, each with its own `timeout`.

    asyncpg walks a multi-host URL itself, but its `timeout` covers all the hosts together: a
    host that accepts TCP and never answers (a hung or frozen old primary) uses it up, and the
    next host — the new primary — is never tried. libpq's connect_timeout is per host; this is
    that. The host that worked last is tried first. A host that is down, starting, shutting
    down, not a primary or silent moves on to the next; any other error (a wrong password) is
    raised at once. Also the pool's `connect=`.
    """
    urls = host_urls(dsn)
    if len(urls) == 1:
        return await asyncpg.connect(dsn, timeout=timeout, **kwargs)
    first = _LAST_GOOD.get(dsn, 0) % len(urls)
    error: BaseException | None = None
    for i in [first, *(j for j in range(len(urls)) if j != first)]:
        try:
            conn = await asyncpg.connect(urls[i], timeout=timeout, **kwargs)
        except CONNECTION_ERRORS as exc:
            error = exc
            continue
        _LAST_GOOD[dsn] = i
        return conn
    assert error is not None
    raise error


async def current_version(conn: asyncpg.Connection) -> int:
    """The highest applied migration, 0 on an empty database."""
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations"))


async def migrate(dsn: str, *, target: int | None = None, **connect_kwargs: Any) -> list[str]:
    """Apply the missing migrations (up to `target`, default all); return the names applied.

    Runs under a session advisory lock so concurrent callers wait for each other; the second
    caller then finds nothing left to do. `connect_kwargs` go to asyncpg.connect (`password`:
    `DatabaseSettings.connect_kwargs()`).
    """
    conn = await connect_primary(dsn, **connect_kwargs)
    applied: list[str] = []
    try:
        await _take_migration_lock(conn)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())")
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in load_migrations():
            if mig.version in done or (target is not None and mig.version > target):
                continue
            await _apply(conn, mig)
            applied.append(mig.name)
    finally:
        try:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        finally:
            await conn.close()
    return applied


async def _take_migration_lock(conn: asyncpg.Connection) -> None:
    # Not pg_advisory_lock(): a session blocked inside it has an open transaction snapshot,
    # and a `CREATE INDEX CONCURRENTLY` in the lock holder's migration waits for every such
    # snapshot -> deadlock. Trying between short pauses keeps the waiter out of a transaction.
    delay = 0.05
    while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MIGRATION_LOCK_KEY):
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def _apply(conn: asyncpg.Connection, mig: Migration) -> None:
    record = "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)"
    if mig.transactional:
        async with conn.transaction():
            await conn.execute(mig.sql)
            await conn.execute(record, mig.version, mig.name)
        return
    # Non-transactional: one statement at a time (CREATE INDEX CONCURRENTLY refuses a
    # transaction block). Statements are separated by a line holding only ';'-terminated SQL.
    for stmt in _split_statements(mig.sql):
        await conn.execute(stmt)
    await conn.execute(record, mig.version, mig.name)


def _split_statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    # A ';' inside a $$-quoted body (a function's) does not end the statement.
    out, current = [], ""
    for i, piece in enumerate(body.split("$$")):
        if i % 2:
            current += "$$" + piece + "$$"
            continue
        head, *rest = piece.split(";")
        current += head
        for part in rest:
            out.append(current)
            current = part
    out.append(current)
    return [s.strip() for s in out if s.strip()]


async def check_schema(conn: asyncpg.Connection, daemon: str) -> int:
    """Refuse to run on a schema older than needed or newer than declared compatible.

    Returns the current version; raises `SchemaVersionError` with an operator-facing message.
    """
    have = await current_version(conn)
    need = schema_needed()
    newest_ok = need + SCHEMA_COMPATIBLE_AHEAD
    if have < need:
        raise SchemaVersionError(
            f"{daemon}: database schema is at version {have}, this release needs {need}; "
            f"run `smsgw migrate` first")
    if have > newest_ok:
        raise SchemaVersionError(
            f"{daemon}: database schema is at version {have}, newer than this release supports "
            f"(up to {newest_ok}); upgrade smsgw")
    return have
