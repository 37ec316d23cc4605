"""`smsgw fuzz attacks`: an outsider's bad input against a real gateway, then a scan for secrets.

Classes (`--classes`, default all), each a seeded, bounded stream of requests sent byte for byte
over raw sockets (no HTTP client library in between that would validate or re-encode them):

* `bytes` — non-UTF-8 bytes (`\\xff`, `\\xc3\\x28`, an encoded lone surrogate, overlong forms, …)
  in every header the receiver reads (Authorization, X-Twilio-Signature, X-Smsgw-Timestamp,
  X-Smsgw-Signature, X-Smsgw-Source, Content-Type, Host), in every query and form parameter of
  `/cgi-bin/sendsms` and the webhooks, in every JSON field (raw, and as `\\ud800` escapes), in
  path segments, and unusable `charset=` values for sendsms.
* `idna` — Unicode and odd forms of the loopback address (fullwidth, circled, mathematical
  digits, ideographic full stops, mixed scripts, punycode, IPv4-mapped IPv6, decimal, octal and
  hex IPv4, `0`, userinfo and backslash tricks) in every URL field (`callback_url`, batch
  `callback_url`, sendsms `dlr-url` by GET and POST), all pointing at a canary HTTP server this
  command starts on 127.0.0.1 (and ::1, 127.0.0.8): the canary must never see a connection.
* `nul` — NUL and other control characters in every field, header and path segment.
* `slow` — clients that trickle their headers, trickle their body, and hold many idle
  connections: each must be dropped by the receiver within its timeouts, and a well-formed
  request must still be answered meanwhile.

Oracle for every request: never a 5xx (503 with Retry-After is "retry later", allowed), never a
connection closed before a well-formed request was answered, and the right 4xx family for the
input (a bad `Authorization` → 400/401, a NUL in a JSON field → 400/422, an unusable charset →
400, a loopback callback URL → refused at intake). The receiver must be the same process and
answer `/v1/ping` after each class.

The run configures every secret the gateway has — the server secret (API-key HMAC key), a
Twilio auth token (with `public_base_url`), a Vonage signature secret, a generic source secret,
and the account's API key used as the sendsms password — with recognisable random values, and
finally scans every file the run wrote (daemon logs, the Postgres log, the config) for each
secret raw and encoded (`services.bench.logscan`). One summary line per class and one for the
scan; exit 1 on any failure. Reports never print a secret (they are replaced by `<name>`).
"""

# ruff: noqa: RUF001 — confusable characters (fullwidth digits, ideographic full stops) are the
# point of the `idna` class

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import random
import secrets as pysecrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote_from_bytes, urlsplit

import asyncpg

from smsgw.services.bench import logscan
from smsgw.services.bench.stack import BENCH_ACCOUNT, Stack, StackOptions

CLASSES = ("bytes", "idna", "nul", "slow")
ANY = frozenset(range(200, 300)) | frozenset(range(400, 500))
AUTH = frozenset({400, 401})
BAD_INPUT = frozenset({400, 422})
NUMBER = "+447700900123"
SENDER = "FUZZ"
GENERIC_SOURCE = "fuzz"
ENV_NAMES = {"twilio": "SMSGW_FUZZ_TWILIO_TOKEN", "vonage": "SMSGW_FUZZ_VONAGE_SECRET",
             "generic": "SMSGW_FUZZ_GENERIC_SECRET"}

# Non-UTF-8 byte sequences: invalid start, truncated 2-byte, encoded lone surrogates, overlong
# forms, beyond U+10FFFF, 5/6-byte forms, stray continuation bytes, BOM-like bytes.
BAD_BYTES: tuple[bytes, ...] = (
    b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xc0\xaf", b"\xe0\x80\xaf",
    b"\xc1\xbf", b"\xf4\x90\x80\x80", b"\xf8\x88\x80\x80\x80", b"\xfc\x84\x80\x80\x80\x80",
    b"\x80", b"\xbf\x80", b"\xfe\xff", b"\xc3", b"a\xffb", b"\xa0\xa1", b"\xe2\x28\xa1",
    b"\xf0\x28\x8c\x28",
)
# JSON escapes that decode to strings UTF-8 cannot encode (lone surrogates).
BAD_JSON_ESCAPES: tuple[bytes, ...] = (b"\\ud800", b"\\udfff", b"a\\udcffb", b"\\ud83d",
                                       b"\\udc00\\ud800")
CONTROL: tuple[str, ...] = ("\x00", "a\x00b", "\x00\x00\x00", "\x01", "\x1b[31m", "\x7f",
                            "\x0b", "\x0c", "\x08", "\x85", "\u2028", "\ufeff", "\x00\u0100")
CHARSETS: tuple[str, ...] = (
    "punycode", "idna", "utf-7", "rot13", "rot_13", "base64", "hex", "zlib", "bz2", "uu",
    "quopri", "undefined", "unicode_escape", "raw_unicode_escape", "utf-16", "utf-32",
    "utf-8-sig", "cp037", "mbcs", "oem", "x" * 300, "utf\x00-8", "string_escape", "palmos",
    "uu_codec", "zip", "utf_16_be")


# --- raw HTTP ----------------------------------------------------------------------------------

@dataclass(slots=True)
class Answer:
    """What the server did with one request."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None  # closed before answering, reset, timeout


async def exchange(host: str, port: int, raw: bytes, timeout_s: float = 15.0) -> Answer:
    """Send `raw` on a fresh connection and read one response (Connection: close)."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(raw)
                await writer.drain()
                return await _read_response(reader)
            finally:
                writer.close()
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()
    except TimeoutError:
        return Answer(error=f"no answer within {timeout_s:g} s")
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        return Answer(error=f"connection broken before an answer: {type(exc).__name__}")


