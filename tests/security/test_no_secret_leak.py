"""Finding 1: no client input makes the receiver answer 500, and no secret reaches the logs.

A real `smsgw receiver` process with every secret configured (server secret, Twilio token,
Vonage secret, a generic source's secret, an account's API key used as the sendsms password)
gets each bad input over a raw socket: bytes that are not UTF-8 in the headers that carry
credentials, a charset that is not a character set, NUL in every sendsms parameter and deep in
a generic webhook's JSON, a JSON value Postgres cannot store, and requests aiohttp's own parser
refuses with a credential in the refused line. Each answer is a 4xx; afterwards the whole log is
searched for every secret, raw and hex/base64/URL-encoded.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import logging
import sys
import time
from collections.abc import Iterator
from urllib.parse import quote

import asyncpg
import orjson
import pytest
import structlog

from smsgw.services.admin.accounts import create_account
from smsgw.shared.core.logging import configure_logging, get_logger

SERVER_SECRET = "sec-edge+server/secret=7f3a9c"
TWILIO_TOKEN = "sec-edge+twilio/token=1b2c3d4e"
VONAGE_SECRET = "sec-edge+vonage/secret=9z8y"
GENERIC_SECRET = "sec-edge+generic/secret=5q6w"


def encodings(secret: str) -> set[bytes]:
    """The secret raw and in the encodings a leak would likely take."""
    raw = secret.encode()
    return {raw, raw.hex().encode(), raw.hex().upper().encode(), base64.b64encode(raw),
            base64.b64encode(raw).rstrip(b"="), base64.urlsafe_b64encode(raw).rstrip(b"="),
            quote(secret, safe="").encode(), quote(secret).encode(), repr(raw).encode()}


def leaks(log: bytes, secrets: dict[str, str]) -> list[str]:
    """`name: encoding` for every secret found in the log."""
    return [f"{name}: {enc!r}" for name, secret in secrets.items()
            for enc in sorted(encodings(secret)) if enc in log]


def http(method: str, path: str, headers: dict[str, bytes] | None = None,
         body: bytes = b"") -> bytes:
    """One raw HTTP/1.1 request (bytes as given, nothing re-encoded)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1",
             b"Connection: close", f"Content-Length: {len(body)}".encode()]
    lines += [name.encode() + b": " + value for name, value in (headers or {}).items()]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def send(port: int, request: bytes) -> int:
    """Send a raw request, read the answer to the end; its status code."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1."), answer[:200]
    return int(answer.split(b" ", 2)[1])


def generic_signed(body: bytes) -> dict[str, bytes]:
    """Headers of a validly signed generic webhook."""
    ts = str(int(time.time()))
    mac = hmac.new(GENERIC_SECRET.encode(), ts.encode() + b"." + body, hashlib.sha256)
    return {"X-Smsgw-Timestamp": ts.encode(),
            "X-Smsgw-Signature": b"sha256=" + mac.hexdigest().encode(),
            "Content-Type": b"application/json"}


def cases(user: str, key: str) -> list[tuple[str, bytes, set[int]]]:
    """(name, raw request, acceptable statuses) for every bad input."""
    msg = orjson.dumps({"to": "+447700900123", "from": "Brand", "text": "hi"})
    form = b"MessageSid=SM1&From=%2B447700900111&To=%2B447700900000&Body=hi"
    cred = f"username={quote(user)}&password={quote(key)}&from=Brand&to=%2B447700900123"
    nested = orjson.dumps({"id": "m-nul", "from": "+447700900111", "to": "+447700900000",
                           "text": "hi", "meta": {"a": {"b": "x\x00y", "\x00k": ["\x00"]}}})
    huge = b'{"id": "m-big", "from": "+447700900111", "to": "+447700900000", "text": "hi",' \
           b' "meta": {"n": 123456789012345678901234567890}}'
    out: list[tuple[str, bytes, set[int]]] = [
        ("api: Authorization not UTF-8",
         http("POST", "/v1/messages", {"Authorization": b"Bearer \xff",
                                       "Content-Type": b"application/json"}, msg), {400, 401}),
        ("api: real key followed by a byte that is not UTF-8",
         http("POST", "/v1/messages", {"Authorization": b"Bearer " + key.encode() + b"\xff",
                                       "Content-Type": b"application/json"}, msg), {400, 401}),
        ("api: another header not UTF-8",
         http("POST", "/v1/messages", {"Authorization": b"Bearer " + key.encode(),
                                       "X-Forwarded-Host": b"\xfe\xff"}, msg), {400}),
        ("twilio: X-Twilio-Signature not UTF-8",
         http("POST", "/v1/inbound/twilio",
              {"X-Twilio-Signature": b"\xff\xfe",
               "Content-Type": b"application/x-www-form-urlencoded"}, form), {400, 401}),
        ("generic: timestamp not UTF-8",
         http("POST", "/v1/inbound/generic/acme",
              {"X-Smsgw-Timestamp": b"\xff", "X-Smsgw-Signature": b"sha256=00",
               "Content-Type": b"application/json"}, b"{}"), {400, 401}),
        ("generic: signature not UTF-8",
         http("POST", "/v1/inbound/generic/acme",
              {"X-Smsgw-Timestamp": str(int(time.time())).encode(),
               "X-Smsgw-Signature": b"sha256=\xff", "Content-Type": b"application/json"},
              b"{}"), {400, 401}),
        ("generic: source header not UTF-8",
         http("POST", "/v1/inbound/generic", {"X-Smsgw-Source": b"\xff"}, b"{}"),
         {400, 404}),
        ("generic: NUL nested in meta", http("POST", "/v1/inbound/generic/acme",
                                             generic_signed(nested), nested), {200, 422}),
        ("generic: integer JSON cannot store", http("POST", "/v1/inbound/generic/acme",
                                                    generic_signed(huge), huge), {422}),
        ("sendsms: charset punycode",
         http("GET", f"/cgi-bin/sendsms?{cred}&charset=punycode&text=a..b"), {400}),
        ("sendsms: charset idna", http("GET", f"/cgi-bin/sendsms?{cred}&charset=idna&text=a..b"),
         {400}),
        ("sendsms: charset base64 (not text)",
         http("GET", f"/cgi-bin/sendsms?{cred}&charset=base64&text=aGk%3D"), {400}),
        ("sendsms: utf-7 lone surrogate",
         http("GET", f"/cgi-bin/sendsms?{cred}&charset=utf-7&text=%2B2AA-"), {400}),
        ("sendsms: POST NUL in text",
         http("POST", "/cgi-bin/sendsms",
              {"Content-Type": b"application/x-www-form-urlencoded"},
              f"{cred}&text=a%00b".encode()), {422}),
        ("sendsms: NUL in utf-16 text",
         http("GET", f"/cgi-bin/sendsms?{cred}&coding=2&text=%00h%00%00"), {422}),
    ]
    for name, value in [("text", "a%00b"), ("smsc", "a%00b"), ("dlr-url", "http://x.test/%00"),
                        ("from", "Br%00nd"), ("to", "%2B4477%00"), ("charset", "utf%008"),
                        ("priority", "1%00"), ("dlr-mask", "%00")]:
        params = f"{cred}&text=hi".replace(f"{name}=", "dropped=") + f"&{name}={value}"
        out.append((f"sendsms: NUL in {name}", http("GET", f"/cgi-bin/sendsms?{params}"),
                    {422}))
    for name in ("username", "password"):
        params = cred.replace(f"{name}=", f"{name}=%00")
        out.append((f"sendsms: NUL in {name}",
                    http("GET", f"/cgi-bin/sendsms?{params}&text=hi"), {422}))
    # aiohttp's parser refuses these (400) and used to log the refused line, credential and all
    out.append(("parser: control byte in a sendsms query with the password",
                http("GET", f"/cgi-bin/sendsms?{cred}&text=\x01hi"), {400}))
    out.append(("parser: control byte after a bearer key",
                http("POST", "/v1/messages", {"Authorization": b"Bearer " + key.encode()
                                              + b"\x01"}, msg), {400}))
    return out


async def test_bad_input_gets_4xx_and_no_secret_is_logged(
        sec_edge_receiver: object, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        _, key = await create_account(conn, SERVER_SECRET.encode(), "sec-edge-acct")
    start = sec_edge_receiver
    daemon = await start({  # type: ignore[operator]
        "SMSGW_RECEIVER__LOG_LEVEL": "debug",
        "SMSGW_SECURITY__SERVER_SECRET_ENV": "SEC_EDGE_SERVER_SECRET",
        "SEC_EDGE_SERVER_SECRET": SERVER_SECRET,
        "SMSGW_WEBHOOKS__PUBLIC_BASE_URL": "https://sms.example.com",
        "SMSGW_WEBHOOKS__TWILIO__AUTH_TOKEN_ENV": "SEC_EDGE_TWILIO",
        "SEC_EDGE_TWILIO": TWILIO_TOKEN,
        "SMSGW_WEBHOOKS__VONAGE__SIGNATURE_SECRET_ENV": "SEC_EDGE_VONAGE",
        "SEC_EDGE_VONAGE": VONAGE_SECRET,
        "SMSGW_WEBHOOKS__GENERIC": json.dumps({"acme": {"secret_env": "SEC_EDGE_GENERIC"}}),
        "SEC_EDGE_GENERIC": GENERIC_SECRET,
    })
    wrong: list[str] = []
    for name, request, allowed in cases("sec-edge-acct", key):
        status = await send(daemon.port, request)
        if status not in allowed:
            wrong.append(f"{name}: {status} (expected one of {sorted(allowed)})")
    assert await daemon.stop() == 0
    log = daemon.log
    secrets = {"server secret": SERVER_SECRET, "twilio token": TWILIO_TOKEN,
               "vonage secret": VONAGE_SECRET, "generic secret": GENERIC_SECRET,
               "sendsms password (API key)": key}
    assert not wrong, "\n".join(wrong)
    # Nothing above was stored: every sendsms request was refused.
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0
    assert not leaks(log, secrets), leaks(log, secrets)
    assert b'"request_failed"' not in log
    assert b'"locals"' not in log


# -- the log configuration itself ---------------------------------------------------------------

@pytest.fixture
def sec_edge_logging() -> Iterator[io.StringIO]:
    """The project's log configuration writing to a buffer; the previous set-up restored."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    saved, sys.stdout = sys.stdout, out
    try:
        configure_logging("debug", "receiver", 1)
    finally:
        sys.stdout = saved
    yield out
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    structlog.reset_defaults()


