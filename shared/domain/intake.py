"""The one intake for everything that arrives: MO messages, MO fragments and delivery receipts.

docs/ARCHITECTURE.md "Where deliver_sm goes": every bind that receives `deliver_sm`/`data_sm` (the
receiver's rx binds, the sender's trx binds) hands the PDU to `DeliverIntake.handle`, which
normalises the numbers, stores an MO row, a receipt row or an MO fragment through a group
committer, and only after the commit returns the `command_status` for `deliver_sm_resp`. The
HTTP webhooks store their MO through the same writers (`InboundWrite` items).

Writers (flush functions for `shared.queue.groupcommit.GroupCommitter`):

* `flush_inbound(conn, items, ttl_s=…)` — one multi-row INSERT into `inbound` for the whole
  messages, with a dedupe key per provider message id (`dedupe_keys`, scope e.g. `mo:twilio`:
  a redelivered webhook is answered as success and stored once), then the fragments one by
  one (below), then one NOTIFY.
* `flush_receipts(conn, items)` — one multi-row INSERT into `receipts` and one NOTIFY; the
  sender matches them to parts.

Concatenated MO is reassembled in the database (`mo_parts`), because the fragments of one
message can arrive on different binds, on different receiver instances, and across restarts.
Each fragment is stored under a transaction-scoped advisory lock on its message key
(connector, from, to, ref, total), so two instances storing the last two fragments at the same
moment serialise on the lock: exactly one of them sees all `total` fragments and writes the
inbound row. Fragments of one batch are locked in key order, so two batches never deadlock.
`expire_mo_fragments` turns fragments that never completed into a `failed` inbound row, keeping
the fragments (the processor runs it on a timer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg
import orjson
import structlog

from smsgw.shared.core.errors import DatabaseUnavailable, SmsGatewayError
from smsgw.shared.domain.numbers import InvalidNumber, normalise
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.smpp.receipts import is_receipt, parse_receipt
from smsgw.shared.smpp.text import decode_message

log = structlog.get_logger("intake")

SMPP_ESME_ROK = 0
DEFAULT_DEDUPE_TTL_S = 2 * 86400.0


# -- items and results ------------------------------------------------------------------------

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


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What storing one MO/fragment did: `inbound_id` of the (reassembled) message, if any."""

    inbound_id: int | None
    duplicate: bool = False
    complete: bool = True  # False: a fragment stored, the message is not complete yet


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


# -- SQL --------------------------------------------------------------------------------------

# insert_inbound_batch: insert whole MO messages, claiming each provider id in dedupe_keys.
# Returns, per input position, the id drawn and whether the row was inserted.
INSERT_INBOUND_BATCH = """
WITH input AS (
    -- one row per message, in caller order
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::bytea[], $8::smallint[], $9::text[], $10::text[], $11::text[],
                         $12::text[])
        WITH ORDINALITY AS t(channel, provider, connector, from_addr, to_addr, body, raw,
                             data_coding, provider_message_id, meta, dedupe_scope, dedupe_key,
                             ord)
), numbered AS MATERIALIZED (
    -- draw ids first so each dedupe key points at its row
    SELECT nextval('inbound_id_seq') AS id, input.* FROM input
), keys AS (
    -- claim provider ids; an expired key may be taken over
    INSERT INTO dedupe_keys (scope, key, target_table, target_id, expires_at)
    SELECT dedupe_scope, dedupe_key, 'inbound', id, now() + make_interval(secs => $13)
      FROM numbered WHERE dedupe_key IS NOT NULL
    ON CONFLICT (scope, key) DO UPDATE
       SET target_table = EXCLUDED.target_table, target_id = EXCLUDED.target_id,
           created_at = now(), expires_at = EXCLUDED.expires_at
     WHERE dedupe_keys.expires_at <= now()
    RETURNING target_id
), ins AS (
    -- rows without a key and rows whose key is new
    INSERT INTO inbound (id, channel, provider, connector, from_addr, to_addr, body, raw,
                         data_coding, provider_message_id, meta)
    OVERRIDING SYSTEM VALUE
    SELECT id, channel, provider, connector, from_addr, to_addr, body, raw, data_coding,
           provider_message_id, meta::jsonb
      FROM numbered
     WHERE dedupe_key IS NULL OR id IN (SELECT target_id FROM keys)
    RETURNING id
)
-- one NOTIFY on channel $14 when a row was inserted (NULL: none), delivered at commit
SELECT n.ord, n.id, (i.id IS NOT NULL) AS created
  FROM numbered n LEFT JOIN ins i ON i.id = n.id
 CROSS JOIN (SELECT CASE WHEN $14::text IS NOT NULL AND EXISTS (SELECT 1 FROM ins)
                         THEN pg_notify($14::text, '') END) AS wake
 ORDER BY n.ord
"""

