"""The embedded Postgres (`smsgw up`, the test harness, the benchmarks) requires a password.

It used to be created with `initdb --auth=trust`: any local account could run
`psql -h 127.0.0.1 -U postgres` and `COPY … TO PROGRAM` as the database superuser. Now every
connection, over TCP and over the Unix socket, needs the generated password (scram-sha-256),
kept 0600 next to the cluster; a cluster made the old way is converted by `smsgw up`'s start-up
path; the daemons and admin commands read the password through `[database] password_file`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from smsgw.services.admin import up
from smsgw.shared.core.embedded_pg import EmbeddedPostgres, find_pg_bin

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _sec_pgauth_no_ambient_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # asyncpg falls back to PGPASSWORD and ~/.pgpass: "without the password" must mean that.
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))


async def _refused(**kwargs: object) -> BaseException:
    with pytest.raises((asyncpg.InvalidAuthorizationSpecificationError,
                        asyncpg.InvalidPasswordError)) as info:
        conn = await asyncpg.connect(**kwargs)  # type: ignore[arg-type]
        await conn.close()
    return info.value


async def _assert_locked(pg: EmbeddedPostgres, password: str) -> None:
    """No password: refused over TCP and over the socket; with it: both work."""
    tcp = {"host": "127.0.0.1", "port": pg.port, "user": "postgres", "database": "postgres"}
    sock = {**tcp, "host": str(pg.datadir)}
    await _refused(**tcp)
    await _refused(**sock)
    await _refused(**tcp, password="wrong")
    for where in (tcp, sock):
        conn = await asyncpg.connect(**where, password=password)
        try:
            assert await conn.fetchval("SELECT current_user") == "postgres"
        finally:
            await conn.close()


def _other_user_psql(pg: EmbeddedPostgres, host: str) -> subprocess.CompletedProcess[str]:
    """What another local account (`nobody`) gets from psql as the superuser, no password:
    the attack of the finding (`COPY … TO PROGRAM` runs a shell command as the server)."""
    conninfo = f"host={host} port={pg.port} user=postgres dbname=postgres"
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", find_pg_bin("psql"), "-w", "-X", conninfo, "-c",
         "COPY (SELECT 1) TO PROGRAM 'cat > /dev/null'"],
        capture_output=True, text=True, timeout=30, cwd="/",
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})


def _assert_private(path: Path) -> None:
    st = path.stat()
    assert st.st_mode & 0o777 == 0o600, oct(st.st_mode)
    assert st.st_uid == os.geteuid()


@pytest.fixture
def sec_pgauth_dir() -> Iterator[Path]:
    """A private folder for a cluster, outside pytest's temp root (which every pytest start
    resets to 0700, cutting a running server's user off its data folder when we are root)."""
    path = Path(tempfile.mkdtemp(prefix="smsgw-sec-pgauth-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sec_pgauth_open_dir() -> Iterator[Path]:
    """A folder under /tmp laid out as older releases left `smsgw up`'s data folder when run
    as root: o+x (they chmod-ed every parent; we only touch our own folder)."""
    path = Path(tempfile.mkdtemp(prefix="smsgw-sec-pgauth-"))
    path.chmod(0o701)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _init_trust_cluster(datadir: Path, port: int) -> EmbeddedPostgres:
    """A cluster made exactly as older releases did: `initdb --auth=trust`."""
    pg = EmbeddedPostgres(datadir, port=port, fsync=False)
    datadir.mkdir(parents=True, mode=0o700)
    if pg.user:
        user = pwd.getpwnam(pg.user)
        os.chown(datadir, user.pw_uid, user.pw_gid)
    cmd = [find_pg_bin("initdb"), "-D", str(datadir), "-U", "postgres", "--auth=trust", "-E",
           "UTF8", "--locale=C.UTF-8", "--no-instructions"]
    subprocess.run(["runuser", "-u", pg.user, "--", *cmd] if pg.user else cmd, check=True,
                   capture_output=True, text=True)
    return pg


def _pg_ctl(pg: EmbeddedPostgres, *args: str) -> None:
    cmd = [find_pg_bin("pg_ctl"), "-D", str(pg.datadir), *args]
    subprocess.run(["runuser", "-u", pg.user, "--", *cmd] if pg.user else cmd, check=True,
                   capture_output=True, text=True, timeout=120)


async def test_a_new_cluster_refuses_connections_without_the_password(
        sec_pgauth_dir: Path) -> None:
    """1. Create and start an embedded cluster as the test harness and `smsgw up` do.
    2. As postgres without a password (TCP 127.0.0.1 and the Unix socket) or with a wrong one:
       refused; with the generated password: connected.
    3. The password file is 0600, ours, outside the server's folder, >= 128 random bits.
    4. As another local account (root only): psql as postgres over TCP and the socket, the
       finding's `COPY … TO PROGRAM`, is refused.
    """
    pg = EmbeddedPostgres(sec_pgauth_dir / "pg", fsync=False)
    pg.start()
    try:
        tcp = {"host": "127.0.0.1", "port": pg.port, "user": "postgres", "database": "postgres"}
        await _refused(**tcp)
        await _refused(**{**tcp, "host": str(pg.datadir)})
        password_file = sec_pgauth_dir / "pg-password"
        _assert_private(password_file)
        password = password_file.read_text().strip()
        assert len(password) >= 22  # secrets.token_urlsafe: >= 128 random bits
        assert pg.password == password and pg.connect_kwargs() == {"password": password}
        assert password not in pg.dsn and password not in pg.dsn_for("x")
        await _assert_locked(pg, password)
        hba = (pg.datadir / "pg_hba.conf").read_text()
        assert "trust" not in [line.split()[-1] for line in hba.splitlines()
                               if line.strip() and not line.lstrip().startswith("#")]
        if IS_ROOT:
            for host in ("127.0.0.1", str(pg.datadir)):
                res = _other_user_psql(pg, host)
                assert res.returncode != 0, res.stdout
                assert "password" in res.stderr or "Permission denied" in res.stderr, res.stderr
    finally:
        pg.stop(mode="immediate")


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "left-running"])
async def test_up_converts_a_cluster_made_with_trust(sec_pgauth_open_dir: Path,
                                                     running: bool) -> None:
    """1. Make `DATA_DIR/pg` with the old `initdb --auth=trust`, put a table in it, and (second
       case) leave its server running, as a crashed `smsgw up` would.
    2. Check the hole: a connection without a password works (and, as root, another local
       account's psql runs `COPY … TO PROGRAM`).
    3. Run `smsgw up`'s start-up of the embedded Postgres (`up.start_embedded`).
    4. It says it converted the folder; the password file is 0600; connections without the
       password are refused over TCP and the socket, with it they work; the table is still
       there; another account's psql is refused.
    """
    data = sec_pgauth_open_dir
    old = _init_trust_cluster(data / "pg", port=up.free_port())
    _pg_ctl(old, "-l", str(old.datadir / "server.log"), "-o", old._options(), "-w", "start")
    try:
        conn = await asyncpg.connect(old.dsn)  # the hole: no password needed
        await conn.execute("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)")
        await conn.close()
        if IS_ROOT:
            res = _other_user_psql(old, "127.0.0.1")
            assert res.returncode == 0, res.stderr
    finally:
        if not running:
            _pg_ctl(old, "-m", "fast", "-w", "stop")

    said: list[str] = []
    opts = up.parse_options(["--data-dir", str(data), "--pg-port", str(old.port)])
    try:
        pg = up.start_embedded(opts, said.append)
    except BaseException:
        old.stop(mode="immediate")  # no server left behind
        raise
    try:
        assert any("converted" in line and "trust" in line for line in said), said
        assert pg.pw_file == data / "pg-password"
        _assert_private(pg.pw_file)
        password = pg.pw_file.read_text().strip()
        await _assert_locked(pg, password)
        conn = await asyncpg.connect(pg.dsn, **pg.connect_kwargs())
        try:
            assert await conn.fetchval("SELECT x FROM kept") == 42
        finally:
            await conn.close()
        if IS_ROOT:
            for host in ("127.0.0.1", str(pg.datadir)):
                assert _other_user_psql(pg, host).returncode != 0
        assert not pg.uses_trust()
        assert pg.secure() is None  # a second run has nothing to convert
    finally:
        pg.stop(mode="immediate")


