"""Frozen records for the queue tables: what `shared.queue.store` returns (never asyncpg Records).

Field names are the column names of `migrations/0001_queue.sql` (the contract). Statuses are
`StrEnum`s matching each table's CHECK constraint, so `status == OutboundStatus.SENDING` and
`status == "sending"` are both true. `from_record` takes anything with `__getitem__` by column
name (an asyncpg Record, a dict); a row from `<table>_history` fits the same record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import MISSING, dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, NamedTuple, Protocol, Self

import orjson


class _Row(Protocol):
    def __getitem__(self, key: str, /) -> Any: ...

    def get(self, key: str, default: Any = ..., /) -> Any: ...


# -- statuses (CHECK constraints of 0001_queue.sql) ------------------------------------------


class InboundStatus(StrEnum):
    """`inbound.status`: queued → done · failed (permanent) · dead (retries exhausted)."""

    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"
    DEAD = "dead"


class OutboundStatus(StrEnum):
    """`outbound.status`: queued → sending → submitted → a terminal state; queued →
    cancelled (an operator or an ESME withdrew it before any sender claimed it)."""

    QUEUED = "queued"
    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    SUPPRESSED = "suppressed"
    SUBMIT_UNKNOWN = "submit_unknown"
    DEAD = "dead"
    CANCELLED = "cancelled"


class PartStatus(StrEnum):
    """`outbound_part.status`: sending → submitted → a final receipt state."""

    SENDING = "sending"
    SUBMITTED = "submitted"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN_RECEIPT = "unknown_receipt"


class ReceiptStatus(StrEnum):
    """`receipts.status`: queued → matched · orphan."""

    QUEUED = "queued"
    MATCHED = "matched"
    ORPHAN = "orphan"


class CallbackStatus(StrEnum):
    """`callbacks.status`: queued → sending → done · dead."""

    QUEUED = "queued"
    SENDING = "sending"
    DONE = "done"
    DEAD = "dead"


class MoPartStatus(StrEnum):
    """`mo_parts.status`: queued → done (reassembled) · failed (timed out)."""

    QUEUED = "queued"
    DONE = "done"
    FAILED = "failed"


class EsmeDeliveryStatus(StrEnum):
    """`esme_deliveries.status`: `queued` (leased in place; a finished row is deleted with its
    event). SENDING, DELIVERED, EXPIRED, DEAD: only rows a release before migration 0018
    wrote (reclaimed and purged by the housekeeping)."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    DEAD = "dead"


class ReportStatus(StrEnum):
    """`report_requests.status`: queued → running (leased) → done · failed · cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_BUILDERS: dict[type, Any] = {}


def _builder(cls: type) -> Any:
    """Compile `cls`'s row → record function once: straight-line code, no kwargs dict.

    It sets the slots the way the frozen dataclass `__init__` does (object.__setattr__), which
    costs ~25% less than building a kwargs dict per row — claims decode thousands of rows/s.
    """
    optional = cls.__dict__.get("_optional", frozenset())
    lines = ["def build(r):", "    o = _new(cls)"]
    for f in fields(cls):
        # an optional column missing from the row takes the field's default (False if none)
        default = False if f.default is MISSING else f.default
        get = f"r.get({f.name!r}, {default!r})" if f.name in optional else f"r[{f.name!r}]"
        lines.append(f"    _set(o, {f.name!r}, {get})")
    lines.append("    return o")
    ns: dict[str, Any] = {"cls": cls, "_new": object.__new__, "_set": object.__setattr__}
    exec("\n".join(lines), ns)
    return ns["build"]


class _FromRecord:
    """Mixin: build a record from a row by its dataclass field names."""

    __slots__ = ()
    _optional: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_record(cls, rec: _Row) -> Self:
        """Build the record from an asyncpg Record (or a dict) holding the table's columns."""
        build = _BUILDERS.get(cls)
        if build is None:
            build = _BUILDERS[cls] = _builder(cls)
        return build(rec)  # type: ignore[no-any-return]


