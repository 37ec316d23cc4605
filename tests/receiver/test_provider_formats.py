"""Provider webhooks as the providers really send them, over real HTTP.

The oracle is the providers' own SDKs, never our signing code: Vonage requests are signed with
`vonage.Auth.sign_params` (the `vonage` package), Twilio requests with
`twilio.request_validator.RequestValidator.compute_signature`. The bodies are the examples of
the providers' documentation:

* Vonage SMS API reference, `InboundMessage`: msisdn "447700900001", to "447700900000",
  messageId "0A0000000123ABCD1", text "Hello world", type "text", keyword "HELLO",
  message-timestamp "2020-01-01 12:00:00", nonce "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
  api-key "abcd1234", and for a concatenated part concat "true", concat-ref "1",
  concat-total "3", concat-part "2" — international numbers as digits without the '+'.
* Twilio "Twilio's request to your incoming message Webhook URL": MessageSid/SmsSid/
  SmsMessageSid "SM…" (34 characters), AccountSid "AC…", MessagingServiceSid "MG…",
  From "+14017122661", To "+15558675310", NumMedia, NumSegments, SmsStatus, ApiVersion and
  the From*/To* geography fields — numbers in E.164 with the '+'.

What a provider does with our answer decides what we answer: Vonage resends anything but
200/204 for 24 hours, so a transient problem is a 503 (resent later) and a request no resend
can fix is a counted, logged 4xx; a number in a format we did not expect is stored, flagged.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import asyncpg
import phonenumbers
import pytest
import structlog
import vonage
from multidict import MultiDict
from pydantic import SecretStr, ValidationError
from structlog.testing import capture_logs
from twilio.request_validator import RequestValidator
from yarl import URL

from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.runtime.config import GenericSourceSettings

from .conftest import (
    GENERIC_SECRET,
    TWILIO_TOKEN,
    VONAGE_SECRET,
    Receiver,
    ReceiverFactory,
    webhook_settings,
)
from .test_webhooks import generic_headers

PUBLIC = "https://sms.example.com"
TWILIO_PATH = "/v1/inbound/twilio"
VONAGE_PATH = "/v1/inbound/vonage"


# -- the providers' SDKs ---------------------------------------------------------------------

def vonage_signed(params: dict[str, str]) -> dict[str, str]:
    """`params` with the `sig` Vonage's SDK computes (sha256 HMAC, as configured)."""
    auth = vonage.Auth(api_key="abcd1234", signature_secret=VONAGE_SECRET,
                       signature_method="sha256")
    signed = dict(params)
    signed["sig"] = auth.sign_params(dict(params))
    assert auth.check_signature(dict(signed))  # the SDK accepts what it signed
    return signed


def twilio_signature(params: dict[str, str], url: str = PUBLIC + TWILIO_PATH) -> str:
    """X-Twilio-Signature as twilio-python computes it for a form POST to `url`."""
    return str(RequestValidator(TWILIO_TOKEN).compute_signature(url, MultiDict(params)))


# -- the documentation's examples ---------------------------------------------------------------

def vonage_example(message_id: str = "0A0000000123ABCD1", **changes: str) -> dict[str, str]:
    """Vonage's documented inbound message; `timestamp` is now (the replay window)."""
    params = {"api-key": "abcd1234", "msisdn": "447700900001", "to": "447700900000",
              "messageId": message_id, "text": "Hello world", "type": "text",
              "keyword": "HELLO", "message-timestamp": "2020-01-01 12:00:00",
              "timestamp": str(int(time.time())),
              "nonce": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}
    params.update(changes)
    return params


def twilio_example(sid: str = "SM" + "1" * 32, **changes: str) -> dict[str, str]:
    """Twilio's documented incoming-message parameters."""
    params = {"ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0",
              "ToCity": "SAN FRANCISCO", "FromZip": "02860", "SmsSid": sid,
              "FromState": "RI", "SmsStatus": "received", "FromCity": "PAWTUCKET",
              "Body": "Ahoy! We can't wait to see what you build.", "FromCountry": "US",
              "To": "+15558675310", "MessagingServiceSid": "MG" + "2" * 32,
              "ToZip": "94105", "NumSegments": "1", "MessageSid": sid,
              "AccountSid": "AC" + "3" * 32, "From": "+14017122661",
              "ApiVersion": "2010-04-01"}
    params.update(changes)
    return params


