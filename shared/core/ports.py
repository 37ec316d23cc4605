"""Blocks of free TCP ports on 127.0.0.1 for the stacks the project starts itself (`smsgw
bench`, the tests' `smsgw up` runs): ports a child binds some seconds after they were chosen.

The block is picked below the kernel's ephemeral range (`net.ipv4.ip_local_port_range`,
32768-60999 by default): a port in that range can be taken in between by any outgoing
connection on the machine (a Postgres client, another benchmark's driver), and the child
then exits at start with "address already in use"."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Iterable
from pathlib import Path

_LOW = 10000
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def port_free(port: int) -> bool:
    """Whether `port` on 127.0.0.1 can be bound right now."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(_EPHEMERAL.read_text().split()[0])
    return 32768


def free_block(offsets: Iterable[int], *, step: int = 1) -> int:
    """A base port such that base + each offset is free now, every one of them below the
    ephemeral range; `step` aligns the base (10: ports that read well)."""
    offsets = list(offsets)
    high = _ephemeral_low() - max(offsets, default=0) - 1
    if high <= _LOW:  # an unusual range: fall back to anywhere
        high = 65535 - max(offsets, default=0)
    for _ in range(200):
        base = random.randrange(_LOW, high, step)
        if all(port_free(base + o) for o in offsets):
            return base
    raise RuntimeError("no free block of ports")
