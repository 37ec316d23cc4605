"""Which Kannel DLRs a message gets: receipts of part 1 only (Kannel) or of every part
(`kannel_dlr_parts = "each"`), none after a part's first final receipt, the dlr-mask filter,
and the ACK/NACK of every way the sender finishes a message. Receipt matching runs for real
against Postgres (`matching.match_batch`); the rows are read back from `callbacks`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import orjson
import pytest

from smsgw.services.sender import matching
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.domain.status_callbacks import callback_row
from smsgw.shared.queue.records import StatusChange

from .conftest import add_mt, connector

TEMPLATE = "http://127.0.0.1:9/dlr?d=%d&F=%F&A=%A&o=%o&i=%i&D=%D"
KANNEL = {"callback_style": "kannel", "username": "app"}


async def _two_part_message(pool: asyncpg.Pool, mask: int = 31,
                            meta: dict[str, Any] | None = None) -> int:
    (mid,) = await add_mt(pool, 1, callback_url=TEMPLATE, dlr_mask=mask,
                          meta=KANNEL if meta is None else meta)
    await pool.execute("UPDATE outbound SET status='submitted', parts_total=2, connector='c1'"
                       " WHERE id=$1", mid)
    for no, sid in ((1, f"{mid}a"), (2, f"{mid}b")):
        await pool.execute(
            "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
            " status) VALUES ($1, $2, 2, 'c1', $3, 'submitted')", mid, no, sid)
    return mid


async def _receipt(pool: asyncpg.Pool, smsc_id: str, stat: str, state: str,
                   final: bool = True, err: str | None = "000", message_state: int | None = None,
                   network_error: bytes | None = None) -> None:
    body = f"id:{smsc_id} sub:001 dlvrd:001 submit date:2612071303 done date:2612071303" \
           f" stat:{stat} err:{err} text:"
    await pool.execute(
        "INSERT INTO receipts (connector, smsc_id, stat, state, final, err, body, message_state,"
        " network_error) VALUES ('c1', $1, $2, $3, $4, $5, $6, $7, $8)", smsc_id, stat, state,
        final, err, body, message_state, network_error)


async def _match(pool: asyncpg.Pool, parts: str = "first") -> matching.MatchResult:
    settings = matching.MatchSettings.from_config(
        [connector("c1", 1, system_id="sys-c1")],
        SenderSettings(receipt_min_age_s=0, kannel_dlr_parts=parts))  # type: ignore[arg-type]
    async with pool.acquire() as conn:
        return await matching.match_batch(conn, settings)


async def _dlrs(pool: asyncpg.Pool, mid: int) -> list[dict[str, str]]:
    rows = await pool.fetch("SELECT url FROM callbacks WHERE outbound_id=$1 ORDER BY id", mid)
    return [dict(parse_qsl(r["url"].split("?", 1)[1])) for r in rows]


async def test_first_part_only_as_kannel(pool: asyncpg.Pool) -> None:
    """gw/sms.c sms_split: parts 2..n lose dlr_mask and dlr_url, so only part 1's receipts
    make DLRs. Part 1: ENROUTE (type 4) then DELIVRD (1); part 2's receipt: none. The
    message still ends delivered (smsgw tracks every part)."""
    mid = await _two_part_message(pool)
    await _receipt(pool, f"{mid}a", "ENROUTE", "enroute", final=False)
    await _receipt(pool, f"{mid}a", "DELIVRD", "delivered")
    await _receipt(pool, f"{mid}b", "DELIVRD", "delivered")
    res = await _match(pool)
    assert res.matched == 3
    dlrs = await _dlrs(pool, mid)
    assert [(d["d"], d["F"]) for d in dlrs] == [("4", f"{mid}a"), ("1", f"{mid}a")]
    assert dlrs[1]["A"].startswith(f"id:{mid}a sub:001") and dlrs[1]["o"] == "sys-c1"
    assert dlrs[1]["i"] == "c1"
    assert dlrs[1]["D"] == "?orig_msg?dlr_mask=31&?smpp?dlr_err=%03%00%00&"
    assert await pool.fetchval("SELECT status FROM outbound WHERE id=$1", mid) == "delivered"


async def test_each_part_with_its_own_values(pool: asyncpg.Pool) -> None:
    """kannel_dlr_parts = "each": one DLR per part's receipt, each with its SMSC id, text
    and type (part 1 delivered → 1, part 2 UNDELIV → 2)."""
    mid = await _two_part_message(pool)
    await _receipt(pool, f"{mid}a", "DELIVRD", "delivered")
    await _receipt(pool, f"{mid}b", "UNDELIV", "undeliverable", err="260")
    await _match(pool, "each")
    dlrs = await _dlrs(pool, mid)
    assert [(d["d"], d["F"]) for d in dlrs] == [("1", f"{mid}a"), ("2", f"{mid}b")]
    assert "stat:UNDELIV" in dlrs[1]["A"]
    assert dlrs[1]["D"] == "?orig_msg?dlr_mask=31&?smpp?dlr_err=%03%01%04&"  # 260 = 0x0104


async def test_expired_by_tlv_is_34(pool: asyncpg.Pool) -> None:
    """handle_dlr: a receipt with receipted_message_id and message_state EXPIRED (3) is
    DLR_EXPIRED = 0x20|DLR_FAIL = 34 (gw/dlr.h), reported to a mask with bit 2; its dlr_err
    is the network_error_code TLV's octets. The same receipt without the TLV is type 2."""
    tlv = await _two_part_message(pool, mask=2)
    text = await _two_part_message(pool, mask=2)
    await _receipt(pool, f"{tlv}a", "EXPIRED", "expired", err="001", message_state=3,
                   network_error=b"\x01\x00\x05")
    await _receipt(pool, f"{text}a", "EXPIRED", "expired", err="001")
    await _match(pool)
    (by_tlv,), (by_text,) = await _dlrs(pool, tlv), await _dlrs(pool, text)
    assert (by_tlv["d"], by_tlv["D"]) == ("34", "?orig_msg?dlr_mask=2&?smpp?dlr_err=%01%00%05&")
    assert (by_text["d"], by_text["D"]) == ("2", "?orig_msg?dlr_mask=2&?smpp?dlr_err=%03%00%01&")


