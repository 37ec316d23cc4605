"""Small asyncio helpers: the loop runner, and waiting for something unless `stop` comes first.

Every long-running loop in smsgw waits for *something* (a NOTIFY, a wake-up event, a closed
connection, a backoff interval) and must give up the moment its `stop` event is set, without
leaving a task behind. `race_stop` and `sleep_or_stop` are that pattern, written once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """`uvloop.run` when uvloop is installed (the daemons' loop), else `asyncio.run`."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


async def race_stop(aw: Awaitable[T], stop: asyncio.Event,
                    timeout_s: float | None = None) -> tuple[bool, T | None]:
    """Await `aw` unless `stop` is set first or `timeout_s` passes.

    Returns `(True, result)` when `aw` finished first (also when `stop` was set in the same
    moment), `(False, None)` when `stop` or the timeout came first; `aw` is then cancelled and
    awaited, so no task outlives the call. An exception raised by `aw` propagates. `stop` may
    be any event that ends the wait (a "closed" or "lost" event as well as a daemon's stop).

        finished, woken = await race_stop(listener.wait(channel, 5.0), stop)
    """
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((task, stopper), timeout=timeout_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        finished = task.done()
        losers = [t for t in (task, stopper) if not t.done()]
        for t in losers:
            t.cancel()
        if losers:
            await asyncio.gather(*losers, return_exceptions=True)
    if not finished:
        return False, None
    return True, task.result()


async def sleep_or_stop(stop: asyncio.Event, seconds: float | None) -> bool:
    """Sleep `seconds` (None: until stopped), ending early when `stop` is set.

    Returns True when `stop` ended the sleep, False when the time ran out. The interruptible
    pause between a loop's rounds: shutdown never waits for a full interval.
    """
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


__all__ = ["loop_runner", "race_stop", "sleep_or_stop"]
