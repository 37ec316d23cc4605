"""`smsgw up`'s files are private: logs 0600 in a 0700 folder, the data folder 0700, and the
embedded Postgres set-up never opens the parent folders to every local user.

Before: log files were created 0644 (the umask's default) and, when `up` ran as root, the
embedded Postgres set-up added o+x to every parent folder of the data folder (the user's home
included), so every local account could reach the logs, which carry request data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsgw.services.admin import up
from smsgw.shared.core.embedded_pg import EmbeddedPostgres

IS_ROOT = os.geteuid() == 0


@pytest.fixture
def sec_modes_umask() -> Iterator[None]:
    """The usual 022 umask, under which the old code made 0644 files and 0755 folders."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command as another local account."""
    return subprocess.run(["runuser", "-u", "nobody", "--", *argv], capture_output=True,
                          text=True, timeout=30, cwd="/")


def test_up_log_files_are_0600_in_a_0700_folder(tmp_path: Path, sec_modes_umask: None) -> None:
    """1. A data folder from an older release: folder and logs 0755, a log file 0644.
    2. Run up's code path: the children's log set-up and each child opening its log (what
       `Child.start` does), then the data folder set-up (`up.run`'s first step).
    3. Every log file, new or old, is 0600; the logs folder and the data folder are 0700;
       (root) another local account can read none of them.
    """
    opts = up.parse_options(["--data-dir", str(tmp_path / "data"), "--senders", "2"])
    logs = opts.data_dir / "logs"
    logs.mkdir(parents=True, mode=0o755)
    opts.data_dir.chmod(0o755)
    logs.chmod(0o755)
    stale = logs / "sender-1.log"
    stale.write_text("an old line\n")
    stale.chmod(0o644)
    other = logs / "retired-1.log"  # no child writes it any more; still fixed
    other.write_text("older\n")
    other.chmod(0o644)

    children = up.build_children(opts, up.make_plan(opts, {}), {})
    for child in children:
        child.open_log().close()

    files = sorted(logs.iterdir())
    assert {p.name for p in files} >= {"sender-1.log", "sender-2.log", "processor-1.log",
                                       "receiver-1.log", "smsc-sim-1.log", "retired-1.log"}
    for path in files:
        assert _mode(path) == 0o600, (path.name, oct(_mode(path)))
    assert stale.read_text() == "an old line\n"  # appended to, never truncated
    assert _mode(logs) == 0o700
    up.private_dir(opts.data_dir)  # what `up` does with its data folder before anything
    assert _mode(opts.data_dir) == 0o700
    if IS_ROOT:
        assert _nobody("cat", str(logs / "sender-2.log")).returncode != 0
        assert _nobody("ls", str(logs)).returncode != 0


def test_a_new_data_folder_is_0700(tmp_path: Path, sec_modes_umask: None) -> None:
    """`up` creates its data folder 0700 whatever the umask, and tightens the 0755 (or, when
    run as root, 0701) one an older release left."""
    new = up.private_dir(tmp_path / "a" / "data")
    assert _mode(new) == 0o700
    for i, mode in enumerate((0o755, 0o701)):
        old = tmp_path / f"old{i}"
        old.mkdir()
        old.chmod(mode)
        assert _mode(up.private_dir(old)) == 0o700


@pytest.fixture
def sec_modes_home() -> Iterator[Path]:
    """A private folder tree standing for a user's home: /tmp/<x> 0700 / proj 0750."""
    home = Path(tempfile.mkdtemp(prefix="smsgw-sec-home-"))
    home.chmod(0o700)
    (home / "proj").mkdir(mode=0o750)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not IS_ROOT, reason="the server runs as another user only under root")
def test_embedded_postgres_adds_no_o_x_to_any_parent(sec_modes_home: Path,
                                                     sec_modes_umask: None) -> None:
    """1. As root, `smsgw up --data-dir HOME/proj/.smsgw` with HOME 0700 and proj 0750.
    2. Run up's data folder set-up and embedded Postgres start-up (`up.start_embedded`).
    3. The server runs (as its own user) and accepts the password; no folder above the data
       folder — nor the data folder — got any permission for others (o bits unchanged); another
       local account still cannot enter HOME, the data folder, the logs or read the password
       file; `up` said which folder got an ACL entry for the server's user alone.
    """
    data = sec_modes_home / "proj" / ".smsgw"
    opts = up.parse_options(["--data-dir", str(data)])
    parents = [p for p in data.parents if p != Path("/")]
    before = {p: p.stat().st_mode for p in parents}
    data.mkdir(mode=0o700)  # what up does first (`private_dir`; the old code: mkdir 0700)
    said: list[str] = []
    pg = up.start_embedded(opts, said.append)
    try:
        assert pg.running()
        for p in parents:
            assert p.stat().st_mode & 0o007 == before[p] & 0o007, (p, oct(p.stat().st_mode))
        assert data.stat().st_mode & 0o007 == 0
        assert _nobody("test", "-x", str(sec_modes_home)).returncode != 0
        assert _nobody("ls", str(data)).returncode != 0
        assert _nobody("cat", str(pg.pw_file)).returncode != 0
        assert pg.pw_file.stat().st_mode & 0o777 == 0o600
        granted = {str(p) for p in pg.granted}
        assert str(sec_modes_home) in granted and str(data) in granted
        assert all(any(g in line for line in said) for g in granted), said
        assert not any("o+x" in line for line in said)
    finally:
        pg.stop(mode="immediate")


@pytest.mark.skipif(not IS_ROOT, reason="the server runs as another user only under root")
def test_the_test_cluster_leaves_its_parents_alone(sec_modes_home: Path) -> None:
    """The same for the cluster the test harness and the benchmarks make (EmbeddedPostgres
    directly): parents keep their o bits; the server's user got only an ACL entry."""
    datadir = sec_modes_home / "proj" / "pg"
    before = {p: p.stat().st_mode for p in datadir.parents if p != Path("/")}
    pg = EmbeddedPostgres(datadir, fsync=False)
    pg.start()
    try:
        for p, mode in before.items():
            assert p.stat().st_mode & 0o007 == mode & 0o007, p
        assert _nobody("test", "-x", str(sec_modes_home)).returncode != 0
        assert subprocess.run(["runuser", "-u", pg.user or "postgres", "--", "test", "-x",
                               str(datadir.parent)]).returncode == 0
    finally:
        pg.stop(mode="immediate")
