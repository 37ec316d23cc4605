"""A throwaway or persistent Postgres cluster run from the system's binaries.

Used by the test harness (a temporary cluster per test run) and by `smsgw up` (a persistent data
folder reused across runs). Finds `initdb`/`pg_ctl` on PATH or under /usr/lib/postgresql/*/bin.
Postgres refuses to run as root, so when we are root the server runs as the `postgres` user
(or `nobody`) through `runuser`, and the data folder is handed to that user.

Authentication: SCRAM-SHA-256 for every connection, over TCP (127.0.0.1 only) and over the Unix
socket, which lives in the 0700 data folder. The superuser `postgres` gets a generated password
(256 random bits) kept in `password_file` (default: `<datadir>-password` next to the data
folder, mode 0600, owned by whoever runs us; the server never reads it). Clients pass it
separately (`connect_kwargs()`, or `[database] password_file` in a config): it is never part of
`dsn`. A cluster made by an older release with `initdb --auth=trust` is converted on `start()`
(`secure()`: the password is set in single-user mode, with no server listening, then pg_hba.conf
is switched to scram-sha-256).

When we are root, the server's user must be able to reach the data folder. Instead of opening
the parent folders to every local user (`chmod o+x`), each parent that user cannot search gets
one POSIX ACL entry (`u:postgres:x`: search, not list or read) and is reported in `granted`; a
file system without ACLs is an error that says what to run.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import glob
import hashlib
import hmac
import os
import pwd
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smsgw.shared.core.errors import SmsGatewayError


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


SCRAM_ITERATIONS = 4096  # Postgres' default scram_iterations


def scram_verifier(password: str, *, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for `password` (RFC 5802/7677), so that
    `ALTER ROLE … PASSWORD` sends the server a verifier, never the password itself."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = base64.b64encode
    return (f"SCRAM-SHA-256${iterations}:{b64(salt).decode()}"
            f"${b64(stored_key).decode()}:{b64(server_key).decode()}")


def hba_uses_trust(text: str) -> bool:
    """True when an active pg_hba.conf line uses the `trust` method."""
    return any(fields and fields[-1] == "trust"
               for fields in (line.split("#", 1)[0].split() for line in text.splitlines()))


def hba_to_scram(text: str) -> str:
    """pg_hba.conf with every `trust` method replaced by `scram-sha-256` (comments kept)."""
    out = []
    for line in text.splitlines(keepends=True):
        body, sep, comment = line.partition("#")
        fields = body.split()
        if fields and fields[-1] == "trust":
            body = re.sub(r"trust(\s*)$", r"scram-sha-256\1", body)
        out.append(body + sep + comment)
    return "".join(out)


# POSIX ACL extended attribute (linux/posix_acl_xattr.h): a version word, then sorted
# (tag, perm, id) entries. Only named-user entries carry an id.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_GROUP, _ACL_MASK, _ACL_OTHER = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20)
_ACL_UNDEFINED_ID = 0xFFFFFFFF
_ACL_EXECUTE = 0x01


def grant_search_acl(path: Path, uid: int) -> None:
    """Add `u:<uid>:x` to `path`'s access ACL (what `setfacl -m u:<uid>:x path` does, keeping
    every other entry): that user may search (traverse) the folder, not list or read it.
    Raises OSError (ENOTSUP, EPERM, …) when the file system refuses."""
    try:
        raw = os.getxattr(path, _ACL_XATTR)
    except OSError as exc:
        if exc.errno != errno.ENODATA:
            raise
        raw = b""
    entries: dict[tuple[int, int], int] = {}
    if len(raw) >= 4 and struct.unpack_from("<I", raw)[0] == _ACL_VERSION:
        for off in range(4, len(raw) - 7, 8):
            tag, perm, ident = struct.unpack_from("<HHI", raw, off)
            entries[(tag, ident)] = perm
    else:  # no ACL yet: the three entries the mode bits stand for
        mode = path.stat().st_mode
        entries = {(_ACL_USER_OBJ, _ACL_UNDEFINED_ID): (mode >> 6) & 7,
                   (_ACL_GROUP_OBJ, _ACL_UNDEFINED_ID): (mode >> 3) & 7,
                   (_ACL_OTHER, _ACL_UNDEFINED_ID): mode & 7}
    entries[(_ACL_USER, uid)] = entries.get((_ACL_USER, uid), 0) | _ACL_EXECUTE
    mask_key = (_ACL_MASK, _ACL_UNDEFINED_ID)
    # The mask bounds every named entry and the owning group: widen it by x only, so no
    # other entry gains anything it did not have.
    base = entries.get(mask_key, entries[(_ACL_GROUP_OBJ, _ACL_UNDEFINED_ID)])
    entries[mask_key] = base | _ACL_EXECUTE
    value = struct.pack("<I", _ACL_VERSION) + b"".join(
        struct.pack("<HHI", tag, perm, ident) for (tag, ident), perm in sorted(entries.items()))
    os.setxattr(path, _ACL_XATTR, value)


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
    password_file: Path | None = None  # default: <datadir>-password, next to the data folder
    # Folders that got an ACL entry so that `user` can reach the data folder (root only).
    granted: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.datadir = Path(self.datadir).resolve()
        if self.password_file is None:
            self.password_file = self.datadir.with_name(self.datadir.name + "-password")
        self.password_file = Path(self.password_file).resolve()
        if not self.port:
            self.port = free_port()

    @property
    def dsn(self) -> str:
        """Connection string for the superuser `postgres` over TCP (no password in it: pass
        `connect_kwargs()` too)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def dsn_for(self, dbname: str) -> str:
        """Connection string for another database of this cluster (no password in it)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    @property
    def pw_file(self) -> Path:
        """`password_file`, always set after construction."""
        assert self.password_file is not None
        return self.password_file

    @property
    def password(self) -> str:
        """The superuser's password, read from `password_file`."""
        try:
            return self.pw_file.read_text("utf-8").rstrip("\r\n")
        except FileNotFoundError:
            raise EmbeddedPostgresError(
                f"{self.pw_file} is missing: start() creates it with the cluster") from None

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for asyncpg.connect/create_pool next to `dsn` (the password)."""
        return {"password": self.password}

    def url_with_password(self, dbname: str = "postgres") -> str:
        """A URL that carries the password, for throwaway clusters whose URL is handed on as
        one string (the test harness, the component benchmarks). Never log it unredacted;
        `smsgw up` and the daemons pass the password separately."""
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def _cmd(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *args] if self.user else args

    def _run(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Run a server binary as the server's user, from / (our working folder may be closed
        to that user)."""
        return subprocess.run(self._cmd(args), cwd="/" if self.user else None,
                              capture_output=True, text=True, **kwargs)

    def _pg_ctl(self, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        # Re-check the path first: something may have chmod-ed a parent since we started
        # (pytest resets its 0700 temp root, which drops an ACL entry's effect).
        with contextlib.suppress(EmbeddedPostgresError):
            self.ensure_reachable()
        return self._run([find_pg_bin("pg_ctl"), "-D", str(self.datadir), *args], **kwargs)

    def _chown(self, path: Path) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def initialised(self) -> bool:
        """True when the data folder already holds a cluster."""
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> None:
        """Create the cluster (SCRAM-SHA-256 everywhere, a new password) if the folder is
        empty."""
        if self.initialised():
            return
        self.datadir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._chown(self.datadir)
        self.ensure_reachable()
        password = self._read_password() or secrets.token_urlsafe(32)
        with self._initdb_pwfile(password) as pwfile:
            res = self._run([find_pg_bin("initdb"), "-D", str(self.datadir), "-U", "postgres",
                             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                             f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C.UTF-8",
                             "--no-instructions"])
        if res.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed: {res.stderr.strip()[-2000:]}")
        self._write_password(password)

    @contextlib.contextmanager
    def _initdb_pwfile(self, password: str) -> Iterator[Path]:
        # initdb runs as the server's user, who must read the file: a private temporary
        # folder handed to that user, removed right after.
        tmp = Path(tempfile.mkdtemp(prefix="smsgw-initdb-"))
        try:
            path = tmp / "pw"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(password + "\n")
            self._chown(path)
            self._chown(tmp)
            yield path
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _read_password(self) -> str | None:
        try:
            return self.pw_file.read_text("utf-8").rstrip("\r\n") or None
        except FileNotFoundError:
            return None

    def _write_password(self, password: str) -> None:
        """Write `password_file` 0600 (atomically; a looser existing file is replaced)."""
        tmp = self.pw_file.with_name(f".{self.pw_file.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        os.chmod(tmp, 0o600)
        tmp.replace(self.pw_file)

    def ensure_reachable(self) -> None:
        """As root: let the server's user search every folder above the data folder.

        Each folder it cannot search gets an ACL entry for that user alone (recorded in
        `granted`); nothing is opened to other users. Raises `EmbeddedPostgresError` saying
        what to run when the file system has no ACLs.
        """
        if not self.user:
            return
        uid = pwd.getpwnam(self.user).pw_uid
        for folder in reversed(self.datadir.parents):
            if folder == Path("/") or self._can_search(folder):
                continue
            try:
                grant_search_acl(folder, uid)
            except OSError as exc:
                raise EmbeddedPostgresError(
                    f"the Postgres server runs as {self.user!r} (it refuses to run as root) and "
                    f"cannot reach {self.datadir}: it may not search {folder}, and an ACL entry "
                    f"for it could not be added ({exc.strerror}). Run `setfacl -m "
                    f"u:{self.user}:x {folder}`, choose a data folder that user can reach, or "
                    "run as a non-root user.") from exc
            self.granted.append(folder)
            if not self._can_search(folder):
                raise EmbeddedPostgresError(
                    f"{self.user!r} still cannot search {folder} after adding an ACL entry")

    def _can_search(self, folder: Path) -> bool:
        # Ask the kernel as that user (ownership, groups and ACLs all count).
        assert self.user is not None
        res = subprocess.run(["runuser", "-u", self.user, "--", "test", "-x", str(folder)],
                             capture_output=True)
        return res.returncode == 0

    def uses_trust(self) -> bool:
        """True when the cluster's pg_hba.conf lets a client in without a password."""
        try:
            return hba_uses_trust((self.datadir / "pg_hba.conf").read_text())
        except FileNotFoundError:
            return False

    def secure(self) -> str | None:
        """Make an existing cluster require the password; say what was done (None: nothing).

        A cluster made with `--auth=trust` (older releases) gets a password and scram-sha-256
        in pg_hba.conf; a cluster whose password file is gone gets a new password. Both are set
        in single-user mode, so the server is stopped first when it runs.
        """
        if not self.initialised():
            return None
        self.ensure_reachable()
        trust = self.uses_trust()
        known = self._read_password()
        if not trust and known is not None:
            return None
        if self.running():
            self.stop()
        password = known or secrets.token_urlsafe(32)
        self._set_password_single_user(password)
        if known is None:
            self._write_password(password)
        if trust:
            hba = self.datadir / "pg_hba.conf"
            hba.write_text(hba_to_scram(hba.read_text()))  # in place: owner and mode kept
            return (f"converted {self.datadir} from trust to password (scram-sha-256) "
                    f"authentication; the password is in {self.pw_file}")
        return f"{self.pw_file} was missing: set a new password for postgres and wrote it there"

    def _set_password_single_user(self, password: str) -> None:
        stmt = f"ALTER ROLE postgres PASSWORD '{scram_verifier(password)}';\n"
        res = self._run([find_pg_bin("postgres"), "--single", "-D", str(self.datadir),
                         "postgres"], input=stmt)
        problems = [line for line in (res.stdout + res.stderr).splitlines()
                    if ("ERROR:" in line or "FATAL:" in line) and "PASSWORD" not in line]
        if res.returncode != 0 or problems:
            raise EmbeddedPostgresError(
                f"could not set the postgres password in {self.datadir} (single-user mode, exit "
                f"{res.returncode}): {' '.join(problems)[-1000:]}")

    def _options(self) -> str:
        conf = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            # The socket sits in the 0700 data folder; only its owner may connect to it.
            "unix_socket_directories": str(self.datadir),
            "unix_socket_permissions": "0700",
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
        """Start the server and wait until it accepts connections (creating the cluster, and
        converting one that trusts its clients, first)."""
        self.init()
        self.ensure_reachable()
        self.secure()
        log = self.datadir / "server.log"
        res = self._pg_ctl(["-l", str(log), "-o", self._options(), "-w", "-t", str(timeout_s),
                            "start"])
        if res.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise EmbeddedPostgresError(f"pg_ctl start failed: {res.stderr.strip()}\n{tail}")

    def restart(self, mode: str = "fast") -> None:
        """Restart the server (`mode='immediate'` is a crash restart, for reliability tests)."""
        # `-l`: without a log file the server inherits pg_ctl's stdout, and capturing that
        # pipe would wait for the server to exit.
        self._pg_ctl(["-m", mode, "-l", str(self.datadir / "server.log"), "-o",
                      self._options(), "-w", "restart"], check=True, timeout=120)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; a no-op when it is not running."""
        self._pg_ctl(["-m", mode, "-w", "stop"])

    def running(self) -> bool:
        """True when pg_ctl reports the server as running."""
        return self._pg_ctl(["status"]).returncode == 0
