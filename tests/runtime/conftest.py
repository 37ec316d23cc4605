"""Helpers for the subprocess daemon tests: a NOTIFY_SOCKET receiver and a daemon process.

The daemons run as real `smsgw <daemon>` processes (the console script of the venv) with a
clean `SMSGW_*` environment, in a temp working directory (so no stray `smsgw.toml` is read),
on port 0 everywhere; each test reads the real ports back from the `http_site_started` log.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from smsgw.shared.runtime import systemd

SMSGW = str(Path(sys.executable).with_name("smsgw"))
WAIT_S = 20.0  # generous bound for a 2-core machine shared by several test runs


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
    """One `smsgw <daemon>` subprocess whose JSON log lines are parsed as they arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "<not json>", "raw": raw.decode(errors="replace")}
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    async def wait_event(self, pred: Callable[[dict[str, Any]], bool],
                         within_s: float = WAIT_S, start: int = 0) -> dict[str, Any]:
        """The first log event from index `start` on that satisfies `pred`."""
        async with asyncio.timeout(within_s), self._changed:
            while True:
                for event in self.events[start:]:
                    if pred(event):
                        return event
                await self._changed.wait()

    async def named(self, name: str, within_s: float = WAIT_S, **match: Any) -> dict[str, Any]:
        """The first event called `name` whose keys include `match`."""
        return await self.wait_event(
            lambda e: e.get("event") == name and all(e.get(k) == v for k, v in match.items()),
            within_s)

    async def port(self, site: str) -> int:
        return int((await self.named("http_site_started", site=site))["port"])

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def exit_code(self, within_s: float = WAIT_S) -> int:
        async with asyncio.timeout(within_s):
            assert self.proc.stderr is not None
            self.stderr = await self.proc.stderr.read()
            code = await self.proc.wait()
            await self._reader
        return code

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()


@pytest.fixture
async def notify_socket() -> AsyncIterator[NotifySocket]:
    sock = NotifySocket()
    try:
        yield sock
    finally:
        sock.close()


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start `smsgw <args>` with `env` in tmp_path; every process is killed at teardown."""
    started: list[DaemonProcess] = []

    async def start(*args: str, env: dict[str, str], python: list[str] | None = None
                    ) -> DaemonProcess:
        cmd = [*python, *args] if python else [SMSGW, *args]
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        started.append(DaemonProcess(proc))
        return started[-1]

    try:
        yield start
    finally:
        for daemon in started:
            await daemon.kill()
