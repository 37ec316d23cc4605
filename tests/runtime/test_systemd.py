"""systemd notify without systemd: datagrams on a real Unix socket, watchdog variables."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from smsgw.shared.runtime import systemd


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A bound abstract datagram socket and its NOTIFY_SOCKET value (`@name`)."""
    name = f"smsgw-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def test_notify_abstract_socket_one_datagram_per_message(
        abstract_socket: tuple[socket.socket, str]) -> None:
    """1. send READY=1, then the reload message; 2. each arrives as one datagram;
    3. RELOADING=1 and MONOTONIC_USEC (a current CLOCK_MONOTONIC value) are in the same one."""
    sock, addr = abstract_socket
    env = {"NOTIFY_SOCKET": addr}
    assert systemd.notify(systemd.READY, env)
    assert systemd.parse_message(sock.recv(4096)) == {"READY": "1"}
    before = systemd.monotonic_usec()
    assert systemd.notify(systemd.reloading_message(), env)
    msg = systemd.parse_message(sock.recv(4096))
    assert msg["RELOADING"] == "1"
    assert before <= int(msg["MONOTONIC_USEC"]) <= systemd.monotonic_usec()


def test_notify_path_socket_and_status_newlines(tmp_path: Path) -> None:
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        assert systemd.notify(systemd.status_message("binding\nconnector a"),
                              {"NOTIFY_SOCKET": str(path)})
        assert sock.recv(4096) == b"STATUS=binding connector a"


def test_notify_never_hangs_on_a_listener_that_stopped_reading(tmp_path: Path) -> None:
    """A notify socket nobody reads fills up; each notify then gives up within its send
    timeout (a blocking send froze a daemon's event loop waiting for its database, which
    sends a STATUS= every try) and says it did not go out."""
    path = tmp_path / "full.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        env = {"NOTIFY_SOCKET": str(path)}
        sent = 0
        started = time.monotonic()
        while systemd.notify(systemd.status_message("waiting " + "x" * 200), env):
            sent += 1
            assert sent < 100_000
        assert sent > 0
        slowest = time.monotonic()
        assert systemd.notify(systemd.READY, env) is False
        assert time.monotonic() - slowest < systemd.SEND_TIMEOUT_S + 0.5
        assert time.monotonic() - started < 30


def test_notify_without_socket_is_a_no_op(tmp_path: Path) -> None:
    assert systemd.notify(systemd.READY, {}) is False
    # A configured socket that is gone must not raise either (best effort).
    assert systemd.notify(systemd.READY, {"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False


def test_parse_message() -> None:
    assert systemd.parse_message(b"STATUS=a=b\nREADY=1\n") == {"STATUS": "a=b", "READY": "1"}


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "junk"}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert systemd.watchdog_interval_s(env) == expected