# find_dedupe_target: the row an existing dedupe key points at.
FIND_DEDUPE_TARGET = "SELECT target_id FROM dedupe_keys WHERE scope = $1 AND key = $2"

# claim_dedupe_key: claim one key for a fragment (target filled in when known); true if new.
CLAIM_DEDUPE_KEY = """
INSERT INTO dedupe_keys (scope, key, target_table, target_id, expires_at)
VALUES ($1, $2, 'mo_parts', $3, now() + make_interval(secs => $4))
ON CONFLICT (scope, key) DO UPDATE
   SET target_id = EXCLUDED.target_id, created_at = now(), expires_at = EXCLUDED.expires_at
 WHERE dedupe_keys.expires_at <= now()
RETURNING key
"""

# lock_mo_message: serialise the fragments of one concatenated MO across instances.
LOCK_MO_MESSAGE = "SELECT pg_advisory_xact_lock($1)"

# insert_mo_fragment: store one fragment unless the same seq is already waiting.
INSERT_MO_FRAGMENT = """
INSERT INTO mo_parts (connector, from_addr, to_addr, ref, total, seq, body, raw, data_coding,
                      meta)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (connector, from_addr, to_addr, ref, total, seq) WHERE status = 'queued' DO NOTHING
RETURNING id
"""

# recently_reassembled: was this very fragment (same key, seq and content) part of a message
# completed within the window? An SMSC that did not see our deliver_sm_resp sends it again; a
# new message reusing the reference differs in content (or comes after the window).
RECENTLY_REASSEMBLED = """
SELECT inbound_id FROM mo_parts
 WHERE connector = $1 AND from_addr = $2 AND to_addr = $3 AND ref = $4 AND total = $5
   AND seq = $6 AND status = 'done' AND updated_at > now() - make_interval(secs => $7)
   AND body IS NOT DISTINCT FROM $8 AND raw IS NOT DISTINCT FROM $9 AND id <> $10
 ORDER BY id DESC LIMIT 1
"""

# waiting_fragments: the queued fragments of one message, in sequence order.
WAITING_FRAGMENTS = """
SELECT id, seq, body, raw, data_coding, meta FROM mo_parts
 WHERE connector = $1 AND from_addr = $2 AND to_addr = $3 AND ref = $4 AND total = $5
   AND status = 'queued'
 ORDER BY seq
"""

# insert_inbound_one: one reassembled (or timed-out) message.
INSERT_INBOUND_ONE = """
INSERT INTO inbound (channel, provider, connector, from_addr, to_addr, body, raw, data_coding,
                     provider_message_id, meta, status, last_error)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id
"""

# finish_fragments: mark a message's fragments reassembled ('done') or timed out ('failed').
FINISH_FRAGMENTS = """
UPDATE mo_parts SET status = $2, inbound_id = $3, updated_at = now()
 WHERE id = ANY($1::bigint[])
"""

# expired_fragment_messages: messages whose oldest waiting fragment is older than $1 s.
EXPIRED_FRAGMENT_MESSAGES = """
SELECT connector, from_addr, to_addr, ref, total
  FROM mo_parts
 WHERE status = 'queued'
 GROUP BY connector, from_addr, to_addr, ref, total
HAVING min(created_at) < now() - make_interval(secs => $1)
 LIMIT $2
"""

