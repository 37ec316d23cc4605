"""shared.domain.suppression: keyed hashes per scope, audited adds and removes, legacy entries."""

from __future__ import annotations

import hashlib

from smsgw.shared.domain import suppression
from smsgw.shared.domain.suppression import SuppressionChange

from .conftest import HASHER

A, B, C = "+447700900001", "+447700900002", "+33612345678"


async def test_scopes_hash_and_audit(pool) -> None:
    """1. A suppressed for short code 80080, B globally; 2. checks per scope; 3. the stored
    hash is the keyed one (not sha256); 4. re-adding refreshes evidence without a second entry;
    5. removing audits with the old evidence; an erased number (number NULL) still counts."""
    assert await suppression.add_suppression(pool, A, scope="80080", source="sms",
                                             evidence={"text": "STOP"}, actor="t",
                                             hasher=HASHER)
    assert await suppression.add_suppression(pool, B, actor="t", hasher=HASHER)
    assert await suppression.is_suppressed(pool, [A, B, C], "80080", hasher=HASHER) == {A, B}
    assert await suppression.is_suppressed(pool, [A, B, C], "12345", hasher=HASHER) == {B}
    assert await suppression.is_suppressed(pool, [A, B, C], hasher=HASHER) == {B}
    stored = await pool.fetchrow("SELECT number_hash, keyed FROM suppressions WHERE number = $1",
                                 A)
    assert bytes(stored["number_hash"]) == HASHER(A) and stored["keyed"]
    assert bytes(stored["number_hash"]) != hashlib.sha256(A.encode()).digest()
    await suppression.add_suppressions(pool, [
        SuppressionChange(number=A, scope="80080", source="sms", evidence={"text": "STOP!"}),
        SuppressionChange(number=A, scope="80080", source="sms", evidence={"text": "end"})],
        actor="t", hasher=HASHER)
    rows = await pool.fetch("SELECT evidence FROM suppressions WHERE number = $1", A)
    assert [r["evidence"]["text"] for r in rows] == ["end"]
    await pool.execute("UPDATE suppressions SET number = NULL WHERE scope = 'global'")
    assert await suppression.is_suppressed(pool, [B], hasher=HASHER) == {B}
    assert await suppression.remove_suppression(pool, A, scope="80080", actor="t",
                                                reason={"text": "START"}, hasher=HASHER)
    assert not await suppression.remove_suppression(pool, A, scope="80080", actor="t",
                                                    hasher=HASHER)
    assert await suppression.is_suppressed(pool, [A], "80080", hasher=HASHER) == set()
    audit = await pool.fetch("SELECT action, detail FROM audit_log ORDER BY id")
    assert [a["action"] for a in audit] == ["suppression_add"] * 3 + ["suppression_remove"]
    assert audit[0]["detail"]["new"] is True and audit[2]["detail"]["new"] is False
    removed = audit[3]["detail"]
    assert removed["evidence"]["text"] == "end" and removed["reason"]["text"] == "START"
    assert "number" not in removed["evidence"]  # the audit log never holds the number


async def test_legacy_entries_match_until_rekeyed(pool) -> None:
    """1. An entry written the old way (unkeyed sha256, keyed = false) suppresses and START
    removes it; 2. `rekey_legacy` turns an erased legacy entry into the keyed hash of the
    same number (no number needed) and rewrites the audit row that named the old hash."""
    old = hashlib.sha256(A.encode()).digest()
    await pool.execute("INSERT INTO suppressions (number_hash, number, scope) VALUES ($1, $2,"
                       " 'global')", hashlib.sha256(C.encode()).digest(), C)
    assert await suppression.is_suppressed(pool, [A, C], hasher=HASHER) == {C}
    assert await suppression.remove_suppression(pool, C, actor="t", hasher=HASHER)
    await pool.execute("INSERT INTO suppressions (number_hash, number, scope) VALUES ($1, NULL,"
                       " 'global')", old)
    await pool.execute("INSERT INTO audit_log (actor, action, object_type, object_id) VALUES"
                       " ('t', 'suppression_add', 'suppression', $1)", old.hex() + ":global")
    assert await suppression.is_suppressed(pool, [A], hasher=HASHER) == {A}
    async with pool.acquire() as conn:
        assert await suppression.rekey_legacy(conn, HASHER) == 1
        assert await suppression.rekey_legacy(conn, HASHER) == 0
    row = await pool.fetchrow("SELECT number_hash, keyed FROM suppressions")
    assert bytes(row["number_hash"]) == HASHER(A) and row["keyed"]
    assert await suppression.is_suppressed(pool, [A], hasher=HASHER) == {A}
    ids = await pool.fetch("SELECT object_id FROM audit_log WHERE action = 'suppression_add'")
    assert [r["object_id"] for r in ids] == [HASHER(A).hex() + ":global"]