async def _read_response(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        return Answer(error=f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            body += await reader.readexactly(size + 2)
            del body[-2:]
        return Answer(int(parts[1]), headers, bytes(body))
    if "content-length" in headers:
        return Answer(int(parts[1]), headers,
                      await reader.readexactly(int(headers["content-length"])))
    return Answer(int(parts[1]), headers, await reader.read(1 << 20))


def build_request(method: str, target: bytes, headers: list[tuple[bytes, bytes]],
                  body: bytes | None) -> bytes:
    """An HTTP/1.1 request as bytes, headers exactly as given (Host included by the caller)."""
    out = [method.encode() + b" " + target + b" HTTP/1.1"]
    out += [name + b": " + value for name, value in headers]
    if body is not None:
        out.append(b"Content-Length: " + str(len(body)).encode())
    out.append(b"Connection: close")
    return b"\r\n".join(out) + b"\r\n\r\n" + (body or b"")


# --- the canary (SSRF) -------------------------------------------------------------------------

class Canary:
    """TCP listeners on loopback addresses that record every connection they get."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.port = 0
        self.addresses: list[str] = []

    async def start(self) -> None:
        """Listen on 127.0.0.1 (a free port), then the same port on 127.0.0.8 and ::1."""
        for addr in ("127.0.0.1", "127.0.0.8", "::1"):
            try:
                srv = await asyncio.start_server(self._conn, addr, self.port)
            except OSError:
                continue
            if not self.port:
                self.port = srv.sockets[0].getsockname()[1]
            self.servers.append(srv)
            self.addresses.append(addr)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("sockname")
        try:
            async with asyncio.timeout(2):
                data = await reader.read(300)
        except (TimeoutError, OSError):
            data = b""
        self.hits.append(f"connection to {peer[0]}:{peer[1]}: {data[:200]!r}")
        with contextlib.suppress(OSError):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            writer.close()

    async def stop(self) -> None:
        """Close the listeners."""
        for srv in self.servers:
            srv.close()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await srv.wait_closed()


def loopback_hosts(rng: random.Random) -> list[tuple[str, bool]]:
    """(host, must_refuse) forms that map to 127.0.0.1, 127.0.0.8, 0.0.0.0 or ::1. `must_refuse`
    is True when intake can tell (a literal address after IDNA mapping); False for parser
    differentials that a client may or may not connect with (the canary decides those)."""
    digit_maps = {
        "fullwidth": "０１２３４５６７８９", "circled": "⓪①②③④⑤⑥⑦⑧⑨",
        "math bold": "".join(chr(0x1D7CE + i) for i in range(10)),
        "double-struck": "".join(chr(0x1D7D8 + i) for i in range(10)),
        "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹", "subscript": "₀₁₂₃₄₅₆₇₈₉",
        "math sans": "".join(chr(0x1D7E2 + i) for i in range(10)),
    }
    dots = (".", "\u3002", "\uff0e", "\uff61")

    def form(ip: str, digits: str | None, dot: str) -> str:
        out = ip.replace(".", dot)
        return out.translate(str.maketrans("0123456789", digits)) if digits else out

    hosts: list[tuple[str, bool]] = []
    for ip in ("127.0.0.1", "127.0.0.8", "0.0.0.0"):
        for digits in [None, *digit_maps.values()]:
            for dot in dots:
                if digits is None and dot == ".":
                    hosts.append((ip, True))
                    continue
                hosts.append((form(ip, digits, dot), True))
    # mixed scripts: every character drawn from a different alphabet
    alphabets = ["0123456789", *digit_maps.values()]
    for _ in range(12):
        ip = rng.choice(("127.0.0.1", "127.0.0.8"))
        hosts.append(("".join(rng.choice(alphabets)[int(c)] if c.isdigit() else rng.choice(dots)
                              for c in ip), True))
    hosts += [(h, True) for h in (
        "2130706433", "0x7f000001", "0X7F000001", "017700000001", "0177.0.0.1", "0x7f.0.0.1",
        "0x7f.0x0.0x0.0x1", "127.1", "127.0.1", "0x7f.1", "0177.1", "127.000.000.001",
        "0", "0x0", "00", "127.0.0.1.", "127。0。0。1。", "２１３０７０６４３３", "0ｘ7f.0.0.1",
        "[::1]", "[::]", "[0::1]", "[0:0:0:0:0:0:0:1]", "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]", "[0:0:0:0:0:ffff:7f00:1]", "[::ffff:127.0.0.8]", "[::127.0.0.1]",
        "[::ffff:0:0]", "[::ffff:１２７.０.０.１]",
        "localhost", "LOCALHOST", "localhost.", "ｌｏｃａｌｈｏｓｔ", "ＬＯＣＡＬＨＯＳＴ",
        "loca\u217chost", "locaⓛhost", "ⓛⓞⓒⓐⓛⓗⓞⓢⓣ", "localhost\u3002", "a.localhost",
        "ip6-localhost", "localhost.localdomain")]
    # punycode and parser differentials: a client may not even connect; the canary decides
    hosts += [(h, False) for h in (
        "xn--" + "①②⑦".encode("punycode").decode() + ".0.0.1",
        "xn--" + "１２７".encode("punycode").decode() + ".0.0.1",
        "xn--localhost-", "xn--lcalhost-", "%31%32%37.0.0.1", "127%2e0%2e0%2e1",
        "［::1］", "127.0.0.1\u200b", "\u200b127.0.0.1", "127.0.0.1\u00ad",
        "127\u20240\u20240\u20241")]
    return hosts


def _fullwidth(digits: str) -> str:
    return digits.translate(str.maketrans("0123456789", "０１２３４５６７８９"))


def loopback_urls(rng: random.Random, port: int) -> list[tuple[str, bool]]:
    """Callback URLs at the canary: every host form, and URL-level tricks."""
    out: list[tuple[str, bool]] = []
    for host, must in loopback_hosts(rng):
        scheme = "https" if rng.random() < 0.15 else "http"
        out.append((f"{scheme}://{host}:{port}/cb", must))
    out += [(u, True) for u in (
        f"http://127.0.0.1:{port}/", f"HTTP://127.0.0.1:{port}/", f"http://user@127.0.0.1:{port}/",
        f"http://example.com@127.0.0.1:{port}/", f"http://127.0.0.1:{port}@example.com/",
        f"http://x:y@①②⑦.0.0.1:{port}/")]
    out += [(u, False) for u in (
        f"http://127.0.0.1:{port}\\@example.com/", f"http://127.0.0.1:{port}#@example.com/",
        f"http://127.0.0.1:{port}?@example.com/", f"http:/127.0.0.1:{port}/",
        f"http:\\\\127.0.0.1:{port}/", f"http://127.0.0.1:{_fullwidth(str(port))}/",
        f"http://127.0.0.1:0{port}/", f"http://[::ffff:127.0.0.1%25lo]:{port}/",
        f"//127.0.0.1:{port}/", f"http://127.0.0.%d:{port}/", f"http://%i.127.0.0.1.nip.io:{port}/",
        f"http://12%d.0.0.1:{port}/")]
    return out


# --- the requests ------------------------------------------------------------------------------

@dataclass(slots=True)
class Case:
    """One request and what a correct gateway answers to it."""

    cls: str
    label: str
    raw: bytes
    expect: frozenset[int] = ANY
    wellformed: bool = True  # a close without an answer is a failure only for these
    url_case: bool = False


@dataclass(slots=True)
class Target:
    """The running gateway and its secrets."""

    host: str
    port: int
    api_key: str
    account: str
    public_base_url: str
    secrets: dict[str, str]

    @property
    def host_header(self) -> bytes:
        return f"{self.host}:{self.port}".encode()

    def headers(self, extra: dict[bytes, bytes], *, override: dict[bytes, bytes] | None = None
                ) -> list[tuple[bytes, bytes]]:
        """Host + `extra`, with `override` replacing (or adding) headers by name."""
        hs = {b"Host": self.host_header, **extra, **(override or {})}
        return list(hs.items())

    # JSON API ---------------------------------------------------------------------------------
    def api_post(self, fields: dict[str, bytes], *, override: dict[bytes, bytes] | None = None,
                 batch: bool = False, raw_body: bytes | None = None) -> bytes:
        """POST /v1/messages; `fields` are JSON fragments (already encoded) by key."""
        obj = b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields.items()) \
            + b"}"
        body = raw_body if raw_body is not None else (
            b'{"messages":[' + obj + b"]}" if batch else obj)
        hs = self.headers({b"Authorization": b"Bearer " + self.api_key.encode(),
                           b"Content-Type": b"application/json"}, override=override)
        return build_request("POST", b"/v1/messages", hs, body)

    def api_fields(self, **extra: bytes) -> dict[str, bytes]:
        """A valid message's JSON fragments plus `extra`."""
        return {"to": _js(NUMBER), "from": _js(SENDER), "text": _js("fuzz"), **extra}

    def api_get(self, ident: bytes, *, override: dict[bytes, bytes] | None = None) -> bytes:
        """GET /v1/messages/{id}; `ident` raw (already escaped as wanted)."""
        hs = self.headers({b"Authorization": b"Bearer " + self.api_key.encode()},
                          override=override)
        return build_request("GET", b"/v1/messages/" + ident, hs, None)

    # sendsms ----------------------------------------------------------------------------------
    def sendsms_params(self, **extra: bytes) -> dict[bytes, bytes]:
        """A valid sendsms request's parameters (raw bytes) plus `extra` (names with `_` → `-`)."""
        out = {b"username": self.account.encode(), b"password": self.api_key.encode(),
               b"from": SENDER.encode(), b"to": NUMBER.encode(), b"text": b"fuzz"}
        out.update({k.replace("_", "-").encode(): v for k, v in extra.items()})
        return out

    def sendsms(self, params: dict[bytes, bytes], *, post: bool = False,
                override: dict[bytes, bytes] | None = None, raw_target: bool = False) -> bytes:
        """GET (query) or POST (form) /cgi-bin/sendsms with `params` percent-encoded."""
        qs = _form(params, raw=raw_target)
        if post:
            hs = self.headers({b"Content-Type": b"application/x-www-form-urlencoded"},
                              override=override)
            return build_request("POST", b"/cgi-bin/sendsms", hs, qs)
        return build_request("GET", b"/cgi-bin/sendsms?" + qs, self.headers({}, override=override),
                             None)

    def sendsms_kannel_post(self, *, override: dict[bytes, bytes] | None = None,
                            body: bytes = b"fuzz") -> bytes:
        """Kannel's POST /cgi-bin/sendsms: the text as a text/plain body, the rest in
        X-Kannel-* headers (`override` replaces or adds headers)."""
        hs = self.headers({b"Content-Type": b"text/plain",
                           b"X-Kannel-Username": self.account.encode(),
                           b"X-Kannel-Password": self.api_key.encode(),
                           b"X-Kannel-From": SENDER.encode(), b"X-Kannel-To": NUMBER.encode()},
                          override=override)
        return build_request("POST", b"/cgi-bin/sendsms", hs, body)

    # webhooks ---------------------------------------------------------------------------------
    def twilio(self, params: dict[bytes, bytes], *, post: bool = True, sign: bool = True,
               override: dict[bytes, bytes] | None = None) -> bytes:
        """Twilio webhook, signed over what the receiver will see (`public_base_url`)."""
        qs = _form(params)
        path = b"/v1/inbound/twilio" + (b"" if post else b"?" + qs)
        extra: dict[bytes, bytes] = {}
        if post:
            extra[b"Content-Type"] = b"application/x-www-form-urlencoded"
        if sign:
            url = self.public_base_url + path.decode("latin-1")
            form = parse_qsl(qs.decode("utf-8", "replace"), keep_blank_values=True) if post \
                else []
            extra[b"X-Twilio-Signature"] = twilio_signature(self.secrets["twilio"], url,
                                                            form).encode()
        hs = self.headers(extra, override=override)
        return build_request("POST" if post else "GET", path, hs, qs if post else None)

    def twilio_params(self, rng: random.Random, **extra: bytes) -> dict[bytes, bytes]:
        """A valid Twilio MO's parameters plus `extra`."""
        return {b"MessageSid": f"SM{rng.getrandbits(64):032x}".encode(), b"From": NUMBER.encode(),
                b"To": b"+447700900001", b"Body": b"hello", b"NumSegments": b"1",
                b"AccountSid": b"AC1", **{k.encode(): v for k, v in extra.items()}}

    def vonage(self, params: dict[bytes, bytes], *, mode: int = 0, sign: bool = True,
               override: dict[bytes, bytes] | None = None) -> bytes:
        """Vonage webhook (mode 0 GET, 1 form POST, 2 JSON POST), `sig` over the decoded view."""
        params = dict(params)
        if sign:
            view = {k.decode("utf-8", "replace"): v.decode("utf-8", "replace")
                    for k, v in params.items()}
            params[b"sig"] = vonage_signature(self.secrets["vonage"], view).encode()
        path = b"/v1/inbound/vonage"
        if mode == 0:
            return build_request("GET", path + b"?" + _form(params),
                                 self.headers({}, override=override), None)
        if mode == 1:
            hs = self.headers({b"Content-Type": b"application/x-www-form-urlencoded"},
                              override=override)
            return build_request("POST", path, hs, _form(params))
        body = b"{" + b",".join(_js_bytes(k) + b":" + _js_bytes(v) for k, v in params.items()) \
            + b"}"
        hs = self.headers({b"Content-Type": b"application/json"}, override=override)
        return build_request("POST", path, hs, body)

    def vonage_params(self, rng: random.Random, **extra: bytes) -> dict[bytes, bytes]:
        """A valid Vonage MO's parameters plus `extra`."""
        return {b"msisdn": b"447700900123", b"to": b"447700900001",
                b"messageId": str(rng.getrandbits(40)).encode(), b"text": b"hello",
                b"type": b"text", b"message-timestamp": b"2026-01-01 10:00:00",
                b"timestamp": str(int(time.time())).encode(),
                b"nonce": str(rng.getrandbits(32)).encode(),
                **{k.replace("_", "-").encode(): v for k, v in extra.items()}}

    def generic(self, body: bytes, *, sign: bool = True, source: bytes | None = None,
                override: dict[bytes, bytes] | None = None) -> bytes:
        """Generic signed JSON webhook."""
        ts = str(int(time.time())).encode()
        extra = {b"Content-Type": b"application/json", b"X-Smsgw-Timestamp": ts}
        if sign:
            mac = hmac.new(self.secrets["generic"].encode(), ts + b"." + body, hashlib.sha256)
            extra[b"X-Smsgw-Signature"] = b"sha256=" + mac.hexdigest().encode()
        path = b"/v1/inbound/generic/" + (GENERIC_SOURCE.encode() if source is None else source)
        return build_request("POST", path, self.headers(extra, override=override), body)

    def generic_fields(self, rng: random.Random, **extra: bytes) -> dict[str, bytes]:
        """A valid generic MO's JSON fragments plus `extra`."""
        return {"id": _js(f"g{rng.getrandbits(48)}"), "from": _js(NUMBER), "to": _js("12345"),
                "text": _js("hello"), **extra}


def _js(value: Any) -> bytes:
    return json.dumps(value).encode()


def _js_bytes(value: bytes) -> bytes:
    """A JSON string literal holding `value`'s bytes as they are (invalid UTF-8 stays invalid)."""
    return b'"' + value.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def _obj(fields: dict[str, bytes]) -> bytes:
    return b"{" + b",".join(json.dumps(k).encode() + b":" + v for k, v in fields.items()) + b"}"


def _form(params: dict[bytes, bytes], *, raw: bool = False) -> bytes:
    if raw:
        return b"&".join(k + b"=" + v for k, v in params.items())
    return b"&".join(quote_from_bytes(k, safe="").encode() + b"="
                     + quote_from_bytes(v, safe="").encode() for k, v in params.items())


def twilio_signature(token: str, url: str, params: list[tuple[str, str]]) -> str:
    """Twilio's X-Twilio-Signature (as twilio-python's RequestValidator computes it)."""
    values: dict[str, set[str]] = {}
    for name, value in params:
        values.setdefault(name, set()).add(value)
    payload = url + "".join(n + v for n in sorted(values) for v in sorted(values[n]))
    mac = hmac.new(token.encode(), payload.encode("utf-8", "surrogatepass"), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def vonage_signature(secret: str, params: dict[str, str]) -> str:
    """Vonage's `sig`: HMAC-SHA256 over `&key=value` of the sorted params."""
    payload = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}"
                      for k, v in sorted(params.items()) if k != "sig")
    return hmac.new(secret.encode(), payload.encode("utf-8", "surrogatepass"),
                    hashlib.sha256).hexdigest()


# --- case generators ---------------------------------------------------------------------------

SENDSMS_FIELDS: dict[str, frozenset[int]] = {
    # what a bad value in each parameter must get: credentials → 403 (Kannel) or 400
    "username": frozenset({400, 403, 422}), "password": frozenset({400, 403, 422}),
    "from": BAD_INPUT, "to": BAD_INPUT, "text": BAD_INPUT, "charset": BAD_INPUT,
    "coding": BAD_INPUT, "dlr-mask": BAD_INPUT, "dlr-url": BAD_INPUT,
    "smsc": frozenset({400, 403, 422}), "priority": BAD_INPUT, "validity": BAD_INPUT,
    "deferred": BAD_INPUT, "mclass": BAD_INPUT, "mwi": BAD_INPUT, "pid": BAD_INPUT,
    "alt-dcs": BAD_INPUT, "rpi": BAD_INPUT, "compress": BAD_INPUT, "binfo": BAD_INPUT,
    "account": BAD_INPUT, "meta-data": BAD_INPUT,
    "udh": ANY,  # binary: any octets may be a valid header ("\x00" is an empty one)
    "x-unknown": ANY,
}
X_KANNEL_FIELDS: dict[bytes, frozenset[int]] = {
    # Kannel's POST interface: a bad value in each header it reads (answered, never a 5xx)
    b"X-Kannel-Username": frozenset({400, 403, 422}),
    b"X-Kannel-Password": frozenset({400, 403, 422}),
    b"X-Kannel-From": BAD_INPUT, b"X-Kannel-To": BAD_INPUT, b"X-Kannel-Coding": BAD_INPUT,
    b"X-Kannel-DLR-Mask": BAD_INPUT, b"X-Kannel-DLR-URL": BAD_INPUT,
    b"X-Kannel-SMSC": frozenset({400, 403, 422}), b"X-Kannel-UDH": ANY,
    b"X-Kannel-Validity": BAD_INPUT, b"X-Kannel-Deferred": BAD_INPUT,
    b"X-Kannel-Priority": BAD_INPUT,
}
API_FIELDS = ("to", "from", "text", "client_ref", "callback_url", "category", "encoding",
              "send_at", "binary", "udh", "flash", "mclass", "pid", "service_type",
              "smpp_priority", "tlvs", "receipt")
NOT_FOUND_OK = ANY - {404}


def _bad(rng: random.Random) -> bytes:
    """A non-UTF-8 value: one bad sequence, sometimes inside valid text."""
    bad = rng.choice(BAD_BYTES)
    if rng.random() < 0.25:
        bad = bytes(rng.choice(range(0x80, 0x100)) for _ in range(rng.randint(1, 6)))
    out = rng.choice([b"", b"abc", b"+44"]) + bad + rng.choice([b"", b"xyz", b"1"])
    try:
        out.decode("utf-8")
    except UnicodeDecodeError:
        return out
    return out + b"\xff"  # random bytes that happened to be valid UTF-8


def _header_cases(t: Target, rng: random.Random, cls: str, value: Callable[[], bytes],
                  wellformed: bool) -> Iterator[Case]:
    """A bad value in every header the receiver reads, on every route that reads it."""
    key = t.api_key.encode()
    gen_body = _obj(t.generic_fields(rng))
    auth_values = [b"Bearer " + value(), value(), b"Bearer " + key + value(),
                   b"Basic " + value(), b"Bearer " + value() + key]
    yield from (Case(cls, f"POST /v1/messages Authorization={v!r}",
                     t.api_post(t.api_fields(), override={b"Authorization": v}), AUTH, wellformed)
                for v in auth_values)
    yield Case(cls, "GET /v1/messages/1 Authorization", t.api_get(
        b"1", override={b"Authorization": b"Bearer " + value()}), AUTH, wellformed)
    yield Case(cls, "POST /v1/inbound/twilio X-Twilio-Signature", t.twilio(
        t.twilio_params(rng), override={b"X-Twilio-Signature": value()}), AUTH, wellformed)
    yield Case(cls, "GET /v1/inbound/twilio X-Twilio-Signature", t.twilio(
        t.twilio_params(rng), post=False, override={b"X-Twilio-Signature": value()}), AUTH,
        wellformed)
    yield Case(cls, "POST /v1/inbound/generic X-Smsgw-Timestamp", t.generic(
        gen_body, override={b"X-Smsgw-Timestamp": value()}), AUTH, wellformed)
    yield Case(cls, "POST /v1/inbound/generic X-Smsgw-Timestamp (digits+bad)", t.generic(
        gen_body, override={b"X-Smsgw-Timestamp": str(int(time.time())).encode() + value()}),
        AUTH, wellformed)
    yield Case(cls, "POST /v1/inbound/generic X-Smsgw-Signature", t.generic(
        gen_body, override={b"X-Smsgw-Signature": b"sha256=" + value()}), AUTH, wellformed)
    yield Case(cls, "POST /v1/inbound/generic X-Smsgw-Signature (bare)", t.generic(
        gen_body, override={b"X-Smsgw-Signature": value()}), AUTH, wellformed)
    yield Case(cls, "POST /v1/inbound/generic X-Smsgw-Source", build_request(
        "POST", b"/v1/inbound/generic", t.headers({b"Content-Type": b"application/json",
                                                   b"X-Smsgw-Source": value(),
                                                   b"X-Smsgw-Timestamp": b"1"}), gen_body),
        frozenset({400, 401, 404}), wellformed)
    for header in (b"Content-Type", b"Host", b"Accept", b"User-Agent", b"X-Forwarded-For",
                   b"X-Smsgw-Source"):
        v = (b"application/json; charset=" + value()) if rng.random() < 0.5 else value()
        yield Case(cls, f"POST /v1/messages {header.decode()}",
                   t.api_post(t.api_fields(), override={header: v}), ANY, wellformed)
        yield Case(cls, f"GET /cgi-bin/sendsms {header.decode()}",
                   t.sendsms(t.sendsms_params(), override={header: value()}), ANY, wellformed)
        yield Case(cls, f"POST /cgi-bin/sendsms {header.decode()}",
                   t.sendsms(t.sendsms_params(), post=True, override={header: v}), ANY,
                   wellformed)
        yield Case(cls, f"POST /v1/inbound/twilio {header.decode()}",
                   t.twilio(t.twilio_params(rng), override={header: v}), NOT_FOUND_OK,
                   wellformed)
        yield Case(cls, f"POST /v1/inbound/vonage {header.decode()}",
                   t.vonage(t.vonage_params(rng), mode=rng.choice((1, 2)), override={header: v}),
                   NOT_FOUND_OK, wellformed)
        yield Case(cls, f"POST /v1/inbound/generic {header.decode()}",
                   t.generic(_obj(t.generic_fields(rng)), override={header: v}), NOT_FOUND_OK,
                   wellformed)


def _kannel_post_cases(t: Target, cls: str, param_value: Callable[[], bytes],
                       strict: frozenset[int] | None) -> Iterator[Case]:
    """Kannel's `user`/`pass` aliases and its POST interface: one bad value each."""
    for alias, name in (("user", "username"), ("pass", "password")):
        params = t.sendsms_params()
        del params[name.encode()]
        params[alias.encode()] = param_value()
        yield Case(cls, f"GET /cgi-bin/sendsms {alias}", t.sendsms(params),
                   SENDSMS_FIELDS[name] if strict is not None else ANY)
    for header, want in X_KANNEL_FIELDS.items():
        yield Case(cls, f"POST /cgi-bin/sendsms {header.decode()}", t.sendsms_kannel_post(
            override={header: param_value()}), want if strict is not None else ANY)
    yield Case(cls, "POST /cgi-bin/sendsms text/plain body", t.sendsms_kannel_post(
        body=param_value()), ANY)


def _field_cases(t: Target, rng: random.Random, cls: str, json_value: Callable[[], bytes],
                 param_value: Callable[[], bytes], strict: frozenset[int] | None) -> Iterator[Case]:
    """A bad value in every parameter and JSON field of every route. `strict`: the statuses a
    bad value must get in a field the gateway validates (None: any non-5xx)."""
    must = strict if strict is not None else ANY
    for name in API_FIELDS:
        fields = t.api_fields(**{name: b'"' + json_value() + b'"'})
        yield Case(cls, f"POST /v1/messages {name}", t.api_post(fields), must)
        yield Case(cls, f"POST /v1/messages batch {name}", t.api_post(fields, batch=True), must)
    yield Case(cls, "POST /v1/messages key", t.api_post(
        {}, raw_body=_obj(t.api_fields())[:-1] + b',"x' + json_value() + b'":1}'), must)
    yield Case(cls, "GET /v1/messages/{id}", t.api_get(quote_from_bytes(
        param_value(), safe="").encode()), frozenset({400, 401, 404, 422}))
    yield from _kannel_post_cases(t, cls, param_value, strict)
    for name, want in SENDSMS_FIELDS.items():
        bad = param_value()
        if name == "text" and strict is None:  # control characters are text too
            want = ANY
        w = want if strict is not None or name in ("username", "password") else ANY
        params = t.sendsms_params(**{name.replace("-", "_"): bad})
        if name in ("dlr-url",):
            params[b"dlr-mask"] = b"31"
        yield Case(cls, f"GET /cgi-bin/sendsms {name}", t.sendsms(params), w)
        yield Case(cls, f"POST /cgi-bin/sendsms {name}", t.sendsms(params, post=True), w)
    yield Case(cls, "GET /cgi-bin/sendsms parameter name", t.sendsms(
        {**t.sendsms_params(), b"te" + param_value(): b"1"}), ANY)
    yield Case(cls, "GET /cgi-bin/sendsms raw bytes in the request line", t.sendsms(
        t.sendsms_params(text=param_value()), raw_target=True), ANY, wellformed=False)
    for name in ("MessageSid", "From", "To", "Body", "NumSegments", "AccountSid", "MediaUrl0"):
        want = NOT_FOUND_OK  # a provider's MO: refused (4xx) or stored with U+FFFD
        params = t.twilio_params(rng, **{name: param_value()})
        yield Case(cls, f"POST /v1/inbound/twilio {name}", t.twilio(params), want)
        yield Case(cls, f"GET /v1/inbound/twilio {name}", t.twilio(params, post=False), want)
    for name in ("msisdn", "to", "messageId", "text", "type", "keyword", "timestamp", "nonce",
                 "concat-ref", "concat-total", "concat-part", "message-timestamp", "data",
                 "udh", "api-key"):
        want = NOT_FOUND_OK
        params = t.vonage_params(rng, **{name: param_value()})
        if name.startswith("concat-"):  # a part: the other concat fields valid, this one bad
            params = {b"concat": b"true", b"concat-ref": b"7", b"concat-total": b"2",
                      b"concat-part": b"1", **params}
        elif name in ("data", "udh"):
            params[b"type"] = b"binary"
        for mode in (0, 1, 2):
            yield Case(cls, f"vonage mode {mode} {name}", t.vonage(params, mode=mode), want)
    for name in ("id", "from", "to", "text", "meta"):
        want = NOT_FOUND_OK
        v = b'"' + json_value() + b'"'
        if name == "meta":
            v = b'{"a":{"b":[' + v + b"]}," + v + b":1}"
        yield Case(cls, f"POST /v1/inbound/generic {name}", t.generic(
            _obj(t.generic_fields(rng, **{name: v}))), want)
    yield Case(cls, "POST /v1/inbound/generic/{source}", t.generic(
        _obj(t.generic_fields(rng)), source=quote_from_bytes(param_value(), safe="").encode()),
        frozenset({400, 401, 404}))


def charset_expectation(charset: str, text: bytes) -> frozenset[int]:
    """What sendsms must answer for `text` in `charset`: 400 when Python cannot decode it as
    text (unknown or non-text codec, bad bytes), 400/422 when the text holds a NUL, else
    accepted (or 400: e.g. an empty text, or one the coding cannot carry)."""
    if "\x00" in charset:
        return BAD_INPUT  # a NUL anywhere: 400 or 422
    try:
        decoded = text.decode(charset)
    except (LookupError, UnicodeError, ValueError, TypeError):
        return frozenset({400})
    return BAD_INPUT if "\x00" in decoded else frozenset({202, 400})


def bytes_cases(t: Target, rng: random.Random) -> Iterator[Case]:
    """Class `bytes`: non-UTF-8 bytes in every header, parameter and field."""
    while True:
        yield from _header_cases(t, rng, "bytes", lambda: _bad(rng), True)

        def json_value() -> bytes:
            return rng.choice((_bad(rng), rng.choice(BAD_JSON_ESCAPES)))

        yield from _field_cases(t, rng, "bytes", json_value, lambda: _bad(rng), BAD_INPUT)
        for charset in CHARSETS:
            text = rng.choice((b"a..b", b"\xff\xfe", b"+-", b"\\x00", b"=\n", b"xn--", b"aGk=",
                               _bad(rng), b"BZh9", b"\x00"))
            want = charset_expectation(charset, text)
            yield Case("bytes", f"GET /cgi-bin/sendsms charset={charset[:20]!r} text={text!r}",
                       t.sendsms(t.sendsms_params(charset=charset.encode("latin-1"), text=text)),
                       want)
        yield Case("bytes", "POST /v1/messages body not UTF-8", t.api_post(
            {}, raw_body=b'{"to":"' + NUMBER.encode() + b'","from":"X","text":"\xff\xfe"}'),
            BAD_INPUT)


def nul_cases(t: Target, rng: random.Random) -> Iterator[Case]:
    """Class `nul`: NUL and other control characters in every field, header and path."""
    def ctrl_text() -> str:
        return rng.choice(("", "a", "+44")) + rng.choice(CONTROL) + rng.choice(("", "b"))

    def nul_text() -> str:
        return rng.choice(("", "a", "+4477")) + "\x00" + rng.choice(("", "b", "0"))

    while True:
        # a NUL must be refused where the gateway validates (4xx); other control characters
        # anywhere only need a non-5xx answer
        yield from _field_cases(t, rng, "nul", lambda: json.dumps(nul_text())[1:-1].encode(),
                                lambda: nul_text().encode(), BAD_INPUT)
        yield from _field_cases(t, rng, "nul", lambda: json.dumps(ctrl_text())[1:-1].encode(),
                                lambda: ctrl_text().encode("utf-8"), None)
        yield Case("nul", "POST /v1/messages raw NUL inside a JSON string", t.api_post(
            {}, raw_body=b'{"to":"' + NUMBER.encode() + b'","from":"X","text":"a\x00b"}'),
            BAD_INPUT)
        yield Case("nul", "POST /v1/inbound/generic nested NUL in meta", t.generic(_obj(
            t.generic_fields(rng, meta=b'{"a":{"b":{"c":"x\\u0000y"}},"l":["\\u0000"]}'))),
            frozenset({200, 422}))
        yield Case("nul", "POST /v1/inbound/generic NUL in a meta key", t.generic(_obj(
            t.generic_fields(rng, meta=b'{"\\u0000":{"\\u0000k":1}}'))), frozenset({200, 422}))
        yield Case("nul", "GET /cgi-bin/sendsms charset=unicode_escape text=\\x00", t.sendsms(
            t.sendsms_params(charset=b"unicode_escape", text=b"a\\x00b")), BAD_INPUT)
        yield Case("nul", "GET /cgi-bin/sendsms charset=utf-16be text=NUL", t.sendsms(
            t.sendsms_params(charset=b"utf-16be", text=b"\x00\x00\x00a")), BAD_INPUT)
        yield Case("nul", "GET /cgi-bin/sendsms coding=2 text=NUL", t.sendsms(
            t.sendsms_params(coding=b"2", text=b"\x00a\x00\x00")), BAD_INPUT)
        # control characters in headers: not valid HTTP, a close without answer is allowed
        yield from _header_cases(t, rng, "nul", lambda: rng.choice(
            (b"\x00", b"a\x00", b"\x01", b"\x7f", b"\x1b", b"\x00\x00")), False)


def idna_cases(t: Target, rng: random.Random, canary_port: int) -> Iterator[Case]:
    """Class `idna`: loopback in Unicode and odd forms in every URL field."""
    while True:
        for url, must in loopback_urls(rng, canary_port):
            want = BAD_INPUT if must else frozenset({202}) | BAD_INPUT
            want_k = frozenset({400, 403, 422}) if must else frozenset({202, 400, 403, 422})
            cb = _js(url)
            which = rng.randint(0, 3)
            if which == 0:
                yield Case("idna", f"POST /v1/messages callback_url={url!r}",
                           t.api_post(t.api_fields(callback_url=cb)), want, url_case=True)
            elif which == 1:
                yield Case("idna", f"POST /v1/messages batch callback_url={url!r}",
                           t.api_post(t.api_fields(callback_url=cb), batch=True), want,
                           url_case=True)
            else:
                params = t.sendsms_params(dlr_url=url.encode(), dlr_mask=b"31")
                yield Case("idna", f"{'POST' if which == 3 else 'GET'} /cgi-bin/sendsms "
                           f"dlr-url={url!r}", t.sendsms(params, post=which == 3), want_k,
                           url_case=True)


# --- running -----------------------------------------------------------------------------------

@dataclass(slots=True)
class ClassResult:
    """One class's outcome."""

    name: str
    n: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    log_excerpts: list[str] = field(default_factory=list)
    accepted_urls: list[str] = field(default_factory=list)  # URL cases intake let through
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        st = ",".join(f"{k}:{v}" for k, v in sorted(self.statuses.items()))
        return (f"{self.name} {'OK' if self.ok else 'FAIL'} n={self.n} "
                f"failures={len(self.failures)} statuses={{{st}}} {self.seconds:.1f}s")


def judge(case: Case, ans: Answer) -> str | None:
    """The failure this answer is for this case, or None."""
    if ans.status is None:
        if not case.wellformed:
            return None
        return f"{ans.error} — {case.label}"
    if ans.status == 503 and "retry-after" in ans.headers:
        return None
    if ans.status >= 500:
        return f"{ans.status} {ans.body[:120]!r} — {case.label}"
    if ans.status not in case.expect:
        want = ",".join(str(s) for s in sorted(case.expect)) if len(case.expect) < 8 \
            else "2xx/4xx"
        return f"{ans.status} (want {want}) {ans.body[:120]!r} — {case.label}"
    return None


async def run_cases(t: Target, cases: Iterator[Case], result: ClassResult, *, count: int,
                    deadline: float, concurrency: int, progress: Callable[[str], None]) -> int:
    """Send up to `count` cases (until `deadline`), `concurrency` at a time; judge each."""
    sem = asyncio.Semaphore(concurrency)
    accepted_urls = 0
    last = time.monotonic()

    async def one(case: Case) -> None:
        nonlocal accepted_urls
        async with sem:
            ans = await exchange(t.host, t.port, case.raw)
        result.n += 1
        if ans.status is not None:
            result.statuses[ans.status] = result.statuses.get(ans.status, 0) + 1
            if case.url_case and 200 <= ans.status < 300:
                accepted_urls += 1
                result.accepted_urls.append(case.label)
        else:
            result.statuses[0] = result.statuses.get(0, 0) + 1
        problem = judge(case, ans)
        if problem:
            result.failures.append(problem)

    tasks: set[asyncio.Task[None]] = set()
    for i, case in enumerate(cases):
        if i >= count or time.monotonic() > deadline:
            break
        while len(tasks) >= concurrency * 2:
            _, tasks = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        tasks.add(asyncio.create_task(one(case)))
        if time.monotonic() - last > 2.0:
            last = time.monotonic()
            progress(f"{result.name}: {result.n}/{count} sent, "
                     f"{len(result.failures)} failures")
    if tasks:
        await asyncio.wait(tasks)
    return accepted_urls


# --- slow clients ------------------------------------------------------------------------------

async def _closed_within(reader: asyncio.StreamReader, limit_s: float) -> bool:
    """True if the server closed (EOF, reset, or an answer then close) within `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            while True:
                data = await reader.read(4096)
                if not data:
                    return True
    except TimeoutError:
        return False
    except OSError:
        return True


async def _trickle(t: Target, head: bytes, drip: bytes, limit_s: float, interval_s: float
                   ) -> str | None:
    """Send `head` then one byte of `drip` (repeated) every `interval_s`: None if the server
    closed the connection within `limit_s`, else the failure."""
    reader, writer = await asyncio.open_connection(t.host, t.port)
    started = time.monotonic()
    closed = asyncio.create_task(_closed_within(reader, limit_s))
    try:
        writer.write(head)
        i = 0
        while not closed.done():
            await asyncio.sleep(interval_s)
            if closed.done():
                break
            try:
                writer.write(drip[i % len(drip):i % len(drip) + 1])
                await writer.drain()
            except OSError:
                break
            i += 1
        if await closed:
            return None
        return f"still open after {time.monotonic() - started:.1f} s ({i} bytes trickled)"
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def slow_class(t: Target, rng: random.Random, result: ClassResult, *, limit_s: float,
                     idle: int, count: int, progress: Callable[[str], None]) -> None:
    """Trickled headers, trickled bodies, many idle connections."""
    interval = 0.2
    key = t.api_key.encode()
    heads = [
        ("trickled headers POST /v1/messages", b"POST /v1/messages HTTP/1.1\r\nHost: "
         + t.host_header + b"\r\nX-Slow: ", b"abcdefghijklmnopqrstuvwxyz"),
        ("trickled headers GET /cgi-bin/sendsms", b"GET /cgi-bin/sendsms?username=", b"aaaa"),
        ("trickled request line", b"GET /v1/ping?", b"abcdefgh"),
        ("trickled body POST /v1/messages", build_request(
            "POST", b"/v1/messages", t.headers({b"Authorization": b"Bearer " + key,
                                                b"Content-Type": b"application/json",
                                                b"Content-Length": b"100000"}), None
            ).replace(b"Connection: close\r\n", b""), b'{"to":"+44'),
        ("trickled body POST /v1/inbound/twilio", build_request(
            "POST", b"/v1/inbound/twilio", t.headers({
                b"Content-Type": b"application/x-www-form-urlencoded",
                b"Content-Length": b"50000"}), None).replace(b"Connection: close\r\n", b""),
         b"Body=aaaa"),
    ]
    n_trickle = max(1, min(len(heads), count))
    chosen = heads[:n_trickle]
    progress(f"slow: {len(chosen)} trickling clients and {idle} idle connections, "
             f"each must be dropped within {limit_s:.1f} s")
    trickles = [asyncio.create_task(_trickle(t, h, d, limit_s, interval)) for _, h, d in chosen]
    # idle connections: connect and say nothing
    idle_conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    refused = 0
    for _ in range(idle):
        try:
            idle_conns.append(await asyncio.open_connection(t.host, t.port))
        except OSError:
            refused += 1
    started = time.monotonic()
    idle_closed = [asyncio.create_task(_closed_within(r, limit_s)) for r, _ in idle_conns]
    # a well-formed request must be answered meanwhile (a client may retry a refused connect)
    ping = build_request("GET", b"/v1/ping", t.headers({}), None)
    answered: Answer | None = None
    while time.monotonic() - started < limit_s + 2:
        ans = await exchange(t.host, t.port, ping, timeout_s=limit_s + 2)
        if ans.status is not None:
            answered = ans
            if ans.status == 200:
                break
            if ans.status != 503 or "retry-after" not in ans.headers:
                break  # anything but "retry later" is an answer to judge
        await asyncio.sleep(0.2)
    result.n += 1 + len(chosen) + idle
    if answered is None or answered.status != 200:
        result.failures.append(f"GET /v1/ping not answered 200 while {idle} idle connections "
                               f"were held: {answered.status if answered else 'no answer'}")
    for (label, _, _), task in zip(chosen, trickles, strict=True):
        problem = await task
        if problem:
            result.failures.append(f"{label}: {problem}")
    still_open = sum(1 for closed in await asyncio.gather(*idle_closed) if not closed)
    if still_open:
        result.failures.append(f"{still_open} of {len(idle_conns)} idle connections still "
                               f"open after {limit_s:.1f} s ({refused} refused at connect)")
    for _, w in idle_conns:
        w.close()
    result.statuses[200] = 1 if answered is not None and answered.status == 200 else 0


# --- the gateway -------------------------------------------------------------------------------

@dataclass(slots=True)
class AttackOptions:
    """What `run_attacks` does (the command line's options)."""

    classes: tuple[str, ...] = CLASSES
    seed: int | None = None
    count: int = 400  # requests per class (slow: trickling clients)
    duration_s: float = 120.0  # time budget per class
    concurrency: int = 8
    idle: int = 300  # idle connections held by the slow class
    slow_limit_s: float | None = None  # default: the receiver's timeouts + 2 s, else 10 s
    receiver_timeout_s: float = 1.0  # header/body timeouts configured when the receiver has them
    settle_s: float = 20.0  # how long to wait for accepted URL cases to reach the callback stage
    database_url: str | None = None
    data_dir: Path | None = None
    keep: bool = False
    log_level: str = "info"
    say: Callable[[str], None] = field(default=lambda m: sys.stderr.write(f"[fuzz] {m}\n"))


@dataclass(slots=True)
class AttackReport:
    """The outcome of a run: per class, the canary, the log scan."""

    seed: int
    classes: list[ClassResult] = field(default_factory=list)
    canary_hits: list[str] = field(default_factory=list)
    scanned: list[Path] = field(default_factory=list)
    hits: list[logscan.Hit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # receiver died, stack errors
    secret_names: list[str] = field(default_factory=list)
    data_dir: Path | None = None

    @property
    def ok(self) -> bool:
        return (all(c.ok for c in self.classes) and not self.canary_hits and not self.hits
                and not self.problems)

    def lines(self, detail: int = 20) -> list[str]:
        """Summary lines (one per class, the scan), then the failures (at most `detail` each)."""
        out = [f"fuzz attacks (seed {self.seed})"]
        out += [c.summary() for c in self.classes]
        out.append(f"logscan {'FAIL' if self.hits else 'OK'} files={len(self.scanned)} "
                   f"secrets={len(self.secret_names)} hits={len(self.hits)}")
        root = self.data_dir
        out.append("  logscan files: " + ", ".join(
            str(p.relative_to(root)) if root and p.is_relative_to(root) else str(p)
            for p in self.scanned))
        out.append("  logscan secrets: " + ", ".join(self.secret_names))
        for c in self.classes:
            for f in c.failures[:detail]:
                out.append(f"  {c.name}: {f}")
            if len(c.failures) > detail:
                out.append(f"  {c.name}: … {len(c.failures) - detail} more")
            for line in c.log_excerpts[:detail]:
                out.append(f"  {c.name} log: {line}")
            for label in list(dict.fromkeys(c.accepted_urls))[:detail]:
                out.append(f"  {c.name} accepted at intake (the canary decides): {label}")
        out += [f"  idna canary: {h}" for h in self.canary_hits[:detail]]
        out += [f"  logscan: {h}" for h in self.hits[:detail * 5]]
        out += [f"  problem: {p}" for p in self.problems]
        return out


def receiver_timeout_keys(value: float) -> dict[str, Any]:
    """`[receiver]` keys that bound slow clients, when this receiver has them (header/body read
    timeouts, idle timeouts), each set to `value` if valid (else left at its default)."""
    from pydantic import ValidationError

    from smsgw.services.receiver.options import ReceiverOptions

    out: dict[str, Any] = {}
    for name in ReceiverOptions.model_fields:
        if "timeout" in name and any(w in name for w in ("header", "body", "read", "idle",
                                                         "request", "keepalive")):
            try:
                ReceiverOptions(**{name: value})
            except ValidationError:
                continue
            out[name] = value
    return out


def receiver_connection_limit(value: int) -> dict[str, Any]:
    """The `[receiver]` connection-limit key set to `value`, when this receiver has one: the
    slow class then holds more idle connections than the limit."""
    from pydantic import ValidationError

    from smsgw.services.receiver.options import ReceiverOptions

    for name in ReceiverOptions.model_fields:
        if "max_connections" in name or "connection_limit" in name:
            try:
                ReceiverOptions(**{name: value})
            except ValidationError:
                continue
            return {name: value}
    return {}


def webhooks_lockdown() -> dict[str, Any]:
    """`[webhooks]` keys that keep the SSRF guard on for loopback whatever the stack's default."""
    from smsgw.shared.runtime.config import WebhooksSettings

    fields = WebhooksSettings.model_fields
    out: dict[str, Any] = {}
    if "allow_private_urls" in fields:
        out["allow_private_urls"] = False
    if "allowed_networks" in fields:
        out["allowed_networks"] = []
    return out


class _FuzzStack(Stack):
    """The benchmark stack with the SSRF guard fully on: whatever the stack would allow for its
    own benchmark sinks (loopback) is removed, as for a production gateway."""

    def _config(self, secret_file: Path) -> dict[str, Any]:
        cfg = super()._config(secret_file)
        hooks = cfg.setdefault("webhooks", {})
        for k in ("allow_private_urls", "allowed_networks"):
            hooks.pop(k, None)
        hooks.update(webhooks_lockdown())
        return cfg


def make_secrets() -> dict[str, str]:
    """Recognisable random values for every secret the run configures."""
    return {name: f"fuzzsecret-{name}-{pysecrets.token_hex(12)}"
            for name in ("server", "twilio", "vonage", "generic")}


async def _settle(dsn: str, connect_kwargs: dict[str, Any], timeout_s: float) -> str | None:
    """Wait until every accepted message with a callback URL was tried by the sender and every
    callback was tried once (so a canary hit would have happened); None, or what is pending."""
    from smsgw.shared.core import db

    conn = await db.connect(dsn, **connect_kwargs)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            pending = await conn.fetchval(
                "SELECT (SELECT count(*) FROM outbound WHERE callback_url IS NOT NULL"
                " AND status IN ('queued', 'sending') AND route_hint IS NULL"
                " AND (send_at IS NULL OR send_at <= now()))"
                " + (SELECT count(*) FROM callbacks WHERE status = 'sending'"
                " OR (status = 'queued' AND attempts = 0))")
            if not pending:
                return None
            if time.monotonic() > deadline:
                return f"{pending} messages/callbacks still pending after {timeout_s:g} s"
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


def _read_since(path: Path, offset: int) -> bytes:
    """What a log got since `offset` (nothing when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    except OSError:
        return b""


def _log_errors(path: Path, offset: int, redact: Callable[[str], str], n: int = 20) -> list[str]:
    """Error lines a log got since `offset` (redacted, shortened)."""
    data = _read_since(path, offset)
    out = []
    for raw in data.splitlines():
        line = raw.decode("utf-8", "replace")
        if '"level":"error"' in line or '"level":"critical"' in line or "Traceback" in line:
            out.append(redact(line)[:400])
            if len(out) >= n:
                break
    return out


def _logged_exceptions(path: Path, offset: int) -> list[str]:
    """One failure per distinct exception the receiver logged at error level since `offset`
    (client input must be answered, not crash a handler or a protocol callback: each such line
    is also a way to flood the log), by event, exception type and innermost frame."""
    data = _read_since(path, offset)
    seen: dict[str, int] = {}
    for raw in data.splitlines():
        try:
            event = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(event, dict) or event.get("level") not in ("error", "critical") \
                or not event.get("exception"):
            continue
        exc = event["exception"][0] if isinstance(event["exception"], list) else {}
        frames = exc.get("frames") or [{}] if isinstance(exc, dict) else [{}]
        where = f"{frames[-1].get('filename', '?')}:{frames[-1].get('lineno', '?')}"
        key = (f"{str(event.get('event', '')).splitlines()[0][:90]} "
               f"{exc.get('exc_type', '?') if isinstance(exc, dict) else '?'} at {where}")
        seen[key] = seen.get(key, 0) + 1
    return [f"receiver logged an exception for client input ({n}x): {key}"
            for key, n in seen.items()]


def make_redactor(secrets: dict[str, str]) -> Callable[[str], str]:
    """Replace every secret (any encoding the scanner knows) in a text by `<name>`."""
    forms = sorted(((f.decode("latin-1"), f"<{name}>") for name, v in secrets.items() if v
                    for f in logscan.encodings(v).values()), key=lambda x: -len(x[0]))

    def redact(text: str) -> str:
        for form, repl in forms:
            text = text.replace(form, repl)
        return text
    return redact


async def run_attacks(opts: AttackOptions) -> AttackReport:
    """Start a gateway with every secret configured, run the classes, stop it, scan its files."""
    seed = opts.seed if opts.seed is not None else random.randrange(2**32)
    report = AttackReport(seed=seed)
    tmp = opts.data_dir is None
    secret_values = make_secrets()
    data_dir = report.data_dir = _run_dir(opts.data_dir, secret_values["server"])
    timeouts = receiver_timeout_keys(opts.receiver_timeout_s)
    stack = _FuzzStack(StackOptions(
        data_dir=data_dir, keep=True, database_url=opts.database_url, receipt_delay_s=None,
        log_level=opts.log_level, say=opts.say,
        env={ENV_NAMES[k]: secret_values[k] for k in ("twilio", "vonage", "generic")}))
    stack.opts.sections = {
        "webhooks": {"public_base_url": stack.api_url,
                     "twilio": {"auth_token_env": ENV_NAMES["twilio"]},
                     "vonage": {"signature_secret_env": ENV_NAMES["vonage"]},
                     "generic": {GENERIC_SOURCE: {"secret_env": ENV_NAMES["generic"]}}},
        "receiver": {**timeouts, **receiver_connection_limit(max(10, opts.idle // 3))},
    }
    limit = opts.slow_limit_s or (max(timeouts.values()) + 2.0 if timeouts else 10.0)
    canary = Canary()
    try:
        await canary.start()
        opts.say(f"canary on {', '.join(canary.addresses)} port {canary.port}; "
                 f"[receiver] slow-client keys: {stack.opts.sections['receiver'] or 'none'}")
        await stack.start()
        secret_values["api_key"] = stack.api_key
        pw = _database_password(stack)
        if pw:
            secret_values["database password"] = pw
        secret_values.update(await _account_secrets(stack))
        await _run_classes(opts, stack, canary, secret_values, seed, limit, report)
    except Exception as exc:  # noqa: BLE001 — a stack that did not start is a result too
        report.problems.append(make_redactor(secret_values)(f"{type(exc).__name__}: {exc}")[:2000])
    finally:
        await stack.stop()
        await canary.stop()
    report.canary_hits = list(canary.hits)
    await asyncio.to_thread(_scan, report, data_dir, secret_values)
    if tmp and not opts.keep:
        await asyncio.to_thread(shutil.rmtree, data_dir, ignore_errors=True)
    return report


def _run_dir(given: Path | None, server_secret: str) -> Path:
    """The run's folder (0700), with the server secret file the stack will use."""
    from smsgw.services.admin import up

    data_dir = Path(given or tempfile.mkdtemp(prefix="smsgw-fuzz-")).resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    up.write_private(data_dir / "server-secret", server_secret + "\n")
    return data_dir


async def _account_secrets(stack: Stack) -> dict[str, str]:
    """The account's status-callback signing secret, when the schema keeps one readable."""
    from smsgw.shared.core import db

    try:
        conn = await db.connect(stack.dsn, **getattr(stack, "connect_kwargs", {}))
    except db.DATABASE_ERRORS:
        return {}
    try:
        value = await conn.fetchval(
            "SELECT callback_secret::text FROM accounts WHERE id = $1", stack.account_id)
    except asyncpg.PostgresError:  # no such column (any more)
        return {}
    finally:
        await conn.close()
    return {"callback secret": value} if value else {}


def _database_password(stack: Stack) -> str | None:
    """The database password of the run (in the URL, or the embedded cluster's file)."""
    pw = getattr(stack, "connect_kwargs", {}).get("password") or urlsplit(stack.dsn).password
    pw_file = getattr(stack.pg, "pw_file", None)
    if not pw and pw_file is not None and Path(pw_file).exists():
        pw = Path(pw_file).read_text("utf-8").strip()
    return pw or None


def _scan(report: AttackReport, data_dir: Path, secret_values: dict[str, str]) -> None:
    """Scan every file of the run but the secret files themselves."""
    excluded = [p for p in logscan.run_files(data_dir) if _is_secret_file(p, secret_values)]
    report.secret_names = sorted(k for k, v in secret_values.items() if v)
    report.scanned = logscan.run_files(data_dir, exclude=excluded)
    report.hits = logscan.scan(report.scanned, secret_values)


def _is_secret_file(path: Path, secret_values: dict[str, str]) -> bool:
    """A file that holds nothing but one secret (the server secret file, a password file)."""
    try:
        if path.stat().st_size > 4096:
            return False
        text = path.read_text("utf-8", "replace").strip()
    except OSError:
        return False
    return text in {v for v in secret_values.values() if v}


async def _run_classes(opts: AttackOptions, stack: Stack, canary: Canary,
                       secret_values: dict[str, str], seed: int, limit: float,
                       report: AttackReport) -> None:
    redact = make_redactor(secret_values)
    t = Target("127.0.0.1", stack.api_port, stack.api_key, BENCH_ACCOUNT, stack.api_url,
               dict(secret_values))
    pid = stack.child("receiver@1").proc.pid  # type: ignore[union-attr]
    log_path = stack.child("receiver@1").log_path
    accepted_urls = 0
    for name in opts.classes:
        rng = random.Random(f"{seed}:{name}")
        result = ClassResult(name)
        report.classes.append(result)
        offset = log_path.stat().st_size if log_path.exists() else 0
        started = time.monotonic()
        opts.say(f"{name}: up to {opts.count} cases, {opts.duration_s:g} s (seed {seed})")
        deadline = started + opts.duration_s
        if name == "slow":
            await slow_class(t, rng, result, limit_s=limit, idle=opts.idle, count=opts.count,
                             progress=opts.say)
        else:
            cases = (bytes_cases(t, rng) if name == "bytes" else nul_cases(t, rng)
                     if name == "nul" else idna_cases(t, rng, canary.port))
            accepted = await run_cases(t, cases, result, count=opts.count, deadline=deadline,
                                       concurrency=opts.concurrency, progress=opts.say)
            accepted_urls += accepted
            if name == "idna":
                if accepted:
                    opts.say(f"idna: {accepted} URL cases were accepted; waiting for the "
                             "sender and the callbacks to try them")
                    pending = await _settle(stack.dsn, getattr(stack, "connect_kwargs", {}),
                                            opts.settle_s)
                    if pending:
                        opts.say(f"idna: {pending}")
                    await asyncio.sleep(1.0)
                result.failures += [f"SSRF: the canary got a {h}" for h in canary.hits]
        alive = await exchange(t.host, t.port, build_request("GET", b"/v1/ping",
                                                             t.headers({}), None), 10.0)
        now_pid = stack.child("receiver@1").proc.pid  # type: ignore[union-attr]
        if alive.status != 200 or now_pid != pid:
            result.failures.append(f"receiver not alive after the class: ping "
                                   f"{alive.status or alive.error}, pid {pid} → {now_pid}")
            pid = now_pid
        result.failures += await asyncio.to_thread(_logged_exceptions, log_path, offset)
        result.failures = [redact(f) for f in result.failures]
        result.log_excerpts = _log_errors(log_path, offset, redact)
        result.seconds = time.monotonic() - started
        opts.say(result.summary())


# --- command -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Command line of `smsgw fuzz attacks`."""
    p = argparse.ArgumentParser(
        prog="smsgw fuzz attacks", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--classes", default=",".join(CLASSES),
                   help=f"comma-separated classes to run (default: {','.join(CLASSES)})")
    p.add_argument("--seed", type=int, default=None, help="RNG seed (default: random, printed)")
    p.add_argument("--count", type=int, default=400,
                   help="requests per class (slow: trickling clients, at most 5); default 400")
    p.add_argument("--duration", type=float, default=120.0,
                   help="time budget per class in seconds (default 120)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight (default 8)")
    p.add_argument("--idle", type=int, default=300,
                   help="idle connections the slow class holds (default 300)")
    p.add_argument("--slow-limit", type=float, default=None,
                   help="seconds within which a slow client must be dropped (default: the "
                        "receiver's configured timeouts + 2 s, or 10 s)")
    p.add_argument("--database-url", default=None,
                   help="use this Postgres database instead of an embedded cluster")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the run's folder (config, logs); default: a temporary one")
    p.add_argument("--keep", action="store_true", help="keep the run's folder (its logs)")
    p.add_argument("--log-level", default="info", help="daemon log level (default info)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of `smsgw fuzz attacks`."""
    a = build_parser().parse_args(argv)
    classes = tuple(c.strip() for c in a.classes.split(",") if c.strip())
    unknown = [c for c in classes if c not in CLASSES]
    if unknown:
        sys.stderr.write(f"smsgw fuzz attacks: unknown class {unknown[0]!r} "
                         f"(choose from {', '.join(CLASSES)})\n")
        return 2
    opts = AttackOptions(classes=classes, seed=a.seed, count=a.count, duration_s=a.duration,
                         concurrency=a.concurrency, idle=a.idle, slow_limit_s=a.slow_limit,
                         database_url=a.database_url, data_dir=a.data_dir, keep=a.keep,
                         log_level=a.log_level)
    report = asyncio.run(run_attacks(opts))
    sys.stdout.write("\n".join(report.lines()) + "\n")
    if a.keep or a.data_dir:
        sys.stdout.write(f"run folder (logs): {report.data_dir}\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
