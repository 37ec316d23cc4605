"""Suppression is decided at the sender's claim, so an opt-out that arrives after an MT was queued
still stops it (docs/ARCHITECTURE.md, guarantee 9), and a short-code STOP stops only that code.

Driven through the real parts: MTs queued as intake stores them (with the recipient's keyed
hash, computed here from the documented construction, not by our hasher), STOP / STOPALL MOs
applied by the processor's engine, then the sender's claim against the SMSC simulator.
"""

from __future__ import annotations

import hashlib
import hmac

import asyncpg
from prometheus_client import CollectorRegistry

from smsgw.services.processor.engine import Engine
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.options import ProcessorKeys
from smsgw.services.smsc_sim.server import Simulator
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import store

from .conftest import add_mt, all_final, connector, running, statuses, wait_until

SECRET = b"test-server-secret"  # the sender stack's server secret (tests/sender/conftest.py)
SHORT, OTHER = "80080", "12345"
STOPS, STOPS_ALL, STAYS = "+447700900801", "+447700900802", "+447700900803"


def keyed_hash(number: str) -> bytes:
    """HMAC(HMAC(server_secret, "smsgw suppression v1"), sha256(number)), as documented."""
    key = hmac.digest(SECRET, b"smsgw suppression v1", "sha256")
    return hmac.digest(key, hashlib.sha256(number.encode()).digest(), "sha256")


async def test_opt_out_after_queueing_is_enforced_at_claim_per_scope(
        db_url: str, pool: asyncpg.Pool, sim: Simulator) -> None:
    """1. Five MTs are queued while nobody has opted out (marketing unless said):
       SHORT→STOPS, OTHER→STOPS, SHORT→STOPS transactional, OTHER→STOPS_ALL, SHORT→STAYS.
    2. Then STOPS sends STOP to SHORT (a scoped entry) and STOPS_ALL sends STOPALL (a global
       entry); the processor applies them. The MTs are still queued, untouched.
    3. The sender starts and claims: the marketing MT from SHORT to STOPS and the one to
       STOPS_ALL end `suppressed` and never reach the SMSC; the one from OTHER to STOPS (other
       scope), the transactional one and the one to STAYS are submitted."""
    plan = [("to-short-stops", SHORT, STOPS, "marketing", "suppressed"),
            ("to-other-stops", OTHER, STOPS, "marketing", "submitted"),
            ("otp-short-stops", SHORT, STOPS, "transactional", "submitted"),
            ("to-other-stopall", OTHER, STOPS_ALL, "marketing", "suppressed"),
            ("to-short-stays", SHORT, STAYS, "marketing", "submitted")]
    ids = {}
    for body, sender_id, to, category, _ in plan:
        (ids[body],) = await add_mt(pool, 1, from_addr=sender_id, to_addr=to, body=body,
                                    category=category, to_hash=keyed_hash(to))

    await store.enqueue(pool, "inbound", [
        {"channel": "smpp", "provider": "smsc-a", "connector": "smsc-a", "from_addr": STOPS,
         "to_addr": SHORT, "body": "STOP"},
        {"channel": "smpp", "provider": "smsc-a", "connector": "smsc-a", "from_addr": STOPS_ALL,
         "to_addr": SHORT, "body": "STOPALL"}])
    engine = Engine(pool, ProcessorKeys(batch=100, flood_max=0),
                    hasher=NumberHasher.from_secret(SECRET),
                    metrics=ProcessorMetrics.create(CollectorRegistry()))
    while await engine.run_batch():
        pass
    scopes = {bytes(r["number_hash"]): r["scope"] for r in await pool.fetch(
        "SELECT number_hash, scope FROM suppressions")}
    assert scopes == {keyed_hash(STOPS): SHORT, keyed_hash(STOPS_ALL): "global"}
    assert set((await statuses(pool, list(ids.values()))).values()) == {"queued"}

    async with running(db_url, pool, [connector("c1", sim.port)]) as stack:
        await stack.wait_bound()
        await wait_until(lambda: all_final(pool, list(ids.values()),
                                           {"suppressed", "submitted"}), timeout=20)
    got = await statuses(pool, list(ids.values()))
    assert {body: got[ids[body]] for body in ids} == {p[0]: p[4] for p in plan}
    sent = {r.pdu.short_message for r in sim.submits}
    assert {p[0].encode() for p in plan if p[4] == "submitted"} <= sent
    assert not {p[0].encode() for p in plan if p[4] == "suppressed"} & sent
    last_errors = await pool.fetch("SELECT last_error FROM outbound WHERE status = 'suppressed'")
    assert [r["last_error"] for r in last_errors] == ["recipient suppressed"] * 2