async def test_admin_commands_read_the_password_file_from_the_config(
        sec_pgauth_dir: Path, tmp_path: Path) -> None:
    """1. Start a cluster; write a config naming its URL (no password) and `[database]
       password_file`, as `smsgw up` does.
    2. `smsgw migrate --config …` exits 0 and `smsgw status --config …` works (the admin
       commands pass the password separately).
    3. The same config without `password_file` cannot connect; a password written in the
       config itself is refused (exit 78: secrets never go in the file).
    """
    pg = EmbeddedPostgres(sec_pgauth_dir / "pg", fsync=False)
    pg.start()
    try:
        url = pg.dsn
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("SMSGW_") and k not in ("PGPASSWORD", "PGPASSFILE")}
        env["PGPASSFILE"] = str(tmp_path / "no-pgpass")

        def cli(*args: str, config: str) -> subprocess.CompletedProcess[str]:
            path = tmp_path / "c.toml"
            path.write_text(config)
            return subprocess.run([sys.executable, "-m", "smsgw.services.cli", *args, "--config",
                                   str(path)], env=env, capture_output=True, text=True,
                                  timeout=60, cwd=ROOT)

        def cli_argv(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "smsgw.services.cli", *args], env=env,
                                  capture_output=True, text=True, timeout=60, cwd=ROOT)

        password_file = sec_pgauth_dir / "pg-password"
        good = f'[database]\nurl = "{url}"\npassword_file = "{password_file}"\n'
        res = cli("migrate", config=good)
        assert res.returncode == 0, res.stdout + res.stderr
        res = cli("status", "--json", config=good)
        assert res.returncode == 0, res.stdout + res.stderr
        password = password_file.read_text().strip()
        assert password not in res.stdout + res.stderr

        res = cli("migrate", config=f'[database]\nurl = "{url}"\n')
        assert res.returncode != 0
        assert "password" in res.stderr.lower()
        # `rules` takes --config before its subcommand; a refused login is a message, no trace
        path = tmp_path / "nopw.toml"
        path.write_text(f'[database]\nurl = "{url}"\n')
        res = cli_argv("rules", "--config", str(path), "list")
        assert res.returncode == 78, res.stdout + res.stderr
        assert "Traceback" not in res.stderr and "password" in res.stderr.lower()
        res = cli("migrate", config=f'[database]\nurl = "{url}"\npassword = "{password}"\n')
        assert res.returncode == 78
        assert "never written in the config" in res.stderr
    finally:
        pg.stop(mode="immediate")


