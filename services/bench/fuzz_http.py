"""`smsgw fuzz http`: bad input into the HTTP API and the provider webhooks; no 5xx, no crash.

1. **The API from its OpenAPI document** (`GET /v1/openapi.json`), with schemathesis when it
   is installed (`pip install schemathesis`; its `not_a_server_error` check, examples +
   coverage + fuzzing phases, authenticated with a real API key); without it, random and
   mutated JSON bodies and query strings to every operation of the document.
2. **The provider webhooks** (`/v1/inbound/twilio`, `/vonage`, `/generic`) with random fields:
   random names, values (unicode, control characters, huge, empty, wrong types), missing and
   repeated parameters — both unsigned and correctly signed, so the parsers behind the
   signature check are reached too.

It starts its own stack (embedded Postgres, simulator, daemons) unless `--api-url` and
`--api-key` name a running receiver. Passes when no answer is a 5xx other than 503 (503 +
Retry-After is the documented "retry later"), no request breaks the connection, and the
receiver is still the same process and answers `/v1/ping` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import random
import shutil
import string
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from smsgw.services.bench.stack import Stack, StackOptions

SECRETS = {"TWILIO_FUZZ_TOKEN": "twilio-token", "VONAGE_FUZZ_SECRET": "vonage-secret",
           "GENERIC_FUZZ_SECRET": "generic-secret"}
PUBLIC_BASE_URL = "https://fuzz.smsgw.invalid"  # Twilio signs the public URL (required)
WEBHOOKS = {"public_base_url": PUBLIC_BASE_URL,
            "twilio": {"auth_token_env": "TWILIO_FUZZ_TOKEN"},
            "vonage": {"signature_secret_env": "VONAGE_FUZZ_SECRET"},
            "generic": {"fuzz": {"secret_env": "GENERIC_FUZZ_SECRET"}}}


@dataclass(slots=True)
class Findings:
    """What the fuzzer saw."""

    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def note(self, status: int, what: str) -> None:
        """Count an answer; a 5xx other than 503 is a failure."""
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if status >= 500 and status != 503 and len(self.failures) < 50:
            self.failures.append(f"{status} for {what}")


# --- random values ------------------------------------------------------------------------

def rand_text(rng: random.Random) -> str:
    """A nasty string: empty, huge, unicode, control characters, numbers, injections."""
    choices: list[Callable[[], str]] = [
        lambda: "",
        lambda: "".join(rng.choice(string.printable) for _ in range(rng.randint(1, 40))),
        lambda: "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 20))),
        lambda: "x" * rng.choice([161, 1601, 70000]),
        lambda: rng.choice(["+447700900123", "447700900123", "07700900123", "+1", "0", "-1",
                            "12345", "ALPHANUMERIC_TOO_LONG", "\x00", "%00", "' OR 1=1 --",
                            "{}", "[]", "null", "NaN", "1e309", "\U0001f600" * 100]),
        lambda: str(rng.randint(-2**63, 2**64)),
    ]
    # lone surrogates cannot be sent as UTF-8 at all: replace them (U+FFFD)
    return rng.choice(choices)().encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value."""
    kind = rng.randint(0, 7 if depth < 2 else 4)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**31, 2**63, 1.5, -0.0, 1e300])
    if kind in (3, 4):
        return rand_text(rng)
    if kind == 5:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rand_text(rng)[:20]: rand_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate_fields(rng: random.Random, base: dict[str, str]) -> dict[str, str]:
    """A valid parameter set with some fields dropped, changed or added."""
    out = dict(base)
    for k in list(out):
        r = rng.random()
        if r < 0.15:
            del out[k]
        elif r < 0.5:
            out[k] = rand_text(rng)
    for _ in range(rng.randint(0, 3)):
        out[rand_text(rng)[:16] or "x"] = rand_text(rng)
    return out


# --- webhooks -----------------------------------------------------------------------------

def twilio_sig(url: str, params: dict[str, str]) -> str:
    """Twilio's X-Twilio-Signature over the URL and the sorted parameters."""
    payload = url + "".join(k + params[k] for k in sorted(params))
    mac = hmac.new(SECRETS["TWILIO_FUZZ_TOKEN"].encode(), payload.encode("utf-8", "replace"),
                   hashlib.sha1)
    return base64.b64encode(mac.digest()).decode()


def vonage_sig(params: dict[str, str]) -> str:
    """Vonage's `sig` (HMAC-SHA256 over &key=value sorted, & and = in values replaced)."""
    payload = "".join(f"&{k}={v.replace('&', '_').replace('=', '_')}"
                      for k, v in sorted(params.items()))
    return hmac.new(SECRETS["VONAGE_FUZZ_SECRET"].encode(), payload.encode("utf-8", "replace"),
                    hashlib.sha256).hexdigest()


