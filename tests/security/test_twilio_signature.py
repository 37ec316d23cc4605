"""Finding 9: Twilio signatures are checked exactly as Twilio's own library checks them.

The oracle is the real `twilio` package (`twilio.request_validator.RequestValidator`), not our
code: every signature is made with `compute_signature`, and the receiver must accept exactly
the requests `RequestValidator.validate` accepts for the configured public URL — with and
without the port, repeated form names, duplicate values, unicode — and refuse a signature made
for another host (including the Host header the request arrived with). Twilio configured
without `[webhooks] public_base_url` is a configuration error (check-config fails, the daemon
exits 78). What is stored is what was signed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import asyncpg
from multidict import MultiDict
from twilio.request_validator import RequestValidator

TOKEN = "sec-twilio-auth-token-0123456789ab"
PUBLIC = "https://sms.example.com"
PATH = "/v1/inbound/twilio"
ROOT = Path(__file__).resolve().parents[2]
ENV = {"SMSGW_WEBHOOKS__TWILIO__AUTH_TOKEN_ENV": "SEC_TWILIO_TOKEN", "SEC_TWILIO_TOKEN": TOKEN}

Pairs = list[tuple[str, str]]


def form(sid: str, **extra: str) -> Pairs:
    fields = {"MessageSid": sid, "From": "+447700900111", "To": "+447700900000",
              "Body": "hello", **extra}
    return list(fields.items())


def sign(url: str, pairs: Pairs) -> str:
    """Twilio's own signature of a form POST to `url` (MultiDict: every value of a name)."""
    return str(RequestValidator(TOKEN).compute_signature(url, MultiDict(pairs)))


def twilio_accepts(url: str, pairs: Pairs, signature: str) -> bool:
    """What Twilio's own validator says about this request at the public URL."""
    return bool(RequestValidator(TOKEN).validate(url, MultiDict(pairs), signature))


