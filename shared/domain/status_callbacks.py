"""Status callbacks: the `callbacks` rows an application asked for when its MT changes state.

JSON style (`callback_url`): a POST of the contract's body on every state change of the
message (one per message, whatever its parts do). Kannel style (`dlr-url` with a `dlr-mask`):
a GET of the URL template with its escapes filled in as Kannel 1.4.5 fills them, for the
reports Kannel sends (`shared.domain.kannel`):

- the SMSC ACK (8) / NACK (16) of a message, when the sender writes back its submit outcome or
  finishes it at the claim (`callback_row`, from the write-back and the claim), or when a queued
  message is cancelled (`cancel_queued`: `NACK/Cancelled`, Kannel has no cancel);
- receipts (1, 2, 4, 34), one per matched receipt (`receipt_rows`, from receipt matching): by
  default only the first part's, as Kannel asks receipts for the first part of a split message
  only (gw/sms.c `sms_split`); with `[sender] kannel_dlr_parts = "each"`, one per part, each
  with its own SMSC id and state.

The rows go into the same transaction as the state change (`shared.queue.callbacks
.insert_status`); the processor delivers them. The module is in the domain layer because
more than the sender changes a message's state: `cancel_queued` is what `smsgw accounts
disable --cancel-queued` and the receiver's SMPP server (cancel_sm) call.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg
import orjson

from smsgw.shared.domain import kannel as K
from smsgw.shared.queue import callbacks, outbound
from smsgw.shared.queue.records import OutboundStatus, StatusCallback, StatusChange

__all__ = ["DlrParts", "StatusChange", "callback_row", "cancel_queued", "insert_callbacks",
           "insert_rows", "is_kannel", "receipt_rows"]

DlrParts = Literal["first", "each"]

# The reason text of the NACK for each state the sender or its claim ends a message in
# (bearerbox's own texts, gw/bb_smscconn.c). `submit_unknown` has no Kannel counterpart: Kannel
# resubmits an unanswered submit; smsgw's `no_response_policy = "submit_unknown"` ends it.
_NACK_REASON: dict[str, str] = {
    OutboundStatus.DEAD: K.REASON_RETRIES,
    OutboundStatus.EXPIRED: K.REASON_EXPIRED,
    OutboundStatus.SUPPRESSED: K.REASON_BLACK_LIST,
    OutboundStatus.SUBMIT_UNKNOWN: "no submit_sm_resp",
    OutboundStatus.CANCELLED: K.REASON_CANCELLED,
}


# states whose change carries the DLR's smsc-id in `connector` (no `forced_connector` given)
_OWN_CONNECTOR = frozenset({OutboundStatus.SUBMIT_UNKNOWN, OutboundStatus.CANCELLED})


def is_kannel(meta: Any) -> bool:
    """True when the message asked for Kannel-style reports (a sendsms `dlr-url`)."""
    return isinstance(meta, dict) and meta.get("callback_style") == "kannel"


def _secret(account_id: int | None) -> str | None:
    return f"account:{account_id}" if account_id is not None else None


def _meta_str(meta: Any, key: str) -> str | None:
    value = meta.get(key) if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def callback_row(change: StatusChange, at: datetime | None = None, *,
                 first_part_id: str | None = None,
                 forced_connector: str | None = None) -> StatusCallback | None:
    """The `callbacks` row for one state change, or None when the application did not ask.

    JSON style: a POST of the contract's body on every state change. Kannel style: the SMSC
    ACK/NACK of a submit outcome (`submitted`; `rejected`, `dead`, `submit_unknown`), of a
    message the claim finished (`expired`, `suppressed`) or of a cancelled one (`cancelled`:
    the connector forced on it is in `change.connector`), as `bb_smscconn_sent` /
    `bb_smscconn_send_failed` make it; receipt states give None here (`receipt_rows` reports
    receipts). `first_part_id` is the SMSC id of part 1, `forced_connector` the sendsms
    `smsc` (Kannel's smsc-id of a DLR the gateway made without a connection).
    """
    if not change.callback_url:
        return None
    at = at or datetime.now(UTC)
    if is_kannel(change.meta):
        return _ack_nack(change, at, first_part_id, forced_connector)
    body = orjson.dumps({
        "id": change.outbound_id, "client_ref": change.client_ref, "status": change.status,
        "to": change.to_addr, "from": change.from_addr, "parts": change.parts_total,
        "delivered_parts": change.delivered_parts, "error_code": change.error_code,
        "error": change.error if change.status != "delivered" else None,
        "connector": change.connector, "at": at.isoformat()})
    return StatusCallback(change.account_id, change.outbound_id, change.callback_url, "POST",
                          body, {"Content-Type": "application/json"},
                          _secret(change.account_id))


def _ack_nack(change: StatusChange, at: datetime, first_part_id: str | None,
              forced_connector: str | None) -> StatusCallback | None:
    mask = change.dlr_mask
    status = change.status
    single = (change.parts_total or 1) == 1
    if status == OutboundStatus.SUBMITTED:
        if not K.wants_ack(mask):
            return None
        dlr_type, reply, smsc_id = K.DLR_SMSC_SUCCESS, K.ACK, change.connector
        from_resp = single  # the one part's submit_sm_resp put `smpp_resp` in its meta-data
        # bb_smscconn_sent → create_dlr_from_msg: foreign_id is what the submit_sm_resp branch
        # put there: the id itself for one part; for a split message, part 1's id through
        # dlr_add (only part 1 keeps a dlr-mask) when the mask stores receipts, else nothing
        foreign = first_part_id if single or K.stores_receipts(mask) else None
    elif status == OutboundStatus.REJECTED:
        if not K.wants_nack(mask):
            return None
        dlr_type, smsc_id = K.DLR_SMSC_FAIL, change.connector
        # one part: "0x%08lx/<text>" from handle_pdu; a split message: handle_split passes
        # no reason
        reply = K.nack_text(command_status=change.error_code) if single and \
            change.error_code is not None else K.NACK
        from_resp = single and change.error_code is not None
        foreign = None if single or not K.stores_receipts(mask) else first_part_id
    elif status in _NACK_REASON:
        if not K.wants_nack(mask):
            return None
        # bb_smscconn_send_failed(NULL, …): no connection, so the DLR's smsc-id is the
        # message's own (the forced smsc) — except for submit_unknown, which smsgw decides
        # on the connection
        dlr_type, reply, from_resp = K.DLR_SMSC_FAIL, K.nack_text(_NACK_REASON[status]), False
        smsc_id = change.connector if status in _OWN_CONNECTOR else forced_connector
        foreign = first_part_id if K.stores_receipts(mask) and not single else None
    else:
        return None
    template = change.callback_url or ""
    msg = K.DlrMsg(
        dlr_type=dlr_type, receiver=change.to_addr, sender=change.from_addr, msgdata=reply,
        time=K.unix_time(at), smsc_id=smsc_id, foreign_id=foreign,
        service=_meta_str(change.meta, "username"),
        meta_data=K.ack_meta(_meta_str(change.meta, "meta_data"), mask or 0,
                             submit_resp=from_resp),
        dlr_url=template, id=K.message_uuid(change.outbound_id))
    return StatusCallback(change.account_id, change.outbound_id,
                          K.fill_escape_codes(template, msg), "GET", None, None,
                          _secret(change.account_id))


def receipt_rows(rows: Iterable[Mapping[str, Any]], *, parts: DlrParts = "first",
                 system_ids: Mapping[str, str] | None = None) -> list[StatusCallback]:
    """The Kannel receipt DLRs of matched receipts (`receipts.kannel_dlrs` rows, in arrival
    order), as `dlr_find` and `handle_dlr` make them.

    `parts="first"`: only part 1's receipts (Kannel); `"each"`: every part's. `system_ids`
    maps a connector to its bind's system_id (Kannel's `%o` of a receipt is the SMSC
    connection's username).
    """
    out: list[StatusCallback] = []
    system_ids = system_ids or {}
    for r in rows:
        if parts == "first" and r["part_no"] != 1:
            continue
        mask = r["dlr_mask"]
        dlr_type = K.receipt_type(r["state"], r.get("message_state"))
        if not K.wants_receipt(mask, dlr_type):
            continue
        template = r["callback_url"]
        body = (r["body"] or "").encode("latin-1", "replace")
        # the meta-data (%D, %#group#key#) and the uuid (%I) only for a template that may
        # use them: most dlr-urls do not, and they are most of the cost of a report
        meta = (K.receipt_meta(mask, r.get("network_error") or K.dlr_err(r["err"], body))
                if "%D" in template or "%#" in template else None)
        msg = K.DlrMsg(
            dlr_type=dlr_type, receiver=r["to_addr"], sender=r["from_addr"], msgdata=body,
            time=K.unix_time(r["received_at"]), smsc_id=r["connector"],
            foreign_id=r["smsc_id"], service=_meta_str(r["meta"], "username"),
            account=system_ids.get(r["receipt_connector"]), meta_data=meta, dlr_url=template,
            id=K.message_uuid(r["outbound_id"]) if "%I" in template else "")
        out.append(StatusCallback(r["account_id"], r["outbound_id"],
                                  K.fill_escape_codes(template, msg), "GET", None, None,
                                  _secret(r["account_id"])))
    return out


async def insert_rows(conn: asyncpg.Connection, rows: Sequence[StatusCallback]) -> int:
    """Queue ready-made callback rows (one INSERT); return how many."""
    return await callbacks.insert_status(conn, list(rows)) if rows else 0


async def insert_callbacks(conn: asyncpg.Connection, changes: Iterable[StatusChange]) -> int:
    """Queue the callbacks the applications asked for (one INSERT); return how many."""
    rows = [row for row in (callback_row(c) for c in changes) if row is not None]
    return await insert_rows(conn, rows)


async def cancel_queued(conn: asyncpg.Connection, account_id: int,
                        ids: Sequence[int] | None = None, *, reason: str, daemon: str,
                        to_addr: str | None = None, from_addr: str | None = None,
                        limit: int | None = None) -> list[int]:
    """Cancel `account_id`'s queued messages (all, or those in `ids`; optionally only those to
    `to_addr` / from `from_addr`; at most `limit`) and queue the status callbacks they asked
    for, in one transaction; return the ids cancelled.

    Only rows no sender has claimed are cancelled (`shared.queue.outbound.cancel_queued`, one
    statement); a message already `sending` or further is left alone and not returned, so a
    caller answering an SMPP cancel_sm reports those ids as not cancellable. `reason` goes to
    `last_error` and the trace event (≤ 200 characters), `daemon` names the canceller in it.
    """
    async with conn.transaction():
        changes = await outbound.cancel_queued(conn, account_id, ids, reason=reason,
                                               daemon=daemon, to_addr=to_addr,
                                               from_addr=from_addr, limit=limit)
        await insert_callbacks(conn, changes)
    return [c.outbound_id for c in changes]
