"""The per-process metrics registry and the runtime's own metrics.

Each process builds its own `CollectorRegistry` (never the global default, no module-level
state; docs/ARCHITECTURE.md "Metrics naming") with the process/platform collectors registered
explicitly, and passes it to whatever creates metrics. Names follow the same section: `smsgw_`
prefix, `_total` counters, `_seconds` units, labels from the fixed low-cardinality set. The HTTP
site that serves them is `shared.runtime.http`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    PlatformCollector,
    ProcessCollector,
)


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