def counted(receiver: Receiver, provider: str, outcome: str) -> float:
    metric = receiver.ctx.metrics.inbound_messages.labels(channel="http", provider=provider,
                                                          outcome=outcome)
    return float(metric._value.get())


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """The structlog events emitted during the test."""
    with capture_logs() as captured:
        yield captured
    structlog.reset_defaults()


async def _twilio_receiver(factory: ReceiverFactory, **options: Any) -> Receiver:
    return await factory(ReceiverOptions(**options) if options else None,
                         webhooks=webhook_settings(public_base_url=PUBLIC))


# -- Vonage -------------------------------------------------------------------------------------

async def test_vonage_documented_example_in_every_method(receiver_factory: ReceiverFactory,
                                                         pool: asyncpg.Pool) -> None:
    """Vonage's documented inbound message (international digits without '+'), on a receiver
    with NO default country, as GET, form POST and JSON POST, and the issue's German example
    (msisdn=491701234567&to=4930901820):
    1. each → 204, one row each, numbers in E.164, no flag
    2. type, keyword, message-timestamp and api-key kept in meta as documented."""
    receiver = await receiver_factory(ReceiverOptions())  # no default country at all
    get = vonage_signed(vonage_example("0A0000000123ABCD1"))
    form = vonage_signed(vonage_example("0A0000000123ABCD2"))
    body = vonage_signed(vonage_example("0A0000000123ABCD3"))
    german = vonage_signed(vonage_example("0B0000000000000001", msisdn="491701234567",
                                          to="4930901820"))
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(get)))[0] == 204
    assert (await receiver.post(VONAGE_PATH, data=form))[0] == 204  # aiohttp: form-encoded
    assert (await receiver.post(VONAGE_PATH, json=body))[0] == 204
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(german)))[0] == 204
    rows = await pool.fetch("SELECT * FROM inbound ORDER BY id")
    assert [(r["provider_message_id"], r["from_addr"], r["to_addr"]) for r in rows] == [
        ("0A0000000123ABCD1", "+447700900001", "+447700900000"),
        ("0A0000000123ABCD2", "+447700900001", "+447700900000"),
        ("0A0000000123ABCD3", "+447700900001", "+447700900000"),
        ("0B0000000000000001", "+491701234567", "+4930901820")]
    meta = rows[0]["meta"]
    assert {k: meta[k] for k in ("type", "keyword", "message-timestamp", "api-key")} == {
        "type": "text", "keyword": "HELLO", "message-timestamp": "2020-01-01 12:00:00",
        "api-key": "abcd1234"}
    assert meta["provider_timestamp"] == "2020-01-01T12:00:00+00:00"
    assert all("unparsed_numbers" not in r["meta"] for r in rows)
    assert all(r["body"] == "Hello world" for r in rows)
    assert counted(receiver, "vonage", "accepted") == 4


async def test_vonage_unicode_text(receiver: Receiver, pool: asyncpg.Pool) -> None:
    """A `type=unicode` message (text beyond GSM 7-bit: accents, Arabic, CJK, an emoji) as GET
    and as JSON POST → stored exactly as sent, `type` kept."""
    text = "Grüße — مرحبا 你好 👋"
    get = vonage_signed(vonage_example("UNI-1", type="unicode", text=text, keyword="GRÜSSE"))
    body = vonage_signed(vonage_example("UNI-2", type="unicode", text=text, keyword="GRÜSSE"))
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(get)))[0] == 204
    assert (await receiver.post(VONAGE_PATH, json=body))[0] == 204
    rows = await pool.fetch("SELECT body, meta FROM inbound ORDER BY id")
    assert [r["body"] for r in rows] == [text, text]
    assert all(r["meta"]["type"] == "unicode" for r in rows)


