"""`[processor]` settings (env `SMSGW_PROCESSOR__<KEY>`): the common keys plus the processor's.

The processor's own keys and their defaults are documented in `services/processor/options.py`
(`ProcessorKeys`: batch, retries, outbound watermarks, flood control, `[processor.optout]`,
`[processor.callbacks]`, `[processor.jobs]`).
"""

from __future__ import annotations

from smsgw.services.processor.options import ProcessorKeys


class ProcessorSettings(ProcessorKeys):
    """The processor's section: `DaemonSection` keys plus `ProcessorKeys`."""