# insert_receipts_batch: store a batch of receipts for the sender to match and wake it, in one
# statement (autocommit: one round trip). RETURNING follows the input order (plain insert).
INSERT_RECEIPTS_BATCH = """
WITH ins AS (
    -- the receipts, in input order
    INSERT INTO receipts (connector, smsc_id, raw_id, stat, state, final, err, done_date, body)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                         $6::boolean[], $7::text[], $8::timestamptz[], $9::text[])
    RETURNING id
)
-- one NOTIFY for the statement (delivered at commit)
SELECT ins.id FROM ins CROSS JOIN (SELECT pg_notify($10, '')) AS wake
"""

NOTIFY = "SELECT pg_notify($1, '')"


# -- writers ------------------------------------------------------------------------------------

async def flush_inbound(conn: asyncpg.Connection, items: Sequence[InboundWrite | FragmentWrite],
                        *, ttl_s: float = DEFAULT_DEDUPE_TTL_S,
                        replay_window_s: float = 120.0) -> list[InboundResult]:
    """Group-commit flush for MO: whole messages in one INSERT, then fragments; one NOTIFY.

    `ttl_s` is how long provider ids are remembered; `replay_window_s` how long a re-sent
    fragment of an already reassembled message is recognised as a duplicate.

    A batch of whole messages is one statement (INSERT + NOTIFY) that needs no surrounding
    transaction: run the committer with `transactional=False` and only a batch holding
    fragments (several statements under advisory locks) opens one here.
    """
    if not conn.is_in_transaction() and any(isinstance(it, FragmentWrite) for it in items):
        async with conn.transaction():
            return await flush_inbound(conn, items, ttl_s=ttl_s,
                                       replay_window_s=replay_window_s)
    results: list[InboundResult | None] = [None] * len(items)
    whole = [(i, it) for i, it in enumerate(items) if isinstance(it, InboundWrite)]
    frags = [(i, it) for i, it in enumerate(items) if isinstance(it, FragmentWrite)]
    created = False
    if whole:
        # the INSERT itself notifies when there are no fragments to follow in this batch
        notify_now = CHANNELS["inbound"] if not frags else None
        for (i, _), res in zip(whole, await _insert_whole(conn, [w for _, w in whole], ttl_s,
                                                          notify_now), strict=True):
            results[i] = res
            created = created or (not res.duplicate and notify_now is None)
    # Key order: every instance takes the advisory locks in the same order (no deadlock).
    for i, frag in sorted(frags, key=lambda p: (p[1].lock_key(), p[1].seq)):
        res = await _store_fragment(conn, frag, ttl_s, replay_window_s)
        results[i] = res
        created = created or (res.complete and not res.duplicate)
    if created:
        await conn.execute(NOTIFY, CHANNELS["inbound"])
    return [r for r in results if r is not None]


async def _insert_whole(conn: asyncpg.Connection, items: list[InboundWrite],
                        ttl_s: float, notify: str | None = None) -> list[InboundResult]:
    # Within one statement a key can be claimed once: later items with the same key are
    # answered from the first.
    first: dict[tuple[str, str], int] = {}
    leaders: list[int] = []
    for i, it in enumerate(items):
        if it.dedupe_key is None or it.dedupe_scope is None:
            leaders.append(i)
        elif (it.dedupe_scope, it.dedupe_key) not in first:
            first[(it.dedupe_scope, it.dedupe_key)] = i
            leaders.append(i)
    lead_items = [items[i] for i in leaders]
    rows = await conn.fetch(INSERT_INBOUND_BATCH, *_inbound_columns(lead_items), ttl_s, notify)
    out: list[InboundResult | None] = [None] * len(items)
    for pos, row in zip(leaders, rows, strict=True):
        if row["created"]:
            out[pos] = InboundResult(row["id"])
        else:
            it = items[pos]
            target = await conn.fetchval(FIND_DEDUPE_TARGET, it.dedupe_scope, it.dedupe_key)
            out[pos] = InboundResult(target, duplicate=True)
    for i, it in enumerate(items):
        if out[i] is None:
            lead = out[first[(it.dedupe_scope or "", it.dedupe_key or "")]]
            assert lead is not None
            out[i] = InboundResult(lead.inbound_id, duplicate=True)
    return [r for r in out if r is not None]


