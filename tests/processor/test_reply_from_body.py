"""Kannel sms-service replies: a forward's HTTP answer becomes the reply MT (`reply_from_body`).

Real applications on 127.0.0.1 answer the forwarded MO; the processor's engine writes the
forward, the real callback delivery reads the answer, and the replies are checked in `outbound`
(and, in the last test, on the SMSC simulator's wire). Expected values come from Kannel 1.4.5's
rules as its source states them (gw/smsbox.c url_result_thread / send_message, gw/sms.c
sms_split, gwlib/http.c http_header_get_content_type), worked out by hand here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from smsgw.services.processor.callbacks import CallbackDelivery, Result, SecretResolver
from smsgw.services.processor.kannel_reply import Answer, build
from smsgw.services.processor.options import CallbackSettings
from smsgw.shared.queue import store

from .conftest import HASHER, SHORT, add_mo, drain, mo, set_rules
from .test_callbacks import LOOPBACK, run_until_final

SUBSCRIBER = "+447700900001"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class App:
    """The sms-service application: answers each request with `respond` (set per test)."""

    respond: Handler | None = None
    seen: list[dict[str, Any]] = field(default_factory=list)
    server: TestServer | None = None

    def url(self, path: str = "/svc") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))


@pytest.fixture
async def app() -> AsyncIterator[App]:
    state = App()

    async def svc(request: web.Request) -> web.StreamResponse:
        state.seen.append({"query": dict(request.query), "headers": dict(request.headers),
                           "raw_query": request.rel_url.raw_query_string})
        assert state.respond is not None
        return await state.respond(request)

    web_app = web.Application()
    web_app.router.add_route("*", "/svc", svc)
    state.server = TestServer(web_app, host="127.0.0.1", port=0)
    await state.server.start_server()
    try:
        yield state
    finally:
        await state.server.close()


def answer(body: bytes | str = b"", *, content_type: str = "text/plain; charset=utf-8",
           status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    """A handler answering `body` with `content_type` and `headers`."""
    raw = body.encode() if isinstance(body, str) else body

    async def respond(_request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=raw,
                            headers={**(headers or {}), "Content-Type": content_type})

    return respond


def delivery(pool: asyncpg.Pool, *, timeout_s: float = 2.0, max_attempts: int = 5,
             connectors: tuple[str, ...] = ("smsc-a",), owner: str = "test-proc",
             ) -> CallbackDelivery:
    s = CallbackSettings(max_attempts=max_attempts, retry_base_s=0.02, retry_max_s=0.05,
                         timeout_s=timeout_s, lease_s=timeout_s + 5, per_host=2,
                         concurrency=8)
    return CallbackDelivery(pool, s, owner=owner, allowed_networks=LOOPBACK,
                            secrets=SecretResolver({}), poll_s=0.05, hasher=HASHER,
                            connectors=connectors)


async def service(pool: asyncpg.Pool, app: App, reply: Any = True, *,
                  json_url: bool = False) -> None:
    """One rule, Kannel style: keyword ASK forwarded to the app, its answer is the reply."""
    target = ({"url": app.url()} if json_url
              else {"get_url": app.url() + "?from=%p&to=%P&text=%a"})
    await set_rules(pool, [{"name": "ask-service", "match": {"keyword": ["ASK"]},
                            "actions": [{"type": "forward", **target,
                                         "reply_from_body": reply}]}])


async def ask(pool: asyncpg.Pool, make_engine: Any, app: App, respond: Handler,
              text: str = "ASK weather", **kw: Any) -> list[asyncpg.Record]:
    """Send one MO through the engine and the delivery; return the reply rows (by id)."""
    app.respond = respond
    await add_mo(pool, [mo(SUBSCRIBER, text)])
    await drain(make_engine())
    await run_until_final(pool, delivery(pool, **kw))
    return await replies(pool)


async def replies(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM outbound ORDER BY id")


async def reply_events(pool: asyncpg.Pool) -> list[tuple[str, Any]]:
    rows = await pool.fetch("SELECT event, detail FROM events WHERE message_table = 'callbacks'"
                            " ORDER BY id")
    return [(r["event"], r["detail"]) for r in rows]


# --- bodies -----------------------------------------------------------------------------------

async def test_plain_body_is_the_reply_from_the_short_code(pool, app, make_engine) -> None:
    """1. get-url service; the app answers 200 text/plain "Sunny, 21 C".
    2. One reply MT: from the short code the MO was sent to, to the MO's sender, the body as
       text, source 'rule' with the rule's id and the MO's id; the callback is done; the app got
       the MO's fields in the query (the get-url escapes)."""
    await service(pool, app)
    [row] = await ask(pool, make_engine, app, answer("Sunny, 21 C"))
    inbound_id = await pool.fetchval("SELECT id FROM inbound")
    rule_id = await pool.fetchval("SELECT id FROM rules")
    assert (row["from_addr"], row["to_addr"], row["body"]) == (SHORT, SUBSCRIBER, "Sunny, 21 C")
    assert (row["source"], row["rule_id"], row["inbound_id"]) == ("rule", rule_id, inbound_id)
    assert row["category"] == "transactional" and row["to_hash"] == HASHER(SUBSCRIBER)
    assert await pool.fetchval("SELECT status FROM callbacks") == "done"
    assert app.seen[0]["query"] == {"from": SUBSCRIBER, "to": SHORT, "text": "ASK weather"}
    assert app.seen[0]["headers"]["Accept-Encoding"] == "identity"


