"""tests/ops fixtures: run `smsgw up` as a subprocess for the end-to-end tests (free ports, an
own data folder, its output collected), helpers to wait for it and read what it wrote, and the
opt-in switch of the `prometheus` tests (run them with `-m prometheus`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from smsgw.shared.core import ports
from smsgw.shared.core.ports import port_free


def free_block(offsets: list[int]) -> int:
    """A base port (a multiple of 10) such that base + each offset is free now, below the
    kernel's ephemeral range (`shared.core.ports`: a port in it could be taken by the other
    xdist worker's Postgres clients before the child bound it)."""
    return ports.free_block(offsets, step=10)


def clean_env() -> dict[str, str]:
    """Our environment without SMSGW_* (so the embedded default is used) and systemd's vars."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("SMSGW_") and k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}


def wait_for(cond: Callable[[], Any], timeout_s: float, what: str, step_s: float = 0.2) -> Any:
    """Poll `cond` until it returns something truthy; fail with `what` after the timeout."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(step_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


@dataclass
class Up:
    """One `smsgw up` process."""

    data_dir: Path
    extra: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=clean_env)
    proc: subprocess.Popen[str] | None = None
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    base: int = 0

    _pumps: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        # offsets from the base: API 80, metrics 100 + 1..4 (+10 per instance), SMPP 75, the
        # receivers' SMPP server for ESMEs 76-77 (every port a child binds: a port another test
        # or process holds made a child exit 1 at start)
        self.base = free_block([80, 81, 75, 76, 77, 101, 102, 103, 104, 111, 112, 113, 114])
        argv = [sys.executable, "-m", "smsgw.services.cli", "up", "--data-dir", str(self.data_dir),
                "--api-port", str(self.base + 80), "--metrics-port-base", str(self.base + 100),
                "--smpp-port", str(self.base + 75), "--esme-port", str(self.base + 76),
                "--stop-timeout", "30", *self.extra]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, cwd=self.data_dir.parent)
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            pump = threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            pump.start()
            self._pumps.append(pump)

    @staticmethod
    def _pump(stream: Any, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.base + 80}"

    def text(self) -> str:
        return "\n".join(self.out) + "\n--- stderr ---\n" + "\n".join(self.err)

    def wait_up(self, timeout_s: float = 150) -> None:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"smsgw up exited {self.proc.returncode}:\n{self.text()}")
            return any(line == "smsgw is up." for line in self.out)
        wait_for(ready, timeout_s, "smsgw up to print its banner")

    def curl_line(self) -> str:
        for line in self.out:
            if line.strip().startswith("curl "):
                return line.strip()
        raise AssertionError(f"no curl line in the banner:\n{self.text()}")

    def endpoints(self) -> dict[str, Any]:
        return json.loads((self.data_dir / "endpoints.json").read_text())

    def smsgw(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run an admin command next to this `up` (it finds the data folder's config)."""
        return subprocess.run([sys.executable, "-m", "smsgw.services.cli", *args, "--data-dir",
                               str(self.data_dir)], env=self.env, capture_output=True,
                              text=True, timeout=timeout, cwd=self.data_dir.parent)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait_exit(self, timeout_s: float = 120) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout_s)
        self._close_pipes()
        return code

    def _close_pipes(self) -> None:
        """Let the pumps read to EOF, then close both pipes (no ResourceWarning)."""
        for pump in self._pumps:
            pump.join(timeout=10)
        assert self.proc is not None
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def kill(self) -> None:
        """Last-resort cleanup: kill up, its children and its Postgres."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close_pipes()
        with contextlib.suppress(Exception):
            for pid in self.endpoints()["children"].values():
                with contextlib.suppress(ProcessLookupError, TypeError):
                    os.kill(pid, signal.SIGKILL)
        pg = self.data_dir / "pg"
        if (pg / "postmaster.pid").exists():
            from smsgw.shared.core.embedded_pg import EmbeddedPostgres
            EmbeddedPostgres(pg, port=1).stop(mode="immediate")


def curl_equivalent(line: str) -> tuple[str, dict[str, str], bytes]:
    """(URL, headers, body) of the banner's `curl -X POST URL -H … -d …` line."""
    words = shlex.split(line)
    url = next(w for w in words if w.startswith("http"))
    headers = {}
    body = b""
    for i, w in enumerate(words):
        if w == "-H":
            k, v = words[i + 1].split(":", 1)
            headers[k.strip()] = v.strip()
        elif w == "-d":
            body = words[i + 1].encode()
    return url, headers, body


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of one child's log file."""
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            events.append(json.loads(line))
    return events


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purpose.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return re.search(r"\) (\S)", stat).group(1) != "Z"  # type: ignore[union-attr]
    return False


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture
def up_factory():  # type: ignore[no-untyped-def]
    """Make `Up` runners (each with its own data folder under tmp); all cleaned up after.

    The folders are not under pytest's tmp_path: as root, `up` runs Postgres as `postgres`,
    which must reach the data folder for as long as the server runs, and every pytest start
    resets pytest's temp root to 0700 (dropping the search permission `up` granted).
    """
    made: list[Up] = []
    base = Path(tempfile.mkdtemp(prefix="smsgw-ops-up-"))

    def make(extra: list[str] | None = None, data_dir: Path | None = None,
             data_name: str = "data") -> Up:
        up = Up(data_dir or base / f"up{len(made)}" / data_name, extra=list(extra or []))
        up.data_dir.parent.mkdir(parents=True, exist_ok=True)
        made.append(up)
        return up

    yield make
    errors = []
    for up in reversed(made):  # newest first: a later run may hold the shared data folder
        try:
            up.kill()
        except Exception as exc:  # noqa: BLE001 - clean up every run, then report
            errors.append(exc)
    shutil.rmtree(base, ignore_errors=True)
    if errors:
        raise errors[0]


@pytest.fixture
def ops() -> types.SimpleNamespace:
    """The helper functions of this folder."""
    return types.SimpleNamespace(wait_for=wait_for, curl_equivalent=curl_equivalent,
                                 log_events=log_events, pid_alive=pid_alive,
                                 port_free=port_free, free_block=free_block, clean_env=clean_env)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`prometheus` tests are opt-in: they run only when selected with `-m prometheus`."""
    selected = config.getoption("-m") or ""
    if "prometheus" in selected and "not prometheus" not in selected:
        return
    skip = pytest.mark.skip(reason="opt-in: run with -m prometheus")
    for item in items:
        if "prometheus" in item.keywords:
            item.add_marker(skip)
