"""`smsgw up`: the whole gateway on one machine with one command.

What it does, in order:

1. **Database.** With no database configured (no `--config` / `smsgw.toml` naming one, no
   `SMSGW_DATABASE_URL`), it runs an embedded Postgres from the system's binaries in
   `DATA_DIR/pg` (default `./.smsgw/pg`) on 127.0.0.1, with **fsync on** (the data is
   durable; the test suite's throwaway clusters are the only ones with fsync off). A second
   run reuses the folder and its data. Every connection needs the generated password of the
   `postgres` role (scram-sha-256), kept in `DATA_DIR/pg-password` (0600); the generated config
   names that file (`[database] password_file`). A folder from an older release that trusted
   every local user is converted on the next run. The data folder is 0700, its logs 0600.
2. **Schema.** `shared.core.db.migrate` (the same code as `smsgw migrate`).
3. **Demo data, first run only.** An account `demo` with an API key (printed, and kept in
   `DATA_DIR/demo-api-key`, mode 0600) and a small rule set (`demo_rules.json`, imported with
   `smsgw rules import`).
4. **Config.** When no connector is configured it also runs the SMSC simulator
   (`smsgw smsc-sim`) and writes `DATA_DIR/smsgw.toml` (regenerated each run: your own config
   plus the database URL, the simulator connector and the server secret file) for the daemons.
   Only while the simulator is the sole SMSC (no connector configured) does it add
   `[webhooks] allowed_networks = ["127.0.0.1/32", "::1/128"]`, so the demo's callbacks can
   reach an application on this machine; with real connectors the SSRF guard keeps its
   default (public addresses only) unless your config lists networks. It says which.
5. **Daemons.** receiver, processor and sender run as supervised child processes
   (`python -m smsgw.services.cli <daemon> --config … --instance N`, the code `smsgw <daemon>`
   runs);
   `--processors N --senders N` start several instances. Each child gets its ports through
   the environment (`SMSGW_<DAEMON>__METRICS_PORT`, `SMSGW_RECEIVER__HTTP_PORT`) and a notify
   socket of its own, so `up` knows when it sent READY=1, exactly as systemd would.
   Logs go to `DATA_DIR/logs/<daemon>-<n>.log` (one JSON line per event; folder 0700, files
   0600, also fixed on existing ones).
6. **Supervision.** A child that exits on its own is restarted with exponential backoff (0.5 s
   doubling to 30 s, reset after it ran a minute); exit 78 (bad config) is not retried and stops
   everything. SIGHUP is passed to every daemon (reload). SIGINT (Ctrl-C) or SIGTERM stops the
   children in order — receivers first (stop intake), then processors, senders, the simulator,
   and Postgres last — each with SIGTERM and its drain deadline; a second Ctrl-C kills what is
   left at once. Children run in their own process group (the terminal's Ctrl-C reaches only
   `up`, which keeps the order) and get SIGTERM if `up` itself dies (PR_SET_PDEATHSIG).

`DATA_DIR/endpoints.json` lists the API, the metrics URLs and the children's pids (read by
`smsgw status` and the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import shlex
import signal
import socket
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from smsgw.shared.core import db
from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, free_port
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.admin_config import (
    DEFAULT_DATA_DIR,
    UP_CONFIG_NAME,
    UP_PG_PASSWORD,
    UP_SERVER_SECRET,
)
from smsgw.shared.runtime.config import (
    ESME_PORT_BASE,
    METRICS_PORT_BASE,
    RECEIVER_HTTP_PORT_BASE,
    redact_url,
    resolve_secret,
)

DATABASE_NAME = "smsgw"
DEMO_ACCOUNT = "demo"
# What the demo (simulator only) lets callbacks reach: this machine's loopback, nothing else.
DEMO_ALLOWED_NETWORKS = ("127.0.0.1/32", "::1/128")
SIM_CONNECTOR = "sim"
SIM_SYSTEM_ID = "smsgw"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0  # per stage; above each daemon's drain_s plus its close timeouts
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 30.0
BACKOFF_RESET_AFTER_S = 60.0
METRICS_OFFSET = {"receiver": 1, "processor": 2, "sender": 3, "reporter": 4}
# Stop order (docs/ARCHITECTURE.md, "The daemon contract": stop intake first); start order is the
# reverse.
STOP_ORDER = ("receiver", "processor", "sender", "reporter", "smsc-sim")
_PR_SET_PDEATHSIG = 1


# --- options ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Options:
    """The parsed command line."""

    data_dir: Path
    config: Path | None
    receivers: int
    processors: int
    senders: int
    api_port: int
    metrics_port_base: int
    smpp_port: int
    pg_port: int
    sim: bool | None
    demo: bool
    log_level: str | None
    stop_timeout_s: float
    esme_port: int = ESME_PORT_BASE  # the receivers' SMPP server for ESMEs (+1 per receiver)
    reporters: int = 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw up",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n", 1)[1].split("`DATA_DIR/endpoints.json`")[0],
        epilog="Ports: the API on --api-port (+1 per extra receiver), each daemon's /metrics "
               "on --metrics-port-base + 10 x (instance - 1) + n (n = 1 receiver, 2 "
               "processor, 3 sender, 4 reporter), the simulator's SMPP on --smpp-port."
               " Use --port-offset "
               "to shift them all (tests run several `up`s side by side).")
    p.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR),
                   help="data folder: embedded Postgres, generated config, demo key, logs "
                        "(default: %(default)s; a second run reuses it)")
    p.add_argument("--config", type=Path, default=None,
                   help="your config file (default: ./smsgw.toml when present); without a "
                        "database in it the embedded Postgres is used, without connectors the "
                        "simulator")
    p.add_argument("--receivers", type=int, default=1, help="receiver instances (1)")
    p.add_argument("--processors", type=int, default=1, help="processor instances (1)")
    p.add_argument("--senders", type=int, default=1, help="sender instances (1)")
    p.add_argument("--reporters", type=int, default=1,
                   help="reporter instances (1); reports go to DATA_DIR/reports unless your "
                        "config sets [reporter] dir")
    p.add_argument("--api-port", type=int, default=RECEIVER_HTTP_PORT_BASE,
                   help=f"receiver API port ({RECEIVER_HTTP_PORT_BASE})")
    p.add_argument("--metrics-port-base", type=int, default=METRICS_PORT_BASE,
                   help=f"metrics ports base ({METRICS_PORT_BASE})")
    p.add_argument("--smpp-port", type=int, default=2775, help="simulator SMPP port (2775)")
    p.add_argument("--esme-port", type=int, default=ESME_PORT_BASE,
                   help=f"the receivers' SMPP server for customer ESMEs ({ESME_PORT_BASE}, "
                        "+1 per extra receiver)")
    p.add_argument("--port-offset", type=int, default=0,
                   help="added to --api-port, --metrics-port-base, --smpp-port and "
                        "--esme-port")
    p.add_argument("--pg-port", type=int, default=0,
                   help="embedded Postgres port (default: a free one)")
    sim = p.add_mutually_exclusive_group()
    sim.add_argument("--sim", dest="sim", action="store_true", default=None,
                     help="always run the simulator")
    sim.add_argument("--no-sim", dest="sim", action="store_false",
                     help="never run the simulator")
    p.add_argument("--no-demo", dest="demo", action="store_false",
                   help="do not create the demo account, key and rules")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                   help="the daemons' log level (default: the config's)")
    p.add_argument("--stop-timeout", type=float, default=STOP_TIMEOUT_S,
                   help="seconds each stage may take to stop before it is killed (%(default)s)")
    return p


def parse_options(argv: list[str]) -> Options:
    """Parse and check the command line."""
    a = _parser().parse_args(argv)
    for name in ("receivers", "processors", "senders", "reporters"):
        if getattr(a, name) < 1:
            raise SystemExit(f"smsgw up: --{name} must be at least 1")
    config = a.config
    if config is None and Path("smsgw.toml").is_file():
        config = Path("smsgw.toml")
    return Options(
        data_dir=a.data_dir.resolve(), config=config.resolve() if config else None,
        receivers=a.receivers, processors=a.processors, senders=a.senders,
        reporters=a.reporters,
        api_port=a.api_port + a.port_offset,
        metrics_port_base=a.metrics_port_base + a.port_offset,
        smpp_port=a.smpp_port + a.port_offset, pg_port=a.pg_port, sim=a.sim, demo=a.demo,
        log_level=a.log_level, stop_timeout_s=a.stop_timeout,
        esme_port=a.esme_port + a.port_offset)


# --- config -------------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a valid TOML basic string
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def toml_dumps(data: Mapping[str, Any]) -> str:
    """Write a config dict as TOML: scalars, [tables], [[arrays of tables]], inline the rest."""
    lines: list[str] = []

    def table(prefix: str, node: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in node.items() if not _is_table(v) and not _is_aot(v)}
        for k, v in scalars.items():
            lines.append(f"{json.dumps(k)} = {_toml_value(v)}")
        for k, v in node.items():
            name = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
            if _is_table(v):
                lines.extend(["", f"[{name}]"])
                table(name, v)
            elif _is_aot(v):
                for item in v:
                    lines.extend(["", f"[[{name}]]"])
                    table(name, item)

    table("", data)
    return "\n".join(lines).lstrip("\n") + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, dict)


def _is_aot(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


@dataclass(slots=True)
class Plan:
    """What this run starts and the config file the daemons get."""

    config_path: Path
    embedded_pg: bool
    sim: bool
    database_url: str | None
    user_config: dict[str, Any] = field(default_factory=dict)
    demo_only: bool = False  # the simulator is the only SMSC: nothing real is configured


def load_user_config(opts: Options) -> dict[str, Any]:
    """The user's config file as a dict ({} without one)."""
    if opts.config is None:
        return {}
    with open(opts.config, "rb") as fh:
        return tomllib.load(fh)


