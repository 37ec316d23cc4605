"""Provider webhooks over real HTTP: signatures computed as the providers' own libraries do."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from urllib.parse import urlencode

import asyncpg
import pytest
import vonage
from pydantic import SecretStr

from smsgw.shared.runtime.config import VonageSettings

from .conftest import (
    GENERIC_SECRET,
    TWILIO_TOKEN,
    VONAGE_SECRET,
    Receiver,
    ReceiverFactory,
    webhook_settings,
)

PUBLIC = "https://sms.example.com"


def twilio_reference_signature(token: str, uri: str, params: dict[str, list[str]]) -> str:
    """twilio-python RequestValidator.compute_signature, written from Twilio's documented
    algorithm: the URL, then each parameter name (sorted) followed by each of its values
    (sorted), HMAC-SHA1 with the auth token, base64."""
    s = uri
    for name in sorted(set(params)):
        for value in sorted(set(params[name])):
            s += name + value
    return base64.b64encode(hmac.new(token.encode(), s.encode(), hashlib.sha1).digest()).decode()


def vonage_reference_signature(secret: str, params: dict[str, str],
                               method: str = "sha256") -> str:
    """The `sig` the Vonage SDK itself computes (`vonage.Auth.sign_params`, the independent
    oracle: the `vonage` package of the test extra), for HMAC with `method`."""
    auth = vonage.Auth(api_key="test-key", signature_secret=secret, signature_method=method)
    return str(auth.sign_params(dict(params)))  # sign_params adds to the dict it is given


def vonage_sdk_accepts(secret: str, params: dict[str, str], method: str = "sha256") -> bool:
    """What the Vonage SDK's own `check_signature` says about these params (with `sig`)."""
    auth = vonage.Auth(api_key="test-key", signature_secret=secret, signature_method=method)
    return bool(auth.check_signature(dict(params)))


def twilio_form(sid: str = "SM0123456789abcdef0123456789abcdef") -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": "AC123", "From": "+447700900123",
            "To": "+447700900999", "Body": "Hello & welcome = yes", "NumMedia": "0",
            "NumSegments": "1", "FromCountry": "GB", "SmsStatus": "received",
            "ApiVersion": "2010-04-01"}


async def _twilio_receiver(factory: ReceiverFactory) -> Receiver:
    return await factory(webhooks=webhook_settings(public_base_url=PUBLIC))


async def test_twilio_signed_as_twilio_python_does(receiver_factory: ReceiverFactory,
                                                   pool: asyncpg.Pool) -> None:
    """1. sign the form as twilio-python does, over the public URL → 200 empty TwiML, 1 row
    2. the same webhook again (Twilio retry) → 200, still one row
    3. signed over the URL with the explicit :443 port → accepted too."""
    receiver = await _twilio_receiver(receiver_factory)
    form = twilio_form()
    sig = twilio_reference_signature(TWILIO_TOKEN, PUBLIC + "/v1/inbound/twilio",
                                     {k: [v] for k, v in form.items()})
    for _ in range(2):
        status, body = await receiver.post("/v1/inbound/twilio", data=form,
                                           headers={"X-Twilio-Signature": sig})
        assert status == 200 and "<Response/>" in body
        assert receiver.last_headers["Content-Type"].startswith("text/xml")
    rows = await pool.fetch("SELECT * FROM inbound")
    assert len(rows) == 1
    assert rows[0]["from_addr"] == "+447700900123" and rows[0]["body"] == form["Body"]
    assert rows[0]["provider"] == "twilio" and rows[0]["channel"] == "http"
    form2 = twilio_form("SM2")
    sig2 = twilio_reference_signature(TWILIO_TOKEN, "https://sms.example.com:443"
                                      "/v1/inbound/twilio", {k: [v] for k, v in form2.items()})
    status, _ = await receiver.post("/v1/inbound/twilio", data=form2,
                                    headers={"X-Twilio-Signature": sig2})
    assert status == 200
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 2


async def test_twilio_one_character_changed_is_401(receiver_factory: ReceiverFactory,
                                                   pool: asyncpg.Pool) -> None:
    """A one-character change in the body, the signature or the URL → 401, nothing stored."""
    receiver = await _twilio_receiver(receiver_factory)
    form = twilio_form()
    good = twilio_reference_signature(TWILIO_TOKEN, PUBLIC + "/v1/inbound/twilio",
                                      {k: [v] for k, v in form.items()})
    bad_sig = ("A" if good[0] != "A" else "B") + good[1:]
    cases = [({**form, "Body": form["Body"] + "!"}, good), (form, bad_sig), (form, "")]
    for data, sig in cases:
        status, body = await receiver.post("/v1/inbound/twilio", data=data,
                                           headers={"X-Twilio-Signature": sig})
        assert status == 401 and body["error"] == "bad_signature"
    wrong_url = twilio_reference_signature(TWILIO_TOKEN, PUBLIC + "/v1/inbound/twilio2",
                                           {k: [v] for k, v in form.items()})
    status, _ = await receiver.post("/v1/inbound/twilio", data=form,
                                    headers={"X-Twilio-Signature": wrong_url})
    assert status == 401
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 0