async def test_no_report_after_the_first_final_receipt(pool: asyncpg.Pool) -> None:
    """dlr_find removes the entry at a final type: a second DELIVRD for the same part (a
    resent receipt, in a later batch) reports nothing; the first one did (control)."""
    mid = await _two_part_message(pool)
    await _receipt(pool, f"{mid}a", "DELIVRD", "delivered")
    await _match(pool)
    assert len(await _dlrs(pool, mid)) == 1
    await _receipt(pool, f"{mid}a", "DELIVRD", "delivered")
    res = await _match(pool)
    assert res.matched == 1
    assert len(await _dlrs(pool, mid)) == 1


@pytest.mark.parametrize(("mask", "stat", "state", "want"), [
    (1, "DELIVRD", "delivered", ["1"]),
    (2, "DELIVRD", "delivered", []),  # type & mask = 0
    (2, "UNDELIV", "undeliverable", ["2"]),
    (4, "ENROUTE", "enroute", ["4"]),
    (3, "ENROUTE", "enroute", []),
    (8, "DELIVRD", "delivered", []),  # no device bit: no DLR entry (dlr_add)
    (16, "UNDELIV", "undeliverable", []),
])
async def test_mask_selects_receipts(pool: asyncpg.Pool, mask: int, stat: str, state: str,
                                     want: list[str]) -> None:
    """dlr_find reports a receipt when `type & dlr_mask` (smsc_smpp.c stores the entry only
    with DLR_IS_ENABLED_DEVICE)."""
    mid = await _two_part_message(pool, mask=mask)
    await _receipt(pool, f"{mid}a", stat, state, final=state != "enroute")
    assert (await _match(pool)).matched == 1
    assert [d["d"] for d in await _dlrs(pool, mid)] == want


async def test_json_callbacks_keep_one_per_message(pool: asyncpg.Pool) -> None:
    """A JSON callback_url still hears of the message once, when every part is final, with
    the contract's body (no per-part option applies)."""
    mid = await _two_part_message(pool, meta={})
    await pool.execute("UPDATE outbound SET callback_url='http://127.0.0.1:9/cb' WHERE id=$1",
                       mid)
    await _receipt(pool, f"{mid}a", "DELIVRD", "delivered")
    await _receipt(pool, f"{mid}b", "DELIVRD", "delivered")
    await _match(pool, "each")
    rows = await pool.fetch("SELECT method, body FROM callbacks WHERE outbound_id=$1", mid)
    assert len(rows) == 1 and rows[0]["method"] == "POST"
    body = orjson.loads(rows[0]["body"])
    assert (body["status"], body["parts"], body["delivered_parts"]) == ("delivered", 2, 2)


def _change(status: str, mask: int = 31, parts: int | None = 1, error_code: int | None = None,
            connector_name: str | None = "c1") -> StatusChange:
    return StatusChange(outbound_id=7, status=status, account_id=3, from_addr="Brand",
                        to_addr="+447700900123", client_ref=None, callback_url=TEMPLATE,
                        dlr_mask=mask, meta=KANNEL, parts_total=parts, delivered_parts=0,
                        connector=connector_name, error_code=error_code, error=None)


