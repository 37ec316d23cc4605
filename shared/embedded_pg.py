"""A throwaway or persistent Postgres cluster run from the system's binaries.

Used by the test harness (a temporary cluster per test run) and by `smsgw up` (a persistent data
folder reused across runs). Finds `initdb`/`pg_ctl` on PATH or under /usr/lib/postgresql/*/bin.
Postgres refuses to run as root, so when we are root the server runs as the `postgres` user
(or `nobody`) through `runuser`, and the data folder is handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from shared.errors import SmsGatewayError


class EmbeddedPostgresError(SmsGatewayError):
    """The embedded cluster could not be created or started."""


def find_pg_bin(name: str) -> str:
    """Locate a Postgres server binary (initdb, pg_ctl, postgres)."""
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return cand
    raise EmbeddedPostgresError(
        f"{name} not found: install the Postgres server (Debian: apt-get install postgresql) "
        "or set SMSGW_DATABASE_URL to an existing database")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run_as_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    raise EmbeddedPostgresError("running as root and no 'postgres' user to run the server as")


@dataclass
class EmbeddedPostgres:
    """A Postgres cluster in `datadir`, listening on 127.0.0.1:`port` (and a socket in datadir).

    `fsync=False` is for tests only: it trades durability against an OS crash for speed (and is
    reported as such); a Postgres crash still loses no acknowledged commit.
    """

    datadir: Path
    port: int = 0
    fsync: bool = True
    extra_conf: dict[str, str] = field(default_factory=dict)
    user: str | None = field(default_factory=_run_as_user)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()
        if not self.port:
            self.port = free_port()

    @property
    def dsn(self) -> str:
        """Connection string for the superuser `postgres` over TCP."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, dbname: str) -> str:
        """Connection string for another database of this cluster."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else args

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def initialised(self) -> bool:
        """True when the data folder already holds a cluster."""
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (trust auth on loopback only) if the folder is empty."""
        if self.initialised():
            return
        self.datadir.mkdir(parents=True, exist_ok=True)
        self._chown(self.datadir)
        # The parent folders must be traversable by the server's user.
        for parent in self.datadir.parents:
            if parent == Path("/"):
                break
            mode = parent.stat().st_mode
            if self.user and not mode & 0o001:
                os.chmod(parent, mode | 0o001)
        subprocess.run(
            self._cmd([find_pg_bin("initdb"), "-D", str(self.datadir), "-U", "postgres",
                       "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"]),
            check=True, capture_output=True, text=True)

    def _options(self) -> str:
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.datadir),
            "fsync": "on" if self.fsync else "off",
            # synchronous_commit stays on even in test clusters: with it off, a commit can be
            # acknowledged while its WAL is still in shared memory, and `pg_ctl restart -m
            # immediate` (a crash, as the reliability tests do) loses it. fsync off only risks
            # data on an OS crash, which tests don't simulate.
            "synchronous_commit": "on",
            "full_page_writes": "on" if self.fsync else "off",
            "max_connections": "300",
            "shared_buffers": "256MB",
            **self.extra_conf,
        }
        return " ".join(f"-c {k}={v}" for k, v in conf.items())

    def start(self, timeout_s: int = 60) -> None:
        """Start the server and wait until it accepts connections."""
        self.init()
        log = self.datadir / "server.log"
        res = subprocess.run(
            self._cmd([find_pg_bin("pg_ctl"), "-D", str(self.datadir), "-l", str(log),
                       "-o", self._options(), "-w", "-t", str(timeout_s), "start"]),
            capture_output=True, text=True)
        if res.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(f"pg_ctl start failed: {res.stderr.strip()}\n{tail}")

    def restart(self, mode: str = "fast") -> None:
        """Restart the server (`mode='immediate'` is a crash restart, for reliability tests)."""
        # `-l`: without a log file the server inherits pg_ctl's stdout, and capturing that
        # pipe would wait for the server to exit.
        subprocess.run(
            self._cmd([find_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode,
                       "-l", str(self.datadir / "server.log"), "-o", self._options(), "-w",
                       "restart"]),
            check=True, capture_output=True, text=True, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; a no-op when it is not running."""
        subprocess.run(
            self._cmd([find_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"]),
            capture_output=True, text=True)

    def running(self) -> bool:
        """True when pg_ctl reports the server as running."""
        res = subprocess.run(
            self._cmd([find_pg_bin("pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True, text=True)
        return res.returncode == 0
