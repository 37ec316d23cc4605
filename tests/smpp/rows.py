"""A message row as the sender's claim hands it to `shared.smpp.compose.build_parts`, for the
composition tests (test_compose.py, test_fields.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Msg:
    id: int = 0x1234
    body: str | None = "hello"
    encoding: str | None = None
    from_addr: str = "SMSGW"
    to_addr: str = "+447700900001"
    done_parts: tuple[int, ...] = ()
    source: str = "api"
    callback_url: str | None = None
    dlr_mask: int | None = None
    valid_until: datetime | None = None
    send_at: datetime | None = None
    payload: bytes | None = None
    udh: bytes | None = None
    smpp: dict[str, Any] | None = None
