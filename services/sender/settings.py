"""`[sender]` settings (env `SMSGW_SENDER__<KEY>`): the common daemon keys plus the sender's."""

from __future__ import annotations

from pydantic import Field

from shared.config import DaemonSection


class SenderSettings(DaemonSection):
    """The sender's section. `lease_s` must outlast the SMPP response timeout plus `drain_s`
    (DESIGN.md guarantee 3), so a draining sender never loses a lease it still works on."""

    batch: int = Field(default=100, ge=1)  # rows leased per claim
    lease_s: float = Field(default=120.0, gt=0)
