"""Finding 6: every MT recipient is E.164 or a short code; letters never make a recipient.

Before the fix `"to": "+447700900999x"` (also `+1-800-FLOWERS`, `…;ext=1`) was stored and
submitted raw: normalisation kept any value with a letter as an "alphanumeric" address, and the
API only checked that it started with '+'. The suppression hash, erase and flood control all key
on the E.164 form, so the raw string escaped them: a marketing MT reached a number that had sent
STOP. Each intake path is checked over real HTTP (JSON API, batch, Kannel sendsms), plus the
admin `smsgw send --direct` and the processor's auto-reply to an MO sender.
"""

from __future__ import annotations

from urllib.parse import quote

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from smsgw.services.admin.send import send_direct
from smsgw.services.processor.engine import Engine
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.options import ProcessorKeys
from smsgw.services.processor.rules import parse_rules
from smsgw.services.processor.rules_cli import import_rules
from smsgw.shared.domain import suppression
from smsgw.shared.domain.numbers import InvalidNumber, is_recipient, normalise_recipient
from smsgw.shared.queue import store

from .conftest import SEC_MT_SECRET

STOPPED = "+447700900999"
BAD_RECIPIENTS = [
    STOPPED + "x",  # a letter after a real number
    "+1-800-FLOWERS",  # vanity number
    STOPPED + ";ext=1",  # extension
    STOPPED + " x1",
    "tel:" + STOPPED,
    "+\uff14\uff147700900999",  # fullwidth digits
    "٨٠٠٨٠",  # Arabic-Indic digits as a "short code"
    "MyBank",  # alphanumeric: a sender, never a recipient
    "12",  # too short for a short code
]


