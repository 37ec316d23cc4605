"""ESME requests: submit_sm and data_sm become MTs through the HTTP API's own intake path;
query_sm reads one of the account's messages.

A submit is turned into the API's `MessageIn` and checked by the API's `mt_item` (numbers,
allowed senders, content and UDH, parts, TLVs, schedule), then admitted as the API admits
(the outbound watermark and the account's fair share → ESME_RMSGQFUL; the account's rate →
ESME_RTHROTTLED) and group-committed with the API's `flush_mt`; the submit_sm_resp with the
message's id goes out only after the commit. Stored with `source = 'smpp'` and, when the ESME
asked for receipts, `meta.esme_rd` (its registered_delivery), which the `esme_receipt` trigger
reads.

Content: `short_message`, or the message_payload TLV (not both); a UDH when esm_class has
UDHI (0x40), or one built from the SAR TLVs (sar_msg_ref_num, sar_total_segments,
sar_segment_seqnum); data_coding 0 (`data_coding_0`, GSM 03.38 by default), 1 (IA5/ASCII), 3
(Latin-1), 8 (UCS-2), 2/4 (8-bit binary), and the message-class forms (0x10-0x1B, 0xF0-0xF7).
Any other data_coding is refused with ESME_RSUBMITFAIL (SMPP 3.4 has no status of its own for
it). validity_period and schedule_delivery_time (absolute or relative SMPP times) become the
message's validity (clamped to 60 s … 7 days) and send_at; priority_flag, protocol_id,
service_type and the client-settable TLVs travel to the SMSC; TLVs SMPP 3.4 does not let a
client set, or that no connector defines, are ignored, as SMPP 3.4 5.3 asks of a receiver.

Failures: a database that cannot be reached, or a commit whose outcome is unknown (the
connection went away mid-commit, no commit within `commit_wait_s`) → ESME_RSYSERR, which
Kannel and Jasmin resubmit (with user_message_reference the resubmit stores nothing twice);
the buffer full → ESME_RMSGQFUL; a message the database refuses to store for what it holds (a
data or constraint error, SQLSTATE class 22/23: it would fail again) → ESME_RSUBMITFAIL,
which clients do not resubmit. SMPP 3.4 has no "outcome unknown" status; RSYSERR ("system
error") is the one both clients treat as transient.

Idempotency: a submit carrying user_message_reference is stored with the client_ref
`smpp:<reference>:<fingerprint of its content>`, in its own group committer whose key window is
`dedupe_window_s`; a repeat within the window (an ESME resubmitting after a lost response)
answers the first message's id and stores nothing. Without the TLV every submit is a new
message: sequence numbers restart with every session, so they cannot be the key.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
import structlog

from smsgw.services.receiver.api import FieldInvalid, account_rate, mt_item, sender_id
from smsgw.services.receiver.context import ReceiverContext
from smsgw.services.receiver.models import MessageIn
from smsgw.services.receiver.options import SmppServerOptions
from smsgw.services.receiver.store import MtItem, MtOutcome, MtResult, find_message
from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.apikeys import Account, DisabledAccounts
from smsgw.shared.domain.numbers import InvalidNumber, normalise_recipient
from smsgw.shared.domain.status_callbacks import cancel_queued
from smsgw.shared.queue.groupcommit import GroupCommitter, IntakeClosed, IntakeFull
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.fields import parse_smpp_time, tag_key
from smsgw.shared.smpp.text import decode_message

log = structlog.get_logger("smsgw.receiver.esme")

MIN_VALIDITY_S = 60
MAX_VALIDITY_S = 7 * 86400
_TEXT = {"gsm7": "gsm7", "latin1": "latin1", "ascii": None, "ucs2": "ucs2"}
_FIELD_STATUS = {"to": P.SMPP_ESME_RINVDSTADR, "from": P.SMPP_ESME_RINVSRCADR,
                 "text": P.SMPP_ESME_RINVMSGLEN, "binary": P.SMPP_ESME_RINVMSGLEN,
                 "udh": P.SMPP_ESME_RINVMSGLEN, "send_at": P.SMPP_ESME_RINVSCHED,
                 "tlvs": P.SMPP_ESME_RINVOPTPARAMVAL}
# consumed here, not passed on as the client's TLVs
_OWN_TAGS = frozenset({P.Tag.MESSAGE_PAYLOAD, P.Tag.SAR_MSG_REF_NUM, P.Tag.SAR_TOTAL_SEGMENTS,
                       P.Tag.SAR_SEGMENT_SEQNUM, P.Tag.MORE_MESSAGES_TO_SEND})
# esme_group: the account's queued message `$2` and the other destinations of its
# submit_multi (meta.esme_id), for cancel_sm.
ESME_GROUP = """
SELECT id FROM outbound
 WHERE account_id = $1 AND status = 'queued' AND (id = $2 OR meta ->> 'esme_id' = $3)
