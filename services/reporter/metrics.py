"""The reporter's metrics, on the per-process registry the composition root builds.

Labels come from fixed code sets only (kind, outcome); every expected label set is initialised
so `rate()` starts at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from smsgw.shared.domain.reports import KINDS

OUTCOMES = ("done", "failed", "cancelled", "lease_lost", "released")
DURATION_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass(frozen=True, slots=True)
class ReporterMetrics:
    """Counters, gauges and histograms of the reporter daemon."""

    reports: Counter
    running: Gauge
    duration: Histogram
    rows: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReporterMetrics:
        """Register the reporter metrics on `registry` and initialise their label sets."""
        m = cls(
            # reports this instance ended, by kind and outcome
            reports=Counter("smsgw_reporter_reports_total", "Reports ended, by outcome.",
                            ["kind", "outcome"], registry=registry),
            # reports running in this instance now
            running=Gauge("smsgw_reporter_running", "Reports running now.", registry=registry),
            # wall time of one report, claim to stored
            duration=Histogram("smsgw_reporter_report_duration_seconds",
                               "Duration of one report.", ["kind"],
                               buckets=DURATION_BUCKETS, registry=registry),
            # rows the reports read
            rows=Counter("smsgw_reporter_rows_total", "Rows read by reports.", ["kind"],
                         registry=registry),
        )
        for kind in KINDS:
            m.rows.labels(kind=kind)
            m.duration.labels(kind=kind)
            for outcome in OUTCOMES:
                m.reports.labels(kind=kind, outcome=outcome)
        return m
