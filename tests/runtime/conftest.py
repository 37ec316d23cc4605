"""Fixtures for the subprocess daemon tests: a NOTIFY_SOCKET receiver and daemon processes.

The daemons run as real `smsgw <daemon>` processes (the console script of the venv) with a
clean `SMSGW_*` environment, in a temp working directory (so no stray `smsgw.toml` is read),
on port 0 everywhere; each test reads the real ports back from the `http_site_started` log.
The harness itself is tests/harness.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from ..harness import NotifySocket, Spawner


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
    spawner = Spawner(tmp_path)
    try:
        yield spawner.start
    finally:
        await spawner.close()