def _query(change: StatusChange, **kw: Any) -> dict[str, str] | None:
    row = callback_row(change, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), **kw)
    return None if row is None else dict(parse_qsl(row.url.split("?", 1)[1]))


def test_ack_nack_of_every_outcome() -> None:
    """bb_smscconn_sent / bb_smscconn_send_failed, per way smsgw finishes a message:
    submitted → ACK (8) with the SMSC id (part 1's of a split message, when the mask stores
    receipts); rejected → NACK/0x…/text (one part) or NACK/ (split: handle_split); dead →
    "Retries Exceeded"; expired (claim) → "validity expired"; suppressed → "receiver in
    black-list"; the smsc-id of a DLR made without a connection is the forced smsc."""
    assert _query(_change("submitted"), first_part_id="ab1") == {
        "d": "8", "F": "ab1", "A": "ACK/", "i": "c1",
        "D": "?smpp_resp??orig_msg?dlr_mask=31&"}
    split = _query(_change("submitted", parts=3), first_part_id="ab1")
    assert split is not None and (split["F"], split["D"]) == ("ab1", "?orig_msg?dlr_mask=31&")
    no_receipts = _query(_change("submitted", mask=8, parts=3), first_part_id="ab1")
    assert no_receipts is not None and "F" not in no_receipts  # empty: dlr_add never ran
    assert _query(_change("rejected", error_code=0x45)) == {
        "d": "16", "A": "NACK/0x00000045/Submit failed", "i": "c1",
        "D": "?smpp_resp??orig_msg?dlr_mask=31&"}
    split_nack = _query(_change("rejected", parts=2, error_code=0x45), first_part_id="ab1")
    assert split_nack is not None and (split_nack["A"], split_nack["F"]) == ("NACK/", "ab1")
    dead = _query(_change("dead"), forced_connector="c9")
    assert dead is not None and (dead["A"], dead["i"]) == ("NACK/Retries Exceeded", "c9")
    expired = _query(_change("expired", connector_name=None))
    assert expired == {"d": "16", "A": "NACK/validity expired",
                       "D": "?orig_msg?dlr_mask=31&"}
    suppressed = _query(_change("suppressed", connector_name=None))
    assert suppressed is not None and suppressed["A"] == "NACK/receiver in black-list"


def test_ack_nack_masks() -> None:
    """ACK only with bit 8; NACK with 16, 2, 32 or 64 (DLR_IS_SMSC_FAIL || DLR_IS_FAIL);
    receipt states never give an ACK/NACK row (receipts report themselves)."""
    assert _query(_change("submitted", mask=23)) is None
    assert _query(_change("rejected", mask=2, error_code=0x0B))["d"] == "16"  # type: ignore[index]
    assert _query(_change("rejected", mask=1 | 4 | 8, error_code=0x0B)) is None
    assert _query(_change("delivered")) is None and _query(_change("undeliverable")) is None


def test_settings_refuse_an_unknown_parts_mode() -> None:
    """`[sender] kannel_dlr_parts` is "first" (default) or "each"."""
    assert SenderSettings().kannel_dlr_parts == "first"
    with pytest.raises(ValueError, match="kannel_dlr_parts"):
        SenderSettings(kannel_dlr_parts="all")  # type: ignore[arg-type]
    assert replace(matching.MatchSettings.from_config([], SenderSettings()),
                   kannel_dlr_parts="each").kannel_dlr_parts == "each"


def test_intake_keeps_the_receipt_tlvs() -> None:
    """The intake stores what handle_dlr reads: message_state only with receipted_message_id
    (its SMPP 3.4 branch), network_error_code's 3 octets, and the text from message_payload
    when short_message is empty (`respstr`)."""
    from smsgw.shared.domain.intake import _receipt_item
    from smsgw.shared.smpp import pdu as P

    conn = connector("c1", 1)
    text = b"id:77 sub:001 dlvrd:000 submit date:2612071303 done date:2612071303 stat:EXPIRED"
    full = _receipt_item(conn, P.DeliverSm(esm_class=4, short_message=b"", tlvs=(
        (P.Tag.RECEIPTED_MESSAGE_ID, b"77\0"), (P.Tag.MESSAGE_STATE, b"\x03"),
        (P.Tag.NETWORK_ERROR_CODE, b"\x03\x01\x04"), (P.Tag.MESSAGE_PAYLOAD, text))))
    assert (full.message_state, full.network_error, full.body) == (3, b"\x03\x01\x04",
                                                                  text.decode())
    no_id = _receipt_item(conn, P.DeliverSm(esm_class=4, short_message=text, tlvs=(
        (P.Tag.MESSAGE_STATE, b"\x03"),)))
    assert (no_id.message_state, no_id.network_error) == (None, None)