async def test_vonage_concatenated_inbound(receiver: Receiver, pool: asyncpg.Pool) -> None:
    """A three-part unicode message with the documented concat fields (concat-ref "1",
    concat-total "3"), each part with its own messageId:
    1. parts 2, 3, 3 again (a Vonage resend), 1 → 204 each
    2. one inbound row, the text in part order, E.164 numbers; the fragments are done
    3. a second message whose concat-ref is not a number is reassembled too."""
    texts = {"1": "Ünïcödé part one, ", "2": "part two, ", "3": "and part three ✓"}
    for seq in ("2", "3", "3", "1"):
        p = vonage_signed(vonage_example(f"0A00000001{seq}", type="unicode", text=texts[seq],
                                         concat="true", **{"concat-ref": "1",
                                                           "concat-total": "3",
                                                           "concat-part": seq}))
        assert (await receiver.get(VONAGE_PATH + "?" + urlencode(p)))[0] == 204, seq
    rows = await pool.fetch("SELECT * FROM inbound")
    assert len(rows) == 1
    assert rows[0]["body"] == texts["1"] + texts["2"] + texts["3"]
    assert (rows[0]["from_addr"], rows[0]["to_addr"]) == ("+447700900001", "+447700900000")
    assert await pool.fetchval("SELECT count(*) FROM mo_parts WHERE status = 'done'") == 3
    for seq, text in (("1", "ab"), ("2", "cd")):
        p = vonage_signed(vonage_example(f"REF-X-{seq}", text=text, concat="true", **{
            "concat-ref": "a1b2-c3", "concat-total": "2", "concat-part": seq}))
        assert (await receiver.post(VONAGE_PATH, json=p))[0] == 204
    assert await pool.fetchval("SELECT body FROM inbound WHERE body = 'abcd'") == "abcd"


async def test_vonage_unexpected_number_is_stored_flagged(receiver: Receiver,
                                                          pool: asyncpg.Pool,
                                                          logs: list[dict[str, Any]]) -> None:
    """A number Vonage should not send (national, with a trunk prefix) is not refused — a
    refusal would be resent for 24 hours and then lost:
    1. msisdn "07700 900001" → 204; the row holds the raw value and meta.unparsed_numbers
       names the field; counted as number_unparsed; logged without the value
    2. a concatenated part whose fields cannot place it (part 4 of 3) → 204, kept whole with
       what its concat fields said."""
    p = vonage_signed(vonage_example("ODD-1", msisdn="07700 900001"))
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(p)))[0] == 204
    row = await pool.fetchrow("SELECT * FROM inbound")
    assert row["from_addr"] == "07700 900001" and row["to_addr"] == "+447700900000"
    assert set(row["meta"]["unparsed_numbers"]) == {"msisdn"}
    assert counted(receiver, "vonage", "number_unparsed") == 1
    line = next(e for e in logs if e["event"] == "webhook_number_unparsed")
    assert line["provider"] == "vonage" and "07700" not in repr(line)
    part = vonage_signed(vonage_example("ODD-2", concat="true", **{
        "concat-ref": "9", "concat-total": "3", "concat-part": "4"}))
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(part)))[0] == 204
    kept = await pool.fetchrow("SELECT * FROM inbound WHERE provider_message_id = 'ODD-2'")
    assert kept["body"] == "Hello world"
    assert kept["meta"]["concat_part"] == {"concat-ref": "9", "concat-total": "3",
                                           "concat-part": "4"}


async def test_vonage_transient_problems_are_resent(receiver_factory: ReceiverFactory,
                                                    pool: asyncpg.Pool) -> None:
    """What Vonage resends must be what we cannot store yet:
    1. inbound queue over its watermark → 503 + Retry-After, nothing stored
    2. database unreachable → 503 + Retry-After
    3. the same signed webhook once the queue drains → 204, stored once."""
    receiver = await receiver_factory()
    p = vonage_signed(vonage_example("RETRY-1"))
    receiver.ctx.admission.set_snapshot("inbound", depth=10**6, oldest_age_s=0)
    status, body = await receiver.get(VONAGE_PATH + "?" + urlencode(p))
    assert status == 503 and body["reason"] == "inbound_watermark"
    assert int(receiver.last_headers["Retry-After"]) >= 1
    dead = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:9/postgres", min_size=0)
    try:
        down = await receiver_factory(db_pool=dead)
        status, _ = await down.get(VONAGE_PATH + "?" + urlencode(p))
        assert status == 503 and int(down.last_headers["Retry-After"]) >= 1
    finally:
        await dead.close()
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 0
    receiver.ctx.admission.set_snapshot("inbound", depth=0, oldest_age_s=0)
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(p)))[0] == 204
    assert (await receiver.get(VONAGE_PATH + "?" + urlencode(p)))[0] == 204
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 1