async def fuzz_webhooks(session: aiohttp.ClientSession, api: str, n: int, seed: int,
                        found: Findings) -> None:
    """Random, mutated and signed requests to every webhook endpoint."""
    rng = random.Random(seed)
    for i in range(n):
        which = i % 3
        try:
            if which == 0:
                await _twilio(session, api, rng, found)
            elif which == 1:
                await _vonage(session, api, rng, found)
            else:
                await _generic(session, api, rng, found)
        except (aiohttp.ClientError, TimeoutError) as exc:
            found.failures.append(f"connection error on webhook request {i}: {exc!r}")


async def _twilio(session: aiohttp.ClientSession, api: str, rng: random.Random,
                  found: Findings) -> None:
    base = {"MessageSid": f"SM{rng.getrandbits(64):032x}", "From": "+447700900123",
            "To": "+447700900001", "Body": "hello", "NumSegments": "1", "AccountSid": "AC1"}
    params = mutate_fields(rng, base)
    url = api + "/v1/inbound/twilio"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if rng.random() < 0.7:
        headers["X-Twilio-Signature"] = twilio_sig(PUBLIC_BASE_URL + "/v1/inbound/twilio",
                                                   params)
    async with session.post(url, data=urlencode(params), headers=headers) as r:
        await r.read()
        found.note(r.status, f"twilio {params!r}"[:300])