def make_plan(opts: Options, env: Mapping[str, str]) -> Plan:
    """Decide on the embedded Postgres and the simulator from the user's config."""
    user = load_user_config(opts)
    db_url = env.get("SMSGW_DATABASE_URL") or user.get("database", {}).get("url")
    has_connectors = bool(user.get("connectors")) or "SMSGW_CONNECTORS" in env
    sim = (not has_connectors) if opts.sim is None else opts.sim
    generated = opts.data_dir / UP_CONFIG_NAME
    return Plan(config_path=generated, embedded_pg=db_url is None, sim=sim,
                database_url=db_url, user_config=user, demo_only=sim and not has_connectors)


def generated_config(plan: Plan, opts: Options, *, database_url: str, secret_file: Path,
                     say: Callable[[str], None] | None = None,
                     password_file: Path | None = None) -> dict[str, Any]:
    """The user's config plus what `up` supplies: database (the embedded Postgres' URL and
    the file holding its password, never the password), simulator connector, secret."""
    cfg: dict[str, Any] = json.loads(json.dumps(plan.user_config))  # deep copy
    if plan.embedded_pg:
        database = cfg.setdefault("database", {})
        database["url"] = database_url
        if password_file is not None:
            database.pop("password_env", None)
            database["password_file"] = str(password_file)
    security = cfg.setdefault("security", {})
    if not (security.get("server_secret_env") or security.get("server_secret_file")):
        security["server_secret_file"] = str(secret_file)
    if plan.sim and not cfg.get("connectors"):
        cfg["connectors"] = [{"name": SIM_CONNECTOR, "host": "127.0.0.1",
                              "port": opts.smpp_port, "system_id": SIM_SYSTEM_ID}]
    # the reports area next to the rest of up's data, unless the user's config names one
    cfg.setdefault("reporter", {}).setdefault("dir", str(opts.data_dir / "reports"))
    webhooks = cfg.setdefault("webhooks", {})
    if plan.demo_only and "allowed_networks" not in webhooks:
        # The local demo's applications run on this machine: let callbacks reach loopback
        # only, and only while the simulator is the sole SMSC (never with real connectors).
        webhooks["allowed_networks"] = list(DEMO_ALLOWED_NETWORKS)
        if say:
            say(f"webhooks: allowed_networks = {', '.join(DEMO_ALLOWED_NETWORKS)} for the local "
                "demo (callbacks to applications on this machine); not set when connectors "
                "are configured")
    elif say and "allowed_networks" not in webhooks:
        say("webhooks: callbacks may reach public addresses only; list your applications' "
            "networks in [webhooks] allowed_networks")
    return cfg


