"""Fixtures shared by the security regression tests (each helper's prefixed by its area)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# -- edge: a real `smsgw receiver` process, its log captured ----------------------------------

def sec_edge_free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SecEdgeDaemon:
    """One `smsgw receiver` process: its API port and every line it wrote (stdout+stderr)."""

    proc: asyncio.subprocess.Process
    port: int
    lines: list[bytes] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @property
    def log(self) -> bytes:
        """Everything logged so far."""
        return b"".join(self.lines)

    async def stop(self) -> int:
        """SIGTERM, wait for the exit and the last log line; the exit code."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            code = await self.proc.wait()
            if self.reader is not None:
                await self.reader
        return code


SecEdgeStart = Callable[..., Awaitable[SecEdgeDaemon]]


@pytest.fixture
async def sec_edge_receiver(db_url: str) -> AsyncIterator[SecEdgeStart]:
    """Start `smsgw receiver` processes on the test database with extra environment; each
    is ready (its `daemon_ready` line seen) when returned, and stopped at the end."""
    started: list[SecEdgeDaemon] = []

    async def start(env: dict[str, str], *, port: int | None = None,
                    ready: bool = True) -> SecEdgeDaemon:
        port = port or sec_edge_free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
        full.update({"SMSGW_DATABASE_URL": db_url, "SMSGW_RECEIVER__HTTP_PORT": str(port),
                     "SMSGW_RECEIVER__METRICS_PORT": "0",
                     "SMSGW_RECEIVER__DEFAULT_COUNTRY": "GB",
                     "SMSGW_RECEIVER__SMPP_BINDS": "false", **env})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "receiver", cwd=ROOT, env=full,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        daemon = SecEdgeDaemon(proc, port)
        started.append(daemon)
        seen = asyncio.Event()

        async def read() -> None:
            assert proc.stdout is not None
            while line := await proc.stdout.readline():
                daemon.lines.append(line)
                if b'"daemon_ready"' in line:
                    seen.set()
            seen.set()

        daemon.reader = asyncio.get_running_loop().create_task(read())
        if ready:
            async with asyncio.timeout(60):
                await seen.wait()
            assert not daemon.reader.done(), b"".join(daemon.lines).decode(errors="replace")
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.returncode is None:
            daemon.proc.kill()
            await daemon.proc.wait()
        if daemon.reader is not None:
            daemon.reader.cancel()