def vonage_params(message_id: str = "0A0000000123ABCD1", **extra: str) -> dict[str, str]:
    return {"msisdn": "447700900123", "to": "447700900999", "messageId": message_id,
            "text": "Hi there&more=x", "type": "text", "keyword": "HI",
            "message-timestamp": "2026-11-27 12:00:00", "timestamp": str(int(time.time())),
            "nonce": "8f4b2a", **extra}


async def test_vonage_signed_as_the_sdk_does(receiver: Receiver, pool: asyncpg.Pool) -> None:
    """1. GET and JSON POST webhooks signed as the Vonage SDK signs → 204, one row each
    2. a redelivery of the first → 204, not stored again
    3. one character changed in the text or the sig → 401, nothing stored."""
    p1 = vonage_params()
    p1["sig"] = vonage_reference_signature(VONAGE_SECRET, p1)
    status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(p1))
    assert status == 204
    status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(p1))
    assert status == 204
    p2 = vonage_params("0A0000000123ABCD2")
    p2["sig"] = vonage_reference_signature(VONAGE_SECRET, p2).upper()  # compared case-blind
    status, _ = await receiver.post("/v1/inbound/vonage", json=p2)
    assert status == 204
    rows = await pool.fetch("SELECT * FROM inbound ORDER BY id")
    assert [r["provider_message_id"] for r in rows] == [p1["messageId"], p2["messageId"]]
    assert rows[0]["from_addr"] == "+447700900123" and rows[0]["body"] == p1["text"]
    p3 = vonage_params("0A0000000123ABCD3")
    p3["sig"] = vonage_reference_signature(VONAGE_SECRET, p3)
    tampered = {**p3, "text": p3["text"] + "!"}
    status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(tampered))
    assert status == 401
    bad_sig = {**p3, "sig": ("0" if p3["sig"][0] != "0" else "1") + p3["sig"][1:]}
    status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(bad_sig))
    assert status == 401
    old = vonage_params("0A0000000123ABCD4", timestamp=str(int(time.time()) - 3600))
    old["sig"] = vonage_reference_signature(VONAGE_SECRET, old)
    status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(old))
    assert status == 401  # outside the replay window
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 2


@pytest.mark.parametrize("method", ["md5", "sha1", "sha256", "sha512"])
async def test_vonage_every_hmac_method_agrees_with_the_sdk(
        receiver_factory: ReceiverFactory, pool: asyncpg.Pool, method: str) -> None:
    """For each HMAC `signature_method` the SDK offers, the receiver accepts exactly what the
    Vonage SDK's `check_signature` accepts: 1. signed by the SDK with the configured method
    (text with '&', '=' and non-ASCII) → 204, stored; 2. signed with another method, or with
    the text changed after signing → the SDK says no, and the receiver answers 401."""
    receiver = await receiver_factory(webhooks=webhook_settings(
        vonage=VonageSettings.model_construct(signature_secret=SecretStr(VONAGE_SECRET),
                                              signature_method=method)))
    good = vonage_params(f"VONAGE-{method}", text="Grüße & a=b ✓")
    good["sig"] = vonage_reference_signature(VONAGE_SECRET, good, method)
    other = "sha1" if method != "sha1" else "sha256"
    wrong_method = vonage_params(f"VONAGE-{method}-2")
    wrong_method["sig"] = vonage_reference_signature(VONAGE_SECRET, wrong_method, other)
    tampered = {**good, "messageId": f"VONAGE-{method}-3", "text": good["text"] + "!"}
    for params, accepted in ((good, True), (wrong_method, False), (tampered, False)):
        assert vonage_sdk_accepts(VONAGE_SECRET, params, method) is accepted
        status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(params))
        assert status == (204 if accepted else 401), (method, params["messageId"], status)
    rows = await pool.fetch("SELECT provider_message_id, body FROM inbound")
    assert [(r["provider_message_id"], r["body"]) for r in rows] == [
        (good["messageId"], good["text"])]


async def test_vonage_concatenated_parts_become_one_message(receiver: Receiver,
                                                            pool: asyncpg.Pool) -> None:
    """1. part 2 of 2, then part 2 again (redelivery), then part 1
    2. one inbound row with the text in order; the fragments are marked done."""
    parts = [("2", "world"), ("2", "world"), ("1", "hello ")]
    for i, (seq, text) in enumerate(parts):
        p = vonage_params(f"MSG-PART-{seq}", text=text, concat="true", **{
            "concat-ref": "77", "concat-total": "2", "concat-part": seq})
        p["sig"] = vonage_reference_signature(VONAGE_SECRET, p)
        status, _ = await receiver.get("/v1/inbound/vonage?" + urlencode(p))
        assert status == 204, i
    rows = await pool.fetch("SELECT * FROM inbound")
    assert len(rows) == 1 and rows[0]["body"] == "hello world"
    assert await pool.fetchval("SELECT count(*) FROM mo_parts WHERE status = 'done'") == 2


