"""Metrics and the per-daemon `/metrics` `/healthz` `/readyz` HTTP site.

Each process builds its own `CollectorRegistry` (never the global default: docs/ARCHITECTURE.md
"Metrics naming"; no module-level state) with the process/platform collectors registered explicitly,
and passes it
to whatever creates metrics. Names follow docs/ARCHITECTURE.md "Metrics naming": `smsgw_` prefix,
`_total` counters,
`_seconds` units, labels from the fixed low-cardinality set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from shared.httpguard import GuardedAppRunner, HttpLimits
from shared.lifecycle import SITE_CLOSE_TIMEOUT_S

_access_log = structlog.stdlib.get_logger("aiohttp.access")
ReadyCheck = Callable[[], Awaitable[bool]]
READY_CHECK_TIMEOUT_S = 2.0
# In-flight requests get this long when a site closes (the stop budget counts it).
SITE_SHUTDOWN_TIMEOUT_S = SITE_CLOSE_TIMEOUT_S


def smsgw_version() -> str:
    """The installed distribution's version ("0+unknown" when run from a bare checkout)."""
    try:
        return version("smsgw")
    except PackageNotFoundError:
        return "0+unknown"


def create_registry(daemon: str) -> CollectorRegistry:
    """A fresh registry for one process, with process/platform collectors and build info."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    info = Gauge("smsgw_build_info", "Always 1; labels say which daemon and version run.",
                 ["daemon", "version"], registry=registry)
    info.labels(daemon=daemon, version=smsgw_version()).set(1)
    return registry


@dataclass(frozen=True, slots=True)
class RuntimeMetrics:
    """The metrics every daemon's runtime maintains (one set per registry)."""

    config_reloads: Counter
    config_last_reload_success: Gauge
    listener_reconnects: Counter
    queue_messages: Gauge
    queue_oldest_age: Gauge
    periodic_runs: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> RuntimeMetrics:
        """Register the runtime metrics on `registry`."""
        return cls(
            config_reloads=Counter(
                "smsgw_config_reloads_total", "SIGHUP config reloads by outcome.",
                ["outcome"], registry=registry),
            config_last_reload_success=Gauge(
                "smsgw_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load (start or reload).",
                registry=registry),
            listener_reconnects=Counter(
                "smsgw_listener_reconnects_total",
                "Times the LISTEN connection was re-established.", registry=registry),
            queue_messages=Gauge(
                "smsgw_queue_messages", "Rows per queue table and status (snapshot).",
                ["queue", "status"], registry=registry),
            queue_oldest_age=Gauge(
                "smsgw_queue_oldest_queued_age_seconds",
                "Age of the oldest queued row per queue (snapshot).", ["queue"],
                registry=registry),
            periodic_runs=Counter(
                "smsgw_periodic_job_runs_total",
                "Periodic job runs; outcome ok, skipped (another instance held the lock), "
                "failed.", ["job", "outcome"], registry=registry),
        )


def _metrics_handler(registry: CollectorRegistry) -> Callable[[web.Request], Awaitable[
        web.StreamResponse]]:
    try:
        from prometheus_client.aiohttp import make_aiohttp_handler
    except ImportError:  # prometheus-client < 0.21 has no aiohttp helper
        async def handler(_request: web.Request) -> web.StreamResponse:
            return web.Response(body=generate_latest(registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        return handler
    return make_aiohttp_handler(registry)


def health_app(registry: CollectorRegistry, checks: Mapping[str, ReadyCheck],
               is_stopping: Callable[[], bool] = lambda: False) -> web.Application:
    """The aiohttp app serving `/metrics`, `/healthz` (the loop answers) and `/readyz`.

    `/readyz` runs every check (e.g. database, listener) with a timeout and answers 200 only
    when all pass and the daemon is not stopping; the body says which failed.
    """
    async def healthz(_request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True})

    async def readyz(_request: web.Request) -> web.StreamResponse:
        results = {name: await _run_check(check) for name, check in checks.items()}
        if is_stopping():
            results["stopping"] = False
        ok = all(results.values())
        return web.json_response({"ok": ok, "checks": results}, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/metrics", _metrics_handler(registry))
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _run_check(check: ReadyCheck) -> bool:
    try:
        async with asyncio.timeout(READY_CHECK_TIMEOUT_S):
            return bool(await check())
    except (TimeoutError, OSError):
        return False
    except Exception:  # noqa: BLE001 - a failing check means "not ready", never a 500
        return False


class JsonAccessLogger(AbstractAccessLogger):
    """aiohttp access log as one `http_request` event per request (constant event name).

    Logs the path without the query string: query strings can carry phone numbers
    (Kannel-style `sendsms?to=...`) and credentials.
    """

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        _access_log.info("http_request", method=request.method, path=request.path,
                         status=response.status, duration_s=round(time, 6),
                         remote=request.remote)


class HttpSite:
    """One aiohttp app served on host:port; `port` is the real port (0 picks a free one)."""

    def __init__(self, name: str, app: web.Application, host: str, port: int, *,
                 access_log: bool = False, limits: HttpLimits | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        # access_log=None turns aiohttp's access log off (the health site is scraped often).
        extra: dict[str, Any] = ({"access_log_class": JsonAccessLogger} if access_log
                                 else {"access_log": None})
        # header/body deadlines, keep-alive idle timeout and a connection cap (httpguard)
        self._runner = GuardedAppRunner(app, limits=limits or HttpLimits(),
                                        shutdown_timeout=SITE_SHUTDOWN_TIMEOUT_S, **extra)
        self._closed = False

    async def start(self) -> int:
        """Bind and serve; return the bound port (read back, for port 0)."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = int(self._runner.addresses[-1][1])  # the real port, also for port 0
        return self.port

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), release the socket."""
        if not self._closed:
            self._closed = True
            await self._runner.cleanup()
