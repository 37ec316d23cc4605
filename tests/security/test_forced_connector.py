"""Finding 7 (forced connectors): an account may force only the connectors it is allowed to.

Before the fix any account could force any connector with Kannel's `smsc=`, overriding its
routes, and an unknown connector name was accepted and the message parked forever. Now an
account may force none by default (its routes decide); `smsgw accounts create/update NAME
--allowed-connector NAME` allows one, and it must also be a configured `[[connectors]]`. A
refused one is a Kannel-style 400 from /cgi-bin/sendsms and a 422 naming `connector` from the
JSON API, and nothing is stored.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from smsgw.services.admin import accounts
from smsgw.services.receiver.options import ReceiverOptions


async def test_forced_connector_only_when_allowed_and_known(
        sec_mt_receiver, sec_mt_account, pool, db_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """1. config connectors opA and opB; account `app` allowed none
    2. smsc=nosuch and smsc=opA → 400 naming smsc; JSON connector the same → 422; nothing stored
    3. `smsgw accounts update app --allowed-connector opA --allowed-connector ghost`
    4. smsc=opA and JSON connector opA → accepted with opA as the forced route; opB still
       refused (not allowed), ghost refused (allowed but not configured: it would park forever)
    5. no smsc at all is accepted (routes decide); the update is in the audit log."""
    monkeypatch.delenv("SMSGW_TEST_DATABASE_URL", raising=False)
    rx = await sec_mt_receiver(ReceiverOptions(default_country="GB", auth_cache_s=0),
                               connectors=("opA", "opB"))
    _, key = await sec_mt_account("app")
    base = (f"/cgi-bin/sendsms?username=app&password={quote(key)}&from=Shop&text=hi"
            "&to=%2B447700900123")
    msg = {"to": "+447700900123", "from": "Shop", "text": "hi"}

    async def refused(connector: str) -> None:
        status, text = await rx.call("GET", base + "&smsc=" + connector)
        assert status == 400 and text.startswith("Invalid parameter smsc"), (connector, text)
        status, body = await rx.call("POST", "/v1/messages", key=key,
                                     json={**msg, "connector": connector})
        assert status == 422 and [e["field"] for e in body["errors"]] == ["connector"], body

    for connector in ("nosuch", "opA"):
        await refused(connector)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0

    rc = await asyncio.to_thread(accounts.main, [
        "update", "app", "--allowed-connector", "opA", "--allowed-connector", "ghost",
        "--database-url", db_url])
    assert rc == 0
    status, text = await rx.call("GET", base + "&smsc=opA")
    assert (status, text) == (202, "0: Accepted for delivery")
    status, body = await rx.call("POST", "/v1/messages", key=key,
                                 json={**msg, "connector": "opA"})
    assert status == 202, body
    for connector in ("opB", "ghost", "nosuch"):
        await refused(connector)
    status, text = await rx.call("GET", base)
    assert status == 202
    rows = await pool.fetch("SELECT route_hint FROM outbound ORDER BY id")
    assert [r["route_hint"] for r in rows] == ["opA", "opA", None]
    detail = await pool.fetchval(
        "SELECT detail FROM audit_log WHERE action = 'account_updated'")
    assert detail["allowed_connectors"] == ["opA", "ghost"]


async def test_create_and_update_flags(pool, db_url: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`create --allowed-connector` stores the list; `update` changes only the flags given
    (--rate, --category, --no-allowed-connectors); an unknown account is a usage error."""
    monkeypatch.delenv("SMSGW_TEST_DATABASE_URL", raising=False)
    monkeypatch.setenv("SMSGW_SECURITY__SERVER_SECRET_ENV", "SEC_MT_CLI_SECRET")
    monkeypatch.setenv("SEC_MT_CLI_SECRET", "cli-secret")
    db = ["--database-url", db_url]
    assert await asyncio.to_thread(accounts.main, [
        "create", "shop", "--allowed-connector", "opB", "--rate", "20", "--json", *db]) == 0
    row = await pool.fetchrow("SELECT * FROM accounts WHERE name = 'shop'")
    assert row["allowed_connectors"] == ["opB"] and row["rate_per_s"] == 20
    assert await asyncio.to_thread(accounts.main, [
        "update", "shop", "--rate", "unlimited", "--category", "marketing", *db]) == 0
    row = await pool.fetchrow("SELECT * FROM accounts WHERE name = 'shop'")
    assert row["rate_per_s"] == float("inf") and row["default_category"] == "marketing"
    assert row["allowed_connectors"] == ["opB"]  # not given: unchanged
    assert await asyncio.to_thread(accounts.main, [
        "update", "shop", "--rate", "default", "--no-allowed-connectors", *db]) == 0
    row = await pool.fetchrow("SELECT * FROM accounts WHERE name = 'shop'")
    assert row["rate_per_s"] is None and row["allowed_connectors"] is None
    assert await asyncio.to_thread(accounts.main, ["update", "nobody", "--rate", "5", *db]) == 2
    assert await asyncio.to_thread(accounts.main, ["update", "shop", *db]) == 2