def _inbound_columns(items: Sequence[InboundWrite]) -> list[list[Any]]:
    return [
        [it.channel for it in items], [it.provider for it in items],
        [it.connector for it in items], [it.from_addr for it in items],
        [it.to_addr for it in items], [it.body for it in items], [it.raw for it in items],
        [it.data_coding for it in items], [it.provider_message_id for it in items],
        [orjson.dumps(it.meta).decode() if it.meta is not None else None for it in items],
        [it.dedupe_scope if it.dedupe_key is not None else None for it in items],
        [it.dedupe_key if it.dedupe_scope is not None else None for it in items],
    ]


async def _store_fragment(conn: asyncpg.Connection, frag: FragmentWrite, ttl_s: float,
                          replay_window_s: float) -> InboundResult:
    await conn.execute(LOCK_MO_MESSAGE, frag.lock_key())
    key = (frag.connector, frag.from_addr, frag.to_addr, frag.ref, frag.total)
    if frag.dedupe_key is not None and frag.dedupe_scope is not None:
        claimed = await conn.fetchval(CLAIM_DEDUPE_KEY, frag.dedupe_scope, frag.dedupe_key, 0,
                                      ttl_s)
        if claimed is None:
            return InboundResult(None, duplicate=True, complete=False)
    meta = {"channel": frag.channel, "provider": frag.provider,
            "provider_message_id": frag.provider_message_id}
    part_id = await conn.fetchval(INSERT_MO_FRAGMENT, *key, frag.seq, frag.body, frag.raw,
                                  frag.data_coding, meta)
    if part_id is None:  # the same seq is already waiting: a re-send
        return InboundResult(None, duplicate=True, complete=False)
    done_id = await conn.fetchval(RECENTLY_REASSEMBLED, *key, frag.seq, replay_window_s,
                                  frag.body, frag.raw, part_id)
    if done_id is not None:  # a re-send of a fragment of a message we already reassembled
        await conn.execute(FINISH_FRAGMENTS, [part_id], "done", done_id)
        return InboundResult(done_id, duplicate=True)
    waiting = await conn.fetch(WAITING_FRAGMENTS, *key)
    if len({r["seq"] for r in waiting}) < frag.total:
        return InboundResult(None, complete=False)
    inbound_id = await _write_message(conn, frag, waiting, status="queued", error=None)
    await conn.execute(FINISH_FRAGMENTS, [r["id"] for r in waiting], "done", inbound_id)
    return InboundResult(inbound_id)


async def _write_message(conn: asyncpg.Connection, frag: FragmentWrite,
                         fragments: Sequence[Any], *, status: str, error: str | None) -> int:
    bodies = [r["body"] for r in fragments]
    raws = [r["raw"] for r in fragments]
    meta = {"concat": {"ref": frag.ref, "total": frag.total,
                       "received": [r["seq"] for r in fragments]},
            "fragment_ids": [(r["meta"] or {}).get("provider_message_id") for r in fragments]}
    body = "".join(b for b in bodies if b is not None) if any(b is not None for b in bodies) \
        else None
    raw = b"".join(r for r in raws if r is not None) if any(r is not None for r in raws) \
        else None
    return int(await conn.fetchval(
        INSERT_INBOUND_ONE, frag.channel, frag.provider,
        frag.connector if frag.channel == "smpp" else None, frag.from_addr, frag.to_addr, body,
        raw, fragments[0]["data_coding"], frag.provider_message_id, meta, status, error))


