"""Status callbacks: the `callbacks` row an application asked for when its MT changes state.

JSON style (`callback_url`): a POST of the contract's body on every state change. Kannel style
(`dlr-url` with a `dlr-mask`): a GET of the URL template with its escapes rendered, only for the
states the mask selects (`shared.domain.kannel`). The sender makes them for the states it sets
(write-back, claim) and for the states receipt matching sets (`matching`), in the same
transaction; `shared.queue.callbacks.insert_status` stores them and the processor delivers them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from smsgw.shared.domain.kannel import dlr_type_for, render_dlr_url, wants_dlr
from smsgw.shared.queue import callbacks
from smsgw.shared.queue.records import StatusCallback, StatusChange

__all__ = ["StatusChange", "callback_row", "insert_callbacks"]


def _style(meta: Any) -> str:
    if isinstance(meta, dict):
        return str(meta.get("callback_style") or "json")
    return "json"


def callback_row(change: StatusChange, at: datetime | None = None) -> StatusCallback | None:
    """The `callbacks` row for one state change, or None when the application did not ask.

    JSON style: a POST of the contract's body on every state change. Kannel style: a GET of
    the dlr-url template with its escapes rendered, only for states its `dlr_mask` selects.
    Returns the row's (account_id, outbound_id, url, method, body, headers, secret_ref).
    """
    if not change.callback_url:
        return None
    at = at or datetime.now(UTC)
    secret = f"account:{change.account_id}" if change.account_id is not None else None
    if _style(change.meta) == "kannel":
        if not wants_dlr(change.dlr_mask, change.status):
            return None
        url = render_dlr_url(change.callback_url, dlr=dlr_type_for(change.status),
                             to=change.to_addr, from_addr=change.from_addr, at=at,
                             smsc_reply=change.status, connector=change.connector,
                             message_id=change.outbound_id, err=change.error_code or "")
        return StatusCallback(change.account_id, change.outbound_id, url, "GET", None, None,
                              secret)
    body = orjson.dumps({
        "id": change.outbound_id, "client_ref": change.client_ref, "status": change.status,
        "to": change.to_addr, "from": change.from_addr, "parts": change.parts_total,
        "delivered_parts": change.delivered_parts, "error_code": change.error_code,
        "error": change.error if change.status != "delivered" else None,
        "connector": change.connector, "at": at.isoformat()})
    return StatusCallback(change.account_id, change.outbound_id, change.callback_url, "POST",
                          body, {"Content-Type": "application/json"}, secret)


async def insert_callbacks(conn: asyncpg.Connection, changes: Iterable[StatusChange]) -> int:
    """Queue the callbacks the applications asked for (one INSERT); return how many."""
    rows = [row for row in (callback_row(c) for c in changes) if row is not None]
    return await callbacks.insert_status(conn, rows)
