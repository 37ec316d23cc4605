"""`[receiver]` settings (env `SMSGW_RECEIVER__<KEY>`): the common keys plus the receiver's."""

from __future__ import annotations

from typing import Self

from pydantic import Field

from shared.config import RECEIVER_HTTP_PORT_BASE, DaemonSection


class ReceiverSettings(DaemonSection):
    """The receiver's section. `http_port` None means DESIGN.md's 8080 + (instance - 1)."""

    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)

    def resolve_defaults(self, daemon: str, instance: int) -> Self:
        """Also fill in the API port from the instance number."""
        out = super().resolve_defaults(daemon, instance)
        if out.http_port is None:
            out = out.model_copy(update={"http_port": RECEIVER_HTTP_PORT_BASE + instance - 1})
        return out