async def _count(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM outbound"))


@pytest.mark.parametrize("bad", BAD_RECIPIENTS)
async def test_json_api_refuses_non_numbers(sec_mt_receiver, sec_mt_account, pool,
                                            bad: str) -> None:
    """1. POST /v1/messages with each bad `to`, alone and as the 2nd of a batch
    2. 422 naming `to` / `messages[1].to`; nothing is stored (not even the batch's good one)."""
    rx = await sec_mt_receiver()
    _, key = await sec_mt_account("shop")
    msg = {"to": bad, "from": "Shop", "text": "SALE", "category": "marketing"}
    status, body = await rx.call("POST", "/v1/messages", key=key, json=msg)
    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["to"]
    good = {**msg, "to": "+447700900123"}
    status, body = await rx.call("POST", "/v1/messages", key=key,
                                 json={"messages": [good, msg]})
    assert status == 422, body
    assert [e["field"] for e in body["errors"]] == ["messages[1].to"]
    assert await _count(pool) == 0


@pytest.mark.parametrize("bad", BAD_RECIPIENTS)
async def test_sendsms_refuses_non_numbers(sec_mt_receiver, sec_mt_account, pool,
                                           bad: str) -> None:
    """1. GET /cgi-bin/sendsms with each bad `to`, alone and after a good recipient
    2. Kannel-style 400 naming `to`; nothing is stored."""
    rx = await sec_mt_receiver()
    _, key = await sec_mt_account("kannel")
    base = f"/cgi-bin/sendsms?username=kannel&password={quote(key)}&from=Shop&text=SALE"
    for to in (bad, "+447700900123 " + bad):
        status, text = await rx.call("GET", base + "&to=" + quote(to))
        assert status == 400 and text.startswith("Invalid parameter to"), (to, text)
    assert await _count(pool) == 0


async def test_e164_and_short_code_accepted(sec_mt_receiver, sec_mt_account, pool) -> None:
    """1. a formatted E.164 number, a national number (default country GB) and a short code,
    through the JSON API and sendsms (two recipients) 2. all stored in normalised form."""
    rx = await sec_mt_receiver()
    _, key = await sec_mt_account("ok")
    for to in ("+44 7700 900123", "07700900124", "80080"):
        status, body = await rx.call("POST", "/v1/messages", key=key,
                                     json={"to": to, "from": "Shop", "text": "hi"})
        assert status == 202, (to, body)
    qs = (f"username=ok&password={quote(key)}&from=Shop&text=hi"
          f"&to={quote('+447700900125 60060')}")
    status, text = await rx.call("GET", "/cgi-bin/sendsms?" + qs)
    assert (status, text) == (202, "0: Accepted for delivery")
    rows = await pool.fetch("SELECT to_addr FROM outbound ORDER BY id")
    assert [r["to_addr"] for r in rows] == ["+447700900123", "+447700900124", "80080",
                                            "+447700900125", "60060"]


async def test_stopped_number_with_suffix_is_not_deliverable(sec_mt_receiver, sec_mt_account,
                                                             pool) -> None:
    """1. marketing MTs to STOPPED + 'x' (JSON and sendsms) are refused at intake, nothing
       stored (they would have escaped the suppression list, keyed on the E.164 form)
    2. STOPPED is suppressed (global), as a STOP from it does; the same number written with
       separators is stored as E.164, so the suppression list finds it: not deliverable."""
    rx = await sec_mt_receiver()
    _, key = await sec_mt_account("promo", category="marketing")
    status, body = await rx.call("POST", "/v1/messages", key=key, json={
        "to": STOPPED + "x", "from": "Promo", "text": "50% off", "category": "marketing"})
    assert status == 422 and body["errors"][0]["field"] == "to", body
    qs = (f"username=promo&password={quote(key)}&from=Promo&text=sale"
          f"&to={quote(STOPPED + 'x')}")
    status, _ = await rx.call("GET", "/cgi-bin/sendsms?" + qs)
    assert status == 400
    assert await _count(pool) == 0
    hasher = suppression.NumberHasher.from_secret(SEC_MT_SECRET)  # as the receiver keys it
    assert await suppression.add_suppression(pool, STOPPED, source="sms", hasher=hasher)
    status, _ = await rx.call("POST", "/v1/messages", key=key, json={
        "to": "+44 (0)7700-900999", "from": "Promo", "text": "50% off",
        "category": "marketing"})
    assert status == 202
    stored = await pool.fetchval("SELECT to_addr FROM outbound")
    assert stored == STOPPED
    assert await suppression.is_suppressed(pool, [stored], hasher=hasher) == {STOPPED}


async def test_admin_send_direct_refuses_non_numbers(pool) -> None:
    """`smsgw send --direct --to '+1-800-FLOWERS'` enqueues nothing (InvalidNumber → exit 2)."""
    async with pool.acquire() as conn:
        for bad in (STOPPED + "x", "+1-800-FLOWERS", STOPPED + ";ext=1"):
            with pytest.raises(InvalidNumber):
                await send_direct(conn, {"to": bad, "from": "smsgw", "text": "t"})
        await send_direct(conn, {"to": STOPPED, "from": "smsgw", "text": "t"})
    assert [r["to_addr"] for r in await pool.fetch("SELECT to_addr FROM outbound")] == [STOPPED]


async def test_processor_does_not_reply_to_a_non_number(pool) -> None:
    """1. a reply rule on short code 80080; MOs from STOPPED + 'x' (as an unsigned provider or
    an SMSC could store it) and from a real number 2. only the real number gets the reply."""
    async with pool.acquire() as conn:
        await import_rules(conn, parse_rules([{
            "name": "win", "match": {"to": ["80080"], "keyword": "WIN"},
            "actions": [{"type": "reply", "template": "Thanks", "category": "marketing"}]}]),
            actor="test", replace=True)
    mo = {"channel": "http", "provider": "generic", "to_addr": "80080", "body": "WIN"}
    await store.enqueue(pool, "inbound", [{**mo, "from_addr": STOPPED + "x"},
                                          {**mo, "from_addr": "+447700900123"}])
    engine = Engine(pool, ProcessorKeys(batch=100, flood_max=0),
                    metrics=ProcessorMetrics.create(CollectorRegistry()),
                    hasher=suppression.NumberHasher.from_secret(SEC_MT_SECRET))
    while await engine.run_batch():
        pass
    assert [r["to_addr"] for r in await pool.fetch("SELECT to_addr FROM outbound")] == [
        "+447700900123"]


def test_normalise_recipient_keeps_the_fast_path_exact() -> None:
    """The fast path answers "+<digits>" unchanged; everything else agrees with `normalise`'s
    E.164 answer or is refused; `is_recipient` is true only for normalised recipients."""
    assert normalise_recipient("+447700900123") == "+447700900123"
    assert normalise_recipient("0044 7700 900123") == "+447700900123"
    assert normalise_recipient("4915112345678", default_country="DE",
                               assume_international=True) == "+4915112345678"
    assert is_recipient("+447700900123") and is_recipient("80080")
    assert not any(is_recipient(b) for b in BAD_RECIPIENTS)
    assert not is_recipient("+44 7700 900123")  # valid, but not in normalised form
