"""The bind managers of a set of connectors that changes while the daemon runs.

A daemon binds each of its connectors through one `BindManager` (global bind slots, one SMPP
session per slot). `BindSet` keeps one running manager per connector that should be bound
and changes the set without a restart: `apply(wanted)` starts the managers of connectors that
are new or were stopped, closes those of connectors removed from the config or stopped by an
operator (each session drains its window and unbinds: `BindManager.close`), rebinds a
connector whose bind keys changed (`ConnectorSettings.rebind_keys`: the old sessions close,
new ones bind), and hands any other change to the live manager (`update_connector`: rates,
binds count, in place). `apply` is serialised: one change of the set at a time.

`close()` (the daemon's drain) unbinds everything. A manager whose task ends with an exception
is logged (`bind_manager_failed`) and started again at the next `apply`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from smsgw.shared.smpp.bindslots import BindManager

log = structlog.get_logger("smsgw.bindslots")


@dataclass(slots=True)
class _Running:
    manager: BindManager
    stop: asyncio.Event
    task: asyncio.Task[None]


class BindSet:
    """Running bind managers by connector name (see the module docstring).

    `make(connector)` builds the manager of one `[[connectors]]` entry.
    """

    def __init__(self, make: Callable[[Any], BindManager]) -> None:
        self._make = make
        self._running: dict[str, _Running] = {}
        self._lock = asyncio.Lock()
        self._closed = False

    def manager(self, name: str) -> BindManager | None:
        """The running manager of `name`, or None (not bound: stopped, removed, closed)."""
        run = self._running.get(name)
        return run.manager if run is not None else None

    def sessions(self, name: str) -> list[Any]:
        """The bound sessions of `name` (none while it is not running)."""
        run = self._running.get(name)
        return run.manager.sessions() if run is not None else []

    def names(self) -> list[str]:
        """The connectors with a running manager."""
        return sorted(self._running)

    def up(self, name: str) -> int:
        """Bound sessions of `name`."""
        return len(self.sessions(name))

    async def apply(self, wanted: Mapping[str, Any]) -> dict[str, str]:
        """Make the running managers match `wanted` (name → connector settings); return what
        changed per name: `started`, `rebound`, `updated`, `closed`."""
        async with self._lock:
            if self._closed:
                return {}
            done: dict[str, str] = {}
            for name in [n for n in self._running if n not in wanted]:
                await self._stop(name)
                done[name] = "closed"
            for name, connector in wanted.items():
                run = self._running.get(name)
                if run is not None and run.task.done():  # it failed: start it again
                    await self._stop(name)
                    run = None
                if run is None:
                    self._start(connector)
                    done[name] = "started"
                    continue
                changed = run.manager.connector.rebind_keys(connector)
                if changed:
                    log.info("connector_rebinding", connector=name, keys=changed)
                    await self._stop(name)
                    self._start(connector)
                    done[name] = "rebound"
                elif run.manager.connector != connector:
                    run.manager.update_connector(connector)
                    done[name] = "updated"
            return done

    async def close(self) -> None:
        """Unbind every connector (in parallel) and refuse further changes."""
        async with self._lock:
            self._closed = True
            await asyncio.gather(*(self._stop(n) for n in list(self._running)))

    def _start(self, connector: Any) -> None:
        manager = self._make(connector)
        stop = asyncio.Event()
        task = asyncio.create_task(manager.run(stop), name=f"binds.{connector.name}")
        task.add_done_callback(lambda t, n=connector.name: _report(n, t))
        self._running[connector.name] = _Running(manager, stop, task)

    async def _stop(self, name: str) -> None:
        run = self._running.pop(name)
        run.stop.set()  # BindManager.run closes: each session drains its window and unbinds
        await asyncio.wait([run.task])  # its outcome was reported by `_report`


def _report(name: str, task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("bind_manager_failed", connector=name,
                  error=f"{type(task.exception()).__name__}: {task.exception()}")
