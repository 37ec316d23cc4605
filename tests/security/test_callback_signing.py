"""Finding 11: every status callback is signed with a per-account secret the CLI shows and
rotates; Kannel-style GET dlr-url callbacks are signed over the timestamp and the path+query.

Real pieces only: an account made by the CLI's own function (no secret given), the secret read
from `smsgw accounts callback-secret`'s output, callbacks rows built by the sender's code
(`services/sender/status_callbacks.py` `callback_row`), a real `smsgw processor` process
delivering them, and a real HTTP application on 127.0.0.1 that checks each signature with an
HMAC computed here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from smsgw.services.admin import accounts
from smsgw.shared.domain.status_callbacks import StatusChange, callback_row
from smsgw.shared.queue import store
from smsgw.shared.runtime.config import WebhooksSettings

from ..harness import CLI_MODULE, ROOT, Spawner, clean_env, serve

SERVER_SECRET = "sec-cbsign-server-secret"


def _hmac(key: str, message: bytes) -> str:
    return "sha256=" + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


class SecCbsignApp:
    """The customer's application: records each request as it arrived on the wire."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def sec_cbsign_app() -> AsyncIterator[SecCbsignApp]:
    state = SecCbsignApp()

    async def hook(request: web.Request) -> web.StreamResponse:
        state.seen.append({"method": request.method, "target": request.raw_path,
                           "body": await request.read(), "headers": dict(request.headers)})
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hook)
    async with serve(app) as state.port:
        yield state


@pytest.fixture
def sec_cbsign_config(tmp_path: Path) -> Path:
    """A config naming the server secret file, as `smsgw up` writes it."""
    folder = tmp_path / "cli"
    folder.mkdir()
    secret = folder / "server-secret"
    secret.write_text(SERVER_SECRET + "\n")
    cfg = folder / "smsgw.toml"
    cfg.write_text(f'[security]\nserver_secret_file = "{secret}"\n')
    return cfg


CliSecret = Callable[..., Awaitable[str]]


@pytest.fixture
def sec_cbsign_cli(db_url: str, sec_cbsign_config: Path,
                   capsys: pytest.CaptureFixture[str]) -> CliSecret:
    """Run `smsgw accounts callback-secret NAME [--rotate]`; return the secret it printed."""
    async def run(name: str, *extra: str) -> str:
        capsys.readouterr()
        rc = await asyncio.to_thread(accounts.main, [
            "callback-secret", name, *extra, "--config", str(sec_cbsign_config),
            "--database-url", db_url])
        out = capsys.readouterr().out
        assert rc == 0, out
        secret = out.strip().splitlines()[-1]
        assert len(secret) >= 32 and " " not in secret, out
        return secret
    return run


@pytest.fixture
async def sec_cbsign_processor(db_url: str, tmp_path: Path) -> AsyncIterator[None]:
    """A real `smsgw processor` with the same server secret, allowed to call 127.0.0.1."""
    env = clean_env(**{"SMSGW_DATABASE_URL": db_url, "SMSGW_PROCESSOR__METRICS_PORT": "0",
                       "SMSGW_PROCESSOR__POLL_S": "0.2", "PYTHONPATH": str(ROOT),
                       "SMSGW_SECURITY__SERVER_SECRET_ENV": "SEC_CBSIGN_SECRET",
                       "SEC_CBSIGN_SECRET": SERVER_SECRET})
    if "allowed_networks" in WebhooksSettings.model_fields:
        env["SMSGW_WEBHOOKS__ALLOWED_NETWORKS"] = '["127.0.0.0/8"]'
    else:  # the code before issue 12 (the regression run against it)
        env["SMSGW_WEBHOOKS__ALLOW_PRIVATE_URLS"] = "true"
    spawner = Spawner(tmp_path, stderr="stdout", wait_s=60)
    try:
        await (await spawner.start("processor", env=env, python=CLI_MODULE)).ready()
        yield
    finally:
        await spawner.close()


async def _account(pool: asyncpg.Pool, name: str) -> int:
    """An account created by the CLI's function, no callback secret given anywhere."""
    async with pool.acquire() as conn:
        account_id, _ = await accounts.create_account(conn, SERVER_SECRET.encode(), name)
    return account_id