# -- queue rows ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage(_FromRecord):
    """One MO message (`inbound` / `inbound_history` row)."""

    id: int
    channel: str
    provider: str
    connector: str | None
    from_addr: str
    to_addr: str
    body: str | None
    raw: bytes | None
    data_coding: int | None
    provider_message_id: str | None
    meta: Any
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundMessage(_FromRecord):
    """One MT message (`outbound` / `outbound_history` row).

    `reclaimed` is True when a lease claim took this row over from a worker whose lease had
    expired (it may have been submitted already: the sender counts it as a possible duplicate).
    `attempts` then already counts the lost attempt.
    """

    _optional: ClassVar[frozenset[str]] = frozenset({"reclaimed", "to_hash", "payload", "udh",
                                                     "smpp"})

    id: int
    account_id: int | None
    source: str
    from_addr: str
    to_addr: str
    body: str | None
    category: str
    priority: int
    encoding: str | None
    parts_total: int | None
    connector: str | None
    route_hint: str | None
    client_ref: str | None
    callback_url: str | None
    dlr_mask: int | None
    send_at: datetime | None
    valid_until: datetime | None
    inbound_id: int | None
    rule_id: int | None
    meta: Any
    error_code: int | None
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    submitted_at: datetime | None
    done_at: datetime | None
    created_at: datetime
    updated_at: datetime
    # keyed hash of to_addr (migration 0009; the sender's suppression check); absent from
    # rows read with an explicit column list
    to_hash: bytes | None = None
    # migration 0011: binary user data (body NULL), the client's UDH, the per-message SMPP
    # fields (shared/smpp/fields.py); NULL for a plain text MT
    payload: bytes | None = None
    udh: bytes | None = None
    smpp: Any = None
    reclaimed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboundPart(_FromRecord):
    """One submitted part of an MT (`outbound_part` row)."""

    id: int
    outbound_id: int
    part_no: int
    parts_total: int
    connector: str
    smsc_id: str | None
    command_status: int | None
    err: str | None
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    submitted_at: datetime | None
    done_at: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt(_FromRecord):
    """One delivery receipt (`receipts` / `receipts_history` row)."""

    # migration 0013's columns: a row read before it (or by a query not naming them) has none
    _optional: ClassVar[frozenset[str]] = frozenset({"message_state", "network_error"})

    id: int
    connector: str
    smsc_id: str
    raw_id: str | None
    stat: str | None
    state: str | None
    final: bool
    err: str | None
    done_date: datetime | None
    body: str | None
    outbound_part_id: int | None
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    message_state: int | None = None  # the message_state TLV (with receipted_message_id)
    network_error: bytes | None = None  # the network_error_code TLV's 3 octets


@dataclass(frozen=True, slots=True, kw_only=True)
class Callback(_FromRecord):
    """One HTTP call to an application (`callbacks` / `callbacks_history` row).

    `reclaimed` as in `OutboundMessage`: the previous lease holder may have made the call.
    """

    _optional: ClassVar[frozenset[str]] = frozenset({"reclaimed", "batch_max", "reply"})

    id: int
    kind: str
    account_id: int | None
    outbound_id: int | None
    inbound_id: int | None
    url: str
    method: str
    body: bytes | None
    headers: Any
    secret_ref: str | None
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    batch_max: int | None = None  # forwards: up to this many rows per request (migration 0007)
    # forwards with `reply_from_body`: what the reply needs (migration 0012); None: no reply
    reply: Any = None
    reclaimed: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class MoPart(_FromRecord):
    """One concatenated-MO fragment awaiting reassembly (`mo_parts` row)."""

    id: int
    connector: str
    from_addr: str
    to_addr: str
    ref: int
    total: int
    seq: int
    body: str | None
    raw: bytes | None
    data_coding: int | None
    inbound_id: int | None
    status: str
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    meta: Any  # added by migration 0003


