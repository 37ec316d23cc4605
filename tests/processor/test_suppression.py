"""shared.suppression: hashed entries per scope, audited adds and removes."""

from __future__ import annotations

from shared import suppression
from shared.suppression import SuppressionChange

A, B, C = "+447700900001", "+447700900002", "+33612345678"


async def test_scopes_hash_and_audit(pool) -> None:
    """1. A suppressed for short code 80080, B globally; 2. checks per scope; 3. the stored
    hash is what Postgres computes; 4. re-adding refreshes evidence without a second entry;
    5. removing audits with the old evidence; an erased number (number NULL) still counts."""
    assert await suppression.add_suppression(pool, A, scope="80080", source="sms",
                                             evidence={"text": "STOP"}, actor="t")
    assert await suppression.add_suppression(pool, B, actor="t")
    assert await suppression.is_suppressed(pool, [A, B, C], "80080") == {A, B}
    assert await suppression.is_suppressed(pool, [A, B, C], "12345") == {B}
    assert await suppression.is_suppressed(pool, [A, B, C]) == {B}
    stored = await pool.fetchval("SELECT number_hash FROM suppressions WHERE number = $1", A)
    assert bytes(stored) == suppression.number_hash(A)
    await suppression.add_suppressions(pool, [
        SuppressionChange(number=A, scope="80080", source="sms", evidence={"text": "STOP!"}),
        SuppressionChange(number=A, scope="80080", source="sms", evidence={"text": "end"})],
        actor="t")
    rows = await pool.fetch("SELECT evidence FROM suppressions WHERE number = $1", A)
    assert [r["evidence"]["text"] for r in rows] == ["end"]
    await pool.execute("UPDATE suppressions SET number = NULL WHERE scope = 'global'")
    assert await suppression.is_suppressed(pool, [B]) == {B}
    assert await suppression.remove_suppression(pool, A, scope="80080", actor="t",
                                                reason={"text": "START"})
    assert not await suppression.remove_suppression(pool, A, scope="80080", actor="t")
    assert await suppression.is_suppressed(pool, [A], "80080") == set()
    audit = await pool.fetch("SELECT action, detail FROM audit_log ORDER BY id")
    assert [a["action"] for a in audit] == ["suppression_add"] * 3 + ["suppression_remove"]
    assert audit[0]["detail"]["new"] is True and audit[2]["detail"]["new"] is False
    removed = audit[3]["detail"]
    assert removed["evidence"]["text"] == "end" and removed["reason"]["text"] == "START"
    assert "number" not in removed["evidence"]  # the audit log never holds the number
