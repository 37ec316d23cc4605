"""`[reporter]` settings (env `SMSGW_REPORTER__<KEY>`): the common daemon keys plus these.

    [reporter]
    dir = "/var/lib/smsgw/reports"  # the reports area (systemd: StateDirectory=smsgw/reports;
                                    # `smsgw up`: DATA_DIR/reports); created 0750
    file_mode = "0640"              # the report files' mode: "0600" or "0640" (group readers)
    concurrency = 2                 # reports running at once in this instance
    lease_s = 60.0                  # a report's lease, renewed by every progress update
    max_attempts = 3                # lost leases (crashed reporters) before a report fails
    keep_s = 604800.0               # finished reports (files and stored copy) kept 7 days
    max_range_days = 400            # the longest range a report may span
    progress_s = 2.0                # progress (and lease renewal) at most this often
    fetch_rows = 5000               # rows per cursor fetch while streaming
    statement_timeout_s = 3600.0    # one report's longest query
    work_mem = "32MB"               # Postgres work_mem of a report's transaction
    retention_interval_s = 300.0    # how often expired reports are removed
    nice = 10                       # the reporter's CPU priority below the message path's
                                    # (systemd units set Nice=10 themselves)
    busy_share = 1.0                # < 1: a report pauses so that it works at most this
                                    # share of the time (its Postgres backend idles too)
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from smsgw.shared.runtime.config import DaemonSection


class ReporterSettings(DaemonSection):
    """The reporter's section: `DaemonSection` keys plus the reporter's own."""

    dir: str = "/var/lib/smsgw/reports"
    file_mode: Literal["0600", "0640"] = "0640"
    concurrency: int = Field(default=2, ge=1, le=32)
    lease_s: float = Field(default=60.0, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=100)
    keep_s: float = Field(default=7 * 86400.0, gt=0)
    max_range_days: int = Field(default=400, ge=1, le=3660)
    progress_s: float = Field(default=2.0, gt=0)
    fetch_rows: int = Field(default=5000, ge=100, le=100_000)
    statement_timeout_s: float = Field(default=3600.0, gt=0)
    work_mem: str = Field(default="32MB", pattern=r"^[0-9]{1,6}(kB|MB|GB)$")
    retention_interval_s: float = Field(default=300.0, gt=0)
    nice: int = Field(default=10, ge=0, le=19)
    busy_share: float = Field(default=1.0, gt=0, le=1.0)

    @model_validator(mode="after")
    def _lease_outlasts_progress(self) -> Self:
        if self.lease_s <= 3 * self.progress_s:
            raise ValueError(f"lease_s ({self.lease_s}) must be longer than 3 x progress_s "
                             f"({3 * self.progress_s}): progress updates renew the lease")
        return self

    @property
    def mode(self) -> int:
        """`file_mode` as a number."""
        return int(self.file_mode, 8)