def test_up_names_the_password_file_in_the_generated_config(tmp_path: Path) -> None:
    """The config `smsgw up` writes for its embedded Postgres holds the URL without a password
    and `[database] password_file`; a daemon loading it gets the password."""
    from smsgw.services.sender.settings import SenderSettings
    from smsgw.shared.runtime.config import load_config

    opts = up.parse_options(["--data-dir", str(tmp_path / "data")])
    opts.data_dir.mkdir(parents=True)
    pw_file = opts.data_dir / "pg-password"
    pw_file.write_text("generated-for-the-test\n")
    pw_file.chmod(0o600)
    plan = up.make_plan(opts, {})
    cfg = up.generated_config(plan, opts, database_url="postgresql://postgres@127.0.0.1:1/smsgw",
                              secret_file=up.server_secret(opts.data_dir),
                              password_file=pw_file)
    up.write_config(plan.config_path, cfg)
    text = plan.config_path.read_text()
    assert "generated-for-the-test" not in text
    loaded = load_config("sender", SenderSettings, path=str(plan.config_path), env={})
    assert loaded.database.url == "postgresql://postgres@127.0.0.1:1/smsgw"
    assert loaded.database.password is not None
    assert loaded.database.password.get_secret_value() == "generated-for-the-test"
    assert "generated-for-the-test" not in repr(loaded) + str(loaded.redacted_dump())
