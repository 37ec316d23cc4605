"""One harness for the tests that run a daemon as a real process (`smsgw <daemon>`).

A `DaemonProcess` parses the daemon's JSON log lines as they arrive (`events`, raw `lines`) and
answers "has it logged X yet?" by waiting on them, never by sleeping: `named`, `wait_event`,
`ready` (its `daemon_ready` line). A `NotifySocket` stands in for systemd's `NOTIFY_SOCKET`
(READY=1, STOPPING=1, WATCHDOG=1). `Spawner` starts processes and kills whatever is still
running at teardown; `clean_env` is the environment without the runner's `SMSGW_*`, `NOTIFY_*`
and `WATCHDOG_*` variables, so only what a test sets reaches the daemon.

Imported as `from ..harness import …` (pytest's importlib mode makes `tests` a package).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from signal import SIGTERM, Signals
from typing import Any, Literal

import asyncpg
from aiohttp import web

from smsgw.shared.runtime import systemd

ROOT = Path(__file__).resolve().parents[1]
SMSGW = str(Path(sys.executable).with_name("smsgw"))
CLI_MODULE = [sys.executable, "-m", "smsgw.services.cli"]  # the same entry point, via python
WAIT_S = 20.0  # generous bound for a 2-core machine shared by several test runs

Stderr = Literal["pipe", "stdout", "devnull"]
_STDERR = {"pipe": asyncio.subprocess.PIPE, "stdout": asyncio.subprocess.STDOUT,
           "devnull": asyncio.subprocess.DEVNULL}


def query_rows(db_url: str, sql: str) -> list[dict[str, Any]]:
    """`sql`'s rows as dicts, from a synchronous test (its own connection, closed after)."""
    from smsgw.shared.core import db

    async def run() -> list[dict[str, Any]]:
        conn = await db.connect(db_url)
        try:
            return [dict(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()
    return asyncio.run(run())


@asynccontextmanager
async def empty_database(admin_url: str, name: str) -> AsyncIterator[str]:
    """An empty database `name` (no migrations) on `admin_url`'s server; yields its URL and
    drops it afterwards (for tests that migrate step by step)."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await conn.close()


def clean_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """`os.environ` without SMSGW_*, NOTIFY_* and WATCHDOG_* variables, plus `extra`."""
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if not k.startswith(("SMSGW_", "NOTIFY_", "WATCHDOG_"))}
    env.update(extra)
    return env


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[int]:
    """Serve `app` on 127.0.0.1 on a free port for the block; yield the port."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield int(runner.addresses[0][1])
    finally:
        await runner.cleanup()


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def closed_by_server(reader: asyncio.StreamReader, bound_s: float = 30.0) -> bool:
    """Read until the server closes (EOF or reset); False if it is still open after
    `bound_s`."""
    try:
        async with asyncio.timeout(bound_s):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


class NotifySocket:
    """An abstract Unix datagram socket standing in for systemd; records every datagram."""

    def __init__(self) -> None:
        self.name = f"smsgw-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.setblocking(False)
        self.messages: list[dict[str, str]] = []
        self._seen = 0

    @property
    def address(self) -> str:
        return "@" + self.name

    async def expect(self, key: str, value: str = "1", within_s: float = WAIT_S) -> dict[str, str]:
        """The next datagram (after the last one returned) holding `key=value`."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(within_s):
            while True:
                while self._seen < len(self.messages):
                    msg = self.messages[self._seen]
                    self._seen += 1
                    if msg.get(key) == value:
                        return msg
                data = await loop.sock_recv(self.sock, 4096)
                self.messages.append(systemd.parse_message(data))

    def close(self) -> None:
        self.sock.close()


class DaemonProcess:
    """One `smsgw <daemon>` subprocess whose JSON log lines are parsed as they arrive.

    `port` is the API port the test chose for it (None when it chose none); `wait_s` bounds
    every wait that is not given its own bound.
    """

    def __init__(self, proc: asyncio.subprocess.Process, *, port: int | None = None,
                 wait_s: float = WAIT_S) -> None:
        self.proc = proc
        self.port = port
        self.wait_s = wait_s
        self.events: list[dict[str, Any]] = []
        self.lines: list[bytes] = []
        self.stderr = b""
        self._ended = False
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            async for raw in self.proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    event = {"event": "<not json>", "raw": raw.decode(errors="replace")}
                async with self._changed:
                    self.lines.append(raw)
                    self.events.append(event)
                    self._changed.notify_all()
        finally:
            self._ended = True
            async with self._changed:
                self._changed.notify_all()

    @property
    def log(self) -> bytes:
        """Everything logged so far."""
        return b"".join(self.lines)

    def seen(self, name: str) -> bool:
        """Whether an event called `name` has been logged."""
        return any(e.get("event") == name for e in self.events)

    async def wait_event(self, pred: Callable[[dict[str, Any]], bool],
                         within_s: float | None = None, start: int = 0) -> dict[str, Any]:
        """The first log event from index `start` on that satisfies `pred`; AssertionError
        when the output ends without one."""
        async with asyncio.timeout(within_s or self.wait_s), self._changed:
            while True:
                for event in self.events[start:]:
                    if pred(event):
                        return event
                if self._ended:
                    raise AssertionError(f"daemon exited: {self.events[-5:]}")
                await self._changed.wait()

    async def named(self, name: str, within_s: float | None = None,
                    **match: Any) -> dict[str, Any]:
        """The first event called `name` whose keys include `match`."""
        return await self.wait_event(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in match.items()),
            within_s)

    async def ready(self, within_s: float | None = None) -> DaemonProcess:
        """Wait for the `daemon_ready` line (READY=1 is sent right after it)."""
        await self.named("daemon_ready", within_s)
        return self

    async def site_port(self, site: str) -> int:
        """The port an HTTP site (`api`, `health`, …) is listening on, from its log line."""
        return int((await self.named("http_site_started", site=site))["port"])

    def signal(self, sig: Signals) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, within_s: float | None = None) -> int:
        """Wait for the exit (and the last log line); the exit code."""
        async with asyncio.timeout(within_s or self.wait_s):
            if self.proc.stderr is not None:
                self.stderr = await self.proc.stderr.read()
            code = await self.proc.wait()
            await self._reader
        return code

    async def stop(self, sig: Signals = SIGTERM,
                   within_s: float | None = None) -> int:
        """Send `sig` unless it has exited already; the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        return await self.exit_code(within_s)

    async def kill(self) -> None:
        """SIGKILL if still running (teardown)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


async def start_daemon(*args: str, env: Mapping[str, str], cwd: Path | str,
                       python: list[str] | None = None, stderr: Stderr = "pipe",
                       port: int | None = None, wait_s: float = WAIT_S) -> DaemonProcess:
    """Start `smsgw <args>` (or `python` + args) with exactly `env` in `cwd`."""
    cmd = [*python, *args] if python else [SMSGW, *args]
    proc = await asyncio.create_subprocess_exec(
        *cmd, env=dict(env), cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=_STDERR[stderr])
    return DaemonProcess(proc, port=port, wait_s=wait_s)


class Spawner:
    """Starts daemon processes in `cwd` (see `start_daemon`); `close()` kills the survivors."""

    def __init__(self, cwd: Path | str, *, stderr: Stderr = "pipe",
                 wait_s: float = WAIT_S) -> None:
        self.cwd = cwd
        self.stderr: Stderr = stderr
        self.wait_s = wait_s
        self.started: list[DaemonProcess] = []

    async def start(self, *args: str, env: Mapping[str, str], python: list[str] | None = None,
                    port: int | None = None) -> DaemonProcess:
        daemon = await start_daemon(*args, env=env, cwd=self.cwd, python=python,
                                    stderr=self.stderr, port=port, wait_s=self.wait_s)
        self.started.append(daemon)
        return daemon

    async def close(self) -> None:
        for daemon in self.started:
            await daemon.kill()