"""
# query_sm: outbound status → message_state (SMPP 3.4 5.2.28)
QUERY_STATE = {"queued": 1, "sending": 1, "submitted": 1, "delivered": 2, "expired": 3,
               "cancelled": 4, "undeliverable": 5, "dead": 5, "submit_unknown": 7,
               "rejected": 8, "suppressed": 8}


class Refused(Exception):
    """A request answered with an error status (raised while building the MT)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AccountDisabled(Exception):
    """The bound account was disabled: answer, then close the bind."""


class EsmeIntake:
    """Answers the windowed ESME requests (see the module docstring)."""

    def __init__(self, ctx: ReceiverContext, opts: SmppServerOptions,
                 committer: GroupCommitter[MtItem, MtResult]) -> None:
        self.ctx = ctx
        self.opts = opts
        self.committer = committer
        self.disabled = DisabledAccounts(ctx.pool)
        self.mt_counts = {o: ctx.metrics.mt_messages.labels(source="smpp", outcome=o)
                          for o in ("accepted", "duplicate", "rejected")}

    async def handle(self, account: Account, pdu: Any) -> Any:
        """The response PDU to one request of a bound transmitter/transceiver; raises
        AccountDisabled once the account is disabled (`smsgw accounts disable`)."""
        try:
            disabled = await self.disabled.is_disabled(account.id)
        except CONNECTION_ERRORS:
            return P.response_for(pdu, P.SMPP_ESME_RSYSERR)
        if disabled:
            raise AccountDisabled(account.name)
        kind = type(pdu)
        if kind is P.QuerySm:
            return await self.query(account, pdu)
        if kind is P.CancelSm:
            return await self.cancel(account, pdu)
        if kind is P.SubmitMulti:
            return await self.submit_multi(account, pdu)
        return await self.submit(account, pdu)

    async def submit(self, account: Account, pdu: Any) -> Any:
        """submit_sm / data_sm → the response with our message id, after the commit."""
        ctx = self.ctx
        reason = ctx.admission.check("outbound") or ctx.admission.check_account(account.id)
        if reason is not None:
            ctx.metrics.backpressure_rejections.labels(reason=reason).inc()
            return P.response_for(pdu, P.SMPP_ESME_RMSGQFUL)
        try:
            item = self.build(account, pdu, datetime.now(UTC))
        except Refused as exc:
            self.mt_counts["rejected"].inc()
            log.info("esme_submit_refused", account=account.name, reason=exc.reason,
                     status=P.status_name(exc.status))
            return P.response_for(pdu, exc.status)
        if ctx.ratelimit.try_acquire(account.id, account_rate(ctx, account), 1) is not None:
            ctx.metrics.requests_rejected.labels(reason="rate_limited").inc()
            return P.response_for(pdu, P.SMPP_ESME_RTHROTTLED)
        try:
            result = await self.committer.submit(item)
        except (DatabaseUnavailable, IntakeFull, IntakeClosed) as exc:
            reason = "intake_full" if isinstance(exc, IntakeFull) else "database_unavailable"
            ctx.metrics.backpressure_rejections.labels(reason=reason).inc()
            return P.response_for(pdu, P.SMPP_ESME_RMSGQFUL if isinstance(exc, IntakeFull)
                                  else P.SMPP_ESME_RSYSERR)
        except asyncpg.PostgresError as exc:
            return self._commit_refused(account, pdu, exc, 1)
        self.mt_counts["accepted" if result.outcome is MtOutcome.CREATED
                       else "duplicate"].inc()
        return P.response_for(pdu, P.SMPP_ESME_ROK, message_id=str(result.id))

    async def submit_multi(self, account: Account, pdu: P.SubmitMulti) -> Any:
        """submit_multi: one MT per SME destination. The first stored message's id is the
        one submit_multi_resp returns; the others carry it (`meta.esme_id`), so every
        destination's receipt names that one id (its source_addr tells them apart) and
        query_sm / cancel_sm with it act on the first / on all of them. A distribution list
        or a destination that fails its checks is listed in unsuccess_sme with its status."""
        ctx = self.ctx
        reason = ctx.admission.check("outbound") or ctx.admission.check_account(account.id)
        if reason is not None:
            ctx.metrics.backpressure_rejections.labels(reason=reason).inc()
            return P.response_for(pdu, P.SMPP_ESME_RMSGQFUL)
        now = datetime.now(UTC)
        items: list[MtItem] = []
        unsuccess: list[tuple[int, int, str, int]] = []
        for flag, ton, npi, addr in pdu.dests:
            if flag != 1:
                unsuccess.append((0, 0, addr, P.SMPP_ESME_RINVDLNAME))
                continue
            one = P.SubmitSm(
                service_type=pdu.service_type, source_addr_ton=pdu.source_addr_ton,
                source_addr_npi=pdu.source_addr_npi, source_addr=pdu.source_addr,
                dest_addr_ton=ton, dest_addr_npi=npi, destination_addr=addr,
                esm_class=pdu.esm_class, protocol_id=pdu.protocol_id,
                priority_flag=pdu.priority_flag, schedule_delivery_time=pdu.schedule_delivery_time,
                validity_period=pdu.validity_period, registered_delivery=pdu.registered_delivery,
                data_coding=pdu.data_coding, short_message=pdu.short_message, tlvs=pdu.tlvs)
            try:
                items.append(self.build(account, one, now))
            except Refused as exc:
                unsuccess.append((ton, npi, addr, exc.status))
        if not items:
            self.mt_counts["rejected"].inc(len(unsuccess))
            return P.SubmitMultiResp(pdu.sequence_number, P.SMPP_ESME_RSUBMITFAIL,
                                     unsuccess=tuple(unsuccess))
        if ctx.ratelimit.try_acquire(account.id, account_rate(ctx, account),
                                     len(items)) is not None:
            ctx.metrics.requests_rejected.labels(reason="rate_limited").inc()
            return P.response_for(pdu, P.SMPP_ESME_RTHROTTLED)
        try:
            first = await self.committer.submit(items[0])
            rest = [dataclasses.replace(it, meta={**(it.meta or {}), "esme_id": str(first.id)})
                    for it in items[1:]]
            results = [first, *(await self.committer.submit_many(rest) if rest else [])]
        except (DatabaseUnavailable, IntakeFull, IntakeClosed) as exc:
            # what was stored stays stored; a resubmit with user_message_reference finds it
            ctx.metrics.backpressure_rejections.labels(reason="database_unavailable").inc()
            return P.response_for(pdu, P.SMPP_ESME_RMSGQFUL if isinstance(exc, IntakeFull)
                                  else P.SMPP_ESME_RSYSERR)
        except asyncpg.PostgresError as exc:  # what was stored stays stored, as above
            return self._commit_refused(account, pdu, exc, len(items))
        for r in results:
            self.mt_counts["accepted" if r.outcome is MtOutcome.CREATED else "duplicate"].inc()
        return P.SubmitMultiResp(pdu.sequence_number, P.SMPP_ESME_ROK,
                                 message_id=str(first.id), unsuccess=tuple(unsuccess))

    def _commit_refused(self, account: Account, pdu: Any, exc: asyncpg.PostgresError,
                        messages: int) -> Any:
        """The answer to a submit whose commit the database refused (the group committer
        retries a failed batch item by item, so this is the item's own error): the message is
        not stored. A data or constraint error (SQLSTATE class 22, 23) fails again whatever
        the ESME does → ESME_RSUBMITFAIL, which clients do not retry; anything else (a
        deadlock, a serialization failure, no resources, a cancelled statement) may pass
        next time → ESME_RSYSERR, which Kannel and Jasmin resubmit later."""
        state = getattr(exc, "sqlstate", None) or ""
        permanent = state[:2] in ("22", "23")
        log.warning("esme_submit_not_stored", account=account.name, sqlstate=state,
                    error=type(exc).__name__, permanent=permanent)
        if permanent:
            self.mt_counts["rejected"].inc(messages)
        return P.response_for(pdu, P.SMPP_ESME_RSUBMITFAIL if permanent
                              else P.SMPP_ESME_RSYSERR)

    async def cancel(self, account: Account, pdu: P.CancelSm) -> Any:
        """cancel_sm: cancel the account's message(s) still queued (not yet taken by a
        sender) — by message_id (with a submit_multi id: all its destinations; source_addr,
        when given, must match), or with an empty message_id every queued message from
        source_addr to destination_addr. ESME_RCANCELFAIL when nothing could be cancelled."""
        ref = pdu.message_id
        from_addr = _address(pdu.source_addr, pdu.source_addr_ton) or None
        to_addr = _address(pdu.destination_addr, pdu.dest_addr_ton) or None
        try:
            from_addr = sender_id(account, from_addr, self.ctx.options.default_country) \
                if from_addr else None
            to_addr = normalise_recipient(to_addr, default_country=self.ctx.options
                                          .default_country) if to_addr else None
        except InvalidNumber:
            return P.response_for(pdu, P.SMPP_ESME_RINVDSTADR)
        except FieldInvalid as exc:
            return P.response_for(pdu, _FIELD_STATUS.get(exc.field, P.SMPP_ESME_RCANCELFAIL))
        if ref:
            if not (ref.isascii() and ref.isdigit()) or len(ref) > 18:
                return P.response_for(pdu, P.SMPP_ESME_RINVMSGID)
        elif from_addr is None or to_addr is None:
            return P.response_for(pdu, P.SMPP_ESME_RCANCELFAIL)
        try:
            async with self.ctx.pool.acquire() as conn:
                ids = await conn.fetch(ESME_GROUP, account.id, int(ref), ref) if ref else None
                cancelled = await cancel_queued(
                    conn, account.id, [r["id"] for r in ids] if ids is not None else None,
                    reason="cancel_sm from the ESME", daemon="receiver",
                    to_addr=None if ref else to_addr, from_addr=from_addr)
        except CONNECTION_ERRORS:
            return P.response_for(pdu, P.SMPP_ESME_RSYSERR)
        if not cancelled:
            return P.response_for(pdu, P.SMPP_ESME_RCANCELFAIL)
        return P.response_for(pdu, P.SMPP_ESME_ROK)

    def build(self, account: Account, pdu: Any, now: datetime) -> MtItem:
        """The MT of one submit_sm / data_sm, checked as the API checks it; raises Refused."""
        msg = self._message(pdu, now)
        try:
            item, _est = mt_item(self.ctx, account, msg, now)
        except FieldInvalid as exc:
            raise Refused(_FIELD_STATUS.get(exc.field, P.SMPP_ESME_RSUBMITFAIL),
                          f"{exc.field}: {exc.message}") from None
        rd = pdu.registered_delivery & 0x13
        if rd & 0x03 == 0x03:  # reserved: read as "final outcome"
            rd = (rd & 0x10) | 0x01
        client_ref = None
        umr = P.get_tlv(pdu, P.Tag.USER_MESSAGE_REFERENCE)
        if umr is not None:
            client_ref = f"smpp:{int.from_bytes(umr, 'big')}:{item.fingerprint()}"
        return dataclasses.replace(item, source="smpp", client_ref=client_ref,
                                   meta={"esme_rd": rd} if rd else None)

    def _message(self, pdu: Any, now: datetime) -> MessageIn:
        short_message = getattr(pdu, "short_message", b"")
        payload_tlv = P.get_tlv(pdu, P.Tag.MESSAGE_PAYLOAD)
        if short_message and payload_tlv:
            raise Refused(P.SMPP_ESME_RINVOPTPARAMVAL,
                          "short_message and message_payload both set")
        dc = pdu.data_coding
        mclass = _message_class(dc)
        decoded = decode_message(short_message, dc, pdu.esm_class, pdu.tlvs,
                                 self.opts.data_coding_0)
        if decoded.encoding not in _TEXT and decoded.encoding != "binary":
            raise Refused(P.SMPP_ESME_RSUBMITFAIL, f"data_coding 0x{dc:02X} not supported")
        udh = decoded.udh or _sar_udh(pdu.tlvs)
        fields: dict[str, Any] = {
            "to": _address(pdu.destination_addr, pdu.dest_addr_ton),
            "from_": _address(pdu.source_addr, pdu.source_addr_ton),
            "udh": udh.hex() if udh else None, "mclass": mclass,
        }
        if decoded.encoding == "binary":
            fields["binary"] = decoded.raw.hex()
        else:
            if decoded.text is None:
                raise Refused(P.SMPP_ESME_RINVMSGLEN, "text not decodable")
            fields["text"] = decoded.text or (None if udh else "")
            fields["encoding"] = _TEXT[decoded.encoding]
            if fields["text"] == "":
                raise Refused(P.SMPP_ESME_RINVMSGLEN, "empty message")
        self._smpp_fields(pdu, fields)
        self._times(pdu, fields, now)
        return _BLANK_MESSAGE.model_copy(update=fields)

    def _smpp_fields(self, pdu: Any, fields: dict[str, Any]) -> None:
        if getattr(pdu, "protocol_id", 0):
            fields["pid"] = pdu.protocol_id
        if getattr(pdu, "priority_flag", 0):
            if pdu.priority_flag > 3:
                raise Refused(P.SMPP_ESME_RINVPRTFLG, "priority_flag above 3")
            fields["smpp_priority"] = pdu.priority_flag
        if pdu.service_type:
            fields["service_type"] = pdu.service_type
        tlvs = {}
        for tag, value in pdu.tlvs:
            if tag in _OWN_TAGS:
                continue
            try:
                self.ctx.tlvs.lookup(tag_key(tag))
            except ValueError:
                continue  # SMPP 3.4 5.3: an optional parameter we do not take is ignored
            tlvs[tag_key(tag)] = value.hex()
        if tlvs:
            fields["tlvs"] = tlvs

    def _times(self, pdu: Any, fields: dict[str, Any], now: datetime) -> None:
        try:
            send_at = parse_smpp_time(getattr(pdu, "schedule_delivery_time", ""), now)
        except ValueError as exc:
            raise Refused(P.SMPP_ESME_RINVSCHED, str(exc)) from None
        try:
            valid_until = parse_smpp_time(getattr(pdu, "validity_period", ""), now)
        except ValueError as exc:
            raise Refused(P.SMPP_ESME_RINVEXPIRY, str(exc)) from None
        if send_at is not None and send_at > now:
            fields["send_at"] = send_at
        if valid_until is not None:
            start = max(send_at or now, now)
            seconds = int((valid_until - start).total_seconds())
            fields["validity"] = min(max(seconds, MIN_VALIDITY_S), MAX_VALIDITY_S)

    async def query(self, account: Account, pdu: Any) -> Any:
        """query_sm: the state of one of the account's messages (ESME_RQUERYFAIL otherwise)."""
        ref = pdu.message_id
        if not (ref.isascii() and ref.isdigit()) or len(ref) > 18:
            return P.response_for(pdu, P.SMPP_ESME_RINVMSGID)
        try:
            found = await find_message(self.ctx.pool, account.id, int(ref))
        except CONNECTION_ERRORS:
            return P.response_for(pdu, P.SMPP_ESME_RSYSERR)
        if found is None:
            return P.response_for(pdu, P.SMPP_ESME_RQUERYFAIL)
        state = QUERY_STATE.get(found["status"], 7)
        final = ""
        if state != 1 and found["done_at"]:
            final = _smpp_date(datetime.fromisoformat(found["done_at"]))
        error = found["error_code"] if isinstance(found["error_code"], int) else 0
        return P.response_for(pdu, P.SMPP_ESME_ROK, message_id=ref, final_date=final,
                              message_state=state, error_code=min(max(error, 0), 255))