async def _vonage(session: aiohttp.ClientSession, api: str, rng: random.Random,
                  found: Findings) -> None:
    base = {"msisdn": "447700900123", "to": "447700900001", "messageId": f"{rng.getrandbits(40)}",
            "text": "hello", "type": "text", "message-timestamp": "2026-01-01 10:00:00",
            "timestamp": str(int(time.time())), "nonce": str(rng.getrandbits(32))}
    if rng.random() < 0.3:
        base.update({"concat": "true", "concat-ref": str(rng.randint(0, 300)),
                     "concat-total": rand_text(rng)[:3], "concat-part": rand_text(rng)[:3]})
    params = mutate_fields(rng, base)
    if rng.random() < 0.7:
        params["sig"] = vonage_sig(params)
    url = api + "/v1/inbound/vonage"
    mode = rng.randint(0, 2)
    if mode == 0:
        ctx = session.get(url + "?" + urlencode(params))
    elif mode == 1:
        ctx = session.post(url, data=urlencode(params),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    else:
        ctx = session.post(url, data=json.dumps(params),
                           headers={"Content-Type": "application/json"})
    async with ctx as r:
        await r.read()
        found.note(r.status, f"vonage mode {mode} {params!r}"[:300])


async def _generic(session: aiohttp.ClientSession, api: str, rng: random.Random,
                   found: Findings) -> None:
    if rng.random() < 0.5:
        doc: Any = mutate_fields(rng, {"id": f"g{rng.getrandbits(48)}", "from": "+447700900123",
                                       "to": "12345", "text": "hello"})
        if rng.random() < 0.3:
            doc["meta"] = rand_value(rng)
    else:
        doc = rand_value(rng)
    body = json.dumps(doc).encode() if rng.random() < 0.9 else bytes(
        rng.getrandbits(8) for _ in range(rng.randint(0, 200)))
    ts = str(int(time.time()) + rng.choice([0, 0, 0, -100000, 100000]))
    headers = {"Content-Type": "application/json", "X-Smsgw-Timestamp": ts}
    if rng.random() < 0.8:
        mac = hmac.new(SECRETS["GENERIC_FUZZ_SECRET"].encode(), ts.encode() + b"." + body,
                       hashlib.sha256)
        headers["X-Smsgw-Signature"] = "sha256=" + mac.hexdigest()
    async with session.post(api + "/v1/inbound/generic/fuzz", data=body, headers=headers) as r:
        await r.read()
        found.note(r.status, f"generic {body[:200]!r}")


# --- the API from its document ------------------------------------------------------------

async def schemathesis_run(api: str, key: str, max_examples: int, max_time: int,
                           seed: int) -> tuple[int, str]:
    """Run the schemathesis CLI against the live API; (exit code, output tail)."""
    exe = shutil.which("schemathesis") or str(Path(sys.executable).with_name("schemathesis"))
    cmd = [exe, "run", f"{api}/v1/openapi.json", "--url", api, "--checks", "not_a_server_error",
           "-H", f"Authorization: Bearer {key}", "--max-examples", str(max_examples),
           "--max-time", str(max_time), "--seed", str(seed), "--phases",
           "examples,coverage,fuzzing", "--suppress-health-check", "all", "--no-color",
           "--request-timeout", "10", "--workers", "4"]
    proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace")


async def document_fuzz(session: aiohttp.ClientSession, api: str, key: str, n: int, seed: int,
                        found: Findings) -> None:
    """Without schemathesis: random bodies and queries to every operation in the document."""
    async with session.get(api + "/v1/openapi.json") as r:
        doc = await r.json()
    rng = random.Random(seed)
    ops = [(path, method) for path, item in doc.get("paths", {}).items()
           for method in item if method in ("get", "post", "put", "delete", "patch")]
    for i in range(n):
        path, method = ops[i % len(ops)]
        url = api + path.replace("{id}", rand_text(rng)[:30] or "1").split("{")[0]
        headers = {"Authorization": f"Bearer {key}"} if rng.random() < 0.8 else {}
        body = json.dumps(rand_value(rng)).encode()
        try:
            async with session.request(method.upper(), url, data=body, headers=headers,
                                       params={rand_text(rng)[:10] or "q": rand_text(rng)[:50]}
                                       ) as r:
                await r.read()
                found.note(r.status, f"{method.upper()} {path} {body[:200]!r}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            found.failures.append(f"connection error on {method} {path}: {exc!r}")


# --- command ------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    """Command line of `smsgw fuzz http`."""
    p = argparse.ArgumentParser(prog="smsgw fuzz http", description=__doc__.split("\n\n")[0])
    p.add_argument("--api-url", default=None, help="a running receiver (default: own stack)")
    p.add_argument("--api-key", default=None, help="API key for --api-url")
    p.add_argument("--examples", type=int, default=50,
                   help="schemathesis --max-examples per operation")
    p.add_argument("--max-time", type=int, default=120, help="schemathesis time budget (s)")
    p.add_argument("--webhooks", type=int, default=600, help="random webhook requests")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--no-schemathesis", action="store_true",
                   help="use the built-in generator even when schemathesis is installed")
    return p


async def run(a: argparse.Namespace) -> int:
    """Start a stack unless given one, fuzz, check the receiver survived."""
    seed = a.seed if a.seed is not None else random.randrange(2**32)
    stack = None
    if a.api_url:
        api, key = a.api_url.rstrip("/"), a.api_key or ""
    else:
        stack = Stack(StackOptions(sections={"webhooks": WEBHOOKS}, env=dict(SECRETS),
                                   receipt_delay_s=None,
                                   say=lambda m: sys.stderr.write(f"[fuzz] {m}\n")))
        await stack.start()
        api, key = stack.api_url, stack.api_key
    try:
        return await _fuzz(a, api, key, seed, stack)
    finally:
        if stack is not None:
            await stack.stop()


async def _fuzz(a: argparse.Namespace, api: str, key: str, seed: int,
                stack: Stack | None) -> int:
    found = Findings()
    pid = stack.child("receiver@1").proc.pid if stack else None  # type: ignore[union-attr]
    timeout = aiohttp.ClientTimeout(total=20)
    use_st = not a.no_schemathesis and _has_schemathesis()
    st_rc, st_out = 0, ""
    async with aiohttp.ClientSession(timeout=timeout) as session:
        if use_st:
            sys.stderr.write(f"[fuzz] schemathesis on {api}/v1/openapi.json (seed {seed})\n")
            st_rc, st_out = await schemathesis_run(api, key, a.examples, a.max_time, seed)
        else:
            await document_fuzz(session, api, key, a.examples * 20, seed, found)
        sys.stderr.write(f"[fuzz] {a.webhooks} webhook requests (seed {seed})\n")
        await fuzz_webhooks(session, api, a.webhooks, seed, found)
        async with session.get(api + "/v1/ping") as r:
            alive = r.status == 200
    same = stack is None or stack.child("receiver@1").proc.pid == pid  # type: ignore[union-attr]
    sys.stdout.write(f"fuzz http (seed {seed}):\n")
    if use_st:
        sys.stdout.write(f"  schemathesis: exit {st_rc}\n" + "".join(
            f"    {line}\n" for line in _st_report(st_out)))
    statuses = dict(sorted(found.statuses.items()))
    sys.stdout.write(f"  requests: {found.requests}, statuses: {statuses}\n")
    sys.stdout.write(f"  receiver alive: {alive}, same process: {same}\n")
    for f in found.failures:
        sys.stdout.write(f"  FAIL {f}\n")
    ok = st_rc == 0 and not found.failures and alive and same
    sys.stdout.write("  OK\n" if ok else "  FAILED\n")
    return 0 if ok else 1


def _st_report(out: str) -> list[str]:
    """The failures section (reproducible curl commands) and the summary of a schemathesis run."""
    lines = [ln for ln in out.strip().splitlines() if "%]" not in ln]  # drop progress lines
    start = next((i for i, ln in enumerate(lines) if "FAILURES" in ln), None)
    if start is None:
        return lines[-25:]
    return [*lines[start:start + 80], "...", *lines[-12:]]


def _has_schemathesis() -> bool:
    try:
        import schemathesis  # noqa: F401
    except ImportError:
        return False
    return True


def main(argv: list[str]) -> int:
    """Entry point of `smsgw fuzz http`."""
    a = build_parser().parse_args(argv)
    return asyncio.run(run(a))
