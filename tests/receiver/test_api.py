"""The MT API over real HTTP and a real database: submit, read, idempotency, validation, auth."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from smsgw.services.receiver.api import FieldInvalid, mt_item, plain_item
from smsgw.services.receiver.auth import Authenticator
from smsgw.services.receiver.models import MessageIn, plain_message
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.domain.apikeys import Account, create_key, revoke_key
from smsgw.shared.queue import store
from smsgw.shared.queue.records import MtItem

from .conftest import SERVER_SECRET, AccountFactory, Receiver, ReceiverFactory, webhook_settings

MSG = {"to": "07700 900123", "from": "MyBrand", "text": "Your code is 123456"}


async def test_submit_then_read_back(receiver: Receiver, account_factory: AccountFactory,
                                     pool: asyncpg.Pool) -> None:
    """1. POST one message (national number, default country GB)
    2. 202 with id, parts and encoding; the row is committed with the number in E.164
    3. GET /v1/messages/{id} shows it queued."""
    _, key = await account_factory(category="marketing")
    status, body = await receiver.post("/v1/messages", key=key,
                                       json={**MSG, "client_ref": "a1", "priority": 2})
    assert status == 202, body
    assert body["status"] == "queued" and body["parts"] == 1 and body["encoding"] == "gsm7"
    row = await pool.fetchrow("SELECT * FROM outbound WHERE id = $1", body["id"])
    assert row["to_addr"] == "+447700900123" and row["from_addr"] == "MyBrand"
    assert row["category"] == "marketing" and row["priority"] == 2 and row["source"] == "api"
    status, got = await receiver.get(f"/v1/messages/{body['id']}", key=key)
    assert status == 200
    assert got["status"] == "queued" and got["to"] == "+447700900123" and got["parts"] == []


async def test_get_shows_parts_and_receipts(receiver: Receiver, account_factory: AccountFactory,
                                            pool: asyncpg.Pool) -> None:
    """1. submit a 2-part message
    2. write its two parts and a receipt for each through the queue store (as the sender would)
    3. GET shows both parts and both receipts, receipts tied to their part numbers."""
    _, key = await account_factory()
    status, body = await receiver.post("/v1/messages", key=key, json={**MSG, "text": "x" * 200})
    assert status == 202 and body["parts"] == 2
    async with pool.acquire() as conn, conn.transaction():
        part_ids = [await conn.fetchval(
            "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
            " status) VALUES ($1, $2, 2, 'smsc1', $3, 'delivered') RETURNING id",
            body["id"], n, f"abc{n}") for n in (1, 2)]
        await store.enqueue(conn, "receipts", [
            {"connector": "smsc1", "smsc_id": f"abc{n}", "stat": "DELIVRD",
             "state": "delivered", "final": True, "outbound_part_id": pid,
             "status": "matched"} for n, pid in zip((1, 2), part_ids, strict=True)])
        await conn.execute("UPDATE outbound SET status = 'delivered', parts_total = 2"
                           " WHERE id = $1", body["id"])
    status, got = await receiver.get(f"/v1/messages/{body['id']}", key=key)
    assert status == 200
    assert got["status"] == "delivered" and got["parts_total"] == 2
    assert [p["part_no"] for p in got["parts"]] == [1, 2]
    assert sorted(r["part_no"] for r in got["receipts"]) == [1, 2]
    assert {r["stat"] for r in got["receipts"]} == {"DELIVRD"}


async def test_client_ref_idempotent_also_after_retention(
        receiver: Receiver, account_factory: AccountFactory, pool: asyncpg.Pool) -> None:
    """1. submit with client_ref r1 twice → the same id, one row (also with a validity, whose
       computed expiry differs between the two)
    2. same client_ref, other text → 409 naming client_ref
    3. the message finishes and is moved to history by the retention move
    4. the retry still answers the original id, still one row; GET still finds it."""
    _, key = await account_factory()
    s1, b1 = await receiver.post("/v1/messages", key=key, json={**MSG, "client_ref": "r1"})
    s2, b2 = await receiver.post("/v1/messages", key=key, json={**MSG, "client_ref": "r1"})
    assert (s1, s2) == (202, 202) and b1["id"] == b2["id"] and b2["status"] == "duplicate"
    s5, b5 = await receiver.post("/v1/messages", key=key,
                                 json={**MSG, "client_ref": "v1", "validity": 3600})
    await asyncio.sleep(0.01)  # the retry's valid_until (now + validity) differs
    s6, b6 = await receiver.post("/v1/messages", key=key,
                                 json={**MSG, "client_ref": "v1", "validity": 3600})
    assert (s5, s6) == (202, 202) and b6["id"] == b5["id"] and b6["status"] == "duplicate"
    s3, b3 = await receiver.post("/v1/messages", key=key,
                                 json={**MSG, "text": "other", "client_ref": "r1"})
    assert s3 == 409 and b3["errors"][0]["field"] == "client_ref" and b3["id"] == b1["id"]
    await pool.execute("UPDATE outbound SET status = 'delivered',"
                       " updated_at = now() - interval '2 hours' WHERE id = $1", b1["id"])
    async with pool.acquire() as conn:
        assert await store.move_finished(conn, "outbound", older_than_s=60, batch=100) == 1
    s4, b4 = await receiver.post("/v1/messages", key=key, json={**MSG, "client_ref": "r1"})
    assert s4 == 202 and b4["id"] == b1["id"] and b4["status"] == "duplicate"
    count = await pool.fetchval("SELECT (SELECT count(*) FROM outbound)"
                                " + (SELECT count(*) FROM outbound_history)")
    assert count == 2  # r1 and v1
    status, got = await receiver.get(f"/v1/messages/{b1['id']}", key=key)
    assert status == 200 and got["status"] == "delivered"


async def test_batch_with_repeats_stores_only_new(receiver: Receiver,
                                                  account_factory: AccountFactory,
                                                  pool: asyncpg.Pool) -> None:
    """1. store k1
    2. batch [k1 (repeat), k2, k2 (repeat in the batch), k3 with other content than k1's]
    3. only k2 is new; the answer lists the duplicates and the conflict by index."""
    _, key = await account_factory()
    s, first = await receiver.post("/v1/messages", key=key, json={**MSG, "client_ref": "k1"})
    assert s == 202
    batch = [{**MSG, "client_ref": "k1"}, {**MSG, "client_ref": "k2"},
             {**MSG, "client_ref": "k2"}, {**MSG, "text": "changed", "client_ref": "k1"},
             {**MSG}]
    status, body = await receiver.post("/v1/messages", key=key, json={"messages": batch})
    assert status == 202, body
    assert body["accepted"] == 2 and body["duplicates"] == [0, 2] and body["conflicts"] == [3]
    assert body["messages"][0]["id"] == first["id"]
    assert body["messages"][2]["id"] == body["messages"][1]["id"]
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 3


@pytest.mark.parametrize(("payload", "field"), [
    ({**MSG, "to": "12"}, "to"),
    ({**MSG, "to": "not a number!"}, "to"),
    ({**MSG, "from": "ThisIsTooLongSender"}, "from"),
    ({**MSG, "text": "x" * 2000}, "text"),
    ({**MSG, "text": ""}, "text"),
    ({**MSG, "colour": "red"}, "colour"),
    ({**MSG, "category": "spam"}, "category"),
    ({**MSG, "priority": 99}, "priority"),
    ({**MSG, "validity": 5}, "validity"),
    ({**MSG, "send_at": "2030-01-01T00:00:00"}, "send_at"),
    ({**MSG, "encoding": "gsm7", "text": "日本"}, "text"),
    ({**MSG, "callback_url": "ftp://example.com/x"}, "callback_url"),
    ({"to": "+447700900123", "text": "hi"}, "from"),
    ({"messages": []}, "messages"),
    ({"messages": [MSG, {**MSG, "to": ""}]}, "messages[1].to"),
    ({"messages": [MSG] * 3}, "messages"),
    ([MSG], "body"),
])
async def test_validation_errors_name_the_field(receiver_factory: ReceiverFactory,
                                                account_factory: AccountFactory,
                                                pool: asyncpg.Pool, payload: object,
                                                field: str) -> None:
    """Each invalid request is a 422 whose errors name the field; nothing is stored."""
    receiver = await receiver_factory(ReceiverOptions(default_country="GB", max_parts=3,
                                                      max_batch=2))
    _, key = await account_factory()
    status, body = await receiver.post("/v1/messages", key=key, json=payload)
    assert status == 422, body
    assert field in [e["field"] for e in body["errors"]], body
    assert "Traceback" not in str(body)
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0


async def test_private_callback_url_refused_unless_allowed(
        receiver_factory: ReceiverFactory, account_factory: AccountFactory) -> None:
    """A loopback callback URL is a 422 on callback_url unless allowed_networks lists it."""
    strict = await receiver_factory(webhooks=webhook_settings(allowed_networks=()))
    _, key = await account_factory()
    for url in ("http://127.0.0.1:9/cb", "http://10.1.2.3/cb", "http://[::1]/cb",
                "http://169.254.169.254/latest"):
        status, body = await strict.post("/v1/messages", key=key,
                                         json={**MSG, "callback_url": url})
        assert status == 422 and body["errors"][0]["field"] == "callback_url", url
    status, _ = await strict.post("/v1/messages", key=key,
                                  json={**MSG, "callback_url": "https://example.com/cb"})
    assert status == 202


async def test_bad_json_too_large_and_no_traces(receiver_factory: ReceiverFactory,
                                                account_factory: AccountFactory) -> None:
    """1. invalid JSON → 400 naming the body  2. a body over the limit → 413 (JSON)."""
    receiver = await receiver_factory(ReceiverOptions(default_country="GB",
                                                      max_body_bytes=2048))
    _, key = await account_factory()
    status, body = await receiver.post("/v1/messages", key=key, data=b"{not json",
                                       headers={"Content-Type": "application/json"})
    assert status == 400 and body["errors"][0]["field"] == "body"
    status, body = await receiver.post("/v1/messages", key=key,
                                       json={**MSG, "text": "x" * 5000})
    assert status == 413 and body["error"] == "too_large"


async def test_auth_failures_and_key_rotation(receiver: Receiver,
                                              account_factory: AccountFactory,
                                              pool: asyncpg.Pool) -> None:
    """1. no key, a malformed header and an unknown key → 401
    2. a second key works alongside the first (rotation)
    3. revoking the first → 401 for it (cache disabled here by a fresh receiver)."""
    account_id, key1 = await account_factory()
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer nope"}):
        status, body = await receiver.post("/v1/messages", json=MSG, headers=headers)
        assert status == 401 and body["error"] == "unauthorized"
        assert receiver.last_headers["WWW-Authenticate"].startswith("Bearer")
    async with pool.acquire() as conn:
        key2, _ = await create_key(conn, SERVER_SECRET, account_id, actor="test")
    for key in (key1, key2):
        status, _ = await receiver.post("/v1/messages", key=key, json=MSG)
        assert status == 202
    async with pool.acquire() as conn:
        revoked = await revoke_key(conn, account_id, key1[:12], actor="test")
    assert len(revoked) == 1
    receiver.ctx.auth._cache.clear()  # the cache keeps a key valid for auth_cache_s
    status, _ = await receiver.post("/v1/messages", key=key1, json=MSG)
    assert status == 401
    status, _ = await receiver.post("/v1/messages", key=key2, json=MSG)
    assert status == 202
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["account_created", "api_key_created", "api_key_created",
                       "api_key_revoked"]


async def test_one_account_cannot_read_anothers_message(receiver: Receiver,
                                                        account_factory: AccountFactory) -> None:
    """Account B asking for account A's message gets 404, as for a missing one."""
    _, key_a = await account_factory()
    _, key_b = await account_factory()
    _, body = await receiver.post("/v1/messages", key=key_a, json=MSG)
    status, got = await receiver.get(f"/v1/messages/{body['id']}", key=key_b)
    assert status == 404 and got["error"] == "not_found"
    status, got = await receiver.get("/v1/messages/abc", key=key_b)
    assert status == 422 and got["errors"][0]["field"] == "id"
    status, _ = await receiver.get(f"/v1/messages/{body['id']}", key=key_a)
    assert status == 200


async def test_allowed_senders(receiver: Receiver, account_factory: AccountFactory) -> None:
    """An account with allowed senders may use only those (422 on from otherwise)."""
    _, key = await account_factory(allowed_senders=["MyBrand", "+447700900999"])
    status, _ = await receiver.post("/v1/messages", key=key, json=MSG)
    assert status == 202
    status, body = await receiver.post("/v1/messages", key=key, json={**MSG, "from": "Other"})
    assert status == 422 and body["errors"][0]["field"] == "from"
    status, _ = await receiver.post("/v1/messages", key=key,
                                    json={**MSG, "from": "07700900999"})
    assert status == 202


@pytest.mark.parametrize("raw_id", ["%C2%B20", "12a", "-1", "1234567890123456789"])
async def test_get_with_a_bad_id_is_422_not_500(receiver: Receiver,
                                                account_factory: AccountFactory,
                                                raw_id: str) -> None:
    """A non-ASCII digit ('²', which str.isdigit() accepts but int() refuses — found by the
    schemathesis run), letters, a sign or an over-long id: 422 naming the field, never a 500."""
    _, key = await account_factory()
    status, body = await receiver.get(f"/v1/messages/{raw_id}", key=key)
    assert status == 422, body
    assert body["errors"][0]["field"] == "id"


async def test_nul_character_in_text_is_422(receiver: Receiver,
                                            account_factory: AccountFactory,
                                            pool: asyncpg.Pool) -> None:
    """U+0000 cannot be stored by Postgres: the API refuses it naming the field, stores nothing."""
    _, key = await account_factory()
    status, body = await receiver.post("/v1/messages", key=key, json={**MSG, "text": "a\x00b"})
    assert status == 422, body
    assert body["errors"][0]["field"] == "text"
    assert await pool.fetchval("SELECT count(*) FROM outbound") == 0


async def test_plain_item_is_mt_item_of_a_plain_message(receiver: Receiver) -> None:
    """The plain-body shortcut (`api.plain_item`) builds the same item and estimate as the
    general `mt_item`, and refuses with the same field and message, for valid and invalid
    plain bodies: national and E.164 numbers, an alphanumeric sender, one not allowed, a
    too long sender, Unicode, a text over the parts limit, a client_ref."""
    now = datetime.now(UTC)
    accounts = [Account(id=5, name="a", default_category="marketing", rate_per_s=None,
                        allowed_senders=None, transliterate=False, key_id=1),
                Account(id=6, name="b", default_category="transactional", rate_per_s=None,
                        allowed_senders=("+447700900999",), transliterate=False, key_id=2)]
    bodies = [MSG, {**MSG, "to": "+447700900123", "client_ref": "r-1"},
              {**MSG, "from": "07700900999"}, {**MSG, "to": "12ab"}, {**MSG, "to": "60060"},
              {**MSG, "from": "ABCDEFGHIJKLM"}, {**MSG, "text": "Grüße, 東京 😀"},
              {**MSG, "text": "x" * 1531}, {**MSG, "text": "€" * 700}]
    outcomes = set()
    for account in accounts:
        for data in bodies:
            plain = plain_message(data)
            assert plain is not None
            try:
                fast: object = plain_item(receiver.ctx, account, plain)
            except FieldInvalid as exc:
                fast = (exc.field, exc.message)
            try:
                slow: object = mt_item(receiver.ctx, account, MessageIn.model_validate(data),
                                       now)
            except FieldInvalid as exc:
                slow = (exc.field, exc.message)
            assert fast == slow, data
            outcomes.add("item" if isinstance(fast[0], MtItem) else "error")  # type: ignore[index]
    assert outcomes == {"item", "error"}  # both kinds were compared


class _CountingPool:
    """The real pool, counting the key lookups that reach it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.lookups = 0

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None:
        self.lookups += 1
        await asyncio.sleep(0.01)  # a lookup that takes a while: the others arrive meanwhile
        return await self.pool.fetchrow(query, *args)


async def test_concurrent_misses_of_one_key_share_one_lookup(
        pool: asyncpg.Pool, account_factory: AccountFactory) -> None:
    """50 requests with the same key and an empty cache make one lookup and all get the
    account; an unknown key likewise (one lookup, None for all); a later miss after the
    cache entry expired looks it up again; a cancelled lookup does not fail the others."""
    account_id, key = await account_factory()
    counting = _CountingPool(pool)
    now = [0.0]
    auth = Authenticator(counting, SERVER_SECRET, cache_s=5.0,  # type: ignore[arg-type]
                         clock=lambda: now[0])
    accounts = await asyncio.gather(*(auth.authenticate(key) for _ in range(50)))
    assert counting.lookups == 1 and {a.id for a in accounts if a} == {account_id}
    assert await asyncio.gather(*(auth.authenticate("smsgw_unknown") for _ in range(20))) \
        == [None] * 20
    assert counting.lookups == 2
    now[0] = 10.0  # both entries expired
    first = asyncio.create_task(auth.authenticate(key))
    await asyncio.sleep(0)  # first is now looking it up
    others = [asyncio.create_task(auth.authenticate(key)) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    results = await asyncio.gather(*others)
    assert {a.id for a in results if a} == {account_id} and None not in results
    assert counting.lookups == 4  # the cancelled one, then one shared by the five