def _address(value: str, ton: int) -> str:
    """An SMPP address as the API reads numbers: TON 1 (international) gets its '+'."""
    if ton == 1 and value and value[0] != "+" and value.isdigit():
        return "+" + value
    return value


# Every submit's MessageIn is this blank one with its fields set: a copy with an update is
# model_construct's result (same values, same fields_set; no default is mutable) at a quarter
# of its cost (~2.5 vs ~10 µs: construct resolves every field's default on each call).
_BLANK_MESSAGE: Final = MessageIn.model_construct()


def _message_class(dc: int) -> int | None:
    if 0x10 <= dc <= 0x1F or 0xF0 <= dc <= 0xF7:
        return dc & 0x03
    return None


def _sar_udh(tlvs: Any) -> bytes | None:
    """The concatenation UDH the SAR TLVs stand for (8-bit reference when it fits)."""
    found = {tag: value for tag, value in tlvs}
    ref = found.get(P.Tag.SAR_MSG_REF_NUM)
    total = found.get(P.Tag.SAR_TOTAL_SEGMENTS)
    seq = found.get(P.Tag.SAR_SEGMENT_SEQNUM)
    if ref is None or not total or not seq:
        return None
    number = int.from_bytes(ref, "big")
    if number <= 0xFF:
        return bytes((5, 0, 3, number, total[0], seq[0]))
    return bytes((6, 8, 4, number >> 8 & 0xFF, number & 0xFF, total[0], seq[0]))


def _smpp_date(at: datetime) -> str:
    # query_sm_resp final_date: an absolute SMPP time in UTC
    return at.astimezone(UTC).strftime("%y%m%d%H%M%S") + "000+"