def write_config(path: Path, cfg: Mapping[str, Any]) -> None:
    """Write the generated config file."""
    path.write_text("# Generated by `smsgw up` on every run: edit your own config and pass "
                    "--config.\n" + toml_dumps(cfg))


def write_private(path: Path, text: str) -> None:
    """Write a file only the owner can read (secrets, keys)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def private_dir(path: Path) -> Path:
    """Create `path` 0700, or take an existing one back to 0700 (older releases left the data
    folder 0755, or 0701 when run as root). Group search alone is left: as root, the ACL entry
    that lets the Postgres server's user reach its cluster shows as group x."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077 not in (0, 0o010):
        os.chmod(path, 0o700)
    return path


def open_private_log(path: Path) -> Any:
    """Open a log file for appending, created 0600; an existing one is made 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


def logs_dir(data_dir: Path) -> Path:
    """`DATA_DIR/logs` (0700), where the children's logs go; existing log files made 0600."""
    logs = private_dir(data_dir / "logs")
    for old in logs.glob("*.log"):
        if old.is_file() and old.stat().st_mode & 0o077:
            os.chmod(old, 0o600)
    return logs


def server_secret(data_dir: Path) -> Path:
    """The data folder's server secret file (created once, 256 random bits)."""
    path = data_dir / UP_SERVER_SECRET
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32) + "\n")
    return path


