"""The `[processor]` keys (env `SMSGW_PROCESSOR__<KEY>`), beyond the common daemon keys.

    [processor]
    batch = 200                      # inbound rows claimed per transaction
    max_attempts = 5                 # a message failing this often ends `dead`
    retry_base_s = 1.0               # backoff floor; doubles per attempt up to retry_max_s
    retry_max_s = 300.0
    outbound_high_watermark = 90000  # pause claiming while outbound queued reaches this ...
    outbound_low_watermark = 72000   # ... until it is back below this (default 80 % of high)
    flood_max = 20                   # messages per number per flood_window_s answered; 0 = off
    flood_window_s = 60.0
    events = true                    # one `events` row per message (what `smsgw trace` shows)

    [processor.optout]               # see services/processor/optout.py
    [processor.callbacks]            # delivery of the callbacks queue
    concurrency = 64                 # requests in flight in this process
    per_host = 8                     # ... and per destination host
    timeout_s = 10.0                 # whole request
    connect_timeout_s = 3.0
    max_attempts = 10                # then `dead`
    retry_base_s = 5.0
    retry_max_s = 3600.0
    lease_s = 60.0                   # must exceed timeout_s + drain_s (checked)
    batch = 100
    [processor.jobs]                 # periodic jobs (each once per period across instances)
    mo_fragment_timeout_s = 300.0    # incomplete concatenated MO -> failed inbound row
    mo_fragment_interval_s = 30.0
    receipt_orphan_after_s = 600.0   # unmatched receipts -> orphan
    receipt_orphan_interval_s = 30.0
    flood_cleanup_interval_s = 300.0
    (the retention move runs every `[retention] interval_s`)
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smsgw.services.processor.optout import OptOutSettings
from smsgw.shared.runtime.config import DaemonSection


class _Sub(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CallbackSettings(_Sub):
    """`[processor.callbacks]`: delivery of the callbacks queue to applications."""

    concurrency: int = Field(default=64, ge=1, le=10_000)
    per_host: int = Field(default=8, ge=1)
    timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=3.0, gt=0)
    max_attempts: int = Field(default=10, ge=1)
    retry_base_s: float = Field(default=5.0, ge=0)
    retry_max_s: float = Field(default=3600.0, ge=0)
    lease_s: float = Field(default=60.0, gt=0)
    batch: int = Field(default=100, ge=1)
    # finished requests wait up to this long for the rest of their claim, so one statement
    # writes a claim's results back (callbacks.CallbackDelivery._wait)
    writeback_linger_s: float = Field(default=0.005, ge=0, le=1.0)

    @model_validator(mode="after")
    def _lease_outlasts_request(self) -> Self:
        if self.lease_s <= self.timeout_s:
            raise ValueError("lease_s must be longer than timeout_s (a lease may not expire "
                             "while its request can still succeed)")
        return self


class JobSettings(_Sub):
    """`[processor.jobs]`: the periodic jobs the processor runs."""

    mo_fragment_timeout_s: float = Field(default=300.0, gt=0)
    mo_fragment_interval_s: float = Field(default=30.0, gt=0)
    receipt_orphan_after_s: float = Field(default=600.0, gt=0)
    receipt_orphan_interval_s: float = Field(default=30.0, gt=0)
    flood_cleanup_interval_s: float = Field(default=300.0, gt=0)


class ProcessorKeys(DaemonSection):
    """The processor's own keys (the section model of `[processor]` inherits these)."""

    batch: int = Field(default=200, ge=1, le=5000)
    # The inbound claim's adaptive linger (see DaemonSection): 20 ms here, not 5. Each batch
    # costs four round trips and a commit whatever its size, and at a few hundred MO a second
    # 5 ms held one or two messages: measured (bench mo --rates 250,1000) gateway CPU-us per
    # MO 2,408 / 548 with 5 ms, 1,460 / 500 with 20 ms, MO -> application p50 +18 ms. Only
    # while busy (two or more rows expected within it, i.e. from 100 MO/s): a lone MO still
    # goes at once.
    adaptive_linger_s: float = Field(default=0.02, ge=0, le=0.1)
    max_attempts: int = Field(default=5, ge=1)
    retry_base_s: float = Field(default=1.0, ge=0)
    retry_max_s: float = Field(default=300.0, ge=0)
    # The queue snapshot counts up to 100,000 rows, so a watermark must sit below that to act.
    outbound_high_watermark: int = Field(default=90_000, ge=1)
    outbound_low_watermark: int | None = Field(default=None, ge=0)
    flood_max: int = Field(default=20, ge=0)
    flood_window_s: float = Field(default=60.0, gt=0)
    events: bool = True
    optout: OptOutSettings = Field(default_factory=OptOutSettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)

    @model_validator(mode="after")
    def _watermarks_ordered(self) -> Self:
        if (self.outbound_low_watermark is not None
                and self.outbound_low_watermark > self.outbound_high_watermark):
            raise ValueError("outbound_low_watermark must not exceed outbound_high_watermark")
        # A callback lease must outlast a request plus the drain that waits for it, or another
        # instance could take the row over while this one's request can still succeed.
        if self.callbacks.lease_s <= self.callbacks.timeout_s + self.drain_s:
            raise ValueError(f"callbacks.lease_s ({self.callbacks.lease_s}) must be longer "
                             f"than callbacks.timeout_s + drain_s "
                             f"({self.callbacks.timeout_s + self.drain_s})")
        return self

    @property
    def low_watermark(self) -> int:
        """The resume threshold (default 80 % of the high watermark)."""
        if self.outbound_low_watermark is not None:
            return self.outbound_low_watermark
        return int(self.outbound_high_watermark * 0.8)
