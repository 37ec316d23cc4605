"""The receiver's SMPP receiver (rx) binds: one `BindManager` per connector that asks for them.

docs/ARCHITECTURE.md "Where deliver_sm goes": one connector definition serves both daemons; the
sender owns transmitter and transceiver binds, the receiver owns receiver binds. So the receiver
binds the connectors whose
`bind_mode` is `receiver`, through `shared.smpp.bindslots.BindManager`: the binds count against the
connector's global limit (advisory-lock slots shared by every daemon and instance), and every
`deliver_sm`/`data_sm` goes to the one shared intake (`shared.domain.intake.DeliverIntake`), which
commits before the session sends `deliver_sm_resp`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from smsgw.shared.domain.intake import DeliverIntake
from smsgw.shared.smpp.bindslots import BindManager
from smsgw.shared.smpp.session import BindMode

log = structlog.get_logger("receiver.smpp")

UpGauge = Callable[[str, str, int], None]  # (connector, bind label, bound sessions)


def receiver_connectors(connectors: Sequence[Any]) -> list[Any]:
    """The connectors the receiver binds: those whose bind mode is `receiver`."""
    return [c for c in connectors if c.bind_mode == BindMode.RECEIVER]


class SmppIntake:
    """Runs the rx bind managers of this receiver instance until `stop` is set."""

    def __init__(self, connectors: Sequence[Any], dsn: str, intake: DeliverIntake, *,
                 on_up: UpGauge | None = None, retry_s: float = 2.0, check_s: float = 1.0,
                 grace_s: float | None = None,
                 password: str | Callable[[], str] | None = None) -> None:
        self.managers = [
            BindManager(c, "rx", dsn, handler=intake.handler_for(c),
                        on_up=_gauge(on_up, c.name), retry_s=retry_s, check_s=check_s,
                        grace_s=grace_s, password=password)
            for c in receiver_connectors(connectors)]

    def bound(self) -> int:
        """Bound rx sessions of this instance, over all connectors."""
        return sum(m.up() for m in self.managers)

    def update_connectors(self, connectors: Sequence[Any]) -> None:
        """SIGHUP: apply reloaded connector settings to the running managers (same names)."""
        by_name = {c.name: c for c in connectors}
        for manager in self.managers:
            if manager.name in by_name:
                manager.update_connector(by_name[manager.name])

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the binds up until `stop`; then every manager unbinds and releases its slots.

        Each deliver_sm already read is committed and answered before its session closes
        (the session waits for its handlers before unbinding).
        """
        if not self.managers:
            await stop.wait()
            return
        log.info("smpp_rx_binds_starting", connectors=[m.name for m in self.managers])
        async with asyncio.TaskGroup() as tg:
            for manager in self.managers:
                tg.create_task(manager.run(stop), name=f"receiver.rx.{manager.name}")


def _gauge(on_up: UpGauge | None, connector: str) -> Callable[[str, int], None] | None:
    if on_up is None:
        return None

    def publish(mode: str, n: int) -> None:
        on_up(connector, mode, n)
    return publish
