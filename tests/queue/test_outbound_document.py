"""The receiver's MT insert document (`outbound._document`) leaves out the keys whose value is
null: every column still gets what the item holds, a set field its value, an unset one NULL
(or the column's default), through both insert statements."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg

from smsgw.shared.queue import outbound
from smsgw.shared.queue.records import MtItem

_COLUMNS = ("account_id, source, from_addr, to_addr, body, category, priority, encoding, "
            "client_ref, callback_url, dlr_mask, send_at, valid_until, route_hint, meta, "
            "to_hash, payload, udh, smpp")


async def test_every_field_reaches_its_column_and_unset_ones_are_null(
        pool: asyncpg.Pool) -> None:
    """A plain MT (body only), a full one (every optional field set) and a binary one (no
    body) through `insert`, and a keyed one through `insert_keyed`: each column as given."""
    send_at = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    plain = MtItem(account_id=7, source="api", from_addr="Brand", to_addr="+447700900123",
                   body="hello", category="transactional")
    full = MtItem(account_id=7, source="sendsms", from_addr="+447700900999",
                  to_addr="+447700900124", body="Grüße", category="marketing", priority=3,
                  encoding="ucs2", callback_url="https://example.com/cb", dlr_mask=31,
                  send_at=send_at, valid_until=(send_at + timedelta(hours=1)).replace(tzinfo=None),
                  route_hint="smsc-a", meta={"callback_style": "kannel", "coding": 2},
                  udh=b"\x06\x05\x04\x15\x81\x15\x81", smpp={"pid": 65, "mclass": 1},
                  due_now=True)
    binary = MtItem(account_id=7, source="api", from_addr="Brand", to_addr="+447700900125",
                    body=None, category="transactional", payload=b"\x00\x01\xfe\xff")
    keyed = MtItem(account_id=7, source="api", from_addr="Brand", to_addr="+447700900126",
                   body="keyed", category="transactional", client_ref="ref-1")
    async with pool.acquire() as conn:
        ids = await outbound.insert(conn, [plain, full, binary], [b"h" * 32, None, b"b" * 32])
        [(kid, created)] = await outbound.insert_keyed(conn, [keyed], ["fp-1"], [b"k" * 32],
                                                       ttl_s=60)
        assert created
        rows = {r["id"]: r for r in await conn.fetch(
            f"SELECT id, {_COLUMNS}, run_after FROM outbound WHERE id = ANY($1::bigint[])",
            [*ids, kid])}
    for mid, item, to_hash in ((ids[0], plain, b"h" * 32), (ids[1], full, None),
                               (ids[2], binary, b"b" * 32), (kid, keyed, b"k" * 32)):
        row = rows[mid]
        for name in ("account_id", "source", "from_addr", "to_addr", "body", "category",
                     "priority", "encoding", "client_ref", "callback_url", "dlr_mask",
                     "route_hint", "meta", "payload", "udh", "smpp", "send_at"):
            assert row[name] == getattr(item, name), (item, name)
        assert row["to_hash"] == to_hash
        expected_until = (None if item.valid_until is None
                          else item.valid_until.replace(tzinfo=UTC))
        assert row["valid_until"] == expected_until  # a naive timestamp is UTC
    # due_now: the full one (scheduled, due at once) runs now, not at its send_at
    assert rows[ids[1]]["run_after"] < send_at