async def test_twilio_without_public_base_url_is_a_config_error(db_url: str,
                                                                tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update({"SMSGW_DATABASE_URL": db_url, **ENV})
    check = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "check-config", cwd=tmp_path, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await check.communicate()
    assert check.returncode != 0 and b"public_base_url" in out, out
    daemon = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "receiver", cwd=tmp_path,
        env={**env, "SMSGW_RECEIVER__HTTP_PORT": "0", "SMSGW_RECEIVER__METRICS_PORT": "0"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    async with asyncio.timeout(60):
        out, _ = await daemon.communicate()
    assert daemon.returncode == 78 and b"public_base_url" in out, out
    # with the public URL it validates
    ok = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", "check-config", cwd=tmp_path,
        env={**env, "SMSGW_WEBHOOKS__PUBLIC_BASE_URL": PUBLIC},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await ok.communicate()
    assert ok.returncode == 0, out


async def test_receiver_accepts_exactly_what_twilio_accepts(sec_edge_receiver: object,
                                                            pool: asyncpg.Pool) -> None:
    start = sec_edge_receiver
    daemon = await start({**ENV, "SMSGW_WEBHOOKS__PUBLIC_BASE_URL": PUBLIC})  # type: ignore
    here = f"http://127.0.0.1:{daemon.port}"
    url = PUBLIC + PATH
    hosts = {"public": url, "public with :443": "https://sms.example.com:443" + PATH,
             "http scheme": "http://sms.example.com" + PATH,
             "another host": "https://evil.example.net" + PATH,
             "the Host header we were called on": here + PATH,
             "another path": PUBLIC + "/v1/inbound/twilio2"}
    bodies: dict[str, tuple[Pairs, Pairs]] = {  # name: (signed pairs, sent pairs)
        "plain": (form("SM1"), form("SM1")),
        "repeated name": ([*form("SM2", MediaUrl0="a"), ("Tag", "b"), ("Tag", "a")],
                          [*form("SM2", MediaUrl0="a"), ("Tag", "b"), ("Tag", "a")]),
        "repeated name, other order": ([*form("SM3"), ("Tag", "b"), ("Tag", "a")],
                                       [*form("SM3"), ("Tag", "a"), ("Tag", "b")]),
        "duplicate value sent twice": ([*form("SM4"), ("Tag", "a")],
                                       [*form("SM4"), ("Tag", "a"), ("Tag", "a")]),
        "one value of a repeated name dropped": ([*form("SM5"), ("Tag", "a"), ("Tag", "b")],
                                                 [*form("SM5"), ("Tag", "a")]),
        "value moved to another name": ([*form("SM6"), ("Ta", "ga")],
                                        [*form("SM6"), ("Tag", "a")]),
        "unicode and empty values": (form("SM7", Body="héllo ✓ 👋", Empty=""),
                                     form("SM7", Body="héllo ✓ 👋", Empty="")),
        "body changed": (form("SM8"), form("SM8", Body="hellO")),
    }
    results: list[tuple[str, bool, int]] = []
    async with aiohttp.ClientSession() as http:
        for body_name, (signed, sent) in bodies.items():
            for host_name, signed_url in hosts.items():
                sig = sign(signed_url, signed)
                expected = twilio_accepts(url, sent, sig)
                async with http.post(here + PATH, data=urlencode(sent).encode(),
                                     headers={"X-Twilio-Signature": sig, "Content-Type":
                                              "application/x-www-form-urlencoded"}) as resp:
                    status = resp.status
                assert status in (200, 401), (body_name, host_name, status)
                results.append((f"{body_name} / signed for {host_name}", expected, status))
        # GET: the parameters are in the signed URL
        query = "?" + urlencode(form("SM9"))
        for host_name, signed_url in hosts.items():
            sig = sign(signed_url + query, [])
            expected = twilio_accepts(url + query, [], sig)
            async with http.get(here + PATH + query,
                                headers={"X-Twilio-Signature": sig}) as resp:
                results.append((f"GET / signed for {host_name}", expected, resp.status))
    wrong = [f"{name}: twilio {'accepts' if exp else 'refuses'}, we answered {status}"
             for name, exp, status in results if exp != (status == 200)]
    assert not wrong, "\n".join(wrong)
    accepted = {name for name, exp, _ in results if exp}
    assert "plain / signed for public" in accepted
    assert "plain / signed for public with :443" in accepted
    assert "repeated name, other order / signed for public" in accepted
    assert "plain / signed for the Host header we were called on" not in accepted
    assert "plain / signed for another host" not in accepted
    assert await daemon.stop() == 0


async def test_stored_values_are_the_signed_ones(sec_edge_receiver: object,
                                                 pool: asyncpg.Pool) -> None:
    start = sec_edge_receiver
    daemon = await start({**ENV, "SMSGW_WEBHOOKS__PUBLIC_BASE_URL": PUBLIC})  # type: ignore
    here = f"http://127.0.0.1:{daemon.port}"

    async def post(pairs: Pairs) -> int:
        async with aiohttp.ClientSession() as http, http.post(
                here + PATH, data=urlencode(pairs).encode(),
                headers={"X-Twilio-Signature": sign(PUBLIC + PATH, pairs),
                         "Content-Type": "application/x-www-form-urlencoded"}) as resp:
            return resp.status

    # Two different senders, both signed: which one sent it is ambiguous → refused.
    two_from = [*form("SMA"), ("From", "+447700900999")]
    assert await post(two_from) == 422
    assert await pool.fetchval("SELECT count(*) FROM inbound") == 0
    # Repeated other names keep every signed value.
    assert await post([*form("SMB"), ("MediaUrl", "https://m/1"), ("MediaUrl", "https://m/2")]) \
        == 200
    row = await pool.fetchrow("SELECT from_addr, to_addr, body, meta FROM inbound")
    assert (row["from_addr"], row["to_addr"], row["body"]) == ("+447700900111",
                                                               "+447700900000", "hello")
    assert row["meta"]["MediaUrl"] == ["https://m/1", "https://m/2"]
    assert await daemon.stop() == 0
