"""Wake-ups: a dedicated LISTEN connection that turns NOTIFYs into per-channel asyncio Events.

Producers send one NOTIFY per transaction (`store.enqueue(notify=True)` / `store.notify`);
consumers claim until the queue is empty, then `wait` for the next notification or a fallback
timer — the timer also picks up retries whose `run_after` has come and anything missed while
the listener was reconnecting. No sleep-polling.

The connection is not taken from a pool: asyncpg resets a pooled connection with `UNLISTEN *`
when it is released. A dead connection is noticed by asyncpg's termination callback or by the
periodic `SELECT 1` health check; the listener then reconnects with capped, jittered
exponential backoff (stamina) and sets every channel's event, so each consumer runs a claim
pass and catches up on what it missed.

Usage::

    listener = Listener(dsn, [CHANNELS["outbound"]], health_check_s=5)
    await listener.start()                      # raises DatabaseUnavailable if it cannot connect
    await consume(listener, CHANNELS["outbound"], claim_pass, stop=stop, poll_s=5)
    await listener.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, NamedTuple

import asyncpg
import stamina
import structlog

from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.db import CONNECTION_ERRORS, DATABASE_ERRORS, connect_primary
from smsgw.shared.core.errors import DatabaseUnavailable

log = structlog.get_logger(__name__)

CHANNELS: Final[dict[str, str]] = {
    "inbound": "smsgw_inbound",
    "outbound": "smsgw_outbound",
    "receipts": "smsgw_receipts",
    "callbacks": "smsgw_callbacks",
    "rules": "smsgw_rules",
    "connectors": "smsgw_connectors",  # connector_state's trigger (migration 0014)
    "reports": "smsgw_reports",
    "esme_deliveries": "smsgw_esme_deliveries",
}
"""Queue/topic → NOTIFY channel. The queue tables' channels carry an empty payload; so does
`connectors` (a connector's run-time state changed: `shared.domain.connector_state`)."""


class Listener:
    """LISTEN on `channels` over one dedicated connection; see the module docstring.

    `on_reconnect` is called (synchronously, keep it short) after every successful reconnect;
    `health_check_s` is the interval of the `SELECT 1` check (also its timeout).
    `reconnects` counts reconnects; `connected` tells whether the connection is up now.
    `application_name` shows the connection in pg_stat_activity.
    """

    def __init__(self, dsn: str, channels: list[str], *,
                 on_reconnect: Callable[[], None] | None = None,
                 health_check_s: float = 5.0, reconnect_max_s: float = 5.0,
                 application_name: str = "smsgw_listener",
                 password: str | Callable[[], str] | None = None) -> None:
        self._dsn = dsn
        self._password = password  # never in the DSN (DatabaseSettings.connect_kwargs)
        self._app_name = application_name
        self._events = {ch: asyncio.Event() for ch in channels}
        self._on_reconnect = on_reconnect
        self._health_check_s = health_check_s
        self._reconnect_max_s = reconnect_max_s
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.reconnects = 0

    @property
    def connected(self) -> bool:
        """True while the LISTEN connection is open (it may still die before the next check)."""
        return self._conn is not None and not self._conn.is_closed()

    @property
    def channels(self) -> list[str]:
        """The channels this listener subscribes to."""
        return list(self._events)

    async def start(self) -> None:
        """Connect and LISTEN, then supervise the connection in a background task.

        Raises `DatabaseUnavailable` when the first connection fails (the daemon is not ready).
        """
        try:
            await self._connect()
        except DATABASE_ERRORS as exc:
            raise DatabaseUnavailable(f"listener cannot connect: {exc}") from exc
        self._task = asyncio.create_task(self._supervise(), name="queue.listener")

    async def close(self) -> None:
        """Stop supervising and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._disconnect()

    def raise_if_failed(self) -> None:
        """Re-raise the error that ended the supervising task, if it died (a bug: it retries
        connection errors forever). `consume` calls it on every loop, so a dead listener ends
        the consumer — and the daemon — instead of hiding behind a running process."""
        task = self._task
        if task is not None and task.done() and not task.cancelled():
            exc = task.exception()
            if exc is not None:
                raise exc

    def event(self, channel: str) -> asyncio.Event:
        """The event set by notifications on `channel` (and after every reconnect)."""
        return self._events[channel]

    async def wait(self, channel: str, timeout_s: float) -> bool:
        """Wait for a notification on `channel`: True when notified, False when `timeout_s`
        passed first. Clears the event, so the next wait blocks until the next notification
        (one that arrived during the caller's claim pass makes it return at once)."""
        ev = self._events[channel]
        try:
            async with asyncio.timeout(timeout_s):
                await ev.wait()
        except TimeoutError:
            return False
        ev.clear()
        return True

    # -- connection management -------------------------------------------------------------

    def _notified(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        ev = self._events.get(channel)
        if ev is not None:
            ev.set()

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn = await connect_primary(self._dsn, timeout=self._health_check_s + 5,
                                     password=self._password,
                                     server_settings={"application_name": self._app_name})
        try:
            for ch in self._events:
                await conn.add_listener(ch, self._notified)
        except BaseException:
            conn.terminate()
            raise
        conn.add_termination_listener(self._terminated)
        self._lost.clear()
        self._conn = conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None or conn.is_closed():
            return
        conn.remove_termination_listener(self._terminated)
        try:
            await asyncio.wait_for(conn.close(), timeout=2.0)
        except DATABASE_ERRORS:
            conn.terminate()

    async def _healthy(self) -> bool:
        """Wait up to one health-check period; False as soon as the connection is known dead."""
        try:
            async with asyncio.timeout(self._health_check_s):
                await self._lost.wait()
            return False
        except TimeoutError:
            pass
        conn = self._conn
        if conn is None or conn.is_closed():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=self._health_check_s)
        except DATABASE_ERRORS:
            return False
        return True

    async def _supervise(self) -> None:
        while True:
            if await self._healthy():
                continue
            log.warning("listener_connection_lost", channels=self.channels)
            conn, self._conn = self._conn, None
            if conn is not None:
                conn.terminate()
            await self._reconnect()

    async def _reconnect(self) -> None:
        async for attempt in stamina.retry_context(
                on=DATABASE_ERRORS, attempts=None, timeout=None, wait_initial=0.05,
                wait_max=self._reconnect_max_s, wait_jitter=0.1):
            with attempt:
                await self._connect()
        self.reconnects += 1
        log.info("listener_reconnected", channels=self.channels, reconnects=self.reconnects)
        # Anything notified while we were away is lost: make every consumer run a claim pass.
        for ev in self._events.values():
            ev.set()
        if self._on_reconnect is not None:
            self._on_reconnect()


class Pass(NamedTuple):
    """What a claim pass may return instead of a row count: `rows` claimed, and `more`, False
    when the consumer knows a claim now would find nothing (a short batch with no row waiting
    behind its own, head-of-line), so `consume` waits for a NOTIFY instead of an empty claim."""

    rows: int
    more: bool


async def consume(listener: Listener, channel: str,
                  claim_pass: Callable[[], Awaitable[int | Pass]], *,
                  stop: asyncio.Event, poll_s: float,
                  on_fallback: Callable[[], None] | None = None,
                  on_error: Callable[[BaseException], None] | None = None,
                  error_backoff_s: float = 1.0, linger_s: float = 0.0,
                  adaptive_linger_s: float = 0.0) -> None:
    """Run `claim_pass` until it returns 0, then wait for a NOTIFY on `channel`, the fallback
    timer `poll_s` (which also serves retries whose run_after has come) or `stop`; repeat until
    `stop` is set.

    `claim_pass` claims, processes and writes back one batch and returns how many rows it
    claimed, or a `Pass` whose `more` False ends the claim passes before an empty one. A row
    committed after a pass's claim sends its NOTIFY after that, which sets the channel's
    event, which only the wait clears: the next wait returns at once. An exception from it is
    this loop's boundary: logged as `claim_pass_failed`, reported to `on_error` (a counter),
    then the loop waits `error_backoff_s` (or `stop`) and tries again — a database outage does
    not end the consumer. `on_fallback` is called when the timer, not a notification, ended a
    wait. `linger_s` > 0: after a notification, wait that
    long (or `stop`) before the next claim, so that one claim takes what arrives meanwhile.
    `adaptive_linger_s` > 0: the same, but only while busy — the loop keeps a moving average
    of the rows it claims per second, and after a notification it waits for about
    `ADAPTIVE_TARGET` rows (at most `adaptive_linger_s`) only when at least two rows are
    expected in that time; when quiet it claims at once.
    """
    rate = _RowRate()
    while not stop.is_set():
        listener.raise_if_failed()
        if not await _claim_until_empty(claim_pass, stop, channel, on_error, rate):
            await sleep_or_stop(stop, error_backoff_s)
            continue
        if stop.is_set():
            break
        if not await _wait_event(listener.event(channel), stop, poll_s):
            if on_fallback is not None:
                on_fallback()
        elif linger_s > 0:
            await sleep_or_stop(stop, linger_s)
        elif adaptive_linger_s > 0 and (wait := rate.linger(adaptive_linger_s)) > 0:
            await sleep_or_stop(stop, wait)


ADAPTIVE_TARGET: Final = 16
"""Rows an adaptive claim linger waits for (bounded by its time limit)."""
QUIET_AFTER_S: Final = 0.05
"""No claim pass for this long (or 4 lingers): the queue is quiet, claim at once."""


class _RowRate:
    """Moving average of the rows a consumer claims per second (over its claim passes)."""

    def __init__(self) -> None:
        self._per_s = 0.0
        self._since = self._last_pass = time.monotonic()
        self._rows = 0

    def add(self, rows: int) -> None:
        """Count the rows one claim pass took; fold them into the average every 50 ms."""
        self._rows += max(rows, 0)
        now = self._last_pass = time.monotonic()
        elapsed = now - self._since
        if elapsed >= 0.05:
            sample = self._rows / elapsed
            # a long quiet spell (elapsed ≫ 50 ms) counts for more, so the average falls fast
            weight = min(1.0, 0.25 * elapsed / 0.05)
            self._per_s += (sample - self._per_s) * weight
            self._since, self._rows = now, 0

    def linger(self, limit_s: float) -> float:
        """Seconds to wait before claiming after a notification (0: claim now)."""
        if time.monotonic() - self._last_pass > max(QUIET_AFTER_S, 4 * limit_s):
            return 0.0  # no claim pass for a while: quiet, whatever the average last said
        if self._per_s * limit_s < 2:
            return 0.0
        return min(limit_s, ADAPTIVE_TARGET / self._per_s)


async def _claim_until_empty(claim_pass: Callable[[], Awaitable[int | Pass]],
                             stop: asyncio.Event, channel: str,
                             on_error: Callable[[BaseException], None] | None,
                             rate: _RowRate) -> bool:
    """Claim passes until one returns 0 or `Pass(more=False)` (or `stop`), counting their
    rows into `rate`; False when one raised (logged, reported to `on_error`)."""
    try:
        while not stop.is_set():
            result = await claim_pass()
            rows, more = (result.rows, result.more) if isinstance(result, Pass) \
                else (result, result > 0)
            rate.add(rows)
            if rows <= 0 or not more:
                break
    except CONNECTION_ERRORS as exc:  # the database is down or failing over: no traceback
        # per pass; what the pass claimed comes back by its lease or its transaction's
        # rollback, so nothing is half-applied
        log.warning("claim_pass_db_unavailable", channel=channel,
                    error=f"{type(exc).__name__}: {exc}"[:300])
        error: BaseException = exc
    except Exception as exc:  # loop boundary: log, count, back off, continue
        log.exception("claim_pass_failed", channel=channel)
        error = exc
    else:
        return True
    if on_error is not None:
        on_error(error)
    return False


async def _wait_event(event: asyncio.Event, stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait for `event` (then clear it), `stop` or the timeout; True unless the timeout ended
    it."""
    if event.is_set():
        event.clear()
        return True
    woken, _ = await race_stop(event.wait(), stop, timeout_s)
    if woken:
        event.clear()
    return woken or stop.is_set()
