"""What the sender's stages hand each other: the claimed row, a message in flight, one part's
job, and a message's outcome (the claim loop → the lanes → the policy → the write-back)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.session import SubmitResult


@dataclass(frozen=True, slots=True)
class Claimed:
    """One leased (or finished-at-claim) outbound row, as the claim returns it."""

    id: int
    account_id: int | None
    source: str
    from_addr: str
    to_addr: str
    body: str | None
    category: str
    priority: int
    encoding: str | None
    connector: str | None
    route_hint: str | None
    client_ref: str | None
    callback_url: str | None
    dlr_mask: int | None
    meta: Any
    attempts: int
    status: str
    lease_until: datetime | None
    valid_until: datetime | None
    reclaimed: bool
    unhashed: bool  # a leased marketing row without its recipient hash (see Q.HASH_CLAIMED)
    done_parts: tuple[int, ...]

    @classmethod
    def from_record(cls, r: Any) -> Claimed:
        """From a claim_outbound row (positional: the RETURNING list has the field order,
        checked once against the column names)."""
        if not _CLAIM_COLUMNS_CHECKED:
            _check_claim_columns(list(r.keys()))
        values = tuple(r)
        return cls(*values[:-1], tuple(values[-1] or ()))


_CLAIM_COLUMNS_CHECKED: list[bool] = []


def _check_claim_columns(names: list[str]) -> None:
    expected = [f.name for f in fields(Claimed)]
    if names != expected:
        raise RuntimeError(f"claim_outbound returns {names}, Claimed expects {expected}")
    _CLAIM_COLUMNS_CHECKED.append(True)


@dataclass(slots=True, eq=False)
class InFlight:
    """A message whose parts are queued or outstanding in this process."""

    row: Claimed
    connector: str
    parts_total: int
    pending: int
    results: dict[int, SubmitResult] = field(default_factory=dict)
    smsc_ids: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartJob:
    """One submit_sm to send: which message, which part, the PDU."""

    msg: InFlight
    part_no: int
    pdu: P.SubmitSm


@dataclass(frozen=True, slots=True)
class Outcome:
    """A message's write-back: new status, error, retry delay, and its answered parts."""

    msg_id: int
    status: str
    error_code: int | None = None
    error: str | None = None
    delay_s: float = 0.0
    attempts_inc: int = 0
    parts_total: int | None = None
    connector: str | None = None
    parts: tuple[tuple[int, str | None, int | None, str], ...] = ()  # (no, smsc_id, cs, status)
    row: Claimed | None = None
    possible_duplicate: bool = False