async def flush_receipts(conn: asyncpg.Connection, items: Sequence[ReceiptWrite]) -> list[int]:
    """Group-commit flush for receipts: one statement (INSERT + NOTIFY); returns the ids.

    Needs no surrounding transaction (run the committer with `transactional=False`).
    """
    rows = await conn.fetch(
        INSERT_RECEIPTS_BATCH, [r.connector for r in items], [r.smsc_id for r in items],
        [r.raw_id for r in items], [r.stat for r in items], [r.state for r in items],
        [r.final for r in items], [r.err for r in items], [r.done_date for r in items],
        [r.body for r in items], CHANNELS["receipts"])
    return [int(r["id"]) for r in rows]


async def expire_mo_fragments(conn: asyncpg.Connection, timeout_s: float, *,
                              limit: int = 1000) -> int:
    """Turn concatenated MOs still incomplete after `timeout_s` into `failed` inbound rows.

    The fragments are kept (status `failed`, pointing at the new row) so nothing received is
    lost; returns the number of messages expired. Safe to run on several instances (each
    message is handled under its advisory lock, rechecked after locking).
    """
    expired = 0
    for msg in await conn.fetch(EXPIRED_FRAGMENT_MESSAGES, timeout_s, limit):
        async with conn.transaction():
            key = (msg["connector"], msg["from_addr"], msg["to_addr"], msg["ref"], msg["total"])
            probe = FragmentWrite(channel="smpp", provider=key[0], connector=key[0],
                                  from_addr=key[1], to_addr=key[2], ref=key[3], total=key[4],
                                  seq=0, body=None)
            await conn.execute(LOCK_MO_MESSAGE, probe.lock_key())
            waiting = await conn.fetch(WAITING_FRAGMENTS, *key)
            if not waiting:
                continue
            first_meta = waiting[0]["meta"] or {}
            frag = FragmentWrite(channel=first_meta.get("channel", "smpp"),
                                 provider=first_meta.get("provider", key[0]), connector=key[0],
                                 from_addr=key[1], to_addr=key[2], ref=key[3], total=key[4],
                                 seq=0, body=None)
            error = (f"incomplete concatenated MO: {len(waiting)} of {key[4]} parts "
                     f"after {timeout_s:.0f}s")
            inbound_id = await _write_message(conn, frag, waiting, status="failed", error=error)
            await conn.execute(FINISH_FRAGMENTS, [r["id"] for r in waiting], "failed",
                               inbound_id)
            expired += 1
    return expired


# -- SMPP deliver_sm / data_sm ---------------------------------------------------------------

class IntakeObserver(Protocol):
    """Counts what intake does (the daemon's metrics implement it)."""

    def mo(self, channel: str, provider: str, outcome: str) -> None:
        """One MO (or fragment) accepted / duplicate / rejected."""

    def receipt(self, connector: str, state: str) -> None:
        """One receipt stored."""

    def rejected(self, reason: str) -> None:
        """One intake refused for backpressure (`smsgw_backpressure_rejections_total`)."""


class _NullObserver:
    def mo(self, channel: str, provider: str, outcome: str) -> None:
        pass

    def receipt(self, connector: str, state: str) -> None:
        pass

    def rejected(self, reason: str) -> None:
        pass


Submit = Callable[[Any], Any]
# admit(queue) -> None to accept, or the rejection reason (e.g. "inbound_watermark")
Admit = Callable[[str], str | None]


