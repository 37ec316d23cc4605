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

SIGHUP (`reload`): the whole config is validated first (a bad one is refused whole and the old
one keeps running); then routes are rebuilt and swapped in one assignment, the operator groups
used for receipt matching too, and the connectors are reconciled in the background
(`shared.smpp.bindset.BindSet`): a new connector gets its lane and binds, a removed one stops
taking parts, lets its window finish and unbinds, a changed one rebinds only when a bind key
changed (`ConnectorSettings.rebind_keys`), else takes its new rates in place.

Live control (`smsgw connectors stop|start|isolate`): the connector states are held in memory
(`shared.domain.connector_state.StateWatcher`, re-read on NOTIFY and every 30 s, never per
message). A stopped or isolated connector's lane is paused at once (no claim budget, not
routed, queued parts not sent); a stopped one's binds close once its window has finished
(`Lane.quiesce`, at most its response timeout), an isolated one keeps them for receipts and MO.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final

import asyncpg
import structlog
from prometheus_client import CollectorRegistry

from smsgw.services.sender.lanes import Lane
from smsgw.services.sender.matching import (
    MatchResult,
    MatchSettings,
    ReceiptStore,
    Siblings,
    run_matcher,
)
from smsgw.services.sender.metrics import SenderMetrics
from smsgw.services.sender.routing import Router
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.sender.submitter import Submitter
from smsgw.services.sender.writeback import ReceiptRace
from smsgw.shared.core import db
from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.db import DATABASE_ERRORS
from smsgw.shared.domain.connector_state import ConnectorState, StateWatcher, state_of
from smsgw.shared.domain.intake import DeliverIntake, flush_inbound
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.queue.records import ReceiptStored
from smsgw.shared.runtime.config import AppConfig
from smsgw.shared.smpp.bindset import BindSet
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
            self.m.tally.inc(self.m.child(self.m.dlr_received, connector, state))

    def rejected(self, reason: str) -> None:
        if self.m is not None:
            self.m.backpressure.labels(reason=reason).inc()


# The connections that run the sender's hot statements (the receipt store, the claim and the
# write-back with its raced-receipt lookups). Each of them reaches its tables by index probes,
# and each is planned once and cached (a generic plan). Postgres plans a generic plan from the
# statistics of the moment — at start-up, tables of a few rows — and keeps it while the tables
# grow: seen in `smsgw bench mt`, a claim planned so hashed a sequential scan of the whole
# outbound table at every call (12 ms a claim, growing; one run in four, its Postgres CPU 130
# µs a message instead of 112), the write-back's "does this part have a row" and the store's
# "is an earlier receipt still queued" became a sequential scan per row (the store's 1 ms a
# batch grew to 40 ms over 15,000 receipts in a test). These settings take those plans off the
# table whatever the statistics: no sequential scan where an index serves (`PLANNED`), and for
# the claim, whose every join meets a table, no hash or merge join either (`PLANNED_CLAIM`;
# the write-back and the store join their own row sets by hashing: a nested loop there is
# quadratic in the batch, measured 120 µs a message). `force_generic_plan` skips the planning
# of the first executions (0.7 ms each for the store). tests/sender/test_planned_pool.py
# checks the plans.
PLANNED: Final[dict[str, str]] = {"plan_cache_mode": "force_generic_plan",
                                  "enable_seqscan": "off"}
PLANNED_CLAIM: Final[dict[str, str]] = {**PLANNED, "enable_hashjoin": "off",
                                        "enable_mergejoin": "off"}


class PlannedPool:
    """A few connections of the sender's own with planner `settings` (`PLANNED`,
    `PLANNED_CLAIM`; connection parameters: no extra round trip), for one kind of hot
    statement. Until `open` (and if it fails) the sender's pool serves."""

    def __init__(self, fallback: asyncpg.Pool, name: str, size: int,
                 settings: dict[str, str]) -> None:
        self.pool: asyncpg.Pool = fallback
        self.name = name
        self.size = size
        self.settings = settings
        self._own: asyncpg.Pool | None = None

    def acquire(self, **kwargs: Any) -> Any:
        """A connection, as `asyncpg.Pool.acquire`."""
        return self.pool.acquire(**kwargs)

    async def open(self, dsn: str, config: AppConfig[SenderSettings]) -> None:
        """Open the connections."""
        cfg = config.database
        try:
            self._own = await db.create_pool(
                dsn, min_size=1, max_size=self.size, timeout=cfg.connect_timeout_s,
                command_timeout=cfg.command_timeout_s, server_settings=dict(self.settings),
                **cfg.connect_kwargs())
        except (*DATABASE_ERRORS, OSError):
            log.warning("planned_pool_unavailable", pool=self.name)  # the sender's pool serves
            return
        self.pool = self._own

    async def close(self) -> None:
        """Close the own connections (after their users stopped)."""
        if self._own is not None:
            await self._own.close()
            self._own = None


