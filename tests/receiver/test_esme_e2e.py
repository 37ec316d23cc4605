"""ESMEs written by others against the real daemons (`smsgw up`'s supervisor: Postgres, the
simulator, receiver, processor, sender): python-smpplib and the npm `smpp` package's client
bind in all three modes, submit, and get the receipts the simulator's receipts turn into
(sender → receipt matching → the `esme_receipt` trigger → the receiver's delivery worker).

The Node.js client lives in tests/esme_node (package.json and its lockfile; `npm ci` there
installs it). Without node, or when its packages cannot be installed, its test skips with the
reason — unless selected with `-m esme_node`, when it fails instead.

The chaos case (kill -9 of the receiver between submit and submit_sm_resp) is marked `chaos`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from smsgw.services.admin import up
from smsgw.services.admin.status import read_binds
from smsgw.services.bench.stack import BENCH_ACCOUNT, Stack, StackOptions
from smsgw.shared.core import db
from smsgw.shared.domain import esme as E
from smsgw.shared.smpp import pdu as P

from .test_esme import Raw, Smpplib

NODE_DIR = Path(__file__).resolve().parents[1] / "esme_node"
pytestmark = [pytest.mark.timeout(120), pytest.mark.asyncio(loop_scope="module")]


async def esme_stack(**sections: Any) -> Stack:
    """A stack with the SMPP server on, receipts from the simulator after 50 ms."""
    receiver = {"smpp_server": {"failed_bind_delay_s": 0.05, **sections}}
    # MO to 55555 go to the stack's account's ESMEs (the processor's deliver_to_account)
    rules = [{"name": "to-esme", "match": {"to": "55555"},
              "actions": [{"type": "deliver_to_account", "account": BENCH_ACCOUNT}]}]
    stack = Stack(StackOptions(sections={"receiver": receiver}, receipt_delay_s=0.05,
                               log_level="info", rules=rules))
    await stack.start()
    return stack


async def smpp_password(stack: Stack) -> str:
    """Give the stack's account an SMPP password (as `smsgw accounts smpp-password` does)."""
    secret = up.server_secret(stack.data_dir).read_text().strip().encode()
    conn = await db.connect(stack.dsn, **stack.connect_kwargs)
    try:
        return await E.set_password(conn, secret, BENCH_ACCOUNT, actor="test")
    finally:
        await conn.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack() -> AsyncIterator[Stack]:
    """One stack for the module (its tests keep to their own messages)."""
    s = await esme_stack()
    s.esme_password = await smpp_password(s)  # type: ignore[attr-defined]
    try:
        yield s
    finally:
        await s.stop()


async def test_smpplib_binds_submits_and_gets_receipts(stack: Stack) -> None:
    """1. smpplib binds as transmitter and as receiver (each answered ESME_ROK) on the port
          `smsgw up` gives the receiver (`--esme-port`).
       2. Over a transceiver bind it submits 5 messages with registered_delivery 1: each
          submit_sm_resp carries an id; the simulator gets 5 submit_sm.
       3. 5 receipts come back over the same bind: esm_class 0x04, stat DELIVRD, the id
          from the submit_sm_resp in the text and in receipted_message_id; `smsgw status`
          reads the ESME's bind from the receiver's /metrics."""
    password = stack.esme_password  # type: ignore[attr-defined]
    for mode in ("transmitter", "receiver"):
        client = Smpplib(stack.esme_port)
        await client.connect_bind(BENCH_ACCOUNT, password, mode)
        await client.close()
    client = Smpplib(stack.esme_port)
    await client.connect_bind(BENCH_ACCOUNT, password, "transceiver")
    for i in range(5):
        await client.submit(source_addr_ton=5, source_addr="Shop", dest_addr_ton=1,
                            destination_addr=f"4477009001{i:02d}", short_message=b"hi %d" % i,
                            registered_delivery=1)
    await client.read_until(lambda: len(client.resps) == 5 and len(client.delivered) == 5,
                            timeout_s=30)
    binds, _ = await read_binds([("receiver", 1, stack.metrics_url("receiver"))])
    assert ("esme:bench", "transceiver") in {(b.connector, b.bind) for b in binds}  # status
    ids = {r.message_id.decode() for r in client.resps}
    assert len(ids) == 5 and all(i.isdigit() for i in ids)
    receipts = {d.receipted_message_id.rstrip(b"\0").decode(): d for d in client.delivered}
    assert set(receipts) == ids
    for mid, d in receipts.items():
        assert d.esm_class == 0x04 and d.message_state == 2
        assert d.short_message.decode().startswith(f"id:{mid} ")
        assert " stat:DELIVRD " in d.short_message.decode()
    await client.close()
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        parts = await conn.fetchval("SELECT count(*) FROM outbound_part WHERE outbound_id = "
                                    "ANY($1::bigint[])", [int(i) for i in ids])
    finally:
        await conn.close()
    assert parts == 5  # each reached the simulator as one submit_sm