# --- database -----------------------------------------------------------------------------

def start_embedded(opts: Options, say: Callable[[str], None]) -> EmbeddedPostgres:
    """Start (or reuse, when a previous run left it running) the embedded cluster."""
    pg = EmbeddedPostgres(opts.data_dir / "pg", port=opts.pg_port or free_port(), fsync=True,
                          password_file=opts.data_dir / UP_PG_PASSWORD)
    done = pg.secure()  # a cluster from an older release that trusted everyone: converted
    if done:
        say(f"postgres: {done}")
    if pg.initialised() and pg.running():
        pg.ensure_reachable()
        pg.port = _running_port(pg.datadir) or pg.port
        say(f"postgres: reusing the server already running in {pg.datadir} (port {pg.port})")
        return pg
    fresh = not pg.initialised()
    pg.start()
    for folder in pg.granted:
        say(f"postgres: the server runs as {pg.user!r} (never as root), which could not reach "
            f"{pg.datadir}: gave that user alone search (x) permission on {folder} with an ACL "
            f"entry (see `getfacl {folder}`; undo with `setfacl -x u:{pg.user} {folder}`)")
    say(f"postgres: {'created' if fresh else 'started'} {pg.datadir} on 127.0.0.1:{pg.port} "
        f"(embedded, fsync on, password authentication; password in {pg.pw_file})")
    return pg


def _running_port(datadir: Path) -> int | None:
    # postmaster.pid line 4 is the port the running server listens on.
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, IndexError, ValueError):
        return None


def user_database_password(plan: Plan, env: Mapping[str, str]) -> dict[str, Any]:
    """asyncpg's `password` for the user's own database, from `[database] password_env` /
    `password_file` (or their SMSGW_DATABASE__* overrides), as the daemons will read it."""
    section = plan.user_config.get("database", {})
    env_name = env.get("SMSGW_DATABASE__PASSWORD_ENV", section.get("password_env"))
    file_path = env.get("SMSGW_DATABASE__PASSWORD_FILE", section.get("password_file"))
    try:
        secret = resolve_secret(env_name, file_path, env)
    except ValueError as exc:
        raise ConfigError([f"database: {exc}"]) from None
    return {"password": secret.get_secret_value} if secret is not None else {}


async def ensure_database(admin_dsn: str, name: str, **connect_kwargs: Any) -> None:
    """CREATE DATABASE `name` unless it exists (`connect_kwargs`: the password)."""
    conn = await asyncpg.connect(admin_dsn, **connect_kwargs)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def read_secret(path: Path) -> bytes:
    """A secret file's content without its trailing newline."""
    return path.read_text("utf-8").rstrip("\r\n").encode()


async def ensure_demo_account(dsn: str, secret: bytes, key_file: Path,
                              **connect_kwargs: Any) -> str:
    """Create the demo account (once) and a key for it; store the key in `key_file`."""
    from smsgw.shared.domain import apikeys

    conn = await db.connect(dsn, **connect_kwargs)
    try:
        account_id = await conn.fetchval(
            "INSERT INTO accounts (name) VALUES ($1) ON CONFLICT (name) DO UPDATE"
            " SET updated_at = now() RETURNING id", DEMO_ACCOUNT)
        key, _ = await apikeys.create_key(conn, secret, account_id, actor="smsgw up")
    finally:
        await conn.close()
    write_private(key_file, key + "\n")
    return key


# --- children -----------------------------------------------------------------------------