async def test_vonage_malformed_is_a_counted_logged_4xx(receiver: Receiver,
                                                        pool: asyncpg.Pool,
                                                        logs: list[dict[str, Any]]) -> None:
    """What no resend can fix is refused with a 4xx an operator sees (metric and log):
    a signature the SDK would not accept (401), a signed request without messageId (422
    naming it), a JSON body that is not JSON (400). Nothing is stored."""
    bad = vonage_signed(vonage_example("BAD-1"))
    bad["text"] += "!"  # changed after signing
    assert not vonage.Auth(api_key="abcd1234", signature_secret=VONAGE_SECRET,
                           signature_method="sha256").check_signature(dict(bad))
    status, body = await receiver.get(VONAGE_PATH + "?" + urlencode(bad))
    assert status == 401 and body["error"] == "bad_signature"
    no_id = vonage_example()
    del no_id["messageId"]
    status, body = await receiver.get(VONAGE_PATH + "?" + urlencode(vonage_signed(no_id)))
    assert status == 422 and body["errors"][0]["field"] == "messageId"
    status, _ = await receiver.post(VONAGE_PATH, data=b"{not json",
                                    headers={"Content-Type": "application/json"})
    assert status == 400
    assert counted(receiver, "vonage", "rejected") == 3
    reasons = [(e["status"], e["reason"], e["field"]) for e in logs
               if e["event"] == "webhook_rejected"]
    assert reasons == [(401, "bad_signature", None), (422, "validation", "messageId"),
                       (400, "validation", "body")]
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 0


# -- Twilio -------------------------------------------------------------------------------------

async def test_twilio_documented_example(receiver_factory: ReceiverFactory,
                                         pool: asyncpg.Pool) -> None:
    """Twilio's documented parameters, signed by twilio-python, on a receiver with no default
    country: 1. POST → 200 empty TwiML; 2. From/To stored as sent (E.164), the other
    parameters in meta; 3. the GET form of the same webhook (signed over the URL with its
    query) is stored too."""
    receiver = await _twilio_receiver(receiver_factory)
    form = twilio_example()
    status, text = await receiver.post(TWILIO_PATH, data=form,
                                       headers={"X-Twilio-Signature": twilio_signature(form)})
    assert status == 200 and "<Response/>" in text
    qs = urlencode(twilio_example("SM" + "4" * 32))
    sig = twilio_signature({}, PUBLIC + TWILIO_PATH + "?" + qs)
    async with receiver.http.get(URL(receiver.url + TWILIO_PATH + "?" + qs, encoded=True),
                                 headers={"X-Twilio-Signature": sig}) as resp:
        assert resp.status == 200  # the query exactly as signed (no re-quoting of "'")
    rows = await pool.fetch("SELECT * FROM inbound ORDER BY id")
    assert [(r["from_addr"], r["to_addr"]) for r in rows] == [
        ("+14017122661", "+15558675310")] * 2
    assert rows[0]["body"] == form["Body"] and rows[0]["provider_message_id"] == "SM" + "1" * 32
    assert rows[0]["meta"]["FromCity"] == "PAWTUCKET" and "unparsed_numbers" not in rows[0]["meta"]


async def test_twilio_unexpected_number_and_transient_failure(
        receiver_factory: ReceiverFactory, pool: asyncpg.Pool) -> None:
    """1. Twilio's 2008 API documented numbers without '+' (From=4158675309): such a From is
       stored as sent, flagged, not refused (Twilio does not resend a 4xx)
    2. the database unreachable → 503 + Retry-After: what Twilio's Fallback URL and its
       `rp=5xx` connection override act on."""
    receiver = await _twilio_receiver(receiver_factory)
    form = twilio_example("SM" + "5" * 32, From="4158675309")
    status, _ = await receiver.post(TWILIO_PATH, data=form,
                                    headers={"X-Twilio-Signature": twilio_signature(form)})
    assert status == 200
    row = await pool.fetchrow("SELECT * FROM inbound")
    assert row["from_addr"] == "4158675309" and set(row["meta"]["unparsed_numbers"]) == {"From"}
    assert counted(receiver, "twilio", "number_unparsed") == 1
    dead = await asyncpg.create_pool("postgresql://postgres@127.0.0.1:9/postgres", min_size=0)
    try:
        down = await receiver_factory(db_pool=dead,
                                      webhooks=webhook_settings(public_base_url=PUBLIC))
        other = twilio_example("SM" + "6" * 32)
        status, _ = await down.post(TWILIO_PATH, data=other,
                                    headers={"X-Twilio-Signature": twilio_signature(other)})
        assert status == 503 and int(down.last_headers["Retry-After"]) >= 1
    finally:
        await dead.close()