async def _status_callback(pool: asyncpg.Pool, account_id: int, url: str, *,
                           style: str = "json", outbound_id: int = 7) -> None:
    """Queue the callback the sender builds: for JSON a delivered message; for a Kannel
    dlr-url the SMSC's ACK of the submit (Kannel reports receipts through their own rows)."""
    change = StatusChange(
        outbound_id=outbound_id, status="delivered" if style == "json" else "submitted",
        account_id=account_id,
        from_addr="Shop", to_addr="+447700900123", client_ref="r1", callback_url=url,
        dlr_mask=31 if style == "kannel" else None, meta={"callback_style": style},
        parts_total=1, delivered_parts=1, connector="sim", error_code=None, error=None)
    row = callback_row(change, at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert row is not None
    acct, oid, target, method, body, headers, secret_ref = row
    await store.enqueue(pool, "callbacks", [{
        "kind": "status", "account_id": acct, "outbound_id": oid, "url": target,
        "method": method, "body": body, "headers": headers, "secret_ref": secret_ref}])


async def _delivered(pool: asyncpg.Pool, app: SecCbsignApp, n: int) -> list[dict[str, Any]]:
    async with asyncio.timeout(60):
        while len(app.seen) < n:  # noqa: ASYNC110 - the app runs in this loop; polls it
            await asyncio.sleep(0.05)
        while await pool.fetchval(  # noqa: ASYNC110 - polls the database
                "SELECT count(*) FROM callbacks WHERE status <> 'done'"):
            await asyncio.sleep(0.05)
    return app.seen


async def test_json_status_callback_signed_with_the_cli_secret_and_rotation(
        pool: asyncpg.Pool, sec_cbsign_app: SecCbsignApp, sec_cbsign_cli: CliSecret,
        sec_cbsign_processor: None) -> None:
    """1. `accounts create` (no secret given), then `accounts callback-secret shop` prints a
    secret; 2. a status callback reaches the app signed: HMAC-SHA256(secret, "<ts>." + body);
    3. `--rotate` prints a different secret; the next callback verifies with the new secret
    and not with the old one; 4. nothing secret is stored in the accounts row."""
    account_id = await _account(pool, "shop")
    secret = await sec_cbsign_cli("shop")
    assert await sec_cbsign_cli("shop") == secret  # showing again does not change it

    await _status_callback(pool, account_id, sec_cbsign_app.url("/status"))
    [first] = await _delivered(pool, sec_cbsign_app, 1)
    ts = first["headers"]["X-Smsgw-Timestamp"]
    assert b'"status":"delivered"' in first["body"]
    assert first["headers"]["X-Smsgw-Signature"] == _hmac(secret, f"{ts}.".encode()
                                                          + first["body"])

    rotated = await sec_cbsign_cli("shop", "--rotate")
    assert rotated != secret
    await _status_callback(pool, account_id, sec_cbsign_app.url("/status"), outbound_id=8)
    second = (await _delivered(pool, sec_cbsign_app, 2))[1]
    ts2 = second["headers"]["X-Smsgw-Timestamp"]
    message = f"{ts2}.".encode() + second["body"]
    assert second["headers"]["X-Smsgw-Signature"] == _hmac(rotated, message)
    assert second["headers"]["X-Smsgw-Signature"] != _hmac(secret, message)

    row = await pool.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)
    stored = " ".join(str(v) for v in row.values())
    assert secret not in stored and rotated not in stored
    assert row["callback_secret"] is None


async def test_get_dlr_url_callback_signature_covers_path_and_query(
        pool: asyncpg.Pool, sec_cbsign_app: SecCbsignApp, sec_cbsign_cli: CliSecret,
        sec_cbsign_processor: None) -> None:
    """1. a Kannel-style dlr-url (GET) status callback for a CLI-made account; 2. the app gets
    X-Smsgw-Signature = HMAC(secret, "<ts>." + path-and-query as on the request line); 3. the
    same check with the query tampered (another status, another number) or with the old
    empty-body message fails."""
    account_id = await _account(pool, "kapp")
    secret = await sec_cbsign_cli("kapp")
    template = "/dlr?id=%I&type=%d&to=%p&at=%t&smsc=%i"
    await _status_callback(pool, account_id, sec_cbsign_app.url(template), style="kannel")
    [req] = await _delivered(pool, sec_cbsign_app, 1)
    assert req["method"] == "GET" and req["target"].startswith("/dlr?id=")
    assert "&type=8&" in req["target"]  # Kannel's DLR type of the SMSC's ACK
    ts = req["headers"]["X-Smsgw-Timestamp"]
    signature = req["headers"]["X-Smsgw-Signature"]
    assert signature == _hmac(secret, f"{ts}.{req['target']}".encode())
    for tampered in (req["target"].replace("type=8", "type=16"),
                     req["target"].replace("%2B447700900123", "%2B447700900999"),
                     req["target"] + "&x=1"):
        assert tampered != req["target"]
        assert signature != _hmac(secret, f"{ts}.{tampered}".encode())
    assert signature != _hmac(secret, f"{ts}.".encode())  # not over an empty body
