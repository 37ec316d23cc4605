"""`smsgw accounts update|show|disable|enable` against a real database: held and cancelled
queued messages, the question before a disable, audit rows. (That a second running receiver
and sender obey a disable without a restart is tests/ops/test_live_control.py.)"""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest

from smsgw.services.admin import accounts
from smsgw.shared.domain.apikeys import DisabledAccounts
from smsgw.shared.queue import outbound, store


async def _mts(pool: asyncpg.Pool, account_id: int, n: int, **kw: object) -> list[int]:
    rows = [{"from_addr": "ACME", "to_addr": f"+4477009001{i:02d}", "body": "hi",
             "account_id": account_id, **kw} for i in range(n)]
    return [r.id for r in await store.enqueue(pool, "outbound", rows, notify=False)]


async def _claimed(pool: asyncpg.Pool) -> set[int]:
    async with pool.acquire() as conn:
        rows = await outbound.claim(conn, owner="t", lease_s=60, limit=100, max_accounts=10)
    return {r.id for r in rows}


async def test_disable_holds_or_cancels_asks_first_and_is_audited(
        pool: asyncpg.Pool, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """1. Account a has 3 queued MTs. `accounts disable a` without a terminal refuses,
       saying 3 are queued; nothing changes.
    2. `disable --yes`: a's MTs are held (a sender's claim takes b's MT, not a's: positive
       control in the same claim); `show --json` says disabled, 3 queued, today's counts.
    3. `enable`: the same claim now takes a's 3 MTs.
    4. 2 new MTs; `disable --cancel-queued`: both `cancelled`, counted in the result.
    5. `update --allowed-sender --rate` then `--any-sender`; an unknown name is exit 2 naming it.
    6. audit_log holds every change in order.
    (`accounts.main` runs in a thread as the console script would run it, without a
    terminal on stdin.)"""

    async def smsgw(args: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        code = await asyncio.to_thread(accounts.main, [*args[1:], "--database-url", db_url])
        out = capsys.readouterr()
        return code, out.out, out.err

    a = await pool.fetchval("INSERT INTO accounts (name) VALUES ('a') RETURNING id")
    b = await pool.fetchval("INSERT INTO accounts (name) VALUES ('b') RETURNING id")
    held = await _mts(pool, a, 3)

    code, out, err = await smsgw(["accounts", "disable", "a"])
    assert code == 1, out + err
    assert "3 queued message(s)" in err and "--yes" in err
    assert not await pool.fetchval("SELECT disabled FROM accounts WHERE id = $1", a)

    code, text, err = await smsgw(["accounts", "disable", "a", "--yes", "--reason", "abuse",
                                   "--json"])
    assert code == 0, err
    out = json.loads(text)
    assert (out["disabled"], out["changed"], out["queued"], out["cancelled"]) == \
        (True, True, 3, 0)
    [other] = await _mts(pool, b, 1)
    assert await _claimed(pool) == {other}
    async with pool.acquire() as conn:
        shown = await accounts.show_account(conn, "a")
        assert shown["disabled"] and shown["disabled_at"] is not None
        assert (shown["queued"], shown["today"]) == (3, {"queued": 3})

        enabled = await accounts.set_enabled(conn, "a", actor="t")
        assert (enabled["disabled"], enabled["changed"]) == (False, True)
        assert await _claimed(pool) == set(held)

        fresh = await _mts(pool, a, 2)
        result = await accounts.disable_account(conn, "a", actor="t", cancel=True,
                                                reason="fraud")
        assert (result["queued"], result["cancelled"]) == (2, 2)
        assert {r["status"] for r in await pool.fetch(
            "SELECT status FROM outbound WHERE id = ANY($1)", fresh)} == {"cancelled"}

        await accounts.update_account(conn, "a", {"allowed_senders": ["ACME"],
                                                  "rate_per_s": 5.0}, actor="t")
        shown = await accounts.show_account(conn, "a")
        assert (shown["allowed_senders"], shown["rate_per_s"]) == (["ACME"], 5.0)

    code, _, err = await smsgw(["accounts", "update", "a", "--any-sender"])
    assert code == 0, err
    assert await pool.fetchval("SELECT allowed_senders FROM accounts WHERE id = $1", a) is None
    code, _, err = await smsgw(["accounts", "show", "nobody"])
    assert code == 2 and "nobody" in err

    actions = [r["action"] for r in await pool.fetch(
        "SELECT action FROM audit_log WHERE object_type = 'account' ORDER BY id")]
    assert actions == ["account_disabled", "account_enabled", "account_disabled",
                       "account_queued_cancelled", "account_updated", "account_updated"]


async def test_disabled_accounts_cache_follows_the_table_within_its_age(
        pool: asyncpg.Pool) -> None:
    """`DisabledAccounts` (the SMPP server's check): a disable is seen once the copy is older
    than max_age_s, not before; enabling likewise; max_age_s above 5 s is refused."""
    a = await pool.fetchval("INSERT INTO accounts (name) VALUES ('a') RETURNING id")
    now = [100.0]
    cache = DisabledAccounts(pool, max_age_s=5.0, clock=lambda: now[0])
    assert not await cache.is_disabled(a)
    async with pool.acquire() as conn:
        await accounts.disable_account(conn, "a", actor="t")
        now[0] += 4.0
        assert not await cache.is_disabled(a)  # the copy is 4 s old: still enabled
        now[0] += 1.5
        assert await cache.is_disabled(a)
        await accounts.set_enabled(conn, "a", actor="t")
        now[0] += 5.5
        assert not await cache.is_disabled(a)
    with pytest.raises(ValueError):
        DisabledAccounts(pool, max_age_s=6)