class DeliverIntake:
    """The shared deliver_sm/data_sm handler: store, commit, then answer (see module doc).

    `inbound` and `receipts` are group committers running `flush_inbound` / `flush_receipts`;
    `admit(queue)` is admission control (MO checks "inbound", receipts only "receipts").
    """

    def __init__(self, *, inbound: Any, receipts: Any, admit: Admit | None = None,
                 observer: IntakeObserver | None = None) -> None:
        self._inbound = inbound
        self._receipts = receipts
        self._admit = admit or (lambda _queue: None)
        self._observer: IntakeObserver = observer or _NullObserver()

    def handler_for(self, connector: Any) -> Callable[[Any], Any]:
        """The `DeliverHandler` for one connector's binds (returns the status to answer)."""
        async def handle(pdu: Any) -> int:
            return await self.handle(connector, pdu)
        return handle

    async def handle(self, connector: Any, pdu: Any) -> int:
        """Store one deliver_sm/data_sm; return ESME_ROK after commit, else a transient status."""
        receipt = is_receipt(pdu.esm_class)
        queue = "receipts" if receipt else "inbound"
        reason = self._admit(queue)
        if reason is not None:
            self._observer.rejected(reason)
            return int(connector.transient_mo_status)
        try:
            if receipt:
                item = _receipt_item(connector, pdu)
                await self._receipts.submit(item)
                self._observer.receipt(connector.name, item.state or "other")
            else:
                res = await self._inbound.submit(_mo_item(connector, pdu))
                self._observer.mo("smpp", connector.name,
                                  "duplicate" if res.duplicate else "accepted")
        except (DatabaseUnavailable, SmsGatewayError) as exc:
            # Never acknowledge what is not committed: the SMSC retries the transient status.
            self._observer.rejected("database_unavailable"
                                    if isinstance(exc, DatabaseUnavailable) else "intake_full")
            log.warning("deliver_sm_deferred", connector=connector.name,
                        error=type(exc).__name__)
            return int(connector.transient_mo_status)
        return SMPP_ESME_ROK


def _address(value: str, ton: int, default_country: str | None) -> str:
    try:
        return normalise(value, default_country=default_country, ton=ton)
    except InvalidNumber:
        return value.strip()  # keep what the SMSC sent: refusing an MO only makes it retry


def _mo_item(connector: Any, pdu: Any) -> InboundWrite | FragmentWrite:
    short_message = getattr(pdu, "short_message", b"")
    decoded = decode_message(short_message, pdu.data_coding, pdu.esm_class, pdu.tlvs,
                             getattr(connector, "data_coding_0", "gsm7"))
    country = getattr(connector, "default_country", None)
    from_addr = _address(pdu.source_addr, pdu.source_addr_ton, country)
    to_addr = _address(pdu.destination_addr, pdu.dest_addr_ton, country)
    if decoded.concat is not None and decoded.concat.total > 1:
        c = decoded.concat
        return FragmentWrite(channel="smpp", provider=connector.name, connector=connector.name,
                             from_addr=from_addr, to_addr=to_addr, ref=c.reference,
                             total=c.total, seq=c.seq, body=decoded.text, raw=decoded.raw,
                             data_coding=pdu.data_coding)
    # SMPP 3.4 MO carries no message id: dedupe only where the connector names a TLV that
    # holds one (`mo_id_tlv`, a vendor extension); otherwise MO is at-least-once.
    mo_id = _tlv_text(pdu.tlvs, getattr(connector, "mo_id_tlv", None))
    return InboundWrite(channel="smpp", provider=connector.name, connector=connector.name,
                        from_addr=from_addr, to_addr=to_addr, body=decoded.text,
                        raw=decoded.raw, data_coding=pdu.data_coding, provider_message_id=mo_id,
                        meta={"encoding": decoded.encoding, "esm_class": pdu.esm_class},
                        dedupe_scope=f"mo:smpp:{connector.name}" if mo_id else None,
                        dedupe_key=mo_id)


def _tlv_text(tlvs: Any, tag: int | None) -> str | None:
    if tag is None:
        return None
    for t, value in tlvs:
        if t == tag:
            return bytes(value).split(b"\0", 1)[0].decode("latin-1") or None
    return None


def _receipt_item(connector: Any, pdu: Any) -> ReceiptWrite:
    short_message = getattr(pdu, "short_message", b"")
    rec = parse_receipt(short_message, pdu.tlvs, pdu.esm_class, data_coding=pdu.data_coding,
                        tz=connector.zone, stat_map=connector.stat_map,
                        id_mode=connector.receipt_id_mode)
    err = rec.err
    if err is None and rec.network_error is not None:
        err = f"{rec.network_error[0]}:{rec.network_error[1]}"
    return ReceiptWrite(connector=connector.name, smsc_id=rec.normalised_id,
                        raw_id=rec.message_id, stat=rec.stat, state=rec.state, final=rec.final,
                        err=err, done_date=rec.done_date,
                        body=short_message.decode("latin-1") if short_message else None)
