"""`smsgw rules` as operators run it (subprocess): import, export, list, test, audit log."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import add_mo, mo

SMSGW = str(Path(sys.executable).with_name("smsgw"))
EXAMPLE = Path(__file__).parents[2] / "services" / "processor" / "rules_example.json"


async def rules(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    return await asyncio.to_thread(
        subprocess.run, [SMSGW, "rules", "--database-url", db_url, "--actor", "alice", *args],
        capture_output=True, text=True, env=env, timeout=30, check=False)


def write(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


async def test_import_export_list_test_and_audit(db_url, pool, tmp_path) -> None:
    """1. import the example file; 2. `test` shows the rule that fires and its reply;
    3. export and re-import changes nothing; 4. a changed and a dropped rule (--replace) are
    updated and deleted; 5. the audit log has a row per change, with old and new."""
    r = await rules(db_url, "import", str(EXAMPLE))
    assert r.returncode == 0, r.stderr
    assert "created 6" in r.stdout
    t = await rules(db_url, "test", "win big", "--from", "+447700900001", "--to", "80080",
                    "--at", "2026-12-10T12:00:00+00:00")
    assert t.returncode == 0, t.stderr
    assert "rule: win-promo (priority 10)" in t.stdout
    assert "Thanks WIN! Your entry to win a holiday for two is in (1/1 today)." in t.stdout
    assert "campaign entry xmas-2026 period 2026-12-10" in t.stdout
    assert "forward POST https://promo.example.com/entries (signed)" in t.stdout
    w = await rules(db_url, "test", "weather Paris", "--from", "+447700900001", "--to", "80080")
    assert "forward GET https://weather.example.com/sms?from=%2B447700900001&city=Paris" \
        in w.stdout
    assert "reply from the answer's body 80080 -> +447700900001" in w.stdout, w.stdout
    t2 = await rules(db_url, "test", "STOP", "--from", "+447700900001", "--to", "80080")
    assert "optout:stop" in t2.stdout and "suppress in scope 80080" in t2.stdout
    t3 = await rules(db_url, "test", "hello", "--from", "+447700900001", "--to", "12345")
    assert t3.returncode == 1 and "no rule matches" in t3.stdout
    exported = await rules(db_url, "export")
    assert exported.returncode == 0
    data = json.loads(exported.stdout)
    again = await rules(db_url, "import", write(tmp_path, "same.json", data))
    assert "created 0, updated 0, unchanged 6, deleted 0" in again.stdout
    data["rules"][0]["priority"] = 5
    del data["rules"][1]
    changed = await rules(db_url, "import", "--replace", write(tmp_path, "new.json", data))
    assert "created 0, updated 1, unchanged 4, deleted 1" in changed.stdout, changed.stdout
    listing = await rules(db_url, "list")
    assert listing.stdout.splitlines()[0].split()[:2] == ["5", "win-promo"]
    audit = await pool.fetch("SELECT actor, action, object_id, detail FROM audit_log "
                             "WHERE object_type = 'rule' ORDER BY id")
    assert [a["action"] for a in audit] == ["rule_create"] * 6 + ["rule_update", "rule_delete"]
    assert all(a["actor"] == "alice" for a in audit)
    update = audit[6]
    assert update["object_id"] == "win-promo"
    assert (update["detail"]["old"]["priority"], update["detail"]["new"]["priority"]) == (10, 5)
    assert audit[7]["object_id"] == "quiz" and audit[7]["detail"]["old"]["name"] == "quiz"


async def test_invalid_file_changes_nothing(db_url, pool, tmp_path) -> None:
    """A file with an error is refused as a whole (exit 65, each problem named)."""
    bad = write(tmp_path, "bad.json", [
        {"name": "ok", "actions": [{"type": "reply", "template": "fine"}]},
        {"name": "broken", "match": {"keyword": "X"},
         "actions": [{"type": "reply", "template": "Hi {firstname}"}]}])
    r = await rules(db_url, "import", bad)
    assert r.returncode == 65
    assert "broken" in r.stderr and "{firstname}" in r.stderr
    assert await pool.fetchval("SELECT count(*) FROM rules") == 0
    assert await pool.fetchval("SELECT count(*) FROM audit_log") == 0


async def test_cli_change_applies_to_running_engine_next_batch(db_url, pool, make_engine,
                                                               tmp_path) -> None:
    """1. an engine loop runs (claiming as messages come); 2. rules v1 via the CLI, one MO;
    3. rules v2 via the CLI, one MO; 4. the second reply uses v2 without any restart."""
    v1 = write(tmp_path, "v1.json", [{"name": "r", "actions": [
        {"type": "reply", "template": "v1"}]}])
    v2 = write(tmp_path, "v2.json", [{"name": "r", "actions": [
        {"type": "reply", "template": "v2"}]}])
    engine = make_engine()
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            if await engine.run_batch() == 0:
                await asyncio.sleep(0.01)

    task = asyncio.create_task(loop())
    try:
        assert (await rules(db_url, "import", v1)).returncode == 0
        await add_mo(pool, [mo("+447700900001", "a")])
        await wait_for(pool, "SELECT count(*) = 1 FROM outbound")
        assert (await rules(db_url, "import", v2)).returncode == 0
        await add_mo(pool, [mo("+447700900002", "b")])
        await wait_for(pool, "SELECT count(*) = 2 FROM outbound")
    finally:
        stop.set()
        await task
    assert [r["body"] for r in await pool.fetch("SELECT body FROM outbound ORDER BY id")] == [
        "v1", "v2"]


async def wait_for(pool, sql: str, timeout_s: float = 10) -> None:
    async with asyncio.timeout(timeout_s):
        while not await pool.fetchval(sql):  # noqa: ASYNC110 - polls the DB
            await asyncio.sleep(0.02)


async def test_every_rule_account_and_suppression_change_is_audited(pool, make_engine) -> None:
    """1. a rule is created, changed and deleted; 2. an account is created (the accounts
    command's own function) and gets a second key; 3. a STOP and a START change suppressions;
    4. the audit log holds one row per change, each naming its actor and object."""
    from smsgw.services.admin.accounts import create_account
    from smsgw.shared.domain.apikeys import create_key

    from .conftest import set_rules
    await set_rules(pool, [{"name": "r", "actions": [{"type": "reply", "template": "a"}]}],
                    actor="ops")
    await set_rules(pool, [{"name": "r", "actions": [{"type": "reply", "template": "b"}]}],
                    actor="ops")
    await set_rules(pool, [{"name": "s", "actions": [{"type": "reply", "template": "c"}]}],
                    actor="ops")
    async with pool.acquire() as conn:
        account_id, _ = await create_account(conn, b"secret", "acme", actor="ops")
        await create_key(conn, b"secret", account_id, actor="ops")
    await add_mo(pool, [mo("+447700900001", "STOP")])
    await make_engine().run_batch()
    await add_mo(pool, [mo("+447700900001", "START")])
    await make_engine().run_batch()
    rows = await pool.fetch("SELECT actor, action, object_type, object_id FROM audit_log "
                            "ORDER BY id")
    got = [(r["object_type"], r["action"]) for r in rows]
    assert [g for g in got if g[0] == "rule"] == [
        ("rule", "rule_create"), ("rule", "rule_update"), ("rule", "rule_create"),
        ("rule", "rule_delete")]
    assert [g for g in got if g[0] == "suppression"] == [
        ("suppression", "suppression_add"), ("suppression", "suppression_remove")]
    account_rows = [r for r in rows if r["object_type"] in ("account", "api_key")]
    assert len(account_rows) >= 2  # the account and its second key
    assert all(r["actor"] == "ops" for r in rows if r["object_type"] != "suppression")
    assert all(r["actor"] == "processor" for r in rows if r["object_type"] == "suppression")
    assert all(r["object_id"] for r in rows)
