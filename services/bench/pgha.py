"""A primary and a streaming standby from the system's Postgres binaries, for failover tests.

`HaPair(base, sync=True).start()` creates node `a` (the primary: `initdb`, password auth,
`wal_log_hints` for `pg_rewind`) and node `b` (a `pg_basebackup` of it started with
`standby.signal` and a `primary_conninfo` naming it `smsgw_standby`). With `sync`, the primary
runs `synchronous_standby_names = 'smsgw_standby'` and `synchronous_commit = on`: a commit is
acknowledged only once the standby has flushed its WAL, so a promoted standby holds every
acknowledged commit. Without it replication is asynchronous: the standby may lag, and what it
had not received when the primary crashed is gone after the promote.

The role changes, as an HA manager (Patroni, repmgr, a managed service) performs them:

- `switchover()`: stop the primary cleanly (`-m fast`: its WAL, up to the shutdown checkpoint,
  reaches the standby first), promote the standby, restart the old primary as a standby of it;
- `crash()` + `promote()`: `pg_ctl stop -m immediate` (a crash) then `pg_ctl promote`;
- `rejoin_old_primary()`: fence the old primary: `pg_rewind` it onto the new timeline (it may
  hold WAL the standby never got) and start it as a standby. A standby refuses writes and
  reports `in_hot_standby = on`, so a `target_session_attrs=read-write` client skips it.

`url()` is the multi-host URL `postgresql://postgres@127.0.0.1:A,127.0.0.1:B/DB` (the password
goes separately: `password`). Nodes are addressed by name, `a` and `b`; `primary` and
`standby` follow the role changes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from smsgw.shared.core.embedded_pg import EmbeddedPostgres, EmbeddedPostgresError, find_pg_bin

STANDBY_NAME = "smsgw_standby"


@dataclass
class HaPair:
    """Two nodes, `a` then `b`, the first the primary (see the module docstring)."""

    base: Path
    sync: bool = True
    fsync: bool = False  # a Postgres crash loses nothing either way; the OS does not crash here
    nodes: dict[str, EmbeddedPostgres] = field(default_factory=dict)
    primary_name: str = "a"

    def __post_init__(self) -> None:
        self.base = Path(self.base).resolve()
        pw = self.base / "pg-password"
        for name in ("a", "b"):
            self.nodes[name] = EmbeddedPostgres(self.base / f"pg-{name}", fsync=self.fsync,
                                                password_file=pw)

    # -- addressing -----------------------------------------------------------------------

    @property
    def primary(self) -> EmbeddedPostgres:
        """The node that is the primary now."""
        return self.nodes[self.primary_name]

    @property
    def standby_name(self) -> str:
        """The other node's name."""
        return "b" if self.primary_name == "a" else "a"

    @property
    def standby(self) -> EmbeddedPostgres:
        """The node that is (or will be, once rejoined) the standby."""
        return self.nodes[self.standby_name]

    @property
    def password(self) -> str:
        """The superuser's password (both nodes: one is a copy of the other)."""
        return self.nodes["a"].password

    def url(self, dbname: str, *, order: tuple[str, ...] = ("a", "b"),
            password: bool = False) -> str:
        """The multi-host URL listing the nodes in `order` (no password unless asked)."""
        hosts = ",".join(f"127.0.0.1:{self.nodes[n].port}" for n in order)
        user = f"postgres:{self.password}" if password else "postgres"
        return f"postgresql://{user}@{hosts}/{dbname}"

    def node_dsn(self, name: str, dbname: str = "postgres") -> str:
        """One node's own URL (no target_session_attrs: reaches it whatever its role)."""
        return self.nodes[name].dsn_for(dbname)

    # -- start, stop ----------------------------------------------------------------------

    def _conf(self, node: EmbeddedPostgres, *, primary: bool) -> dict[str, str]:
        # The socket outside the data folder: pg_rewind copies the source's files and fails
        # on a socket in it.
        sock = node.datadir.with_name(node.datadir.name + "-sock")
        if not sock.exists():
            sock.mkdir(mode=0o700)
            node._chown(sock)
        conf = {"unix_socket_directories": str(sock), "wal_log_hints": "on",
                "full_page_writes": "on", "max_wal_senders": "10", "hot_standby": "on",
                "wal_keep_size": "512MB", "max_connections": "400"}
        if primary and self.sync:
            conf["synchronous_standby_names"] = STANDBY_NAME
        return conf

    def start(self) -> None:
        """Create and start the primary, clone it into the standby, start the standby."""
        self.base.mkdir(parents=True, exist_ok=True, mode=0o700)
        a, b = self.nodes["a"], self.nodes["b"]
        a.extra_conf = self._conf(a, primary=True)
        a.init()
        # In the file too, not only on the command line: pg_rewind's crash-recovery pass of
        # a crashed target starts it with its files alone, and must keep wal_log_hints on.
        auto = a.datadir / "postgresql.auto.conf"
        auto.write_text(auto.read_text() + "wal_log_hints = on\nfull_page_writes = on\n"
                        "wal_keep_size = 512MB\n")
        a.start()
        b.extra_conf = self._conf(b, primary=False)
        b.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        b._chown(b.datadir)
        b.ensure_reachable()
        res = a._run([find_pg_bin("pg_basebackup"), "-D", str(b.datadir), "-X", "stream",
                      "-c", "fast", "-d", self._conninfo(a)], env=self._env(), timeout=300)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"pg_basebackup failed: {res.stderr.strip()[-2000:]}")
        self._make_standby(b, of=a)
        b.start()
        self.wait_streaming()

    def _env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password}

    def _conninfo(self, node: EmbeddedPostgres) -> str:
        return (f"host=127.0.0.1 port={node.port} user=postgres password={self.password} "
                f"application_name={STANDBY_NAME}")

    def _make_standby(self, node: EmbeddedPostgres, *, of: EmbeddedPostgres) -> None:
        """standby.signal and a primary_conninfo naming `of` (in postgresql.auto.conf, as
        `pg_basebackup -R` writes it; the file is in the 0700 data folder)."""
        signal = node.datadir / "standby.signal"
        signal.touch()
        node._chown(signal)
        auto = node.datadir / "postgresql.auto.conf"
        lines = [ln for ln in auto.read_text().splitlines()
                 if not ln.startswith(("primary_conninfo", "synchronous_standby_names"))]
        lines.append(f"primary_conninfo = '{self._conninfo(of)}'")
        auto.write_text("\n".join(lines) + "\n")
        node._chown(auto)
        node.extra_conf = self._conf(node, primary=False)

    def wait_streaming(self, timeout_s: float = 60.0) -> None:
        """Wait until the primary sees the standby streaming (and `sync` when synchronous)."""
        want = "sync" if self.sync else "async"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            res = self.psql(self.primary_name, "SELECT sync_state FROM pg_stat_replication "
                            f"WHERE application_name = '{STANDBY_NAME}' AND state = 'streaming'")
            if res.strip() == want:
                return
            time.sleep(0.2)
        raise EmbeddedPostgresError(f"the standby is not streaming ({want}) after {timeout_s}s")

    def psql(self, name: str, sql: str) -> str:
        """Run one statement on node `name` with psql; its unaligned output."""
        node = self.nodes[name]
        res = node._run([find_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(node.port),
                         "-U", "postgres", "-d", "postgres", "-XAtq", "-c", sql],
                        env=self._env(), timeout=30)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"psql on {name}: {res.stderr.strip()}")
        return res.stdout

    def stop(self) -> None:
        """Stop both nodes (no-op for a stopped one)."""
        for node in self.nodes.values():
            node.stop(mode="fast")

    # -- role changes ---------------------------------------------------------------------

    def crash(self) -> None:
        """`pg_ctl stop -m immediate` the primary: its backends die without a word."""
        self.primary._pg_ctl(["-m", "immediate", "-w", "stop"], timeout=60)

    def stop_primary(self) -> None:
        """A clean shutdown of the primary (`-m fast`), as a switchover starts."""
        self.primary._pg_ctl(["-m", "fast", "-w", "stop"], timeout=120)

    def promote(self) -> float:
        """`pg_ctl promote -w` the standby; it becomes the primary. Returns time.time()."""
        node = self.standby
        res = node._pg_ctl(["-w", "-t", "60", "promote"], timeout=90)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"pg_ctl promote failed: {res.stderr.strip()}")
        self.primary_name = self.standby_name
        return time.time()

    def switchover(self) -> float:
        """Planned: stop the primary cleanly, promote the standby; returns the promote time.
        The old primary stays down until `rejoin_old_primary()`."""
        self.stop_primary()
        return self.promote()

    def rejoin_old_primary(self) -> None:
        """Fence and rejoin the old primary as a standby of the new one: `pg_rewind` (it may
        hold WAL past the fork, after a crash), `standby.signal`, start, stream."""
        old, new = self.standby, self.primary
        old.stop(mode="fast")
        # a just-promoted source shows its new timeline in pg_control only after a checkpoint
        self.psql(self.primary_name, "CHECKPOINT")
        # pg_rewind (13+) first runs crash recovery on a target that was not shut down cleanly
        res = old._run([find_pg_bin("pg_rewind"), "-D", str(old.datadir),
                        f"--source-server={self._conninfo(new)} dbname=postgres"],
                       env=self._env(), timeout=300)
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"pg_rewind failed: {res.stderr.strip()[-2000:]}")
        self._make_standby(old, of=new)
        old.start()
        if self.sync:  # the new primary waits for its new standby from now on
            self.psql(self.primary_name, "ALTER SYSTEM SET synchronous_standby_names = "
                      f"'{STANDBY_NAME}'")
            self.psql(self.primary_name, "SELECT pg_reload_conf()")
        self.wait_streaming()

    def start_old_primary_unfenced(self) -> None:
        """The hazard: start the old primary as it was (no standby.signal): a second server
        that takes writes. Only for demonstrating why fencing is needed."""
        self.standby.start()


async def in_recovery(dsn: str, password: str) -> bool | None:
    """pg_is_in_recovery() of one node, None when it does not answer."""
    try:
        conn = await asyncpg.connect(dsn, password=password, timeout=5)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return None
    try:
        return bool(await conn.fetchval("SELECT pg_is_in_recovery()"))
    finally:
        await conn.close()