def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: SIGTERM us when `up` dies, even by SIGKILL.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass(eq=False)
class Child:
    """One supervised process: a daemon instance or the simulator."""

    daemon: str
    instance: int
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    ready_port: int | None = None  # readiness by TCP connect instead of READY=1
    proc: asyncio.subprocess.Process | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: float = 0.0
    restarts: int = 0
    notify_name: str = field(default_factory=lambda: f"smsgw-up-{uuid.uuid4().hex[:12]}")
    _sock: socket.socket | None = None

    @property
    def name(self) -> str:
        """e.g. sender@2."""
        return f"{self.daemon}@{self.instance}"

    def open_notify_socket(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the child's abstract notify socket and read READY=1 etc. from it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        sock.bind("\0" + self.notify_name)
        sock.setblocking(False)
        self._sock = sock
        loop.add_reader(sock.fileno(), self._on_notify)

    def close_notify_socket(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop reading and close the notify socket."""
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _on_notify(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(BlockingIOError):
            while True:
                data = self._sock.recv(4096).decode("utf-8", "replace")
                if "READY=1" in data.split("\n"):
                    self.ready.set()

    def last_error(self, tail_bytes: int = 65536) -> str | None:
        """The last error the child logged (event name and exception), for the operator's
        terminal when it did not start; None when its log holds none. Logs hold no secrets."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - tail_bytes))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return None
        for line in reversed(lines):
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict) or event.get("level") not in ("error", "critical"):
                continue
            text = str(event.get("event", "error"))
            if event.get("error"):
                text += f": {event['error']}"
            exc = event.get("exception")
            if isinstance(exc, list) and exc and isinstance(exc[0], dict):
                text += f": {exc[0].get('exc_type', '')}: {exc[0].get('exc_value', '')}"
            return text[:500]
        return None

    def open_log(self) -> Any:
        """The child's log file, opened for appending (stdout and stderr go there); 0600."""
        return open_private_log(self.log_path)

    async def start(self) -> None:
        """Spawn the process (own process group, SIGTERM on parent death), output to its log."""
        env = {**self.env, "NOTIFY_SOCKET": "@" + self.notify_name}
        self.ready.clear()
        log = self.open_log()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log,
                stderr=log, process_group=0, preexec_fn=_set_pdeathsig)
        finally:
            log.close()  # the child holds its own copy of the descriptor
        self.started_at = time.monotonic()

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait for READY=1 (or the TCP port), the process exiting, or the timeout."""
        assert self.proc is not None
        exited = asyncio.ensure_future(self.proc.wait())
        ready = asyncio.ensure_future(self._ready_signal())
        try:
            done, _ = await asyncio.wait({exited, ready}, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (exited, ready):
                t.cancel()
        return ready in done and not ready.cancelled()

    async def _ready_signal(self) -> None:
        if self.ready_port is None:
            await self.ready.wait()
            return
        while True:  # the simulator: ready when its SMPP port accepts a connection
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", self.ready_port)
                w.close()
                self.ready.set()
                return
            except OSError:
                await asyncio.sleep(0.1)

    def signal(self, sig: int) -> None:
        """Send `sig` if the process is running."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)


def daemon_env(base: Mapping[str, str], daemon: str, instance: int,
               opts: Options) -> dict[str, str]:
    """The child's environment: ours, minus systemd's variables, plus its ports."""
    env = {k: v for k, v in base.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
                        "SMSGW_INSTANCE")}
    if daemon in METRICS_OFFSET:
        key = f"SMSGW_{daemon.upper()}__METRICS_PORT"
        env[key] = str(metrics_port(opts, daemon, instance))
    if daemon == "receiver":
        env["SMSGW_RECEIVER__HTTP_PORT"] = str(opts.api_port + instance - 1)
        # the SMPP server for customer ESMEs (README "SMPP server for your customers")
        env["SMSGW_RECEIVER__SMPP_SERVER__ENABLED"] = "true"
        env["SMSGW_RECEIVER__SMPP_SERVER__PORT"] = str(opts.esme_port + instance - 1)
    if opts.log_level and daemon in METRICS_OFFSET:
        env[f"SMSGW_{daemon.upper()}__LOG_LEVEL"] = opts.log_level
    return env


def metrics_port(opts: Options, daemon: str, instance: int) -> int:
    """the metrics port of docs/ARCHITECTURE.md "Ports", from --metrics-port-base."""
    return opts.metrics_port_base + 10 * (instance - 1) + METRICS_OFFSET[daemon]


