"""`[receiver]` settings (env `SMSGW_RECEIVER__<KEY>`): the common keys plus the receiver's.

The receiver's own keys (API limits, group commit, admission watermarks, rate-limit sync, SMPP
rx binds) are declared in `services/receiver/options.py` so the API and intake modules can take
them as one argument; `ReceiverSettings` is both.
"""

from __future__ import annotations

from typing import Self

from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.runtime.config import DaemonSection


class ReceiverSettings(DaemonSection, ReceiverOptions):
    """The receiver's section. `http_port` None means docs/ARCHITECTURE.md "Ports": 8080 +
    (instance - 1)."""

    def resolve_defaults(self, daemon: str, instance: int) -> Self:
        """Also fill in the API port from the instance number."""
        out = super().resolve_defaults(daemon, instance)
        if out.http_port is None:
            out = out.model_copy(update={"http_port": out.resolved_http_port(instance)})
        return out
