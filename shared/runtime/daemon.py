"""The base every smsgw daemon builds on: config, logging, pool, listener, health site, drain.

A daemon is a subclass of `Daemon` in `services/<daemon>/app.py` (the composition root)::

    class SenderDaemon(Daemon[SenderSettings]):
        name = "sender"
        settings_model = SenderSettings
        listen_channels = (CHANNEL_OUTBOUND,)

        async def setup(self) -> None:             # before READY=1: add workers, jobs, sites
            self.add_worker("submit_loop", self.submit_loop)
            self.add_periodic("reap", 5.0, reap_job)
            port = await self.add_site("api", app, host, port)

        async def on_reload(self, new: AppConfig[SenderSettings]) -> None: ...  # SIGHUP
        async def release(self) -> None: ...       # after the drain: release leases

    def main(argv): return SenderDaemon.main(argv)  # services/sender/__main__.py

`Daemon.main(argv)` parses `--config/--instance/--log-level`, validates the whole config before
any I/O (a `ConfigError` prints every `path: message` to stderr and returns 78), configures JSON
logging, and runs the daemon on uvloop:

1. open the pool (retrying with backoff while Postgres is down, logging each attempt), check
   the schema version, start the LISTEN listener and the `/metrics` `/healthz` `/readyz` site;
2. call `setup()` (the daemon adds workers, periodic jobs and extra HTTP sites);
3. send `READY=1` and run every worker and helper (reload, watchdog, periodic jobs) in one
   `TaskGroup`: a worker that crashes cancels the others and the daemon exits 1 after
   logging the exception once (`daemon_crashed`), and systemd restarts it;
4. SIGHUP: `RELOADING=1`+`MONOTONIC_USEC` -> reload and validate the whole config -> apply the
   log level and `on_reload(new)` -> swap `self.config` -> `READY=1`; a bad file is logged as
   `config_reload_failed` and the old config stays;
5. SIGTERM/SIGINT: `STOPPING=1`, `stop` is set, extra sites close, workers get `drain_s` to
   finish (then are cancelled: exit 1), `release()` runs, then the listener, health site and
   pool close in reverse order of opening (AsyncExitStack).

Workers are coroutine functions without arguments that return when `self.stop` is set; they
wait for work with `await self.wait_for_work(channel)` (NOTIFY, `poll_s` fallback, or stop).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, ClassVar, Final, Generic, Literal, TypeVar, cast

import asyncpg
import uvloop
from aiohttp import web

from smsgw.shared.core import db
from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.core.errors import ConfigError, DatabaseUnavailable, SchemaVersionError
from smsgw.shared.core.logging import configure_logging, get_logger, set_level
from smsgw.shared.queue import store
from smsgw.shared.queue.listener import Listener, Pass, consume
from smsgw.shared.runtime import lifecycle, systemd
from smsgw.shared.runtime.config import AppConfig, DaemonSection, load_config
from smsgw.shared.runtime.fasthttp import FastFront
from smsgw.shared.runtime.http import HttpLimits, HttpSite, health_app
from smsgw.shared.runtime.metrics import RuntimeMetrics, create_registry
from smsgw.shared.runtime.periodic import Job, run_periodic

S = TypeVar("S", bound=DaemonSection)
T = TypeVar("T")
WorkerFn = Callable[[], Coroutine[Any, Any, None]]
# Postgres is starting, restarting, failing over (no host of the URL is a primary) or briefly
# unreachable: worth waiting for at start-up, however long it takes.
_DB_START_ERRORS: tuple[type[BaseException], ...] = (
    *db.CONNECTION_ERRORS, asyncpg.TooManyConnectionsError, DatabaseUnavailable)
# How often the primary watch checks that the pool's server still takes writes.
PRIMARY_CHECK_S = 2.0
# While waiting for a primary at start-up, each attempt extends systemd's start timeout by
# this much beyond the attempt's own worst case (EXTEND_TIMEOUT_USEC), so TimeoutStartSec=
# bounds a hung start, not a wait for the database.
START_EXTEND_MARGIN_S = 15.0
WAIT_RETRY_MAX_S = 2.0  # the longest pause between two tries of a daemon waiting for a primary
# The share of one core the queue depth/age snapshot may take: its interval stretches past
# `queue_stats_s` while a snapshot takes longer than this share of it (a deep backlog).
STATS_CPU_SHARE = 0.01
# CPython's cyclic garbage collector once start-up is over: everything start-up made (modules,
# config, compiled SQL, caches) is frozen out of its reach, and a young-generation collection
# waits for 20,000 net new container objects instead of 700. A message's objects are freed by
# reference counting as soon as it is done, so the default thresholds only re-walked the
# long-lived in-flight objects: measured in `smsgw bench mt` (20,000 MT with receipts), 170
# collections per run, 3.5 CPU-µs per message in the sender and 2.5 in the receiver (perf: 7 %
# of the sender's CPU in gc_collect_main and its visitors); with these, none. Garbage in a
# reference cycle still goes at the next young collection (at most 20,000 objects later).
GC_THRESHOLDS: Final = (20_000, 10, 10)


def tune_gc() -> dict[str, Any]:
    """Collect, freeze what start-up made and raise the young generation's threshold
    (`GC_THRESHOLDS`); returns what was done, for the log."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    return {"frozen": gc.get_freeze_count(), "thresholds": list(GC_THRESHOLDS)}
