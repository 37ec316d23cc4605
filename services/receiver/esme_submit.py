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

Idempotency: a submit carrying user_message_reference is stored with the client_ref
`smpp:<reference>:<fingerprint of its content>`, in its own group committer whose key window is
`dedupe_window_s`; a repeat within the window (an ESME resubmitting after a lost response)
answers the first message's id and stores nothing. Without the TLV every submit is a new
message: sequence numbers restart with every session, so they cannot be the key.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import structlog

from smsgw.services.receiver.api import FieldInvalid, account_rate, mt_item
from smsgw.services.receiver.context import ReceiverContext
from smsgw.services.receiver.models import MessageIn
from smsgw.services.receiver.options import SmppServerOptions
from smsgw.services.receiver.store import MtItem, MtOutcome, MtResult, find_message
from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.core.errors import DatabaseUnavailable
from smsgw.shared.domain.apikeys import Account, DisabledAccounts
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
        if type(pdu) is P.QuerySm:
            return await self.query(account, pdu)
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
        self.mt_counts["accepted" if result.outcome is MtOutcome.CREATED
                       else "duplicate"].inc()
        return P.response_for(pdu, P.SMPP_ESME_ROK, message_id=str(result.id))

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
        return MessageIn.model_construct(**fields)

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
