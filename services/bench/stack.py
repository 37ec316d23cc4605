"""The whole gateway on this machine for a benchmark or a chaos run, built from `smsgw up`'s parts.

`Stack` owns: a data folder (temporary unless given), the embedded Postgres (fsync and
synchronous_commit ON unless told otherwise) or a given database, the benchmark simulator
(`services.bench.simctl`: the project's simulator plus a control site), and the daemons as
subprocesses started and supervised by `services.admin.up.Supervisor` — the same children,
environment, notify sockets (READY=1) and restart-with-backoff as `smsgw up`, so a daemon
killed with -9 comes back on its own exactly as under `up` or systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from smsgw.services.admin import up
from smsgw.shared.core import db, ports
from smsgw.shared.core.embedded_pg import EmbeddedPostgres
from smsgw.shared.runtime.config import split_url_password

DATABASE_NAME = "smsgw"
BENCH_ACCOUNT = "bench"
# Hot tables a `--unlogged` run switches to UNLOGGED (then no figure is called durable).
QUEUE_TABLES = ("inbound", "outbound", "outbound_queue", "outbound_part", "receipts",
                "callbacks", "mo_parts", "dedupe_keys", "events")


@dataclass(slots=True)
class StackOptions:
    """What to start. Daemon sections are merged into the generated config as given."""

    receivers: int = 1
    processors: int = 1
    senders: int = 1
    data_dir: Path | None = None  # None: a temporary folder, removed at the end
    keep: bool = False  # keep the data folder (logs) after the run
    database_url: str | None = None  # given database: no embedded Postgres
    pg: EmbeddedPostgres | None = None  # a given embedded cluster (tests: pg_cluster)
    fsync: bool = True
    synchronous_commit: bool = True
    full_page_writes: bool = True
    unlogged: bool = False
    pg_conf: dict[str, str] = field(default_factory=dict)
    receipt_delay_s: float | None = 0.05  # None: the simulator sends no receipts
    receipt_stats: str = "DELIVRD=1"
    connector: dict[str, Any] = field(default_factory=dict)  # [[connectors]] overrides
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)  # [receiver] etc.
    rules: list[dict[str, Any]] | None = None
    log_level: str = "warning"
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the daemons
    say: Callable[[str], None] = field(default=lambda m: None)


def _port_block(needed: int) -> int:
    """A base port where `base + k` for k in 0..needed-1 are all free right now (below the
    ephemeral range: `shared.core.ports`)."""
    return ports.free_block(range(needed))


class Stack:
    """Start everything with `await start()`, stop with `await stop()` (or `async with`)."""

    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.tmp = opts.data_dir is None
        self.data_dir = Path(opts.data_dir or tempfile.mkdtemp(prefix="smsgw-bench-")).resolve()
        self.pg: EmbeddedPostgres | None = opts.pg
        self.own_pg = False
        self.dsn = ""  # never carries the embedded cluster's password: see connect_kwargs
        # asyncpg keyword arguments next to `dsn` (the embedded cluster's password)
        self.connect_kwargs: dict[str, Any] = {}
        self.db_password_file: Path | None = None
        self.api_key = ""
        self.account_id = 0
        self.sup: up.Supervisor | None = None
        self.children: list[up.Child] = []
        self.config_path = self.data_dir / "smsgw.toml"
        # ports: API (one per receiver), metrics (10 per instance), SMPP, simulator control
        span = 10 * max(opts.receivers, opts.processors, opts.senders) + 10
        base = _port_block(span + 20 + opts.receivers)
        self.api_port = base
        self.metrics_base = base + 10
        self.smpp_port = base + span + 10
        self.control_port = base + span + 11
        self.esme_port = base + span + 12  # the receivers' SMPP server for ESMEs (one each)
        self.up_opts = up.Options(
            data_dir=self.data_dir, config=None, receivers=opts.receivers,
            processors=opts.processors, senders=opts.senders, api_port=self.api_port,
            metrics_port_base=self.metrics_base, smpp_port=self.smpp_port, pg_port=0, sim=True,
            demo=False, log_level=opts.log_level, stop_timeout_s=30.0,
            esme_port=self.esme_port)

    # --- URLs ---------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        """The first receiver's API."""
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def control_url(self) -> str:
        """The simulator's control site."""
        return f"http://127.0.0.1:{self.control_port}"

    def metrics_url(self, daemon: str, instance: int = 1) -> str:
        """A daemon instance's /metrics."""
        return f"http://127.0.0.1:{up.metrics_port(self.up_opts, daemon, instance)}/metrics"

    def child(self, name: str) -> up.Child:
        """A child by name, e.g. `sender@1` or `smsc-sim@1`."""
        return next(c for c in self.children if c.name == name)

    def pids(self) -> dict[str, int]:
        """Current pid of each child (and `postgres`: the postmaster when embedded)."""
        out = {c.name: c.proc.pid for c in self.children if c.proc and c.proc.returncode is None}
        if self.pg is not None:
            from smsgw.services.bench.procstats import postmaster_pid

            pid = postmaster_pid(self.pg.datadir)
            if pid:
                out["postgres"] = pid
        return out

    # --- start --------------------------------------------------------------------------

    async def start(self) -> None:
        """Database, schema, account, config, simulator and daemons (each READY)."""
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await self._database()
        secret_file = up.server_secret(self.data_dir)
        await self._account(secret_file)
        self.config_path.write_text(up.toml_dumps(self._config(secret_file)))
        if self.opts.rules:
            await self._import_rules()
        self.children = self._children()
        self.sup = up.Supervisor(self.children, self.up_opts, self.opts.say, lambda: None)
        if not await self.sup.start_all():
            logs = "\n".join(f"--- {c.log_path}\n{_tail(c.log_path)}" for c in self.children)
            raise RuntimeError(f"the stack did not start: {self.sup.fatal}\n{logs}")
        await self.wait_bound()

    async def _database(self) -> None:
        o = self.opts
        if o.database_url:
            # a password in the given URL goes to a 0600 file the daemons' config names, never
            # into the written smsgw.toml
            self.dsn, password = split_url_password(o.database_url)
            if password is not None:
                self.db_password_file = self.data_dir / "db-password"
                fd = os.open(self.db_password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "w") as fh:
                    fh.write(password)
                self.connect_kwargs = {"password": password}
        else:
            if self.pg is None:
                conf = {"synchronous_commit": "on" if o.synchronous_commit else "off",
                        "full_page_writes": "on" if o.full_page_writes else "off",
                        "max_connections": "400", **o.pg_conf}
                self.pg = EmbeddedPostgres(self.data_dir / "pg", fsync=o.fsync, extra_conf=conf)
                self.pg.start()
                self.own_pg = True
                self.opts.say(f"postgres: {self.pg.datadir} on port {self.pg.port}")
            self.connect_kwargs = self.pg.connect_kwargs()
            await up.ensure_database(self.pg.dsn, DATABASE_NAME, **self.connect_kwargs)
            self.dsn = self.pg.dsn_for(DATABASE_NAME)
        await db.migrate(self.dsn, **self.connect_kwargs)
        if o.unlogged:
            conn = await asyncpg.connect(self.dsn, **self.connect_kwargs)
            try:
                for t in QUEUE_TABLES:
                    await conn.execute(f"ALTER TABLE {t} SET UNLOGGED")
            finally:
                await conn.close()

    async def _account(self, secret_file: Path) -> None:
        from smsgw.shared.domain import apikeys

        secret = (await asyncio.to_thread(secret_file.read_text, "utf-8")).rstrip("\r\n")
        conn = await db.connect(self.dsn, **self.connect_kwargs)
        try:
            self.account_id = await conn.fetchval(
                # unlimited rate: the bench measures the gateway, not default_account_rate
                "INSERT INTO accounts (name, rate_per_s) VALUES ($1, 'Infinity')"
                " ON CONFLICT (name) DO UPDATE SET updated_at = now(), rate_per_s = 'Infinity'"
                " RETURNING id", BENCH_ACCOUNT)
            self.api_key, _ = await apikeys.create_key(conn, secret.encode(), self.account_id,
                                                       actor="smsgw bench")
        finally:
            await conn.close()

    def _config(self, secret_file: Path) -> dict[str, Any]:
        connector = {"name": "sim", "host": "127.0.0.1", "port": self.smpp_port,
                     "system_id": "smsgw", "window": 100, "enquire_link_s": 10.0,
                     "reconnect_min_s": 0.2, "reconnect_max_s": 2.0,
                     "registered_delivery": 1 if self.opts.receipt_delay_s is not None else 0,
                     **self.opts.connector}
        database: dict[str, Any] = {"url": self.dsn}
        if self.pg is not None and self.connect_kwargs:  # our embedded cluster: its file
            database["password_file"] = str(self.pg.pw_file)
        elif self.db_password_file is not None:  # the password of a given --database-url
            database["password_file"] = str(self.db_password_file)
        cfg: dict[str, Any] = {
            "database": database,
            "security": {"server_secret_file": str(secret_file)},
            "connectors": [connector],
            # the benchmark's applications listen on this machine (its own simulator stack)
            "webhooks": {"allowed_networks": list(up.DEMO_ALLOWED_NETWORKS)},
        }
        for section, values in self.opts.sections.items():
            cfg.setdefault(section, {}).update(values)
        return cfg

    async def _import_rules(self) -> None:
        path = self.data_dir / "rules.json"
        path.write_text(json.dumps({"rules": self.opts.rules}))
        proc = await asyncio.create_subprocess_exec(
            *up.cli_argv("rules", "--config", str(self.config_path), "import", str(path)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"rules import failed: {out.decode(errors='replace')[-500:]}")

    def _children(self) -> list[up.Child]:
        logs = up.logs_dir(self.data_dir)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SMSGW_") or k == "SMSGW_TEST_DATABASE_URL"}
        env.pop("SMSGW_TEST_DATABASE_URL", None)
        env.update(self.opts.env)
        sim = [sys.executable, "-m", "smsgw.services.bench.simctl", "--port", str(self.smpp_port),
               "--control-port", str(self.control_port),
               "--receipt-stats", self.opts.receipt_stats]
        if self.opts.receipt_delay_s is not None:
            sim += ["--receipt-delay", str(self.opts.receipt_delay_s)]
        out = [up.Child("smsc-sim", 1, sim, up.daemon_env(env, "smsc-sim", 1, self.up_opts),
                        logs / "smsc-sim-1.log", ready_port=self.control_port)]
        counts = {"sender": self.opts.senders, "processor": self.opts.processors,
                  "receiver": self.opts.receivers}
        for daemon, n in counts.items():
            for i in range(1, n + 1):
                out.append(up.Child(daemon, i, up.daemon_argv(daemon, i, self.config_path),
                                    up.daemon_env(env, daemon, i, self.up_opts),
                                    logs / f"{daemon}-{i}.log"))
        return out

    async def wait_bound(self, timeout_s: float = 30.0) -> None:
        """Wait until the simulator has the binds the senders (and receivers) open."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = await self.sim_stats()
            if stats["counters"]["current_binds"] >= self.opts.senders:
                return
            await asyncio.sleep(0.1)
        raise RuntimeError("the senders did not bind to the simulator in time")

    # --- control ------------------------------------------------------------------------

    async def sim_stats(self) -> dict[str, Any]:
        """The simulator's counters (see simctl)."""
        return await self._control("GET", "/stats")

    async def sim(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """POST to the simulator's control site (`/inject`, `/clear`, `/drop`, `/mo`)."""
        return await self._control("POST", path, body or {})

    async def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.request(
                method, self.control_url + path, json=body,
                timeout=aiohttp.ClientTimeout(total=10)) as r:
            return dict(await r.json())

    async def metric(self, daemon: str, name: str, instance: int = 1) -> float:
        """Sum of every sample of metric `name` on a daemon's /metrics (0 when absent)."""
        async with aiohttp.ClientSession() as s, s.get(
                self.metrics_url(daemon, instance), timeout=aiohttp.ClientTimeout(total=5)) as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        """Send `sig` to a child (the supervisor restarts it when it exits); its pid."""
        c = self.child(name)
        assert c.proc is not None
        pid = c.proc.pid
        os.kill(pid, sig)
        return pid

    async def wait_restarted(self, name: str, old_pid: int, timeout_s: float = 60.0) -> None:
        """Wait until the supervisor restarted `name` and it sent READY=1 again."""
        c = self.child(name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if c.proc is not None and c.proc.pid != old_pid and c.ready.is_set():
                return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"{name} was not restarted within {timeout_s}s")

    # --- stop ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop the children in order, then our Postgres; remove a temporary folder."""
        if self.sup is not None:
            await self.sup.stop_all()
        if self.own_pg and self.pg is not None:
            self.pg.stop(mode="fast")
        if self.tmp and not self.opts.keep:
            with contextlib.suppress(OSError):
                shutil.rmtree(self.data_dir)

    async def esme_password(self, actor: str) -> str:
        """A fresh SMPP password for the bench account (its ESMEs bind with it), set with the
        stack's own server secret."""
        from smsgw.shared.domain import esme

        secret = up.server_secret(self.data_dir).read_text().strip().encode()
        conn = await db.connect(self.dsn, **self.connect_kwargs)
        try:
            return await esme.set_password(conn, secret, BENCH_ACCOUNT, actor=actor)
        finally:
            await conn.close()

    async def __aenter__(self) -> Stack:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""