def cli_argv(*args: str) -> list[str]:
    """Run an smsgw subcommand with this interpreter (the code the `smsgw` script runs)."""
    return [sys.executable, "-m", "smsgw.services.cli", *args]


def daemon_argv(daemon: str, instance: int, config: Path) -> list[str]:
    """The command line of one daemon child (also what docker-compose and systemd run)."""
    return cli_argv(daemon, "--config", str(config), "--instance", str(instance))


SIM_RECEIPT_DELAY_S = "0.5"  # the demo SMSC answers every submit with a DELIVRD receipt


def sim_argv(opts: Options) -> list[str]:
    """The simulator's command line (docker-compose runs the same, on 0.0.0.0)."""
    return cli_argv("smsc-sim", "--host", "127.0.0.1", "--port", str(opts.smpp_port),
                    "--receipt-delay", SIM_RECEIPT_DELAY_S)


def build_children(opts: Options, plan: Plan, env: Mapping[str, str]) -> list[Child]:
    """Every child in start order: simulator, senders, processors, receivers."""
    logs = logs_dir(opts.data_dir)
    children: list[Child] = []
    if plan.sim:
        children.append(Child("smsc-sim", 1, sim_argv(opts), daemon_env(env, "smsc-sim", 1, opts),
                              logs / "smsc-sim-1.log", ready_port=opts.smpp_port))
    counts = {"reporter": opts.reporters, "sender": opts.senders, "processor": opts.processors,
              "receiver": opts.receivers}
    for daemon, n in counts.items():
        for i in range(1, n + 1):
            children.append(Child(daemon, i, daemon_argv(daemon, i, plan.config_path),
                                  daemon_env(env, daemon, i, opts), logs / f"{daemon}-{i}.log"))
    return children


# --- supervisor ---------------------------------------------------------------------------

class Supervisor:
    """Starts the children, restarts crashed ones with backoff, stops them in order."""

    def __init__(self, children: list[Child], opts: Options, say: Callable[[str], None],
                 on_change: Callable[[], None]) -> None:
        self.children = children
        self.opts = opts
        self.say = say
        self.on_change = on_change
        self.stopping = asyncio.Event()
        self.force = asyncio.Event()
        self.fatal: str | None = None
        self.exit_code = EXIT_OK
        self._tasks: list[asyncio.Task[None]] = []

    async def start_all(self) -> bool:
        """Start every child in start order, each waiting for the previous one's readiness."""
        loop = asyncio.get_running_loop()
        for child in self.children:
            child.open_notify_socket(loop)
        for child in self.children:
            if self.stopping.is_set():
                return False
            await child.start()
            assert child.proc is not None
            self.say(f"{child.name}: started (pid {child.proc.pid}), waiting until ready")
            if not await child.wait_ready(READY_TIMEOUT_S):
                reason = child.last_error()
                self.say(f"{child.name}: not ready (exit {child.proc.returncode})"
                         + (f": {reason}" if reason else "") + f"; see {child.log_path}")
                self.fatal = f"{child.name} did not start"
                code = child.proc.returncode
                self.exit_code = EXIT_CONFIG if code == EXIT_CONFIG else EXIT_FAILURE
                return False
            self.on_change()
        for child in self.children:
            self._tasks.append(asyncio.create_task(self._watch(child),
                                                   name=f"up.watch.{child.name}"))
        return True

    async def _watch(self, child: Child) -> None:
        """Restart `child` whenever it exits on its own, with exponential backoff."""
        backoff = BACKOFF_MIN_S
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if self.stopping.is_set():
                return
            if code == EXIT_CONFIG:
                self.fatal = f"{child.name} exited 78 (configuration error); see {child.log_path}"
                self.exit_code = EXIT_CONFIG
                self.say(self.fatal)
                self.stopping.set()
                return
            ran = time.monotonic() - child.started_at
            if ran > BACKOFF_RESET_AFTER_S:
                backoff = BACKOFF_MIN_S
            self.say(f"{child.name}: exited with {code} after {ran:.1f}s; restarting in "
                     f"{backoff:.1f}s")
            if await sleep_or_stop(self.stopping, backoff):
                return
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            child.restarts += 1
            await child.start()
            self.on_change()
            self.say(f"{child.name}: restarted (pid {child.proc.pid})")

    def reload(self) -> None:
        """Pass SIGHUP on to every daemon (they reload rates, routes, rules, log level)."""
        for child in self.children:
            if child.daemon != "smsc-sim":
                child.signal(signal.SIGHUP)
        self.say("SIGHUP passed on to the daemons")

    async def stop_all(self) -> None:
        """Stop in STOP_ORDER; each stage gets SIGTERM, then SIGKILL after the timeout."""
        self.stopping.set()
        for t in self._tasks:
            t.cancel()
        for daemon in STOP_ORDER:
            stage = [c for c in self.children if c.daemon == daemon and c.proc is not None
                     and c.proc.returncode is None]
            if stage:
                await self._stop_stage(daemon, stage)
        loop = asyncio.get_running_loop()
        for child in self.children:
            child.close_notify_socket(loop)

    async def _stop_stage(self, daemon: str, stage: list[Child]) -> None:
        for c in stage:
            c.signal(signal.SIGTERM)
        procs = [c.proc for c in stage if c.proc is not None]
        # A second Ctrl-C (`force`) or the timeout ends the wait for a clean exit.
        await race_stop(asyncio.gather(*(p.wait() for p in procs)), self.force,
                        self.opts.stop_timeout_s)
        for c in stage:
            if c.proc is not None and c.proc.returncode is None:
                self.say(f"{c.name}: did not stop in time; killing it")
                c.signal(signal.SIGKILL)
        await asyncio.gather(*(p.wait() for p in procs))
        codes = ", ".join(f"{c.name} exit {c.proc.returncode}" for c in stage if c.proc)
        self.say(f"stopped {daemon}: {codes}")


