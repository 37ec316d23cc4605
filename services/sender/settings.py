"""`[sender]` settings (env `SMSGW_SENDER__<KEY>`): the common daemon keys plus the sender's.

Rates, windows and bind counts are per connector (`[[connectors]]`: `tps`, `burst`, `window`,
`binds`, all global across instances); routes are `[[routes]]`. This section holds how the
sender claims, retries, batches its write-backs, holds bind slots and matches receipts.
"""

from __future__ import annotations

import re
from datetime import time as dtime
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from smsgw.shared.runtime.config import DaemonSection

_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
NoResponsePolicy = Literal["resubmit", "submit_unknown"]


class SenderSettings(DaemonSection):
    """The sender's section. `lease_s` must outlast the SMPP response timeout plus `drain_s`
    (docs/ARCHITECTURE.md, guarantee 3), so a draining sender never loses a lease it still works
    on."""

    # claiming
    batch: int = Field(default=100, ge=1)  # claim = free window slots + batch (in parts)
    lease_s: float = Field(default=120.0, gt=0)
    max_accounts: int = Field(default=100, ge=1)  # accounts served round-robin per claim
    # write-back of submit_sm_resp outcomes: one statement per flush_size or flush_s
    flush_size: int = Field(default=500, ge=1)
    flush_s: float = Field(default=0.05, gt=0)
    # retries
    max_attempts: int = Field(default=10, ge=1)  # counted attempts before `dead`
    retry_base_s: float = Field(default=1.0, gt=0)  # exponential backoff with full jitter
    retry_max_s: float = Field(default=300.0, gt=0)
    throttle_retry_s: float = Field(default=2.0, ge=0)  # throttled / queue full: no attempt
    not_sent_retry_s: float = Field(default=1.0, ge=0)  # never written (bind lost): no attempt
    no_bind_wait_s: float = Field(default=5.0, gt=0)  # no bound connector on the route: wait
    # a submit_sm without response: resubmit after the lease (counted as a possible
    # duplicate), or end `submit_unknown`
    no_response_policy: NoResponsePolicy = "resubmit"
    # marketing quiet hours in the recipient's zone ("21:00" / "08:00"; unset = none)
    quiet_hours_start: str | None = None
    quiet_hours_end: str | None = None
    default_time_zone: str = "UTC"  # when a number's zone is unknown
    events: bool = True  # write trace events for unusual outcomes
    # global bind slots (advisory locks): retry for free slots, check the slot connection,
    # wait before binding a freshly acquired slot (default 2 x check + 0.5 s)
    bind_retry_s: float = Field(default=2.0, gt=0)
    bind_check_s: float = Field(default=1.0, gt=0)
    bind_grace_s: float | None = Field(default=None, ge=0)
    # receipt matching
    receipt_batch: int = Field(default=1000, ge=1)
    receipt_window_s: float = Field(default=3 * 86400.0, gt=0)  # newest part within this
    receipt_retry_base_s: float = Field(default=0.5, gt=0)
    receipt_max_attempts: int = Field(default=12, ge=1)  # then `orphan`
    receipt_min_age_s: float = Field(default=0.5, ge=0)  # first try after (part written back)
    # Kannel dlr-url receipts of a split message: "first" reports part 1's only, as Kannel
    # 1.4.5 does (gw/sms.c sms_split asks a DLR for the first part only); "each" one per part
    kannel_dlr_parts: Literal["first", "each"] = "first"

    @property
    def quiet_hours(self) -> tuple[dtime, dtime] | None:
        """(start, end) of the marketing quiet hours as local times, or None when unset."""
        if not self.quiet_hours_start or not self.quiet_hours_end:
            return None
        return (dtime.fromisoformat(self.quiet_hours_start),
                dtime.fromisoformat(self.quiet_hours_end))

    @field_validator("quiet_hours_start", "quiet_hours_end")
    @classmethod
    def _hhmm(cls, value: str | None) -> str | None:
        if value is not None and not _HHMM.match(value):
            raise ValueError("expected HH:MM (24 h)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if (self.quiet_hours_start is None) != (self.quiet_hours_end is None):
            raise ValueError("set both quiet_hours_start and quiet_hours_end, or neither")
        if self.lease_s <= self.drain_s:
            raise ValueError("lease_s must exceed drain_s (plus the SMPP response timeout)")
        if self.retry_base_s > self.retry_max_s:
            raise ValueError("retry_base_s must not exceed retry_max_s")
        return self