# -- generic ------------------------------------------------------------------------------------

def _generic_receiver_settings(**sources: GenericSourceSettings) -> Any:
    return webhook_settings(generic=sources)


def _source(number_format: str, country: str | None = None) -> GenericSourceSettings:
    return GenericSourceSettings.model_construct(secret=SecretStr(GENERIC_SECRET),
                                                 number_format=number_format,
                                                 default_country=country)


async def test_generic_source_declares_its_number_format(receiver_factory: ReceiverFactory,
                                                         pool: asyncpg.Pool) -> None:
    """Each source's numbers are read in the format it declares:
    1. "national" (DE): 030 901820 → +4930901820; "international_digits": 491701234567;
       "e164" (the default): +491701234567; a short code in every format stays a short code
    2. a source that sends what it did not declare (digits to an "e164" source) → stored as
       sent and flagged, never lost."""
    receiver = await receiver_factory(webhooks=_generic_receiver_settings(
        de=_source("national", "DE"), intl=_source("international_digits"),
        e164=_source("e164")))
    cases = [("de", "030 901820", "+4930901820"), ("intl", "491701234567", "+491701234567"),
             ("e164", "+491701234567", "+491701234567")]
    for i, (source, number, _) in enumerate(cases):
        body = (f'{{"id": "g{i}", "from": "{number}", "to": "60060", '
                f'"text": "hi"}}').encode()
        status, got = await receiver.post(f"/v1/inbound/generic/{source}", data=body,
                                          headers=generic_headers(body))
        assert status == 200, got
    rows = await pool.fetch("SELECT from_addr, to_addr, meta FROM inbound ORDER BY id")
    assert [(r["from_addr"], r["to_addr"]) for r in rows] == [
        (want, "60060") for _, _, want in cases]
    odd = b'{"id": "g9", "from": "491701234567", "to": "60060", "text": "hi"}'
    status, _ = await receiver.post("/v1/inbound/generic/e164", data=odd,
                                    headers=generic_headers(odd))
    assert status == 200
    row = await pool.fetchrow("SELECT * FROM inbound WHERE provider_message_id = 'g9'")
    assert row["from_addr"] == "491701234567" and "from" in row["meta"]["unparsed_numbers"]


def test_national_format_needs_a_country() -> None:
    """`number_format = "national"` without `default_country` is a configuration error."""
    with pytest.raises(ValidationError, match="default_country"):
        GenericSourceSettings.model_validate({"number_format": "national"},
                                             context={"env": {}})
    ok = GenericSourceSettings.model_validate(
        {"number_format": "international_digits"}, context={"env": {}})
    assert ok.number_format == "international_digits"


# -- the formats, with libphonenumber as the oracle ------------------------------------------

@pytest.mark.parametrize("digits", ["447700900001", "447700900000", "491701234567",
                                    "4930901820", "14155551234", "33612345678",
                                    "390612345678", "5511987654321", "819012345678"])
def test_international_digits_read_as_libphonenumber_reads_them(digits: str) -> None:
    """Vonage's format: the digits with a '+' in front are what libphonenumber formats as
    E.164 — for the documented examples and numbers of several numbering plans (Italian
    leading zero, Brazilian 9-digit mobiles); e164 with the '+' gives the same."""
    from smsgw.shared.domain.numbers import normalise_provider

    want = phonenumbers.format_number(phonenumbers.parse("+" + digits),
                                      phonenumbers.PhoneNumberFormat.E164)
    assert normalise_provider(digits, "international_digits") == want
    assert normalise_provider("+" + digits, "e164") == want
    assert normalise_provider("+" + digits, "international_digits") == want


def test_each_format_refuses_what_it_does_not_declare() -> None:
    """A national number is not international digits; bare digits are not E.164; a national
    number is read in the declared country; short codes and alphanumeric ids pass in all."""
    from smsgw.shared.domain.numbers import InvalidNumber, normalise_provider

    for value, fmt in (("07700900001", "international_digits"), ("447700900001", "e164"),
                       ("1234567", "international_digits")):
        with pytest.raises(InvalidNumber):
            normalise_provider(value, fmt)
    assert normalise_provider("030 901820", "national", default_country="DE") == "+4930901820"
    for fmt in ("e164", "international_digits", "national"):
        assert normalise_provider("60060", fmt) == "60060"
        assert normalise_provider("MyBrand", fmt) == "MyBrand"