async def test_mo_reaches_the_esme(stack: Stack) -> None:
    """MO the simulator delivers to 55555 match a `deliver_to_account` rule: smpplib, bound
    as a receiver, gets each as a deliver_sm (esm_class 0, the text, the sender), and each
    delivery is in the MO's trace events."""
    password = stack.esme_password  # type: ignore[attr-defined]
    client = Smpplib(stack.esme_port)
    await client.connect_bind(BENCH_ACCOUNT, password, "receiver")
    await stack.sim("/mo", {"count": 3, "rate": 50, "to": "55555", "prefix": "esme-mo"})
    await client.read_until(lambda: len(client.delivered) >= 3, timeout_s=30)
    await client.close()
    texts = sorted(d.short_message.decode() for d in client.delivered)
    assert texts == ["esme-mo 0", "esme-mo 1", "esme-mo 2"]
    assert all(d.esm_class == 0 and d.destination_addr.decode() == "55555"
               for d in client.delivered)
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        for _ in range(50):  # written once the deliver_sm_resp is in
            events = await conn.fetchval("SELECT count(*) FROM events WHERE message_table = "
                                         "'inbound' AND event = 'esme_delivered'")
            if events == 3:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert events == 3


def _node_or_skip(request: pytest.FixtureRequest) -> str:
    selected = "esme_node" in (request.config.getoption("markexpr") or "")
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed"
    elif not (NODE_DIR / "node_modules" / "smpp").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            problem = "npm is not installed"
        else:
            import subprocess
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                                  capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                problem = f"`npm ci` in {NODE_DIR} failed: {done.stderr[-300:]}"
    if problem is not None:
        if selected:
            pytest.fail(problem)
        pytest.skip(problem)
    assert node is not None
    return node


@pytest.mark.esme_node
async def test_node_smpp_client_binds_submits_and_gets_receipts(
        request: pytest.FixtureRequest, stack: Stack) -> None:
    """The npm `smpp` client binds as transmitter, receiver and transceiver (ESME_ROK each),
    submits 3 messages over the transceiver bind and gets their 3 receipts, each naming the
    id its submit_sm_resp carried (receipted_message_id and the text)."""
    node = _node_or_skip(request)
    password = stack.esme_password  # type: ignore[attr-defined]
    cfg = {"host": "127.0.0.1", "port": stack.esme_port, "system_id": BENCH_ACCOUNT,
           "password": password, "count": 3, "from": "Shop", "to": "447700900777",
           "timeout_ms": 30000}
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / "esme.js"), json.dumps(cfg), cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    result = json.loads(out.decode().strip().splitlines()[-1])
    assert result["errors"] == [], (result, err.decode()[-500:])
    assert result["binds"] == {"transmitter": 0, "receiver": 0, "transceiver": 0}
    ids = {s["message_id"] for s in result["submitted"]}
    assert [s["status"] for s in result["submitted"]] == [0, 0, 0] and len(ids) == 3
    assert {r["receipted_message_id"] for r in result["receipts"]} == ids
    for r in result["receipts"]:
        assert r["text"].startswith(f"id:{r['receipted_message_id']} ")
        assert r["message_state"] == 2 and "stat:DELIVRD" in r["text"]