async def test_get_url_is_sent_byte_for_byte(pool, app, make_engine) -> None:
    """The rendered get-url reaches the application as Kannel's octstr_url_encode wrote it:
    `?` and `@` stay %3F and %40 (an HTTP client would normalise them), a space is '+'."""
    await service(pool, app)
    await ask(pool, make_engine, app, answer("ok"), text="ASK a?b @c")
    [seen] = app.seen
    assert seen["raw_query"].endswith("&text=ASK+a%3Fb+%40c")


async def test_json_url_forward_replies_too(pool, app, make_engine) -> None:
    """The JSON `url` forward (POST) takes its reply from the body the same way."""
    await service(pool, app, json_url=True)
    [row] = await ask(pool, make_engine, app, answer("Got it"))
    assert (row["to_addr"], row["body"]) == (SUBSCRIBER, "Got it")


@pytest.mark.parametrize(("content_type", "body", "want"), [
    # the charset of the Content-Type decodes the body
    ("text/plain; charset=ISO-8859-1", "Grüße aus Köln".encode("latin-1"), "Grüße aus Köln"),
    ("text/plain; charset=utf-8", "Grüße aus Köln €".encode(), "Grüße aus Köln €"),
    ('text/plain; charset="UTF-8"', "Привет".encode(), "Привет"),
    # text/* without a charset is ISO-8859-1 (RFC 2616 3.7.1, as Kannel reads it): UTF-8
    # bytes come out as Latin-1 characters, as they do in Kannel
    ("text/plain", "Grüße".encode(), "Grüße".encode().decode("latin-1")),
    # HTML: tags, comments and entities go, blanks are squeezed (Kannel's html_to_sms)
    ("text/html; charset=utf-8", b"<html><!-- x --><body><p>Hi &amp; \n welcome</p></body>",
     "Hi & welcome"),
    # a body that does not decode in its charset: Kannel's reply_couldnotrepresent text
    ("text/plain; charset=utf-8", b"\xff\xfe bad", "Result could not be represented as an SMS"
                                                   " message."),
    # a type Kannel cannot turn into text: the same text
    ("image/png", b"\x89PNG", "Result could not be represented as an SMS message."),
])
async def test_body_charset_and_type(pool, app, make_engine, content_type, body, want) -> None:
    """Each Content-Type / charset gives the reply text Kannel's url_result_thread gives."""
    await service(pool, app)
    [row] = await ask(pool, make_engine, app, answer(body, content_type=content_type))
    assert row["body"] == want


async def test_empty_body_sends_kannels_empty_text(pool, app, make_engine) -> None:
    """An empty 200 without omit_empty: Kannel's reply-emptymessage text is sent."""
    await service(pool, app)
    [row] = await ask(pool, make_engine, app, answer(""))
    assert row["body"] == "<Empty reply from service provider>"