def _fail_with_secret(secret: str) -> None:
    key_material = secret.encode()  # a local holding the secret, as hash_key had
    raise ValueError(f"boom ({len(key_material)} bytes)")


def test_logged_exception_has_no_locals(sec_edge_logging: io.StringIO) -> None:
    log = get_logger("smsgw.test")
    try:
        _fail_with_secret(SERVER_SECRET)
    except ValueError:
        log.exception("request_failed")
    try:
        _fail_with_secret(TWILIO_TOKEN)
    except ValueError:
        logging.getLogger("aiohttp.server").exception("Error handling request")
    text = sec_edge_logging.getvalue()
    events = [json.loads(line) for line in text.splitlines()]
    assert len(events) == 2
    for event in events:
        frames = event["exception"][0]["frames"]
        assert any(f["name"] == "_fail_with_secret" for f in frames)
        assert all("locals" not in f for f in frames)
    assert not leaks(text.encode(), {"server": SERVER_SECRET, "twilio": TWILIO_TOKEN})


def test_parser_refusal_is_logged_without_the_refused_line(
        sec_edge_logging: io.StringIO) -> None:
    from aiohttp.http_exceptions import BadHttpMessage

    try:
        raise BadHttpMessage(f"Invalid header value char: b'Authorization: Bearer {TWILIO_TOKEN}'")
    except BadHttpMessage as exc:
        logging.getLogger("aiohttp.server").exception("Error handling request from %s",
                                                      "127.0.0.1", exc_info=exc)
    text = sec_edge_logging.getvalue()
    event = json.loads(text)
    assert event["event"] == "http_request_rejected" and event["level"] == "info"
    assert event["error"] == "BadHttpMessage" and event["status"] == 400
    assert not leaks(text.encode(), {"twilio": TWILIO_TOKEN})
