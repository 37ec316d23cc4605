"""Issue 12, finding 8: the suppression hash was sha256(number), reversed by brute force.

The hash is now HMAC-SHA256(K, sha256(number)) with K derived from the server secret, which
never sits in the database; the daemons compute it and every MT carries its recipient's hash
(`outbound.to_hash`) for the sender's claim. Driven through the real paths: MO intake, a
`smsgw processor` process (STOP), the receiver API (MT), a `smsgw sender` process (the claim)
on the SMSC simulator.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from smsgw.shared.domain.intake import InboundWrite, flush_inbound

from .conftest import ROOT, SEC_MT_SECRET, sec_erase_env

STOPPED = "+447700900417"   # sends STOPALL to the processor
LEGACY = "+447700900932"    # suppressed the old way (unkeyed sha256) before the upgrade
FREE = "+447700900555"


def HASHER(number: str) -> bytes:
    """The documented construction: HMAC(HMAC(server_secret, label), sha256(number))."""
    key = hmac.digest(SEC_MT_SECRET, b"smsgw suppression v1", "sha256")
    return hmac.digest(key, hashlib.sha256(number.encode()).digest(), "sha256")


async def _wait(pred: Any, timeout_s: float = 30.0) -> Any:
    end = time.monotonic() + timeout_s
    while True:
        value = await pred()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def _spawn(daemon: str, env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "smsgw.services.cli", daemon, env=env, cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def test_stop_is_stored_under_a_keyed_hash_and_still_suppresses(
        pool: asyncpg.Pool, db_url: str, tmp_path: Path, sec_mt_receiver: Any,
        sec_mt_account: Any, sec_erase_sender: Any) -> None:
    """1. LEGACY has an entry written the old way (sha256, as an earlier release wrote it) and
       an audit row naming that hash; 2. a `smsgw processor` starts and takes a STOPALL MO
       from STOPPED through the intake; 3. a brute force of plain sha256 over the whole
       +447700900000..999 range (with and without '+') finds no stored hash and no audit
       object id: STOPPED's entry is keyed, LEGACY's was re-keyed at start (no number needed)
       and its audit row with it; 4. marketing MTs via the API to both end `suppressed` at the
       sender's claim and never reach the SMSC; a transactional MT to STOPPED and a marketing
       MT to FREE are sent; a marketing MT stored without its hash (as an earlier release's
       receiver stores it) is hashed by the sender and suppressed too."""
    old = hashlib.sha256(LEGACY.encode()).digest()
    await pool.execute("INSERT INTO suppressions (number_hash, number, scope, source) "
                       "VALUES ($1, NULL, 'global', 'stop')", old)
    await pool.execute("INSERT INTO audit_log (actor, action, object_type, object_id) "
                       "VALUES ('processor', 'suppression_add', 'suppression', $1)",
                       old.hex() + ":global")
    env = sec_erase_env(db_url, SMSGW_PROCESSOR__METRICS_PORT="0",
                        SMSGW_PROCESSOR__POLL_S="0.2")
    proc = await _spawn("processor", env, tmp_path)
    try:
        async with pool.acquire() as conn:
            await flush_inbound(conn, [InboundWrite(channel="smpp", provider="sim",
                                                    connector="sim", from_addr=STOPPED,
                                                    to_addr="80080", body="STOPALL")])
        await _wait(lambda: pool.fetchval(
            "SELECT count(*) = 2 FROM suppressions WHERE scope = 'global'"))
        await _wait(lambda: pool.fetchval(
            "SELECT count(*) = 0 FROM suppressions WHERE number_hash = $1", old))
    finally:
        await _stop(proc)

    stored = {bytes(r["number_hash"]) for r in await pool.fetch(
        "SELECT number_hash FROM suppressions")}
    audit_ids = {r["object_id"].split(":")[0] for r in await pool.fetch(
        "SELECT object_id FROM audit_log WHERE object_type = 'suppression'")}
    found = []
    for n in range(1000):
        for candidate in (f"+447700900{n:03d}", f"447700900{n:03d}"):
            digest = hashlib.sha256(candidate.encode()).digest()
            if digest in stored or digest.hex() in audit_ids:
                found.append(candidate)
    assert found == [], "plain sha256 brute force reversed stored hashes"
    assert stored == {HASHER(STOPPED), HASHER(LEGACY)}
    assert audit_ids == {HASHER(STOPPED).hex(), HASHER(LEGACY).hex()}

    _, key = await sec_mt_account("sec_hash_app")
    api = await sec_mt_receiver()
    ids = {}
    for name, to, category in (("m_stopped", STOPPED, "marketing"),
                               ("m_legacy", LEGACY, "marketing"),
                               ("t_stopped", STOPPED, "transactional"),
                               ("m_free", FREE, "marketing")):
        text = "promo " + name.replace("_", "-")  # '_' is not one byte in GSM 03.38
        status, body = await api.call("POST", "/v1/messages", key=key, json={
            "to": to, "from": "Acme", "text": text, "category": category})
        assert status == 202, body
        ids[name] = body["id"]
    # the receiver hashes a marketing MT's recipient with the key; a transactional one, which
    # suppressions never stop, is stored without the hash
    hashes = dict(await pool.fetch("SELECT id, to_hash FROM outbound WHERE id = ANY($1)",
                                   list(ids.values())))
    assert hashes[ids["m_stopped"]] == HASHER(STOPPED) and hashes[ids["m_free"]] == HASHER(FREE)
    assert hashes[ids["t_stopped"]] is None
    # as an earlier release's receiver (or a hand-written INSERT) stores it: no to_hash; the
    # sender hashes it after its claim
    ids["m_unhashed"] = await pool.fetchval(
        "INSERT INTO outbound (from_addr, to_addr, body, category) VALUES ('Acme', $1,"
        " 'promo m-unhashed', 'marketing') RETURNING id", STOPPED)
    await pool.execute("NOTIFY smsgw_outbound")
    finals = {"suppressed", "submitted", "delivered"}

    async def done() -> dict[str, str] | None:
        rows = await pool.fetch("SELECT id, status FROM outbound WHERE id = ANY($1) UNION ALL "
                                "SELECT id, status FROM outbound_history WHERE id = ANY($1)",
                                list(ids.values()))
        got = {r["id"]: r["status"] for r in rows}
        if len(got) == len(ids) and all(s in finals for s in got.values()):
            return {name: got[i] for name, i in ids.items()}
        return None

    result = await _wait(done, 60)
    assert result["m_stopped"] == "suppressed" and result["m_legacy"] == "suppressed"
    assert result["m_unhashed"] == "suppressed"
    assert result["t_stopped"] != "suppressed" and result["m_free"] != "suppressed"
    texts = [s.pdu.short_message for s in sec_erase_sender.submits]
    assert not {b"promo m-stopped", b"promo m-legacy", b"promo m-unhashed"} & set(texts)
    assert b"promo t-stopped" in texts and b"promo m-free" in texts


async def test_processor_and_sender_refuse_to_start_without_the_secret(
        db_url: str, tmp_path: Path) -> None:
    """Without `[security] server_secret` the processor and the sender cannot key the
    suppression hashes: they exit 78 before any I/O, naming the key."""
    env = {k: v for k, v in sec_erase_env(db_url).items() if "SERVER_SECRET" not in k}
    env.update(PYTHONPATH=str(ROOT), SMSGW_PROCESSOR__METRICS_PORT="0",
               SMSGW_SENDER__METRICS_PORT="0")
    for daemon in ("processor", "sender"):
        proc = await _spawn(daemon, env, tmp_path)
        try:
            code = await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            code = None
        finally:
            await _stop(proc)
        assert proc.stderr is not None
        err = (await proc.stderr.read()).decode()
        assert code == 78, f"{daemon} started without a server secret"
        assert "security.server_secret" in err and daemon in err