async def test_empty_body_with_omit_empty_sends_nothing(pool, app, make_engine) -> None:
    """1. omit_empty; the app answers an empty body (then, as a positive control, a text).
    2. No reply for the empty one, the callback done, an event `reply_omitted` saying why;
    the second MO gets its reply (so the first would have been seen)."""
    await service(pool, app, {"omit_empty": True})
    assert await ask(pool, make_engine, app, answer("")) == []
    assert await pool.fetchval("SELECT status FROM callbacks") == "done"
    assert await reply_events(pool) == [
        ("reply_omitted", {"outcome": "omitted", "parts": 0,
                           "reason": "empty body (omit_empty)"})]
    [row] = await ask(pool, make_engine, app, answer("now something"))
    assert row["body"] == "now something"


async def test_max_messages_zero_never_replies(pool, app, make_engine) -> None:
    """max_messages = 0: the MO is forwarded, nothing is sent back (Kannel: "denied")."""
    await service(pool, app, {"max_messages": 0})
    assert await ask(pool, make_engine, app, answer("ignored")) == []
    assert len(app.seen) == 1
    assert (await reply_events(pool))[0][1]["reason"] == "max_messages is 0"


async def test_long_body_split_into_max_messages(pool, app, make_engine) -> None:
    """1. max_messages 3, split_suffix "+", no concatenation; a 500-character GSM body.
    2. Three independent MTs: 159 characters + "+", 159 + "+", then the last 160 (the rest is
       dropped: 500 > 159 + 159 + 160), as sms_split cuts them."""
    await service(pool, app, {"max_messages": 3, "split_suffix": "+"})
    body = "".join(chr(ord("a") + i % 26) for i in range(500))
    rows = await ask(pool, make_engine, app, answer(body))
    assert [r["body"] for r in rows] == [body[:159] + "+", body[159:318] + "+", body[318:478]]
    assert {(r["from_addr"], r["to_addr"]) for r in rows} == {(SHORT, SUBSCRIBER)}


async def test_long_body_concatenated_within_max_messages(pool, app, make_engine) -> None:
    """max_messages 2 with concatenation: ONE MT of at most 2 concatenated parts (2 x 153
    septets; header and footer in each part), the rest dropped."""
    await service(pool, app, {"max_messages": 2, "concatenation": True,
                              "header": "(", "footer": "]"})
    body = "x" * 400
    [row] = await ask(pool, make_engine, app, answer(body))
    # "]" is a GSM extension character: two septets, so 153 - 1 - 2 = 150 for the text
    assert row["body"] == "(" + "x" * 150 + "]" + "(" + "x" * 150 + "]"


async def test_split_at_split_chars_with_header_and_footer(pool, app, make_engine) -> None:
    """split_chars ".": each part ends after the last "." that fits; header and footer in
    each of the independent parts (Kannel's extract_msgdata_part)."""
    await service(pool, app, {"max_messages": 5, "split_chars": ".", "header": "Q: "})
    sentence = "The quick brown fox jumps over the lazy dog. "  # 45 characters
    body = sentence * 5  # 225
    rows = await ask(pool, make_engine, app, answer(body))
    # 157 characters of room: the cut goes after the third sentence's '.' (the space after it
    # starts the next part); the remaining 91 characters fit the second part
    assert [r["body"] for r in rows] == ["Q: " + (sentence * 3)[:-1], "Q: " + " " + sentence * 2]


# --- X-Kannel headers ----------------------------------------------------------------------

KANNEL_HEADERS = {
    "X-Kannel-From": "Weather", "X-Kannel-To": "447700900777", "X-Kannel-SMSC": "smsc-a",
    "X-Kannel-Coding": "2", "X-Kannel-DLR-Mask": "3",
    "X-Kannel-DLR-URL": "http://127.0.0.1:9/dlr?type=%d", "X-Kannel-Validity": "60",
    "X-Kannel-Deferred": "10", "X-Kannel-Priority": "2", "X-Kannel-Account": "acme",
}


