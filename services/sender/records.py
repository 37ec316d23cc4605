"""What the sender's stages hand each other: the claimed row, a message in flight, one part's
job, and a message's outcome (the claim loop → the lanes → the policy → the write-back)."""

from __future__ import annotations

from dataclasses import dataclass, field

from smsgw.shared.queue.records import ClaimedOutbound
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.session import SubmitResult


@dataclass(slots=True, eq=False)
class InFlight:
    """A message whose parts are queued or outstanding in this process."""

    row: ClaimedOutbound
    connector: str
    parts_total: int
    pending: int
    results: dict[int, SubmitResult] = field(default_factory=dict)
    smsc_ids: dict[int, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class PartJob:
    """One submit_sm to send: which message, which part, the PDU; `started` is set when it is
    written at once (`Lane.offer`), for the submit duration."""

    msg: InFlight
    part_no: int
    pdu: P.SubmitSm
    started: float = 0.0


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
    row: ClaimedOutbound | None = None
    possible_duplicate: bool = False
