"""Small asyncio helpers shared by the command-line entry points."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def loop_runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """`uvloop.run` when uvloop is installed (the daemons' loop), else `asyncio.run`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run