async def test_x_kannel_headers_set_the_reply(pool, app, make_engine) -> None:
    """With accept_x_kannel_headers: sender, recipient (bare digits read as international, as
    Kannel-era applications write them), connector, UCS-2, dlr mask and URL, validity from now
    and deferral in minutes, priority and the account set the reply MT."""
    await service(pool, app, {"accept_x_kannel_headers": True})
    [row] = await ask(pool, make_engine, app, answer("Forecast", headers=KANNEL_HEADERS))
    assert (row["from_addr"], row["to_addr"]) == ("Weather", "+447700900777")
    assert (row["route_hint"], row["encoding"], row["priority"]) == ("smsc-a", "ucs2", 2)
    assert (row["callback_url"], row["dlr_mask"]) == ("http://127.0.0.1:9/dlr?type=%d", 3)
    assert "receipt" not in row["smpp"]  # a mask with handset bits: the SMSC is asked
    assert row["meta"]["account"] == "acme" and row["meta"]["callback_style"] == "kannel"
    assert row["send_at"] - row["created_at"] == pytest.approx(timedelta(minutes=10),
                                                               abs=timedelta(seconds=5))
    assert row["valid_until"] - row["created_at"] == pytest.approx(timedelta(minutes=60),
                                                                   abs=timedelta(seconds=5))
    assert await reply_events(pool) == []


async def test_x_kannel_headers_denied_without_accept(pool, app, make_engine) -> None:
    """Without accept_x_kannel_headers the headers change nothing (Kannel: "Tried to change
    …, denied"): the reply goes as usual and an event names the denied headers."""
    await service(pool, app)
    [row] = await ask(pool, make_engine, app, answer("Forecast", headers=KANNEL_HEADERS))
    assert (row["from_addr"], row["to_addr"], row["encoding"]) == (SHORT, SUBSCRIBER, None)
    assert row["callback_url"] is None and row["route_hint"] is None
    [(event, detail)] = await reply_events(pool)
    assert event == "reply_queued" and detail["denied"] == sorted(KANNEL_HEADERS)


async def test_binary_body_udh_and_smpp_fields(pool, app, make_engine) -> None:
    """1. The app answers application/octet-stream (8-bit data, Kannel's default for it) with a
    UDH (hex), flash (MClass 0), a PID, an SMPP priority, a reply path, a service type (BInfo)
    and a TLV in Kannel meta-data. 2. One binary MT: `payload` holds the octets as sent (no
    charset conversion), `body` is NULL, the UDH and the SMPP fields are stored as sendsms
    stores the same parameters."""
    await service(pool, app, {"accept_x_kannel_headers": True})
    data = bytes(range(0x80, 0x90))
    [row] = await ask(pool, make_engine, app, answer(data, content_type="application/octet-stream",
                                                     headers={
        "X-Kannel-UDH": "060504158a0000", "X-Kannel-MClass": "0", "X-Kannel-PID": "65",
        "X-Kannel-Priority": "2", "X-Kannel-RPI": "1", "X-Kannel-BInfo": "WAP",
        "X-Kannel-Meta-Data": "?smpp?user_message_reference=513"}))
    assert (row["body"], bytes(row["payload"]), bytes(row["udh"])) == (
        None, data, bytes.fromhex("060504158a0000"))
    # no dlr-mask: no receipt asked of the SMSC, as Kannel's msg_to_pdu
    assert row["smpp"] == {"mclass": 0, "pid": 65, "priority_flag": 2, "rpi": 1,
                           "service_type": "WAP", "tlvs": {"0x0204": "0201"}, "receipt": False}
    assert (row["priority"], row["meta"]["coding"], row["meta"]["binfo"]) == (2, 1, "WAP")


async def test_text_with_a_udh_url_encoded(pool, app, make_engine) -> None:
    """A text reply with a UDH given URL-encoded (Kannel reads X-Kannel-UDH as hex, else as
    URL-encoded octets): the text stays text, the UDH is kept."""
    await service(pool, app, {"accept_x_kannel_headers": True})
    [row] = await ask(pool, make_engine, app, answer(
        "port addressed", headers={"X-Kannel-UDH": "%06%05%04%15%8a%00%00"}))
    assert (row["body"], bytes(row["udh"])) == ("port addressed",
                                                bytes.fromhex("060504158a0000"))


