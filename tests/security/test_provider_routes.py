"""Finding 3: a provider route without a configured secret is off — one rule for all.

Twilio without an auth token, Vonage without a signature secret, a generic source without a
secret (and the unnamed generic route without a `default` source) all answer what an unknown
path answers (404, same body), store nothing, and the receiver names them in one
`webhook_routes_off` line at start-up. With the secret configured, the route works.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import aiohttp
import asyncpg

VONAGE_SECRET = "sec-routes-vonage-secret"
REPRO = {"msisdn": "+447700900998", "to": "+447700900000", "messageId": "x", "text": "HELLO"}


def vonage_sig(params: dict[str, str]) -> str:
    """The Vonage SDK's sha256 signature (independent of the receiver's code)."""
    mac = hmac.new(VONAGE_SECRET.encode(), digestmod=hashlib.sha256)
    for key in sorted(params):
        value = params[key].replace("&", "_").replace("=", "_")
        mac.update(f"&{key}={value}".encode())
    return mac.hexdigest()


async def answer(http: aiohttp.ClientSession, method: str, url: str,
                 **kw: object) -> tuple[int, bytes]:
    async with http.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        return resp.status, await resp.read()


async def test_routes_without_a_secret_are_off(sec_edge_receiver: object,
                                               pool: asyncpg.Pool) -> None:
    start = sec_edge_receiver
    daemon = await start({  # type: ignore[operator]
        "SMSGW_WEBHOOKS__GENERIC": json.dumps({"acme": {}}),  # a source without a secret
    })
    base = f"http://127.0.0.1:{daemon.port}"
    body = json.dumps({"id": "g1", "from": "+447700900998", "to": "+447700900000",
                       "text": "STOP"}).encode()
    ts = str(int(time.time()))
    signed = {"X-Smsgw-Timestamp": ts, "Content-Type": "application/json",
              "X-Smsgw-Signature": "sha256=" + hmac.new(b"", ts.encode() + b"." + body,
                                                        hashlib.sha256).hexdigest()}
    async with aiohttp.ClientSession() as http:
        unknown = await answer(http, "POST", base + "/v1/inbound/nonexistent", data=body)
        assert unknown[0] == 404
        answers = {
            "vonage GET (the repro)": await answer(
                http, "GET", base + "/v1/inbound/vonage?" + urlencode(REPRO)),
            "vonage GET STOP": await answer(
                http, "GET", base + "/v1/inbound/vonage?" + urlencode({**REPRO, "text": "STOP",
                                                                       "messageId": "y"})),
            "vonage POST json": await answer(http, "POST", base + "/v1/inbound/vonage",
                                             json={**REPRO, "messageId": "z"}),
            "vonage reachability GET": await answer(http, "GET", base + "/v1/inbound/vonage"),
            "twilio POST": await answer(
                http, "POST", base + "/v1/inbound/twilio",
                data={"MessageSid": "SM1", "From": "+447700900998", "To": "+447700900000",
                      "Body": "HELLO"}, headers={"X-Twilio-Signature": "x"}),
            "generic source without secret": await answer(
                http, "POST", base + "/v1/inbound/generic/acme", data=body, headers=signed),
            "generic without a default source": await answer(
                http, "POST", base + "/v1/inbound/generic", data=body, headers=signed),
            "generic unknown source": await answer(
                http, "POST", base + "/v1/inbound/generic/other", data=body, headers=signed),
        }
    different = {name: a for name, a in answers.items() if a != unknown}
    assert not different, (unknown, different)
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 0
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0
    assert await daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.lines if b'"webhook_routes_off"' in line]
    assert len(lines) == 1
    assert lines[0]["routes"] == ["/v1/inbound/twilio", "/v1/inbound/vonage",
                                  "/v1/inbound/generic", "/v1/inbound/generic/acme"]


async def test_vonage_route_is_on_with_its_secret(sec_edge_receiver: object,
                                                  pool: asyncpg.Pool) -> None:
    start = sec_edge_receiver
    daemon = await start({  # type: ignore[operator]
        "SMSGW_WEBHOOKS__VONAGE__SIGNATURE_SECRET_ENV": "SEC_ROUTES_VONAGE",
        "SEC_ROUTES_VONAGE": VONAGE_SECRET,
    })
    base = f"http://127.0.0.1:{daemon.port}/v1/inbound/vonage?"
    params = {**REPRO, "timestamp": str(int(time.time()))}
    async with aiohttp.ClientSession() as http:
        assert (await answer(http, "GET", base + urlencode(REPRO)))[0] == 401  # unsigned
        status, _ = await answer(http, "GET", base + urlencode({**params,
                                                                "sig": vonage_sig(params)}))
        assert status == 204
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 1
    assert await daemon.stop() == 0
    lines = [json.loads(line) for line in daemon.lines if b'"webhook_routes_off"' in line]
    assert len(lines) == 1 and "/v1/inbound/vonage" not in lines[0]["routes"]
