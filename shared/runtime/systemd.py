"""systemd notify protocol without libsystemd (after gunicorn's `systemd.py: sd_notify`).

`notify()` sends one datagram to `$NOTIFY_SOCKET` and is a no-op when it is unset, so the daemons
run the same under systemd, in a terminal and in tests (which bind their own socket). A leading
`@` names an abstract socket. Several assignments that must be seen together (`RELOADING=1` and
`MONOTONIC_USEC=`) go in ONE datagram, newline-separated.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

READY = "READY=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"
SEND_TIMEOUT_S = 0.2
"""The longest `notify` waits for room in the notify socket's queue."""


def _address(raw: str) -> str:
    # "@name" is an abstract socket: the kernel name starts with a NUL byte.
    return "\0" + raw[1:] if raw.startswith("@") else raw


def notify(msg: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `msg` to systemd; return True if a notify socket was configured and took it.

    Errors sending (socket gone) are swallowed on purpose: telling systemd is best effort and
    must never crash the daemon; the return value says whether it went out. It must never hang
    the daemon either: the send waits at most `SEND_TIMEOUT_S` for room in the receiver's
    queue (a daemon waiting for its database sends a STATUS= every try; a listener that stops
    reading once froze the whole event loop in a blocking send), then gives up.
    """
    addr = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    if not addr:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.connect(_address(addr))
            sock.sendall(msg.encode("utf-8"))
    except OSError:  # socket.timeout is an OSError too
        return False
    return True



def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd expects in `MONOTONIC_USEC=`."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def reloading_message() -> str:
    """`RELOADING=1` and `MONOTONIC_USEC=` for one datagram (systemd's reload protocol)."""
    return f"RELOADING=1\nMONOTONIC_USEC={monotonic_usec()}"


def status_message(text: str) -> str:
    """`STATUS=` with newlines flattened (a newline would start a new assignment)."""
    return "STATUS=" + " ".join(text.split("\n"))


def extend_timeout_message(seconds: float) -> str:
    """`EXTEND_TIMEOUT_USEC=`: "give me `seconds` more" for the current start/stop (systemd
    236+); sent again before each wait, so a start that waits for the database is never
    killed by `TimeoutStartSec=` while it still makes attempts."""
    return f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}"


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period systemd expects, in seconds, or None when no watchdog is asked for.

    `WATCHDOG_USEC` sets the period; when `WATCHDOG_PID` is set it must be this process
    (otherwise the variable was meant for a parent and was inherited).
    """
    env = os.environ if env is None else env
    usec, pid = env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID")
    if not usec or not (usec.isascii() and usec.isdigit()) or int(usec) == 0:
        return None
    if pid and (not (pid.isascii() and pid.isdigit()) or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


def parse_message(datagram: bytes) -> dict[str, str]:
    """Split a notify datagram into its assignments (`b"A=1\\nB=2"` -> `{"A": "1", "B": "2"}`)."""
    out: dict[str, str] = {}
    for line in datagram.decode("utf-8").split("\n"):
        if "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out