XML_REPLY = """<?xml version="1.0" encoding="ISO-8859-1"?>
<message><submit>
  <oa><number>Shop</number></oa>
  <dcs><mclass>1</mclass><coding>2</coding></dcs>
  <statusrequest><dlr-mask>3</dlr-mask><dlr-url>http://127.0.0.1:9/d?t=%d</dlr-url></statusrequest>
  <vp><delay>30</delay></vp><pid>65.0</pid>
  <ud>Gr%FC%DFe+aus+Köln</ud>
</submit></message>""".encode("latin-1")


async def test_kannel_xml_reply(pool, app, make_engine) -> None:
    """text/xml is Kannel's XML reply (get_x_kannel_from_xml): the sender, class, coding, dlr
    settings, validity and PID come from the document (numbers read as XPath reads them,
    65.0 is 65), `ud` is URL-decoded in the document's charset (octets and literal text
    alike); X-Kannel headers of the HTTP answer are not read for it."""
    await service(pool, app, {"accept_x_kannel_headers": True})
    [row] = await ask(pool, make_engine, app, answer(
        XML_REPLY, content_type="text/xml", headers={"X-Kannel-From": "Ignored"}))
    # %FC%DF are ISO-8859-1 octets, as the document's literal ö is
    assert row["body"] == "Grüße aus Köln"
    assert (row["from_addr"], row["encoding"], row["dlr_mask"]) == ("Shop", "ucs2", 3)
    assert row["callback_url"] == "http://127.0.0.1:9/d?t=%d"
    assert row["smpp"] == {"mclass": 1, "pid": 65}
    assert row["valid_until"] - row["created_at"] == pytest.approx(timedelta(minutes=30),
                                                                   abs=timedelta(seconds=5))


@pytest.mark.parametrize("doc", [
    b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x "boom">]><message><submit><ud>&x;</ud>'
    b'</submit></message>',
    b"<message><submit><ud>unclosed</submit></message>",
    b"<other><submit><ud>wrong root</ud></submit></other>",
])
async def test_xml_that_is_no_kannel_reply_is_unrepresentable(pool, app, make_engine,
                                                               doc) -> None:
    """A DTD (no entity is ever expanded), broken XML or another document: Kannel's
    "could not be represented" text, as for any body it cannot read."""
    await service(pool, app)
    [row] = await ask(pool, make_engine, app, answer(doc, content_type="text/xml"))
    assert row["body"] == "Result could not be represented as an SMS message."


@pytest.mark.parametrize(("headers", "reason"), [
    ({"X-Kannel-SMSC": "nowhere"}, "X-Kannel-SMSC: 'nowhere' is not a configured connector"),
    ({"X-Kannel-UDH": "0500"}, "X-Kannel-UDH: its length octet says 5 octets follow, 1 do"),
    ({"X-Kannel-Coding": "1", "X-Kannel-MWI": "1"}, "X-Kannel-MWI: a message waiting"),
    ({"X-Kannel-BInfo": "billing-id"}, "X-Kannel-BInfo: is the SMPP service_type"),
    ({"X-Kannel-Meta-Data": "?smpp?no_such_tlv=1"}, "X-Kannel-Meta-Data: unknown TLV"),
    ({"X-Kannel-Validity": "5", "X-Kannel-Deferred": "10"}, "X-Kannel-Validity: ends before"),
    ({"X-Kannel-To": "+44 7700 FLOWERS"}, "X-Kannel-To: a recipient must be a phone number"),
    ({"X-Kannel-Coding": "7"}, "X-Kannel-Coding: 7 is outside 0-2"),
    ({"X-Kannel-Validity": "soon"}, "X-Kannel-Validity: 'soon' is not an integer"),
    ({"X-Kannel-Compress": "1"}, "X-Kannel-Compress: compressed SMS"),
])
async def test_headers_that_cannot_be_honoured_refuse_the_reply(
        pool, app, make_engine, headers, reason) -> None:
    """A header smsgw cannot honour sends no reply at all (rather than a different one): the
    callback is done (the application got the MO), an event `reply_refused` names it."""
    await service(pool, app, {"accept_x_kannel_headers": True})
    assert await ask(pool, make_engine, app, answer("x", headers=headers)) == []
    [(event, detail)] = await reply_events(pool)
    assert event == "reply_refused" and detail["reason"].startswith(reason), detail
    assert await pool.fetchval("SELECT status FROM callbacks") == "done"