class SenderEngine:
    """Builds and runs the sender's parts (see the module docstring).

    `wait_for_work(channel)` returns after a NOTIFY on `channel` or the fallback timer (the
    daemon's `wait_for_work`). `registry` None runs without metrics (tests, benchmarks).
    """

    def __init__(self, config: AppConfig[SenderSettings], pool: asyncpg.Pool, dsn: str,
                 owner: str, *,
                 wait_for_work: Callable[..., Awaitable[Any]],
                 registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.pool = pool
        self.dsn = dsn
        self.owner = owner
        self.wait_for_work = wait_for_work
        self.metrics = SenderMetrics.create(registry) if registry is not None else None
        self.manager_stop = asyncio.Event()
        linger = config.daemon.adaptive_linger_s
        # the receipt committer flushes at most two batches at once; the claim loop and the
        # write-back one statement each
        self.receipt_pool = PlannedPool(pool, "receipt store", 2, PLANNED)
        self.claim_pool = PlannedPool(pool, "claim", 1, PLANNED_CLAIM)
        self.writeback_pool = PlannedPool(pool, "write-back", 1, PLANNED)
        self.receipt_race = ReceiptRace()  # a receipt's store vs its part's write-back
        self.committers = [GroupCommitter(pool, flush_inbound, name="sender.inbound",
                                          transactional=False,  # see flush_inbound
                                          adaptive_linger_s=linger),
                           # one autocommitted statement (store, match what it can, NOTIFY
                           # the matcher for the rest): no BEGIN/COMMIT round trips
                           GroupCommitter(self.receipt_pool, ReceiptStore(
                               lambda: self.match, on_stored=self._count_stored,
                               race=self.receipt_race),
                                          name="sender.receipts",
                                          max_batch=2000, transactional=False,
                                          adaptive_linger_s=linger)]
        self.intake = DeliverIntake(inbound=self.committers[0], receipts=self.committers[1],
                                    observer=_IntakeMetrics(self.metrics))
        connectors = [c for c in config.connectors if c.bind_mode in SENDER_BIND_MODES]
        self.binds = BindSet(self._manager)
        self.watcher = StateWatcher(pool, self._states_changed)
        self._reconcile_wanted = asyncio.Event()
        self.lanes = {c.name: self._lane(c) for c in connectors}
        self.submitter = Submitter(
            pool, self.lanes, self._router(config), config.daemon, owner=owner,
            claim_pool=self.claim_pool, writeback_pool=self.writeback_pool,
            metrics=self.metrics, hasher=NumberHasher.from_config(config),
            wait_for_work=lambda: self.wait_for_work(CHANNELS["outbound"]))
        self.match = MatchSettings.from_config(config.connectors, config.daemon)
        # the write-back matches the receipts that raced it (writeback.write_back)
        self.submitter.flusher.siblings = Siblings(lambda: self.match)
        self.submitter.flusher.race = self.receipt_race
        if self.metrics is not None:
            self.metrics.init_static()
            for c in connectors:
                self.metrics.init_connector(c.name, bind_label(c.bind_mode))

    def _lane(self, c: ConnectorSettings) -> Lane:
        return Lane(c, lambda name=c.name: self.binds.sessions(name), lambda *a: None)

    def _manager(self, c: ConnectorSettings) -> BindManager:
        s = self.config.daemon
        gauge = self.metrics.session_up if self.metrics is not None else None

        def on_up(mode: str, n: int, name: str = c.name) -> None:
            if gauge is not None:
                gauge.labels(connector=name, bind=mode).set(n)
            submitter = getattr(self, "submitter", None)  # built after the managers
            if submitter is not None and n > 0:
                submitter.wake()  # a new bind is window to claim into: do not wait for a tick
        return BindManager(c, c.bind_mode, self.dsn,
                           handler=self.intake.handler_for(c, batch=True),
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
        return [
            ("submit_loop", lambda: self._run_submitter(stop)),
            ("receipt_matcher", lambda: self._run_matcher(stop)),
            ("gauges", lambda: self._gauges(stop)),  # and the account-name refresh
            ("binds", self._run_binds),  # every connector's binds, until manager_stop
            ("connector_states", lambda: self.watcher.run(
                stop, lambda t: self.wait_for_work(CHANNELS["connectors"], t))),
        ]

    async def start(self) -> None:
        """Start the intake's committers, load account names and the connector states
        (before the workers: a stopped connector is never bound, even briefly)."""
        await self.receipt_pool.open(self.dsn, self.config)
        await self.claim_pool.open(self.dsn, self.config)
        await self.writeback_pool.open(self.dsn, self.config)
        for gc in self.committers:
            gc.start()
        await self.load_accounts()
        await self.watcher.load()
        self._apply_lanes()

    # -- connectors: config and run-time state ------------------------------------------------

    def _configured(self) -> dict[str, ConnectorSettings]:
        return {c.name: c for c in self.config.connectors if c.bind_mode in SENDER_BIND_MODES}

    def _apply_lanes(self) -> None:
        """Lanes follow the config and the states at once (the binds follow in `_reconcile`):
        new connectors get a lane, removed ones' lanes pause, settings and states apply."""
        configured = self._configured()
        for name, c in configured.items():
            lane = self.lanes.get(name)
            if lane is None:
                lane = self._lane(c)
                self.submitter.add_lane(lane)
                if self.metrics is not None:
                    self.metrics.init_connector(name, bind_label(c.bind_mode))
            elif lane.connector != c:
                lane.connector = c
                if self.submitter.running:
                    lane.start()  # pump: a larger window or more binds may take more now
            state = state_of(self.watcher.states, name)
            lane.set_state(state.value)
            if self.metrics is not None:
                self.metrics.show_state(name, state.value)
        for name, lane in self.lanes.items():
            if name not in configured:
                lane.set_state("removed")
                if self.metrics is not None:
                    self.metrics.show_state(name, "removed")  # every state 0: not shown
        self.submitter.connectors_changed(frozenset(configured))

    async def _states_changed(self, _states: object) -> None:
        self._apply_lanes()
        self._reconcile_wanted.set()

    async def _reconcile(self) -> None:
        """Bind what should be bound: every configured connector not stopped. A connector
        that is to close first lets the submits in its window finish (responses taken)."""
        configured = self._configured()
        wanted = {n: c for n, c in configured.items()
                  if state_of(self.watcher.states, n) is not ConnectorState.STOPPED}
        closing = [n for n in self.binds.names() if n not in wanted and n in self.lanes]
        await asyncio.gather(*(self.lanes[n].quiesce(self.lanes[n].connector.response_timeout_s
                                                      + 1.0) for n in closing))
        changes = await self.binds.apply(wanted)
        self.submitter.wake()
        if changes:
            log.info("connectors_applied", changes=changes)

    async def _run_binds(self) -> None:
        """Keep the binds matching config and states until `manager_stop` (set after the
        submitter's drain), then unbind everything."""
        try:
            while not self.manager_stop.is_set():
                self._reconcile_wanted.clear()
                await self._reconcile()
                await race_stop(self._reconcile_wanted.wait(), self.manager_stop)
        finally:
            await self.binds.close()

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

    def _count_stored(self, res: ReceiptStored) -> None:
        """Receipts matched in the statement that stored them count as matched too."""
        if self.metrics is not None and res.matched:
            self.metrics.dlr_matched.labels(outcome="matched").inc(res.matched)

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
                for name in self.lanes:
                    used = sum(s.client.session.outstanding for s in self.binds.sessions(name)
                               if getattr(s, "client", None) is not None
                               and s.client.session is not None)
                    self.metrics.window_in_use.labels(connector=name).set(used)
            await sleep_or_stop(stop, 1.0)

    # -- reload and release -----------------------------------------------------------------

    async def reload(self, new: AppConfig[SenderSettings]) -> None:
        """SIGHUP: new routes and operator groups; connectors added, removed, rebound or
        updated in place (module docstring). Everything is validated before anything
        changes: an error refuses the reload and the old config keeps running."""
        router = self._router(new)  # validate first: a bad route keeps the old config
        match = MatchSettings.from_config(new.connectors, new.daemon)
        before = set(self._configured())
        self.config = new
        self.submitter.router = router
        self.match = match
        self._apply_lanes()
        self._reconcile_wanted.set()
        await self.load_accounts()
        after = set(self._configured())
        log.info("sender_reloaded", connectors=sorted(after), added=sorted(after - before),
                 removed=sorted(before - after), routes=len(router.routes))

    async def release(self) -> None:
        """After the drain: give back any row still leased to us, close the intake."""
        await self.submitter.release_all()
        self.manager_stop.set()
        for gc in self.committers:
            await gc.close()
        await self.receipt_pool.close()
        await self.claim_pool.close()
        await self.writeback_pool.close()

    def status_line(self) -> str:
        """`connector: bound/binds` for every configured connector, with its state when an
        operator set one (systemd STATUS=)."""
        states = self.watcher.states
        return ", ".join(
            f"{n}: {self.binds.up(n)}/{c.binds}"
            + (f" {states[n]}" if n in states else "")
            for n, c in self._configured().items())


def connector_names(connectors: Sequence[Any]) -> list[str]:
    """The names of the connectors the sender binds (transmitter or transceiver)."""
    return [c.name for c in connectors if c.bind_mode in SENDER_BIND_MODES]
