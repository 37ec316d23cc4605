"""Process lifecycle pieces: signal events, the watchdog, the drain deadline, the stop budget.

Signal handlers only set events (gunicorn's arbiter; docs/ARCHITECTURE.md "The daemon contract");
the daemon's main task does the work. After the first SIGINT/SIGTERM the SIGINT handler is removed,
so a second Ctrl-C
raises KeyboardInterrupt at once and skips the drain (procrastinate `signals.py`).
`shared.runtime.daemon.Daemon` puts these together; this module has no daemon-specific knowledge.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime import systemd
from smsgw.shared.runtime.metrics import RuntimeMetrics

C = TypeVar("C")

log = structlog.stdlib.get_logger("smsgw.lifecycle")

# Close timeouts of each shutdown stage after the drain; the stop budget adds them up, and the
# teardown in shared.runtime.daemon enforces exactly these values.
LISTENER_CLOSE_TIMEOUT_S = 2.0
POOL_CLOSE_TIMEOUT_S = 5.0
RELEASE_TIMEOUT_S = 5.0  # the daemon's release() hook (e.g. releasing leases)
SITE_CLOSE_TIMEOUT_S = 3.0  # aiohttp shutdown_timeout of each HTTP site
STOP_MARGIN_S = 5.0
# The TimeoutStopSec= the unit files use; the budget test keeps the sum below it.
DEFAULT_TIMEOUT_STOP_S = 45.0
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_CONFIG = 78  # EX_CONFIG: systemd units set RestartPreventExitStatus=78
EXIT_INTERRUPTED = 130  # second SIGINT: exit at once


@dataclass
class SignalEvents:
    """SIGTERM/SIGINT set `stop`; SIGHUP sets `reload`. Nothing else happens in a handler."""

    stop: asyncio.Event = field(default_factory=asyncio.Event)
    reload: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[str] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Register the handlers on `loop` (main thread only)."""
        self._loop = loop
        loop.add_signal_handler(signal.SIGTERM, self._on_stop, "SIGTERM")
        loop.add_signal_handler(signal.SIGINT, self._on_stop, "SIGINT")
        loop.add_signal_handler(signal.SIGHUP, self._on_reload)

    def uninstall(self) -> None:
        """Remove every handler this object installed (idempotent)."""
        if self._loop is None:
            return
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._loop.remove_signal_handler(sig)
        self._loop = None

    def _on_stop(self, name: str) -> None:
        self.received.append(name)
        if not self.stop.is_set():
            self.stop.set()
            # A second Ctrl-C now raises KeyboardInterrupt (asyncio restores Python's default
            # SIGINT handler on removal) and the process exits without draining.
            if self._loop is not None:
                self._loop.remove_signal_handler(signal.SIGINT)

    def _on_reload(self) -> None:
        self.reload.set()


async def watchdog_loop(interval_s: float, stop_sending: asyncio.Event | None = None) -> None:
    """Send `WATCHDOG=1` every half of systemd's watchdog period, from the event loop.

    Running on the loop is the point: a blocked loop stops the pings and systemd restarts us.
    """
    half = interval_s / 2
    while stop_sending is None or not stop_sending.is_set():
        systemd.notify(systemd.WATCHDOG)
        await asyncio.sleep(half)


async def wait_drained(tasks: Iterable[asyncio.Task[object]], drain_s: float) -> bool:
    """Wait up to `drain_s` for `tasks` to finish; cancel the rest. True when all finished."""
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return True
    _done, still = await asyncio.wait(pending, timeout=drain_s)
    for task in still:
        task.cancel()
    return not still


async def reload_with_notify(load: Callable[[], C], apply: Callable[[C], Awaitable[None]], *,
                             metrics: RuntimeMetrics, log: Any) -> bool:
    """systemd's reload protocol around one config reload; True when the new config applies.

    `RELOADING=1`+`MONOTONIC_USEC` (one datagram) -> `load()` re-reads and validates the whole
    config (raising `ConfigError`) -> `apply(new)` applies the reloadable part and swaps the
    config (any exception refuses the reload) -> `READY=1`. On failure `config_reload_failed`
    is logged with the error list, counted as `outcome="failed"`, the old config stays, and
    `READY=1` is still sent: the daemon is ready, with the old config.
    """
    systemd.notify(systemd.reloading_message())
    try:
        new = load()
        await apply(new)
    except ConfigError as exc:
        errors = exc.errors
    except Exception as exc:  # loop boundary (the reload loop): keep running, old config
        log.exception("config_reload_hook_failed")
        errors = [f"{type(exc).__name__}: {exc}"]
    else:
        metrics.config_reloads.labels(outcome="ok").inc()
        metrics.config_last_reload_success.set(time.time())
        systemd.notify(systemd.READY)
        return True
    log.error("config_reload_failed", errors=errors)
    metrics.config_reloads.labels(outcome="failed").inc()
    systemd.notify(systemd.READY)
    return False


def stop_budget_s(drain_s: float, *, extra_close_s: float = 0.0, sites: int = 1) -> float:
    """Worst-case seconds from SIGTERM to exit: drain + release + every close + margin.

    `extra_close_s` is what a daemon adds (e.g. its SMPP unbind timeout); `sites` the number of
    HTTP sites (each may take `SITE_CLOSE_TIMEOUT_S`). Must stay below the unit's
    `TimeoutStopSec=` (tests/runtime/test_shutdown_budget.py).
    """
    return (drain_s + RELEASE_TIMEOUT_S + LISTENER_CLOSE_TIMEOUT_S + POOL_CLOSE_TIMEOUT_S
            + sites * SITE_CLOSE_TIMEOUT_S + extra_close_s + STOP_MARGIN_S)