_ENV_HELP = """\
environment (overrides the file; unknown SMSGW_* names are errors):
  SMSGW_DATABASE_URL           [database] url
  SMSGW_INSTANCE               instance number (like --instance)
  SMSGW_<SECTION>__<KEY>       any key, `__` per nesting level, e.g. SMSGW_{upper}__DRAIN_S=10
  NOTIFY_SOCKET, WATCHDOG_USEC systemd notify / watchdog (set by systemd)

exit codes: 0 drained and stopped; 1 crashed, schema mismatch or drain deadline passed;
78 invalid configuration (every problem is printed as `path: message`); 130 second SIGINT.
signals: SIGTERM/SIGINT drain and stop; SIGHUP reloads the log level{reload}.
"""


class Daemon(Generic[S]):
    """Base class of the receiver, processor and sender (see the module docstring).

    Attributes for daemon code: `config` (swapped on reload), `settings` (its own section),
    `pool`, `listener` (None when `listen_channels` is empty), `registry`, `metrics`, `log`,
    `stop`, `instance`, `worker_id` (the lease owner name).
    """

    name: ClassVar[str]
    settings_model: ClassVar[type[DaemonSection]]
    listen_channels: ClassVar[tuple[str, ...]] = ()
    reload_help: ClassVar[str] = ""  # what else SIGHUP reloads, for --help
    extra_sites: ClassVar[int] = 0  # HTTP sites added with add_site (for the stop budget)
    # Dotted config paths whose change needs a restart (SIGHUP warns); `x[].y` means "the
    # set of y over the list x". Connectors are not among them: the sender and the receiver
    # add, remove and rebind connectors on SIGHUP (docs/ARCHITECTURE.md "Live control").
    restart_only_keys: ClassVar[tuple[str, ...]] = (
        "database", "instance", "daemon.metrics_host", "daemon.metrics_port")

    pool: asyncpg.Pool

    def __init__(self, config: AppConfig[S], *, config_path: str | None = None,
                 cli_log_level: str | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.cli_log_level = cli_log_level
        self.instance = config.instance
        self.worker_id = f"{self.name}@{self.instance}:{socket.gethostname()}:{os.getpid()}"
        self.stop = asyncio.Event()
        self.registry = create_registry(self.name)
        self.metrics = RuntimeMetrics.create(self.registry)
        self.log = get_logger("smsgw." + self.name)
        self.listener: Listener | None = None
        self.health_port: int | None = None
        self._signals = lifecycle.SignalEvents(stop=self.stop)
        self._set_up = False  # setup() returned: release() has something to give back
        self._stats_cost_s = 0.0  # how long this instance's last queue snapshot took
        self._workers: list[tuple[str, WorkerFn]] = []
        self._helpers: list[tuple[str, WorkerFn]] = []
        self._sites: list[HttpSite] = []
        self._stopping = False

    # -- hooks for subclasses ------------------------------------------------------------

    async def setup(self) -> None:
        """Add workers, periodic jobs and extra sites; runs before READY=1."""

    async def on_reload(self, new: AppConfig[S]) -> None:
        """Apply the reloadable part of `new` (rates, routes, rules); raise to refuse it.

        Called on SIGHUP after `new` was validated, before `self.config` is swapped to it.
        """

    async def release(self) -> None:
        """Give back what this instance holds (leases) after the drain; the pool is open.

        Runs on every exit after start-up, also after a crash or a passed deadline, bounded
        by `lifecycle.RELEASE_TIMEOUT_S`.
        """

    @classmethod
    def extra_close_s(cls, settings: S) -> float:
        """Seconds this daemon's own teardown adds to the stop budget beyond `drain_s` and
        the runtime's close timeouts (e.g. an SMPP unbind timeout); override it."""
        return 0.0

    @classmethod
    def stop_budget_s(cls, settings: S) -> float:
        """Worst case from SIGTERM to exit with these settings; must stay below the unit's
        `TimeoutStopSec=` (tests/runtime/test_shutdown_budget.py checks every unit)."""
        return lifecycle.stop_budget_s(
            settings.drain_s, extra_close_s=cls.extra_close_s(settings),
            sites=1 + cls.extra_sites)

    # -- API for subclasses ----------------------------------------------------------------

    @property
    def settings(self) -> S:
        """This daemon's own section of the current config."""
        return self.config.daemon

    def add_worker(self, name: str, fn: WorkerFn) -> None:
        """Run `fn()` as a worker task named `<daemon>.<name>`; it must return once `stop` is
        set (within `drain_s`). Call from `setup()`."""
        self._workers.append((name, fn))

    def add_periodic(self, name: str, interval_s: float | Callable[[], float], job: Job, *,
                     mode: Literal["xact", "session"] = "xact",
                     lock_key: int | None = None, locked: bool = True) -> None:
        """Run `job(conn)` every `interval_s` under an advisory lock (one instance at a time
        across all daemons); see `shared.runtime.periodic.run_periodic`. Call from `setup()`.

        `interval_s` may be a callable (e.g. `lambda: self.settings.x_s`) so reloads apply.
        """
        async def loop() -> None:
            await run_periodic(name, interval_s, job, pool=self.pool, stop=self.stop,
                               lock_key=lock_key, metrics=self.metrics, mode=mode,
                               locked=locked)
        self._helpers.append((f"periodic.{name}", loop))

    async def add_site(self, name: str, app: web.Application, host: str, port: int, *,
                       access_log: bool = True, limits: HttpLimits | None = None,
                       front: FastFront | None = None) -> int:
        """Serve `app` on host:port now (before READY=1); return the real port (port 0 = any).

        The site stops accepting as soon as the drain starts (in-flight requests finish).
        `limits`: header/body deadlines, keep-alive idle and connection cap (default
        `HttpLimits()`: 10 s, 30 s, 15 s, 1,000), as on the health/metrics site. `front`: the
        routes a lean HTTP/1.1 protocol serves itself (shared/runtime/fasthttp.py).
        """
        site = HttpSite(name, app, host, port, access_log=access_log, limits=limits, front=front)
        real = await site.start()
        self._sites.append(site)
        self.log.info("http_site_started", site=name, host=host, port=real)
        return real

    def set_status(self, text: str) -> None:
        """Tell systemd a one-line status (`systemctl status` shows it)."""
        systemd.notify(systemd.status_message(text))

    async def consume(self, channel: str,
                      claim_pass: Callable[[], Awaitable[int | Pass]]) -> None:
        """Run `claim_pass()` until it returns 0, then wait for a NOTIFY on `channel` (or the
        `poll_s` fallback timer), until `stop` is set; see `shared.queue.listener.consume`.

        `claim_pass` claims, processes and writes back one batch and returns how many rows it
        claimed (or a `Pass`: rows, and whether to claim again before waiting); its exceptions
        are logged, and the loop backs off and goes on.
        """
        assert self.listener is not None, "consume() needs listen_channels"
        await consume(self.listener, channel, claim_pass, stop=self.stop,
                      poll_s=self.settings.poll_s, linger_s=self.settings.claim_linger_s,
                      adaptive_linger_s=self.settings.adaptive_linger_s)

    async def wait_for_work(self, channel: str, timeout_s: float | None = None) -> bool:
        """Wait for a NOTIFY on `channel`, the `poll_s` fallback timer, or `stop`.

        Returns True when woken by a notification. Claim until the queue is empty, then call
        this; never sleep-poll.
        """
        timeout = self.settings.poll_s if timeout_s is None else timeout_s
        if self.stop.is_set():
            return False
        if self.listener is None:
            await sleep_or_stop(self.stop, timeout)
            return False
        _, notified = await race_stop(self.listener.wait(channel, timeout), self.stop)
        woken = bool(notified)
        if woken and self.settings.claim_linger_s > 0:
            await sleep_or_stop(self.stop, self.settings.claim_linger_s)
        return woken

    # -- entry point ---------------------------------------------------------------------

    @classmethod
    def main(cls, argv: Sequence[str] | None = None) -> int:
        """`smsgw <daemon> [--config PATH] [--instance N] [--log-level L]` -> exit code."""
        try:
            args = cls._parser().parse_args(argv)
        except SystemExit as exc:  # --help or a usage error: argparse already printed
            return int(exc.code or 0)
        try:
            config = load_config(cls.name, cls.settings_model, path=args.config,
                                 env=os.environ, instance=args.instance)
            missing = cls.required_config(config)
            if missing:
                raise ConfigError(missing)
        except ConfigError as exc:
            for line in exc.errors:
                sys.stderr.write(f"smsgw {cls.name}: config error: {line}\n")
            return lifecycle.EXIT_CONFIG
        configure_logging(args.log_level or config.daemon.log_level, cls.name, config.instance)
        daemon = cls(cast(AppConfig[S], config), config_path=args.config,
                     cli_log_level=args.log_level)
        try:
            return uvloop.run(daemon.run())
        except KeyboardInterrupt:
            daemon.log.warning("interrupted_exit_now")
            return lifecycle.EXIT_INTERRUPTED

    @classmethod
    def required_config(cls, config: AppConfig[Any]) -> list[str]:
        """Shared config this daemon cannot run without, beyond what `load_config` checks:
        "path: message" problems that stop it before any I/O (exit 78). None by default."""
        return []

    @classmethod
    def _parser(cls) -> argparse.ArgumentParser:
        reload = f", {cls.reload_help}" if cls.reload_help else ""
        parser = argparse.ArgumentParser(
            prog=f"smsgw {cls.name}", formatter_class=argparse.RawDescriptionHelpFormatter,
            description=f"Run the smsgw {cls.name} daemon (one instance; systemd Type=notify).",
            epilog=_ENV_HELP.format(upper=cls.name.upper(), reload=reload))
        parser.add_argument("--config", metavar="PATH",
                            help="TOML config file (default: ./smsgw.toml if it exists)")
        parser.add_argument("--instance", type=int, metavar="N",
                            help="instance number, sets default ports (default: "
                                 "$SMSGW_INSTANCE or 1)")
        parser.add_argument("--log-level",
                            choices=["debug", "info", "warning", "error", "critical"],
                            help="override the configured log level (also over reloads)")
        return parser

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT, drain, stop; return the exit code."""
        self._signals.install(asyncio.get_running_loop())
        try:
            async with AsyncExitStack() as stack:
                if not await self._start(stack):
                    return lifecycle.EXIT_OK  # stopped during start-up: nothing to drain
                return await self._serve()
        except SchemaVersionError as exc:
            self.log.error("schema_version_mismatch", error=str(exc))
            return lifecycle.EXIT_FAILURE
        except Exception:
            # One event with the whole traceback (a TaskGroup's ExceptionGroup included).
            self.log.exception("daemon_crashed")
            return lifecycle.EXIT_FAILURE
        finally:
            self._signals.uninstall()

    # -- start-up ------------------------------------------------------------------------

    async def _start(self, stack: AsyncExitStack) -> bool:
        """Open resources in dependency order; each registers its close on `stack`, so they
        close in reverse: health site, listener, release(), pool."""
        self.log.info("config_loaded", config=self.config.redacted_dump(),
                      worker_id=self.worker_id)
        self.metrics.config_last_reload_success.set(time.time())
        self.set_status("connecting to the database")
        pool = await self._until_stopped(self._wait_for_primary("pool", self._open_pool))
        if pool is None:
            return False
        self.pool = pool
        stack.push_async_callback(self._close_pool)
        version = await self._until_stopped(self._wait_for_primary(
            "schema_check", self._check_schema))
        if version is None:
            return False
        self.log.info("schema_checked", version=version)
        # Registered after the pool so that it runs before the pool closes.
        stack.push_async_callback(self._release)
        if self.listen_channels and not await self._start_listener(stack):
            return False
        await self._start_health_site(stack)
        stack.push_async_callback(self._close_sites)
        self._add_queue_stats_jobs()
        await self.setup()
        self._set_up = True
        self.log.info("gc_tuned", **tune_gc())
        return True

    def _add_queue_stats_jobs(self) -> None:
        """The depth/age snapshot: one instance refreshes it (advisory lock), every daemon
        reads it into its gauges. Admission control reads the same snapshot, never a COUNT."""
        interval = lambda: self.settings.queue_stats_s  # noqa: E731 - follows reloads
        self.add_periodic("queue_stats_refresh", self._queue_stats_interval,
                          self._refresh_queue_stats, lock_key=store.STATS_LOCK_KEY)
        self.add_periodic("queue_stats_read", interval, self._read_queue_stats, locked=False)

    def _queue_stats_interval(self) -> float:
        """`queue_stats_s`, or longer while a snapshot is dear: its counts walk the queued
        rows (up to the cap), so under a deep backlog one takes milliseconds per ten thousand
        rows; the interval stretches to keep the snapshot near `STATS_CPU_SHARE` of a core
        (measured in `smsgw bench mt`: 11 ms per snapshot with ~20,000 queued, every 0.5 s)."""
        return max(self.settings.queue_stats_s, self._stats_cost_s / STATS_CPU_SHARE)

    async def _refresh_queue_stats(self, conn: asyncpg.Connection) -> None:
        # Every daemon schedules the refresh, but one per interval across all of them is
        # enough: skip when another instance refreshed within the last 80 % of the interval
        # (measured: three daemons refreshing every 0.5 s were 12 % of Postgres statement time).
        fresh = await conn.fetchval(
            "SELECT coalesce(max(updated_at) > now() - make_interval(secs => $1), false)"
            " FROM queue_stats", self._queue_stats_interval() * 0.8)
        if not fresh:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await store.refresh_queue_stats(conn)
            self._stats_cost_s = loop.time() - started

    async def _read_queue_stats(self, conn: asyncpg.Connection) -> None:
        for stat in await store.read_queue_stats(conn):
            self.metrics.queue_messages.labels(queue=stat.queue, status=stat.status).set(
                stat.depth)
            if stat.status == "queued":
                age = (stat.updated_at - stat.oldest_at).total_seconds() if stat.oldest_at \
                    else 0.0
                self.metrics.queue_oldest_age.labels(queue=stat.queue).set(max(0.0, age))

    async def _open_pool(self) -> asyncpg.Pool:
        cfg = self.config.database
        assert cfg.url is not None  # load_config requires it
        return await db.create_pool(
            cfg.url, min_size=cfg.pool_min_size, max_size=cfg.pool_max_size,
            timeout=cfg.connect_timeout_s, command_timeout=cfg.command_timeout_s,
            **cfg.connect_kwargs())

    async def _check_schema(self) -> int:
        async with self.pool.acquire(timeout=self.config.database.connect_timeout_s) as conn:
            return await db.check_schema(conn, self.name)

    async def _wait_for_primary(self, step: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run `attempt()` until it succeeds, waiting out a database that is down or has no
        primary (a failover in progress): each failure is logged (`database_wait`) and shown
        in `STATUS=`, and systemd's start timeout is extended (`EXTEND_TIMEOUT_USEC`) so the
        unit is not killed for waiting. Never exits: SIGTERM ends the wait (`_until_stopped`).
        """
        delay, tries, since = 0.5, 0, time.monotonic()
        worst = self.config.database.connect_timeout_s * 2 + 10.0 + START_EXTEND_MARGIN_S
        while True:
            tries += 1
            systemd.notify(systemd.extend_timeout_message(worst + delay))
            try:
                return await attempt()
            except _DB_START_ERRORS as exc:
                waited = round(time.monotonic() - since, 1)
                error = f"{type(exc).__name__}: {exc}"[:300]
                self.log.warning("database_wait", step=step, attempt=tries, waited_s=waited,
                                 error=error, retry_in_s=delay)
                self.set_status(f"waiting for a primary database ({step}, {waited:.0f}s, "
                                f"attempt {tries}): {error}")
            await asyncio.sleep(delay)
            # at most 2 s between tries: a promoted standby is found within 2 s (a try is
            # one connection attempt per host, cheap next to a gateway that waits longer)
            delay = min(delay * 2, WAIT_RETRY_MAX_S)

    async def _until_stopped(self, coro: Awaitable[T]) -> T | None:
        """Await `coro` unless `stop` is set first (SIGTERM while Postgres is down)."""
        _, result = await race_stop(coro, self.stop)
        return result

    async def _start_listener(self, stack: AsyncExitStack) -> bool:
        assert self.config.database.url is not None
        listener = Listener(self.config.database.url, list(self.listen_channels),
                            on_reconnect=self._on_listener_reconnect,
                            **self.config.database.connect_kwargs())
        if not await self._until_stopped(self._start_with_retry(listener)):
            return False
        self.listener = listener
        stack.push_async_callback(self._close_listener)
        self.log.info("listener_started", channels=list(self.listen_channels))
        return True

    async def _start_with_retry(self, listener: Listener) -> bool:
        await self._wait_for_primary("listener", listener.start)
        return True

    def _on_listener_reconnect(self, *_args: object) -> None:
        self.metrics.listener_reconnects.inc()
        self.log.warning("listener_reconnected")

    async def _start_health_site(self, stack: AsyncExitStack) -> None:
        checks = {"database": self._database_ok}
        if self.listener is not None:
            checks["listener"] = self._listener_ok
        app = health_app(self.registry, checks, is_stopping=lambda: self._stopping)
        site = HttpSite("health", app, self.settings.metrics_host,
                        self.settings.metrics_port or 0, access_log=False)
        self.health_port = await site.start()
        stack.push_async_callback(site.close)
        self.log.info("http_site_started", site="health", host=site.host, port=site.port)

    async def _database_ok(self) -> bool:
        # A primary, not just a server: a connection made before the server was fenced
        # read-only (or demoted without a restart) answers SELECT 1 but takes no writes.
        async with self.pool.acquire(timeout=1.0) as conn:
            return bool(await conn.fetchval(db.WRITABLE_SQL, timeout=1.0))

    async def _primary_watch(self) -> None:
        """Every `PRIMARY_CHECK_S`: does the pool still reach a primary? On the first failure
        log `database_lost` and say so in `STATUS=` (the workers meanwhile fail their claims
        and retry; intake answers 503); a connection to a server that no longer takes writes
        makes the pool drop every connection (`expire_connections`), so the next ones go
        through the URL's host list to the new primary. On recovery log `database_back` with
        the outage's length."""
        lost_at: float | None = None
        while True:
            await asyncio.sleep(PRIMARY_CHECK_S)
            try:
                ok = await self._database_ok()
                error = "" if ok else "the server takes no writes (a standby or read-only)"
            except (*db.DATABASE_ERRORS, DatabaseUnavailable) as exc:
                ok, error = False, f"{type(exc).__name__}: {exc}"[:300]
            if not ok and error.startswith("the server"):
                await self.pool.expire_connections()
            if ok and lost_at is not None:
                outage = round(time.monotonic() - lost_at, 1)
                self.log.warning("database_back", outage_s=outage)
                self.set_status(f"ready; {len(self._workers)} workers (database back after "
                                f"{outage:.0f}s)")
                lost_at = None
            elif not ok:
                if lost_at is None:
                    lost_at = time.monotonic()
                    self.log.warning("database_lost", error=error)
                self.set_status(f"waiting for a primary database "
                                f"({time.monotonic() - lost_at:.0f}s): {error}")

    async def _listener_ok(self) -> bool:
        return self.listener is not None and bool(self.listener.connected)

    # -- serving and drain ---------------------------------------------------------------

    async def _serve(self) -> int:
        loop = asyncio.get_running_loop()
        async with asyncio.TaskGroup() as tg:
            helpers = [tg.create_task(fn(), name=f"{self.name}.{n}") for n, fn in
                       self._helper_tasks()]
            workers = [tg.create_task(fn(), name=f"{self.name}.{n}") for n, fn in
                       self._workers]
            systemd.notify(systemd.READY)
            self.set_status(f"ready; {len(workers)} workers")
            self.log.info("daemon_ready", workers=[n for n, _ in self._workers],
                          health_port=self.health_port)
            await self.stop.wait()
            deadline = loop.time() + self.settings.drain_s
            self._stopping = True
            systemd.notify(systemd.STOPPING)
            self.set_status("draining")
            self.log.info("drain_started", signal=(self._signals.received or ["?"])[0],
                          drain_s=self.settings.drain_s)
            for task in helpers:
                task.cancel()
            await self._close_sites()
            drained = await lifecycle.wait_drained(workers, max(0.0, deadline - loop.time()))
        if not drained:
            self.log.error("drain_deadline_exceeded", drain_s=self.settings.drain_s)
            return lifecycle.EXIT_FAILURE
        self.log.info("drained")
        return lifecycle.EXIT_OK

    def _helper_tasks(self) -> list[tuple[str, WorkerFn]]:
        helpers = [("reload_on_hup", self._reload_loop), ("primary_watch", self._primary_watch),
                   *self._helpers]
        interval = systemd.watchdog_interval_s()
        if interval and self.settings.watchdog:
            helpers.append(("watchdog", lambda: lifecycle.watchdog_loop(interval)))
        return helpers

    async def _release(self) -> None:
        if not self._set_up:  # start-up failed before setup(): nothing of it to release
            return
        try:
            async with asyncio.timeout(lifecycle.RELEASE_TIMEOUT_S):
                await self.release()
        except TimeoutError:
            self.log.error("release_timeout", timeout_s=lifecycle.RELEASE_TIMEOUT_S)

    async def _close_sites(self) -> None:
        for site in reversed(self._sites):
            await site.close()

    async def _close_listener(self) -> None:
        assert self.listener is not None
        try:
            async with asyncio.timeout(lifecycle.LISTENER_CLOSE_TIMEOUT_S):
                await self.listener.close()
        except TimeoutError:
            self.log.warning("listener_close_timeout")

    async def _close_pool(self) -> None:
        try:
            async with asyncio.timeout(lifecycle.POOL_CLOSE_TIMEOUT_S):
                await self.pool.close()
        except TimeoutError:
            self.log.warning("pool_close_timeout")
            self.pool.terminate()

    # -- reload ----------------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self._signals.reload.wait()
            self._signals.reload.clear()
            await self.reload_config()

    async def reload_config(self) -> bool:
        """SIGHUP: re-read and validate the whole config, apply the reloadable part, swap.

        Always ends with READY=1: after a failure the daemon keeps running on the old config.
        """
        return await lifecycle.reload_with_notify(self._load_again, self._apply_reload,
                                                  metrics=self.metrics, log=self.log)

    def _load_again(self) -> AppConfig[S]:
        return cast(AppConfig[S], load_config(
            self.name, self.settings_model, path=self.config_path, env=os.environ,
            instance=self.instance))

    async def _apply_reload(self, new: AppConfig[S]) -> None:
        changed = restart_only_changes(self.config, new, self.restart_only_keys)
        if changed:
            self.log.warning("config_restart_required", keys=changed)
        await self.on_reload(new)
        set_level(self.cli_log_level or new.daemon.log_level)
        self.config = new  # one attribute swap
        self.log.info("config_reloaded", log_level=new.daemon.log_level)


def restart_only_changes(old: AppConfig[Any], new: AppConfig[Any],
                         keys: Sequence[str]) -> list[str]:
    """The dotted keys among `keys` whose value differs between `old` and `new`."""
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [key for key in keys if _dig(a, key) != _dig(b, key)]


def _dig(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if part.endswith("[]"):
            items = data.get(part[:-2]) or [] if isinstance(data, Mapping) else []
            rest = dotted.split(part + ".", 1)[1]
            return sorted(str(_dig(item, rest)) for item in items)
        data = data.get(part) if isinstance(data, Mapping) else None
    return data


__all__ = ["Daemon", "WorkerFn", "restart_only_changes"]