# -- what the owners insert ------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class MtItem:
    """One validated MT ready to store (numbers already E.164). Not frozen: a frozen
    dataclass's `__init__` sets each of these fields through `object.__setattr__`, 2.8 µs
    of every MT instead of 1.0; nothing changes an item once built (`dataclasses.replace`
    makes a new one)."""

    account_id: int
    source: str  # 'api' | 'sendsms'
    from_addr: str
    to_addr: str
    body: str | None  # None for a binary MT (`payload`)
    category: str
    priority: int = 0
    encoding: str | None = None
    client_ref: str | None = None
    callback_url: str | None = None
    dlr_mask: int | None = None
    send_at: datetime | None = None
    valid_until: datetime | None = None
    route_hint: str | None = None
    meta: dict[str, Any] | None = None
    validity_s: int | None = None  # as requested (valid_until is computed from "now")
    # migration 0011 (None for a plain text MT, which then costs what it did):
    payload: bytes | None = None  # binary user data (without its UDH); body is then None
    udh: bytes | None = None  # the client's user data header, length octet included
    smpp: dict[str, Any] | None = None  # per-message SMPP fields (shared/smpp/fields.py)
    # a scheduled MT is due at once (not at send_at): some connector passes the schedule to
    # the SMSC (`schedule_mode = "send"`) and the sender decides per connector
    due_now: bool = False

    def fingerprint(self) -> str:
        """Content hash telling a retry (same content) from a reused client_ref.

        Made of what the client sent (normalised), never of values computed at intake: a retry
        a minute later has a later `valid_until` but the same `validity_s`.
        """
        content = (self.from_addr, self.to_addr, self.body, self.category, self.priority,
                   self.encoding, self.callback_url, self.dlr_mask,
                   self.send_at.isoformat() if self.send_at else None, self.validity_s,
                   self.route_hint)
        if self.payload is not None or self.udh is not None or self.smpp is not None:
            # only when set, so a plain MT's fingerprint stays what earlier releases stored
            content += (self.payload.hex() if self.payload is not None else None,
                        self.udh.hex() if self.udh is not None else None, self.smpp)
        return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundWrite:
    """One whole MO message to store (numbers already normalised).

    `dedupe_scope`/`dedupe_key` (e.g. "mo:twilio", the MessageSid) make a redelivery a no-op.
    """

    channel: str  # 'smpp' | 'http' | 'cli'
    provider: str
    connector: str | None
    from_addr: str
    to_addr: str
    body: str | None
    raw: bytes | None = None
    data_coding: int | None = None
    provider_message_id: str | None = None
    meta: dict[str, Any] | None = None
    dedupe_scope: str | None = None
    dedupe_key: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class FragmentWrite:
    """One fragment of a concatenated MO; `connector` names the link (or webhook provider)."""

    channel: str
    provider: str
    connector: str
    from_addr: str
    to_addr: str
    ref: int
    total: int
    seq: int
    body: str | None
    raw: bytes | None = None
    data_coding: int | None = None
    provider_message_id: str | None = None
    dedupe_scope: str | None = None
    dedupe_key: str | None = None

    def lock_key(self) -> int:
        """64-bit advisory lock key of the message this fragment belongs to."""
        text = f"mo_parts|{self.connector}|{self.from_addr}|{self.to_addr}|{self.ref}|{self.total}"
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big",
                              signed=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptWrite:
    """One delivery receipt to store for matching (smsc_id already normalised per connector)."""

    connector: str
    smsc_id: str
    raw_id: str | None
    stat: str | None
    state: str | None
    final: bool
    err: str | None
    done_date: datetime | None
    body: str | None
    # Kannel's receipt DLR (migration 0013): the message_state TLV of a receipt that also had
    # receipted_message_id, and the network_error_code TLV's 3 octets, as received
    message_state: int | None = None
    network_error: bytes | None = None


# -- rows the owners' statements return -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClaimedOutbound:
    """One leased (or finished-at-claim) outbound row, as the sender's claim
    (`outbound.claim`) returns it.

    A projection of `OutboundMessage` (the columns the sender needs, plus `reclaimed`,
    `unhashed` and `done_parts`), not the whole row: the claim is the sender's hot path, and
    `RETURNING m.*` would carry and decode a dozen more columns per message.
    """

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
    send_at: datetime | None
    payload: bytes | None  # binary user data (migration 0011); NULL for text
    udh: bytes | None  # the client's user data header
    smpp: Any  # per-message SMPP fields (a dict, shared/smpp/fields.py) or None
    reclaimed: bool
    unhashed: bool  # a leased marketing row without its recipient hash (see outbound.hash_claimed)
    done_parts: tuple[int, ...]

    @classmethod
    def from_record(cls, r: Any) -> ClaimedOutbound:
        """From an `outbound.claim` row (positional: the RETURNING list has the field order,
        checked once against the column names). Fills the slots without the frozen
        dataclass `__init__` (object.__setattr__ per field: 3.0 → 1.3 µs a row); the claim
        statement's columns are typed, so nothing is converted but done_parts."""
        if not _CLAIM_COLUMNS_CHECKED:
            _check_claim_columns(list(r.keys()))
        return _make_claimed(r)


def _claimed_maker() -> Any:
    """`make(record)`: a ClaimedOutbound from a claim row's values in field order, the last
    (done_parts, an int[] or NULL) as a tuple."""
    names = [f.name for f in fields(ClaimedOutbound)]
    lines = ["def make(r):", f"    ({', '.join(names)},) = r", "    o = _new(_cls)"]
    lines += [f"    _s_{n}(o, {n})" for n in names[:-1]]
    lines += [f"    _s_{names[-1]}(o, tuple({names[-1]} or ()))", "    return o"]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": ClaimedOutbound}
    namespace.update({f"_s_{n}": getattr(ClaimedOutbound, n).__set__ for n in names})
    exec("\n".join(lines), namespace)
    return namespace["make"]