# --- size limit and exactly one reply --------------------------------------------------------

async def test_too_large_body_fails_the_forward(pool, app, make_engine) -> None:
    """max_body_bytes 100; the app answers 101 bytes (then, in a second MO, exactly 100):
    the first forward ends dead at once with the reason and no reply; the second replies."""
    await service(pool, app, {"max_body_bytes": 100, "max_messages": 1})
    assert await ask(pool, make_engine, app, answer("y" * 101)) == []
    row = await pool.fetchrow("SELECT status, attempts, last_error FROM callbacks")
    assert (row["status"], row["last_error"]) == ("dead", "reply body larger than 100 bytes")
    assert len(app.seen) == 1
    [reply] = await ask(pool, make_engine, app, answer("z" * 100))
    assert reply["body"] == "z" * 100


async def test_chunked_body_over_the_limit_fails_too(pool, app, make_engine) -> None:
    """A streamed (chunked, no Content-Length) body over the limit is cut off while reading."""
    await service(pool, app, {"max_body_bytes": 1000})

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(50):
            await resp.write(b"w" * 100)
        await resp.write_eof()
        return resp

    assert await ask(pool, make_engine, app, stream) == []
    assert await pool.fetchval("SELECT last_error FROM callbacks") == (
        "reply body larger than 1000 bytes")


async def test_retried_forward_replies_exactly_once(pool, app, make_engine) -> None:
    """1. The app gets the first request and answers only after the delivery's timeout
    (0.5 s); the retry is answered at once. 2. The app saw the MO twice, the callback is done
    after one failed attempt, and exactly one reply exists: the retry's."""
    await service(pool, app)
    first_seen = asyncio.Event()

    async def respond(_request: web.Request) -> web.StreamResponse:
        if not first_seen.is_set():
            first_seen.set()
            await asyncio.sleep(1.5)
            return web.Response(text="first answer")
        return web.Response(text="second answer")

    rows = await ask(pool, make_engine, app, respond, timeout_s=0.5)
    assert [r["body"] for r in rows] == ["second answer"]
    assert len(app.seen) == 2
    row = await pool.fetchrow("SELECT status, attempts FROM callbacks")
    assert (row["status"], row["attempts"]) == ("done", 1)


async def _leased_forward(pool: asyncpg.Pool, app: App, make_engine: Any, owner: str) -> int:
    await service(pool, app)
    await add_mo(pool, [mo(SUBSCRIBER, "ASK once")])
    await drain(make_engine())
    [row] = await store.claim_leased(pool, "callbacks", limit=1, owner=owner, lease_s=10)
    return int(row.id)


def _answered(cid: int, reply: dict[str, Any], inbound_id: int) -> Result:
    plan = build(reply, Answer(200, [("Content-Type", "text/plain")], b"only once"),
                 callback_id=cid, inbound_id=inbound_id, now=datetime.now(UTC))
    return Result(cid, "mo", "done", reply=plan)


async def test_an_answer_written_back_twice_replies_once(pool, app, make_engine) -> None:
    """1. A leased forward is answered; its result is written back twice (a write-back whose
    commit acknowledgement was lost is re-run). 2. One reply. 3. Even with the row put back in
    flight under our lease (a re-run of a finished callback), the dedupe key
    `reply`/`callback:<id>:0` keeps it at one reply."""
    cid = await _leased_forward(pool, app, make_engine, "test-proc")
    snap = await pool.fetchval("SELECT reply FROM callbacks")
    result = _answered(cid, snap, await pool.fetchval("SELECT id FROM inbound"))
    d = delivery(pool)
    await d.write_back([result])
    await d.write_back([result])
    assert [r["body"] for r in await replies(pool)] == ["only once"]
    await pool.execute("UPDATE callbacks SET status = 'sending', lease_owner = 'test-proc'")
    await d.write_back([result])
    assert await pool.fetchval("SELECT status FROM callbacks") == "done"  # the ack went through
    assert len(await replies(pool)) == 1
    assert await pool.fetchval("SELECT count(*) FROM dedupe_keys WHERE scope = 'reply' "
                               "AND key = $1", f"callback:{cid}:0") == 1