# --- output -------------------------------------------------------------------------------

def endpoints(opts: Options, children: list[Child], key_file: Path | None,
              database_url: str) -> dict[str, Any]:
    """What endpoints.json holds."""
    return {
        "api": f"http://127.0.0.1:{opts.api_port}",
        "metrics": [{"daemon": c.daemon, "instance": c.instance,
                     "url": f"http://127.0.0.1:{metrics_port(opts, c.daemon, c.instance)}/metrics"}
                    for c in children if c.daemon in METRICS_OFFSET],
        "esme": f"127.0.0.1:{opts.esme_port}",
        "smpp": f"127.0.0.1:{opts.smpp_port}" if any(c.daemon == "smsc-sim" for c in children)
        else None,
        "children": {c.name: c.proc.pid if c.proc else None for c in children},
        "restarts": {c.name: c.restarts for c in children},
        "api_key_file": str(key_file) if key_file else None,
        "database_url": redact_url(database_url),
        "pid": os.getpid(),
    }


def curl_line(api: str, key: str) -> str:
    """The documented curl command that sends one message through the API."""
    body = json.dumps({"to": "+447700900123", "from": "smsgw", "text": "Hello from smsgw"})
    return (f"curl -sS -X POST {api}/v1/messages -H 'Authorization: Bearer {key}' "
            f"-H 'Content-Type: application/json' -d {shlex.quote(body)}")


def banner(info: dict[str, Any], key: str | None, opts: Options, plan: Plan) -> str:
    """The 'it is up' message: where everything is and how to send a message."""
    docs = Path(__file__).resolve().parents[2] / "README.md"
    metrics = "\n".join(f"    {m['daemon']}@{m['instance']}: {m['url']}" for m in info["metrics"])
    lines = [
        "",
        "smsgw is up.",
        f"  API:      {info['api']}   (OpenAPI: {info['api']}/v1/openapi.json)",
        f"  SMPP for your ESMEs: {info['esme']}   (system_id: an account's name; "
        "smsgw accounts smpp-password NAME)",
        "  metrics:",
        metrics,
        f"  SMSC simulator: {info['smpp']}" if info["smpp"] else "  SMSC: your connectors",
        f"  database: {info['database_url']}"
        + ("  (embedded, fsync on)" if plan.embedded_pg else ""),
        f"  config:   {plan.config_path}",
        f"  logs:     {opts.data_dir / 'logs'}",
        f"  docs:     {docs}",
    ]
    if key:
        lines += ["", "Send a message:", "  " + curl_line(info["api"], key),
                  "then follow it:  smsgw trace +447700900123    and    smsgw status"]
    lines += ["", "Ctrl-C stops everything (receivers first, Postgres last).", ""]
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------

