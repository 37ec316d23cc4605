"""The admin commands run as an operator runs them (`smsgw <command>` in a subprocess) against a
real, migrated database: status, trace, requeue, erase, send --direct.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import store

NUMBER = "+447700900555"
OTHER = "+447700900666"
SECRET = "test-server-secret"
HASHER = NumberHasher.from_secret(SECRET)


def smsgw(args: list[str], db_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run `smsgw ARGS --database-url URL` (the console script's code) in `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    env.update(SMSGW_SECURITY__SERVER_SECRET_ENV="TEST_SERVER_SECRET",  # the suppression key
               TEST_SERVER_SECRET=SECRET)
    return subprocess.run([sys.executable, "-m", "smsgw.services.cli", *args,
                           "--database-url", db_url],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def as_json(res: subprocess.CompletedProcess[str]) -> Any:
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


async def _mt_with_history(pool: asyncpg.Pool) -> tuple[int, int]:
    """One delivered MT with a part, a matched receipt, a callback and events; and one MT of the
    same number already moved to outbound_history."""
    async with pool.acquire() as conn:
        [res] = await store.enqueue(conn, "outbound", [
            {"source": "api", "from_addr": "smsgw", "to_addr": NUMBER, "body": "hello"}])
        mt = res.id
        await conn.execute("UPDATE outbound SET status = 'delivered', connector = 'sim',"
                           " parts_total = 1 WHERE id = $1", mt)
        part = await conn.fetchval(
            "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
            " status) VALUES ($1, 1, 1, 'sim', 'abc123', 'delivered') RETURNING id", mt)
        await conn.execute(
            "INSERT INTO receipts (connector, smsc_id, stat, state, outbound_part_id, status)"
            " VALUES ('sim', 'abc123', 'DELIVRD', 'delivered', $1, 'matched')", part)
        await conn.execute("INSERT INTO callbacks (kind, outbound_id, url, status)"
                           " VALUES ('status', $1, 'http://127.0.0.1:1/cb', 'done')", mt)
        await store.log_events(conn, [("outbound", mt, "submitted", {"parts": 1}),
                                      ("outbound", mt, "delivered", None)], daemon="sender")
        old = await conn.fetchval(
            "INSERT INTO outbound_history (id, source, from_addr, to_addr, body, status)"
            " OVERRIDING SYSTEM VALUE VALUES (900001, 'api', 'smsgw', $1, 'old', 'delivered')"
            " RETURNING id", NUMBER)
    return mt, old


async def test_trace_shows_the_whole_history(pool: asyncpg.Pool, db_url: str,
                                             tmp_path: Path) -> None:
    """1. Store an MT with a part, a matched receipt, a callback and events; and an older MT of
       the same number in outbound_history.
    2. `smsgw trace ID --mt --json` shows each of them.
    3. `smsgw trace 900001 --mt` finds the history row; `smsgw trace NUMBER` lists both.
    4. An unknown id exits 1 and says so.
    """
    mt, old = await _mt_with_history(pool)
    t = as_json(smsgw(["trace", str(mt), "--mt", "--json"], db_url, tmp_path))[0]
    assert t["message"]["status"] == "delivered" and not t["message"]["in_history"]
    assert [p["smsc_id"] for p in t["parts"]] == ["abc123"]
    assert [r["stat"] for r in t["receipts"]] == ["DELIVRD"]
    assert [c["status"] for c in t["callbacks"]] == ["done"]
    assert [e["event"] for e in t["events"]] == ["submitted", "delivered"]
    hist = as_json(smsgw(["trace", str(old), "--mt", "--json"], db_url, tmp_path))[0]
    assert hist["message"]["in_history"] is True
    by_number = as_json(smsgw(["trace", NUMBER, "--json"], db_url, tmp_path))
    assert {m["id"] for m in by_number["messages"]} == {mt, old}
    human = smsgw(["trace", str(mt), "--mt"], db_url, tmp_path)
    assert "part 1/1" in human.stdout and "DELIVRD" in human.stdout
    missing = smsgw(["trace", "777777", "--mt"], db_url, tmp_path)
    assert missing.returncode == 1 and "no message found" in missing.stdout


async def test_trace_number_with_mt_or_mo_shows_that_direction(pool: asyncpg.Pool, db_url: str,
                                                               tmp_path: Path) -> None:
    """1. Two MTs to NUMBER (one in history) and one MO from it.
    2. `smsgw trace NUMBER --mt` lists and traces the two MTs only; `--mo` the MO only; no
       flag, all three (`--mt` with a number used to fail where the plain form worked)."""
    mt, old = await _mt_with_history(pool)
    async with pool.acquire() as conn:
        [res] = await store.enqueue(conn, "inbound", [{"channel": "http", "provider": "generic",
                                                       "from_addr": NUMBER, "to_addr": "80080",
                                                       "body": "HELLO"}])
    mo = res.id
    mts = as_json(smsgw(["trace", NUMBER, "--mt", "--json"], db_url, tmp_path))
    assert sorted((m["kind"], m["id"]) for m in mts["messages"]) == [("mt", mt), ("mt", old)]
    assert [t["kind"] for t in mts["traces"]] == ["mt", "mt"]
    mos = as_json(smsgw(["trace", NUMBER, "--mo", "--json"], db_url, tmp_path))
    assert [(m["kind"], m["id"]) for m in mos["messages"]] == [("mo", mo)]
    assert [t["kind"] for t in mos["traces"]] == ["mo"]
    both = as_json(smsgw(["trace", NUMBER, "--json"], db_url, tmp_path))
    assert {m["id"] for m in both["messages"]} == {mt, old, mo}
    human = smsgw(["trace", NUMBER, "--mo"], db_url, tmp_path)
    assert human.returncode == 0 and f"MO {mo}" in human.stdout and "MT " not in human.stdout


async def test_status_counts_queues_and_dead_rows(pool: asyncpg.Pool, db_url: str,
                                                  tmp_path: Path) -> None:
    """1. Queue three MTs and one MO; make one MT dead.
    2. `smsgw status --json` reports outbound queued 2 / dead 1, inbound queued 1, the dead
       count, and the last minute's intake rate; with no daemon it finds no binds.
    """
    async with pool.acquire() as conn:
        ids = [r.id for r in await store.enqueue(conn, "outbound", [
            {"from_addr": "smsgw", "to_addr": OTHER, "body": f"m{i}"} for i in range(3)])]
        await store.enqueue(conn, "inbound", [{"channel": "http", "provider": "generic",
                                               "from_addr": OTHER, "to_addr": "80080",
                                               "body": "HELLO"}])
        await conn.execute("UPDATE outbound SET status = 'dead', last_error = 'boom'"
                           " WHERE id = $1", ids[0])
    st = as_json(smsgw(["status", "--json", "--metrics", "http://127.0.0.1:9/metrics"], db_url,
                       tmp_path))
    queues = {q["queue"]: q for q in st["queues"]}
    assert queues["outbound"]["by_status"] == {"queued": 2, "dead": 1}
    assert queues["inbound"]["by_status"] == {"queued": 1}
    assert queues["outbound"]["oldest_queued_age_s"] is not None
    assert st["dead"]["outbound"] == 1
    assert st["rates_per_s"]["mt_accepted"] > 0
    assert st["binds"] == [] and st["daemons"] == {"http://127.0.0.1:9/metrics": False}
    human = smsgw(["status", "--metrics", "http://127.0.0.1:9/metrics"], db_url, tmp_path)
    assert "dead rows: outbound=1" in human.stdout


async def test_requeue_dead_rows_with_filters_and_dry_run(pool: asyncpg.Pool, db_url: str,
                                                          tmp_path: Path) -> None:
    """1. Three dead MTs, two with a timeout error.
    2. Without a filter the command refuses (exit 2).
    3. `--error-like '%timeout%' --dry-run` counts 2 and changes nothing.
    4. The same without --dry-run requeues exactly those 2 (status queued, attempts 0).
    """
    async with pool.acquire() as conn:
        ids = [r.id for r in await store.enqueue(conn, "outbound", [
            {"from_addr": "smsgw", "to_addr": OTHER, "body": f"m{i}"} for i in range(3)])]
        await conn.execute("UPDATE outbound SET status = 'dead', attempts = 5, last_error ="
                           " CASE WHEN id = $1 THEN 'rejected' ELSE 'response timeout' END",
                           ids[0])
    assert smsgw(["requeue", "outbound"], db_url, tmp_path).returncode == 2
    dry = as_json(smsgw(["requeue", "outbound", "--error-like", "%timeout%", "--dry-run",
                         "--json"], db_url, tmp_path))
    assert dry["would_requeue"] == 2
    assert await pool.fetchval("SELECT count(*) FROM outbound WHERE status = 'dead'") == 3
    done = as_json(smsgw(["requeue", "outbound", "--error-like", "%timeout%", "--json"],
                         db_url, tmp_path))
    assert done["requeued"] == 2
    rows = {r["id"]: (r["status"], r["attempts"])
            for r in await pool.fetch("SELECT id, status, attempts FROM outbound")}
    assert rows == {ids[0]: ("dead", 5), ids[1]: ("queued", 0), ids[2]: ("queued", 0)}
    by_id = as_json(smsgw(["requeue", "outbound", "--ids", str(ids[0]), "--json"], db_url,
                          tmp_path))
    assert by_id["requeued"] == 1


async def test_erase_removes_messages_and_keeps_a_hashed_suppression(
        pool: asyncpg.Pool, db_url: str, tmp_path: Path) -> None:
    """1. Store the number's MTs (hot + history, part, receipt, callback, events), an MO from
       it, a suppression with the number in clear, and another number's MT.
    2. `erase --dry-run` reports counts and changes nothing.
    3. `erase --yes` removes every row of the number, keeps the other number's, blanks the
       number in suppressions but keeps its hash — re-keyed, as the entry was a legacy sha256
       one —, adds a global keyed suppression, and writes an audit_log row that names the
       keyed hash, never the number.
    """
    mt, _old = await _mt_with_history(pool)
    async with pool.acquire() as conn:
        [mo] = await store.enqueue(conn, "inbound", [{"channel": "http", "provider": "generic",
                                                      "from_addr": NUMBER, "to_addr": "80080",
                                                      "body": "STOP"}])
        await store.log_events(conn, [("inbound", mo.id, "received", None)], daemon="receiver")
        await conn.execute("INSERT INTO suppressions (number_hash, number, scope, source)"
                           " VALUES (sha256(convert_to($1, 'UTF8')), $1, '80080', 'stop')",
                           NUMBER)
        await store.enqueue(conn, "outbound", [{"from_addr": "smsgw", "to_addr": OTHER,
                                                "body": "keep me"}])
    dry = as_json(smsgw(["erase", NUMBER, "--dry-run", "--json"], db_url, tmp_path))
    assert dry["removed"]["outbound"] == 1 and dry["removed"]["outbound_history"] == 1
    assert await pool.fetchval("SELECT count(*) FROM outbound WHERE to_addr = $1", NUMBER) == 1
    res = as_json(smsgw(["erase", NUMBER, "--yes", "--json"], db_url, tmp_path))
    assert res["removed"]["inbound"] == 1 and res["removed"]["receipts"] == 1
    assert res["removed"]["events"] == 3 and res["removed"]["callbacks"] == 1
    for table, col in (("outbound", "to_addr"), ("outbound_history", "to_addr"),
                       ("inbound", "from_addr")):
        assert await pool.fetchval(f"SELECT count(*) FROM {table} WHERE {col} = $1",
                                   NUMBER) == 0, table
    assert await pool.fetchval("SELECT count(*) FROM outbound_part WHERE outbound_id = $1",
                               mt) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbound WHERE to_addr = $1", OTHER) == 1
    sup = await pool.fetch("SELECT scope, number, keyed FROM suppressions WHERE number_hash = $1"
                           " ORDER BY scope", HASHER(NUMBER))
    assert [(r["scope"], r["number"], r["keyed"]) for r in sup] == [
        ("80080", None, True), ("global", None, True)]
    audit = await pool.fetchrow("SELECT * FROM audit_log WHERE action = 'erase'")
    assert audit["object_id"] == res["number_hash"] == HASHER(NUMBER).hex()
    assert NUMBER not in json.dumps(audit["detail"])


async def test_send_direct_enqueues_one_mt(pool: asyncpg.Pool, db_url: str,
                                           tmp_path: Path) -> None:
    """`smsgw send --direct` writes one queued outbound row (source cli, E.164 number)."""
    out = as_json(smsgw(["send", "--direct", "--to", "+44 7700 900555", "--text", "hi",
                         "--json"], db_url, tmp_path))
    row = await pool.fetchrow("SELECT * FROM outbound WHERE id = $1", out["id"])
    assert (row["source"], row["to_addr"], row["status"]) == ("cli", NUMBER, "queued")
    bad = smsgw(["send", "--direct", "--to", "nope!", "--text", "x"], db_url, tmp_path)
    assert bad.returncode == 2


def test_status_watch_refreshes_until_ctrl_c(db_url: str, tmp_path: Path) -> None:
    """1. `smsgw status --watch --interval 0.2` prints a fresh view again and again.
    2. SIGINT (Ctrl-C) ends it with exit 0.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsgw.services.cli", "status", "--watch", "--interval", "0.2",
         "--metrics", "http://127.0.0.1:9/metrics", "--database-url", db_url],
        env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # Ctrl-C as in a terminal: a test run started as a background job of a shell inherits
        # SIGINT ignored, and a Python started with it ignored never raises KeyboardInterrupt
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        seen += line.startswith("smsgw status")
        if seen == 3:
            break
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=30)  # reads to EOF and closes both pipes
    assert proc.returncode == 0, err
    assert seen == 3


def test_status_tells_a_standby_instance_from_a_down_connector() -> None:
    """With the global bind limit, a sender without a slot reports 0: `status` shows it as
    "no slot" while another instance is bound, and DOWN only when no instance is bound."""
    from smsgw.services.admin.status import Bind, QueueStatus, Status, render

    def view(binds: list[Bind]) -> str:
        return render(Status("live", [QueueStatus("outbound")], {"mt_accepted": 0.0}, binds,
                             {"sender@1": True, "sender@2": True}))

    up1 = Bind("sender", 1, "sim", "trx", True, 0.0)
    idle2 = Bind("sender", 2, "sim", "trx", False, 0.0)
    assert "no slot" in view([up1, idle2]) and "DOWN" not in view([up1, idle2])
    down1 = Bind("sender", 1, "sim", "trx", False, 0.0)
    assert "DOWN" in view([down1, idle2])
