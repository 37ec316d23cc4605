"""A token bucket that says how long to wait, instead of being polled.

It is the generic cell rate algorithm (GCRA): the bucket keeps one number, the theoretical
arrival time `tat` of the next send. `reserve()` takes a token and returns the delay after
which the caller may send, so nobody sleeps in a loop; `acquire()` lets async callers take
turns at 1/rate intervals; `try_acquire()` takes a token only when one is free at once. In
any window of length t at most `rate * t + capacity` sends are allowed, where capacity is
`burst` (burst 0 means 1: strictly spaced sends).

The clock is injected (`time.monotonic` in production) so tests can drive it; `set_rate()`
changes rate and burst in place for SIGHUP reloads; `pause()` pushes the next send out (used
when the SMSC answers ESME_RTHROTTLED).
"""

import asyncio
import time
from collections.abc import Callable

__all__ = ["TokenBucket"]


class TokenBucket:
    """Rate limiter for one bind (or one connector share).

    `rate` is sends per second (None or <= 0: unlimited); `burst` how many sends may go
    back-to-back after an idle period (0 = strictly spaced); `clock` returns seconds.
    """

    __slots__ = ("_clock", "_interval", "_lock", "_tat", "_tau", "burst", "rate")

    def __init__(
        self,
        rate: float | None,
        burst: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._tat = clock()
        self.rate: float | None = None
        self.burst = 0
        self._interval = 0.0
        self._tau = 0.0
        self._lock: asyncio.Lock | None = None
        self.set_rate(rate, burst)

    def set_rate(self, rate: float | None, burst: int | None = None) -> None:
        """Change the rate (and, if given, the burst) without losing the current schedule."""
        if burst is not None:
            if burst < 0:
                raise ValueError("burst must be >= 0")
            self.burst = burst
        self.rate = rate if rate and rate > 0 else None
        self._interval = 1.0 / self.rate if self.rate else 0.0
        self._tau = max(self.burst - 1, 0) * self._interval
        # A lower rate must not leave a schedule far in the future from the old one, nor a
        # higher rate keep a stale one: restart from now if tat is in the past.
        now = self._clock()
        if self._tat < now:
            self._tat = now

    def reserve(self) -> float:
        """Take one token; return the seconds to wait before using it (0.0: send now)."""
        if self.rate is None:
            return 0.0
        now = self._clock()
        tat = self._tat if self._tat > now else now
        allowed_at = tat - self._tau
        self._tat = tat + self._interval
        delay = allowed_at - now
        return delay if delay > 0.0 else 0.0

    def try_acquire(self) -> bool:
        """Take a token only if one is free now and no `acquire` is waiting for one (so a
        caller that cannot wait never overtakes one that does); False changes nothing."""
        if self.rate is None:
            return True
        if self._lock is not None and self._lock.locked():
            return False
        now = self._clock()
        tat = self._tat if self._tat > now else now
        if tat - self._tau > now:
            return False
        self._tat = tat + self._interval
        return True

    def refund(self) -> None:
        """Give back a token reserved but not used (e.g. the waiter was cancelled)."""
        if self.rate is not None:
            self._tat = max(self._tat - self._interval, self._clock())

    def pause(self, seconds: float) -> None:
        """Allow no send for `seconds` from now (an SMSC asked us to slow down)."""
        now = self._clock()
        self._tat = max(self._tat, now + seconds + self._tau)

    async def acquire(self, abort: asyncio.Event | None = None) -> bool:
        """Wait until one send is allowed (returns at once when a token is available).

        `abort`, when set while waiting, ends the wait early: the token is given back and
        the result is False (a closing session must not sit out its queue). True otherwise.

        Waiters take turns: each reserves only after the previous one has been released, so
        every reservation is made at the real current time. Had they all reserved up front,
        an event-loop stall would release every overdue waiter at once when it ends — a
        burst far above `burst` on the wire.
        """
        if self.rate is None:
            return True
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if abort is not None and abort.is_set():
                return False
            delay = self.reserve()
            if delay <= 0.0:
                return True
            try:
                if abort is None:
                    await asyncio.sleep(delay)
                    return True
                async with asyncio.timeout(delay):
                    await abort.wait()
            except TimeoutError:
                return True
            except asyncio.CancelledError:
                self.refund()
                raise
            self.refund()
            return False