async def test_late_answer_after_takeover_writes_no_reply(pool, app, make_engine) -> None:
    """1. Instance A leases a forward; its lease runs out and B reclaims the row. 2. B's
    answer is written back: one reply. 3. A's late answer to the same MO changes nothing."""
    cid = await _leased_forward(pool, app, make_engine, "proc-a")
    await pool.execute("UPDATE callbacks SET lease_until = now() - interval '1 second'")
    [taken] = await store.claim_leased(pool, "callbacks", limit=1, owner="proc-b", lease_s=10)
    assert taken.id == cid and taken.reclaimed
    snap = await pool.fetchval("SELECT reply FROM callbacks")
    inbound_id = await pool.fetchval("SELECT id FROM inbound")
    await delivery(pool, owner="proc-b").write_back([_answered(cid, snap, inbound_id)])
    await delivery(pool, owner="proc-a").write_back([_answered(cid, snap, inbound_id)])
    assert len(await replies(pool)) == 1


# --- on the wire ------------------------------------------------------------------------------

async def test_replies_reach_the_smsc_as_kannel_would_send_them(
        db_url, pool, app, make_engine) -> None:
    """End to end: MO → rule → GET to the app → its body → reply MT → sender → SMSC simulator.
    1. max_messages 2 with concatenation; the app answers 200 GSM characters: one MT, two
       concatenated submit_sm (8-bit reference UDH 05 00 03 ref 02 n) from the short code to
       the subscriber (no '+' on the wire), 153 + 47 characters.
    2. A second MO; the app answers with X-Kannel-Coding 2 and X-Kannel-From: one UCS-2
       submit_sm (data_coding 8) from the alphanumeric sender.
    3. A third; the app answers 8-bit data with a UDH, flash and a PID: one submit_sm with
       UDHI, data_coding 0xF4 (GSM 03.38: 8-bit data, class 0), protocol_id 65, and the UDH
       followed by the octets as short_message."""
    from smsgw.services.smsc_sim.server import SimConfig, Simulator

    from ..sender.conftest import connector, running, wait_until

    await service(pool, app, {"max_messages": 2, "concatenation": True,
                              "accept_x_kannel_headers": True})
    long_text = "".join(chr(ord("a") + i % 26) for i in range(200))
    await ask(pool, make_engine, app, answer(long_text))
    await ask(pool, make_engine, app, answer("Grüße", headers={"X-Kannel-Coding": "2",
                                                               "X-Kannel-From": "Weather"}))
    data = b"\x01\x02\xfe\xff"
    await ask(pool, make_engine, app, answer(data, content_type="application/octet-stream",
                                             headers={"X-Kannel-UDH": "060504158a0000",
                                                      "X-Kannel-MClass": "0",
                                                      "X-Kannel-PID": "65"}))
    async with Simulator(SimConfig()) as sim:
        async with running(db_url, pool, [connector("smsc-a", sim.port)]) as stack:
            await stack.wait_bound()
            await wait_until(lambda: len(sim.submits) >= 4)
        pdus = [s.pdu for s in sim.submits]
    assert len(pdus) == 4
    concat, ucs2, binary = pdus[:2], pdus[2], pdus[3]
    assert (binary.esm_class & 0x40, binary.data_coding, binary.protocol_id) == (0x40, 0xF4, 65)
    assert binary.short_message == bytes.fromhex("060504158a0000") + data
    for no, pdu in enumerate(concat, 1):
        assert (pdu.source_addr, pdu.destination_addr) == (SHORT, SUBSCRIBER.lstrip("+"))
        assert pdu.esm_class & 0x40 and pdu.data_coding == 0
        assert pdu.registered_delivery == 0  # no dlr-mask: none asked (Kannel's msg_to_pdu)
        udh = pdu.short_message[:6]
        assert (udh[:3], udh[4:]) == (bytes([5, 0, 3]), bytes([2, no]))
    # GSM 03.38 puts a-z where ASCII does (one octet per character, unpacked)
    assert b"".join(p.short_message[6:] for p in concat).decode("ascii") == long_text
    assert (ucs2.source_addr, ucs2.data_coding) == ("Weather", 8)
    assert ucs2.short_message.decode("utf-16-be") == "Grüße"