def _chaos_pdu(i: int) -> Any:
    return P.SubmitSm(source_addr="Shop", source_addr_ton=5, dest_addr_ton=1,
                      destination_addr="447700900999", short_message=b"chaos %d" % i,
                      tlvs=((P.Tag.USER_MESSAGE_REFERENCE, i.to_bytes(2, "big")),))


async def _read_acks(raw: Raw, seq_of: dict[int, int], acked: dict[int, str],
                     until: int | None = None) -> None:
    """Record ESME_ROK answers (submit index → id) until `until` of them, or the connection
    dies (the receiver was killed)."""
    while until is None or len(acked) < until:
        try:
            r = await raw.recv(5 if until is None else 10)
        except (ConnectionError, TimeoutError, OSError):
            return
        if r.command_status == 0 and r.sequence_number in seq_of:
            acked[seq_of[r.sequence_number]] = r.message_id


async def _rebind(stack: Stack, password: str, killed_pid: int) -> Raw:
    """Bind again once the supervisor has restarted the receiver."""
    child = stack.child("receiver@1")
    for _ in range(200):
        if child.proc is not None and child.proc.pid != killed_pid:
            with contextlib.suppress(OSError, ConnectionError, TimeoutError):
                raw = await Raw.open(stack.esme_port)
                if await raw.bind(BENCH_ACCOUNT, password) == 0:
                    return raw
                await raw.close()
        await asyncio.sleep(0.1)
    pytest.fail("the receiver did not come back")


@pytest.mark.chaos
async def test_kill9_receiver_between_submit_and_resp(stack: Stack) -> None:
    """kill -9 of the receiver with submits in flight: an ESME reconnecting and resubmitting
    what was not acknowledged, with user_message_reference, loses nothing it was acknowledged
    for and stores nothing twice.

    1. A raw ESME pipelines 300 submits (beyond its window of 100: those get ESME_RTHROTTLED
       and count as unacknowledged), each with its own user_message_reference; the receiver
       is killed -9 once 20 are answered, while the rest are being committed.
    2. After `smsgw up`'s supervisor restarts it, the ESME binds again and resubmits every
       submit it got no ESME_ROK for (same reference, same content), within its window.
    3. Every acknowledged id is a stored message; no submit is stored twice; every one is
       stored."""
    password = stack.esme_password  # type: ignore[attr-defined]
    raw = await Raw.open(stack.esme_port)
    assert await raw.bind(BENCH_ACCOUNT, password) == 0
    n = 300
    seq_of = {raw.send(_chaos_pdu(i)): i for i in range(n)}
    acked: dict[int, str] = {}
    child = stack.child("receiver@1")
    assert child.proc is not None
    killed_pid = child.proc.pid
    try:
        await _read_acks(raw, seq_of, acked, until=20)
    finally:
        child.proc.send_signal(signal.SIGKILL)
    await _read_acks(raw, seq_of, acked)
    await raw.close()
    raw = await _rebind(stack, password, killed_pid)
    missing = [i for i in range(n) if i not in acked]
    for start in range(0, len(missing), 50):  # within the window (100)
        resent = {raw.send(_chaos_pdu(i)): i for i in missing[start:start + 50]}
        while resent:
            r = await raw.recv(10)
            i = resent.pop(r.sequence_number)
            assert r.command_status == 0, r
            acked[i] = r.message_id
    await raw.close()
    conn = await asyncpg.connect(stack.dsn, **stack.connect_kwargs)
    try:
        rows = await conn.fetch("SELECT id, body FROM outbound WHERE source = 'smpp' AND "
                                "body LIKE 'chaos %'")
    finally:
        await conn.close()
    bodies = [r["body"] for r in rows]
    assert len(bodies) == len(set(bodies)) == n, "a submit stored twice or lost"
    assert {int(m) for m in acked.values()} == {r["id"] for r in rows}
