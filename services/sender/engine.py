"""The sender's moving parts, built from the config and run as the daemon's workers.

`SenderEngine` is what `app.py` (the composition root) creates once the pool and listener are
open. It builds, per `[[connectors]]` entry with a transmitter or transceiver bind mode, a
`BindManager` (global bind slots, one SMPP session per held slot, rate = TPS ÷ binds) whose
sessions hand `deliver_sm` to the shared intake, plus a `Lane`; then the `Submitter` (claim,
route, split, submit, batched write-back) and the receipt matcher.

Worker order on drain (SIGTERM sets `stop`): the submitter stops claiming, lets queued parts
resolve as not sent, waits for outstanding responses, flushes, releases unsent claims — and
only then are the binds unbound (`manager_stop`), so no response is lost to our own unbind.
The matcher stops at `stop` (its transaction either commits or rolls back). The intake's
group committers close last, after the binds are gone.

SIGHUP (`reload`): connector rates (TPS, burst, window is restart-only) are applied in place to
every bound session without rebinding; routes are rebuilt and swapped in one assignment; the
operator groups used for receipt matching are swapped too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import asyncpg
import structlog
from prometheus_client import CollectorRegistry

from smsgw.services.sender.lanes import Lane
from smsgw.services.sender.matching import MatchResult, MatchSettings, run_matcher
from smsgw.services.sender.metrics import SenderMetrics
from smsgw.services.sender.routing import Router
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.sender.submitter import Submitter
from smsgw.shared.core.aio import sleep_or_stop
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.domain.intake import DeliverIntake, flush_inbound, flush_receipts
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.runtime.config import AppConfig
from smsgw.shared.smpp.bindslots import BindManager, bind_label
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.session import BindMode

log = structlog.get_logger("smsgw.sender")

WorkerFn = Callable[[], Coroutine[Any, Any, None]]
SENDER_BIND_MODES = (BindMode.TRANSMITTER, BindMode.TRANSCEIVER)
ACCOUNTS_SQL = "SELECT id, name FROM accounts"
ACCOUNTS_REFRESH_S = 30.0


class _IntakeMetrics:
    """The intake's observer: what arrives on the sender's transceiver binds."""

    def __init__(self, metrics: SenderMetrics | None) -> None:
        self.m = metrics

    def mo(self, channel: str, provider: str, outcome: str) -> None:
        if self.m is not None:
            self.m.inbound.labels(channel=channel, provider=provider, outcome=outcome).inc()

    def receipt(self, connector: str, state: str) -> None:
        if self.m is not None:
            self.m.child(self.m.dlr_received, connector, state).inc()

    def rejected(self, reason: str) -> None:
        if self.m is not None:
            self.m.backpressure.labels(reason=reason).inc()


class SenderEngine:
    """Builds and runs the sender's parts (see the module docstring).

    `wait_for_work(channel)` returns after a NOTIFY on `channel` or the fallback timer (the
    daemon's `wait_for_work`). `registry` None runs without metrics (tests, benchmarks).
    """

    def __init__(self, config: AppConfig[SenderSettings], pool: asyncpg.Pool, dsn: str,
                 owner: str, *,
                 wait_for_work: Callable[[str], Awaitable[Any]],
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.pool = pool
        self.dsn = dsn
        self.owner = owner
        self.wait_for_work = wait_for_work
        self.metrics = SenderMetrics.create(registry) if registry is not None else None
        self.manager_stop = asyncio.Event()
        linger = config.daemon.adaptive_linger_s
        self.committers = [GroupCommitter(pool, flush_inbound, name="sender.inbound",
                                          transactional=False,  # see flush_inbound
                                          adaptive_linger_s=linger),
                           # one autocommitted INSERT + NOTIFY: no BEGIN/COMMIT round trips
                           GroupCommitter(pool, flush_receipts, name="sender.receipts",
                                          max_batch=2000, transactional=False,
                                          adaptive_linger_s=linger)]
        self.intake = DeliverIntake(inbound=self.committers[0], receipts=self.committers[1],
                                    observer=_IntakeMetrics(self.metrics))
        connectors = [c for c in config.connectors if c.bind_mode in SENDER_BIND_MODES]
        self.managers = {c.name: self._manager(c) for c in connectors}
        self.lanes = {c.name: Lane(c, self.managers[c.name].sessions, lambda *a: None)
                      for c in connectors}
        self.submitter = Submitter(
            pool, self.lanes, self._router(config), config.daemon, owner=owner,
            metrics=self.metrics, hasher=NumberHasher.from_config(config),
            wait_for_work=lambda: self.wait_for_work(CHANNELS["outbound"]))
        self.match = MatchSettings.from_config(config.connectors, config.daemon)
        if self.metrics is not None:
            self.metrics.init_static()
            for c in connectors:
                self.metrics.init_connector(c.name, bind_label(c.bind_mode))

    def _manager(self, c: ConnectorSettings) -> BindManager:
        s = self.config.daemon
        gauge = self.metrics.session_up if self.metrics is not None else None

        def on_up(mode: str, n: int, name: str = c.name) -> None:
            if gauge is not None:
                gauge.labels(connector=name, bind=mode).set(n)
            submitter = getattr(self, "submitter", None)  # built after the managers
            if submitter is not None and n > 0:
                submitter.wake()  # a new bind is window to claim into: do not wait for a tick
        return BindManager(c, c.bind_mode, self.dsn, handler=self.intake.handler_for(c),
                           **self.config.database.connect_kwargs(),
                           on_up=on_up, retry_s=s.bind_retry_s, check_s=s.bind_check_s,
                           grace_s=s.bind_grace_s)

    @staticmethod
    def _router(config: AppConfig[SenderSettings]) -> Router:
        router = Router.from_settings(config.routes, config.connectors)
        unknown = router.unknown_connectors()
        if unknown:
            raise ValueError(f"routes name connectors that are not configured: {unknown}")
        return router

    # -- workers ---------------------------------------------------------------------------

    def workers(self, stop: asyncio.Event) -> list[tuple[str, WorkerFn]]:
        """(name, coroutine function) of every worker; each returns once drained."""
        out: list[tuple[str, WorkerFn]] = [
            ("submit_loop", lambda: self._run_submitter(stop)),
            ("receipt_matcher", lambda: self._run_matcher(stop)),
            ("gauges", lambda: self._gauges(stop)),  # and the account-name refresh
        ]
        for name, manager in self.managers.items():
            out.append((f"binds.{name}", lambda m=manager: m.run(self.manager_stop)))
        return out

    async def start(self) -> None:
        """Start the intake's committers and load account names (before the workers)."""
        for gc in self.committers:
            gc.start()
        await self.load_accounts()

    async def load_accounts(self) -> None:
        """Account id → name, for per-account routes (at start and on SIGHUP)."""
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(ACCOUNTS_SQL)
        self.submitter.account_names = {r["id"]: r["name"] for r in rows}

    async def _run_submitter(self, stop: asyncio.Event) -> None:
        try:
            await self.submitter.run(stop)
        finally:
            # Unbind only after every outstanding response was waited for and written back.
            self.manager_stop.set()

    async def _run_matcher(self, stop: asyncio.Event) -> None:
        await run_matcher(self.pool, self.match, stop=stop,
                          wait_for_work=lambda: self.wait_for_work(CHANNELS["receipts"]),
                          on_result=self._count_match)

    def _count_match(self, res: MatchResult) -> None:
        if self.metrics is None:
            return
        for outcome, n in (("matched", res.matched), ("retry", res.retried),
                           ("orphan", res.orphaned)):
            if n:
                self.metrics.dlr_matched.labels(outcome=outcome).inc(n)

    async def _gauges(self, stop: asyncio.Event) -> None:
        """Window in use per connector, once a second (a gauge, read on scrape); account
        names every ACCOUNTS_REFRESH_S (new accounts' own routes apply without a SIGHUP)."""
        next_accounts = asyncio.get_running_loop().time() + ACCOUNTS_REFRESH_S
        while not stop.is_set():
            if asyncio.get_running_loop().time() >= next_accounts:
                next_accounts += ACCOUNTS_REFRESH_S
                try:
                    await self.load_accounts()
                except DATABASE_ERRORS:
                    log.warning("accounts_refresh_failed")
            if self.metrics is not None:
                for name, manager in self.managers.items():
                    used = sum(s.client.session.outstanding for s in manager.sessions()
                               if getattr(s, "client", None) is not None
                               and s.client.session is not None)
                    self.metrics.window_in_use.labels(connector=name).set(used)
            await sleep_or_stop(stop, 1.0)

    # -- reload and release -----------------------------------------------------------------

    async def reload(self, new: AppConfig[SenderSettings]) -> None:
        """SIGHUP: new rates on the live binds, new routes and operator groups (no rebind)."""
        router = self._router(new)  # validate first: a bad route keeps the old config
        by_name = {c.name: c for c in new.connectors}
        for name, manager in self.managers.items():
            if name in by_name:
                manager.update_connector(by_name[name])
                self.lanes[name].connector = by_name[name]
        self.submitter.router = router
        self.match = MatchSettings.from_config(new.connectors, new.daemon)
        self.config = new
        await self.load_accounts()
        log.info("sender_reloaded", connectors=sorted(by_name), routes=len(router.routes))

    async def release(self) -> None:
        """After the drain: give back any row still leased to us, close the intake."""
        await self.submitter.release_all()
        self.manager_stop.set()
        for gc in self.committers:
            await gc.close()

    def status_line(self) -> str:
        """`connector: bound/binds` for every connector (systemd STATUS=)."""
        return ", ".join(f"{n}: {m.up()}/{m.connector.binds}" for n, m in self.managers.items())


def connector_names(connectors: Sequence[Any]) -> list[str]:
    """The names of the connectors the sender binds (transmitter or transceiver)."""
    return [c.name for c in connectors if c.bind_mode in SENDER_BIND_MODES]