def generic_headers(body: bytes, secret: str = GENERIC_SECRET,
                    ts: int | None = None) -> dict[str, str]:
    stamp = str(ts if ts is not None else int(time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Smsgw-Timestamp": stamp, "X-Smsgw-Signature": f"sha256={mac}",
            "Content-Type": "application/json"}


async def test_generic_webhook(receiver: Receiver, pool: asyncpg.Pool) -> None:
    """1. signed JSON → 200 with the id; again → duplicate, one row
    2. bad signature, stale timestamp, unknown source → 401/401/404, nothing more stored
    3. an unknown field → 422 naming it."""
    body = b'{"id": "ext-1", "from": "+447700900123", "to": "60060", "text": "STOP"}'
    status, got = await receiver.post("/v1/inbound/generic/acme", data=body,
                                      headers=generic_headers(body))
    assert status == 200 and got["duplicate"] is False and got["id"]
    status, again = await receiver.post("/v1/inbound/generic", data=body,
                                        headers={**generic_headers(body),
                                                 "X-Smsgw-Source": "acme"})
    assert status == 200 and again == {**got, "duplicate": True}
    status, _ = await receiver.post("/v1/inbound/generic/acme", data=body,
                                    headers=generic_headers(body, secret="wrong"))
    assert status == 401
    status, _ = await receiver.post("/v1/inbound/generic/acme", data=body,
                                    headers=generic_headers(body, ts=int(time.time()) - 3600))
    assert status == 401
    status, _ = await receiver.post("/v1/inbound/generic/other", data=body,
                                    headers=generic_headers(body))
    assert status == 404
    extra = b'{"id": "ext-2", "from": "+447700900123", "to": "60060", "text": "x", "z": 1}'
    status, got = await receiver.post("/v1/inbound/generic/acme", data=extra,
                                      headers=generic_headers(extra))
    assert status == 422 and got["errors"][0]["field"] == "z"
    rows = await pool.fetch("SELECT to_addr, body FROM inbound")
    assert [(r["to_addr"], r["body"]) for r in rows] == [("60060", "STOP")]


async def test_provider_id_dedupe_survives_the_retention_move(receiver: Receiver,
                                                              pool: asyncpg.Pool) -> None:
    """1. a Twilio webhook is stored; the processor finishes it; retention moves it to history
    2. Twilio redelivers it → 200, and there is still exactly one message (hot + history)."""
    from smsgw.shared.queue import store

    receiver.ctx.webhooks = webhook_settings(public_base_url=PUBLIC)
    form = twilio_form("SMretained")
    sig = twilio_reference_signature(TWILIO_TOKEN, PUBLIC + "/v1/inbound/twilio",
                                     {k: [v] for k, v in form.items()})
    status, _ = await receiver.post("/v1/inbound/twilio", data=form,
                                    headers={"X-Twilio-Signature": sig})
    assert status == 200
    await pool.execute("UPDATE inbound SET status = 'done', updated_at = now() - interval '2h'")
    async with pool.acquire() as conn:
        assert await store.move_finished(conn, "inbound", older_than_s=60, batch=100) == 1
    status, _ = await receiver.post("/v1/inbound/twilio", data=form,
                                    headers={"X-Twilio-Signature": sig})
    assert status == 200
    total = await pool.fetchval("SELECT (SELECT count(*) FROM inbound)"
                                " + (SELECT count(*) FROM inbound_history)")
    assert total == 1


async def test_twilio_nul_character_is_stored_not_a_500(receiver_factory: ReceiverFactory,
                                                        pool: asyncpg.Pool) -> None:
    """Found by the webhook fuzzer: a correctly signed Twilio webhook with U+0000 in Body and
    in an extra parameter was a 500 (Postgres text/jsonb cannot hold NUL).
    1. post it signed → 200 TwiML; 2. one row, NUL replaced by U+FFFD in body and meta."""
    receiver = await _twilio_receiver(receiver_factory)
    form = {**twilio_form("SMNUL"), "Body": "WIN\x00now", "FromCity": "LON\x00DON"}
    sig = twilio_reference_signature(TWILIO_TOKEN, PUBLIC + "/v1/inbound/twilio",
                                     {k: [v] for k, v in form.items()})
    status, body = await receiver.post("/v1/inbound/twilio", data=form,
                                       headers={"X-Twilio-Signature": sig})
    assert status == 200 and "<Response/>" in body
    row = await pool.fetchrow("SELECT body, meta FROM inbound")
    assert row["body"] == "WIN\ufffdnow"
    assert row["meta"]["FromCity"] == "LON\ufffdDON"