def _say(msg: str) -> None:
    # Never raise: when the terminal or a pipe (`smsgw up | tee`) goes away on Ctrl-C, `up`
    # must still stop its children in order, even with nowhere left to report it.
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"[smsgw up] {msg}\n")
        sys.stderr.flush()


async def _bootstrap(opts: Options, plan: Plan,
                     pg: EmbeddedPostgres | None) -> tuple[str, str | None, Path | None]:
    """Database, migrations, config file, demo data. Returns (dsn, key, key file)."""
    secret_file = server_secret(opts.data_dir)
    if pg is not None:
        connect_kwargs = pg.connect_kwargs()
        await ensure_database(pg.dsn, DATABASE_NAME, **connect_kwargs)
        dsn = pg.dsn_for(DATABASE_NAME)
    else:
        assert plan.database_url is not None
        dsn = plan.database_url
        connect_kwargs = user_database_password(plan, os.environ)
    applied = await db.migrate(dsn, **connect_kwargs)
    _say(f"migrations: {', '.join(applied) if applied else 'schema up to date'}")
    cfg = generated_config(plan, opts, database_url=dsn, secret_file=secret_file, say=_say,
                           password_file=pg.pw_file if pg is not None else None)
    write_config(plan.config_path, cfg)
    key_file = opts.data_dir / "demo-api-key"
    if not opts.demo:
        return dsn, None, None
    if key_file.exists():  # not the first run: the demo data is there
        return dsn, read_secret(key_file).decode(), key_file
    key = await ensure_demo_account(dsn, read_secret(secret_file), key_file, **connect_kwargs)
    _say(f"created account {DEMO_ACCOUNT!r} and its API key (kept in {key_file})")
    await _import_demo_rules(plan.config_path)
    return dsn, key, key_file


async def _import_demo_rules(config: Path) -> None:
    rules = Path(__file__).with_name("demo_rules.json")
    proc = await asyncio.create_subprocess_exec(
        *cli_argv("rules", "--config", str(config), "import", str(rules)),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode == 0:
        _say(f"imported the demo rules ({rules.name})")
    else:
        _say(f"demo rules not imported (exit {proc.returncode}): "
             f"{out.decode(errors='replace').strip()[-300:]}")


def _install_signals(sup: Supervisor, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()

    def on_stop() -> None:
        if stop.is_set():
            _say("second signal: killing what is left")
            sup.force.set()
            return
        _say("stopping (Ctrl-C again to kill at once)")
        stop.set()

    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGHUP, sup.reload)


async def run(opts: Options) -> int:
    """The whole `smsgw up` lifecycle."""
    private_dir(opts.data_dir)
    plan = make_plan(opts, os.environ)
    pg = start_embedded(opts, _say) if plan.embedded_pg else None
    try:
        return await _run_with_db(opts, plan, pg)
    finally:
        if pg is not None:
            pg.stop(mode="fast")
            _say("stopped postgres")


async def _run_with_db(opts: Options, plan: Plan, pg: EmbeddedPostgres | None) -> int:
    dsn, key, key_file = await _bootstrap(opts, plan, pg)
    children = build_children(opts, plan, os.environ)
    info_path = opts.data_dir / "endpoints.json"

    def write_info() -> None:
        info = endpoints(opts, children, key_file, dsn)
        tmp = info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(info_path)

    stop = asyncio.Event()
    sup = Supervisor(children, opts, _say, write_info)
    _install_signals(sup, stop)
    try:
        _, started = await race_stop(sup.start_all(), stop)
        if started:
            write_info()
            with contextlib.suppress(OSError, ValueError):
                sys.stdout.write(banner(endpoints(opts, children, key_file, dsn), key, opts,
                                        plan))
                sys.stdout.flush()
            await race_stop(sup.stopping.wait(), stop)  # Ctrl-C, or a daemon that cannot run
    finally:
        await sup.stop_all()
        info_path.unlink(missing_ok=True)
    return sup.exit_code


def main(argv: list[str]) -> int:
    """Entry point of `smsgw up`."""
    opts = parse_options(argv)
    try:
        return asyncio.run(run(opts))
    except EmbeddedPostgresError as exc:
        _say(f"embedded postgres: {exc}")
        return EXIT_FAILURE
    except ConfigError as exc:
        for err in exc.errors:
            _say(f"config error: {err}")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
