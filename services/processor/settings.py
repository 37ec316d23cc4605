"""`[processor]` settings (env `SMSGW_PROCESSOR__<KEY>`): the common keys plus the processor's."""

from __future__ import annotations

from pydantic import Field

from shared.config import DaemonSection


class ProcessorSettings(DaemonSection):
    """The processor's section."""

    batch: int = Field(default=100, ge=1)  # inbound rows claimed per transaction