_make_claimed = _claimed_maker()
_CLAIM_COLUMNS_CHECKED: list[bool] = []


def _check_claim_columns(names: list[str]) -> None:
    expected = [f.name for f in fields(ClaimedOutbound)]
    if names != expected:
        raise RuntimeError(f"outbound.claim returns {names}, ClaimedOutbound expects "
                           f"{expected}")
    _CLAIM_COLUMNS_CHECKED.append(True)


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A message state change an application may want to hear about (a status callback).

    Made by `outbound.finalize` after receipt matching, by `outbound.cancel_queued`, and by
    the sender for states it sets itself (rejected, expired, suppressed, …).
    """

    outbound_id: int
    status: str
    account_id: int | None
    from_addr: str
    to_addr: str
    client_ref: str | None
    callback_url: str | None
    dlr_mask: int | None
    meta: Any
    parts_total: int | None
    delivered_parts: int
    connector: str | None
    error_code: int | None
    error: str | None

    @classmethod
    def from_record(cls, r: _Row) -> StatusChange:
        """From an `outbound.finalize` row."""
        return cls(outbound_id=r["id"], status=r["status"], account_id=r["account_id"],
                   from_addr=r["from_addr"], to_addr=r["to_addr"], client_ref=r["client_ref"],
                   callback_url=r["callback_url"], dlr_mask=r["dlr_mask"], meta=r["meta"],
                   parts_total=r["parts_total"], delivered_parts=int(r["delivered"] or 0),
                   connector=r["connector"], error_code=r["error_code"],
                   error=r["last_error"])


class StatusCallback(NamedTuple):
    """One `callbacks` row of kind 'status' to insert (`callbacks.insert_status`)."""

    account_id: int | None
    outbound_id: int
    url: str
    method: str
    body: bytes | None
    headers: dict[str, str] | None
    secret_ref: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReceiptMatch:
    """What one `receipts.match` statement did: the messages whose parts got a final receipt
    (`finals`) or an intermediate one (`intermediates`), and the receipts it matched, put back
    for a retry and orphaned; `reported` the ids of the matched receipts whose part was not final
    yet, in arrival order."""

    finals: Sequence[int]
    intermediates: Sequence[int]
    matched: int
    retried: int
    orphaned: int
    reported: Sequence[int] = ()  # matched receipts of parts not final before (Kannel DLRs)


@dataclass(frozen=True, slots=True)
class ReceiptStored:
    """What one `receipts.store` statement did: the ids of the stored receipts (input order),
    how many it stored already `matched`, and how many messages it finalised."""

    ids: Sequence[int]
    matched: int
    finalized: int


# -- results of store functions -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnqueueResult:
    """The outcome for row `index` of an `enqueue` batch.

    `id` is the new row's id, or for a repeated dedupe key the id the key points to (the
    original message; `duplicate` is then True and no row was inserted). `fingerprint_match`
    tells a retry (True) from a conflicting reuse of the key with other content (False); it is
    None when the row had no dedupe key or either side has no fingerprint.
    """

    index: int
    id: int
    duplicate: bool
    fingerprint_match: bool | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DedupeKey:
    """An idempotency key for one enqueued row.

    `scope` + `key` are unique (e.g. scope `mt:<account_id>`, key the client_ref); `fingerprint`
    is a content hash that tells a retry from a conflicting reuse; the key dedupes for `ttl_s`
    seconds (and until the retention job purges it after that).
    """

    scope: str
    key: str
    fingerprint: str | None = None
    ttl_s: float = 7 * 86400.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(_FromRecord):
    """One entry of a message's event log (`events` row), as `smsgw trace` shows it."""

    id: int
    message_table: str
    message_id: int
    event: str
    detail: Any
    daemon: str | None
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueStat(_FromRecord):
    """Depth and oldest age of one queue/status, from the `queue_stats` snapshot.

    `depth` is capped (the refresh counts at most a configured number of rows): admission
    control only needs to know it is above a watermark.
    """

    queue: str
    status: str
    depth: int
    oldest_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportRequest(_FromRecord):
    """One `report_requests` row (migration 0016): a report, its progress and its files."""

    id: int
    kind: str
    params: dict[str, Any]
    account_id: int | None
    requested_by: str
    status: ReportStatus
    attempts: int
    run_after: datetime
    lease_owner: str | None
    lease_until: datetime | None
    last_error: str | None
    cancel_requested: bool
    rows_scanned: int
    rows_estimated: int | None
    progress: float
    files: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
