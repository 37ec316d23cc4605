"""The sender's hot statements on its planned connections (`engine.PlannedPool`, settings
`engine.PLANNED`): the claim, the write-back with its raced-receipt lookups and the receipt
store are cached as generic plans, first planned while the tables are nearly empty. On a plain
connection such plans hash sequential scans of outbound_queue and outbound (the claim) or run
a sequential scan per row (the write-back's part lookup, the store's queued-receipt lookup),
every call, as the tables grow. On the planned connections every table is reached by index
probes in nested loops, whatever the statistics."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import orjson
import pytest

from smsgw.services.sender.engine import PLANNED, PLANNED_CLAIM, PlannedPool
from smsgw.shared.core import db
from smsgw.shared.queue import outbound, receipts
from smsgw.shared.queue.records import MtItem

HOT = {"outbound", "outbound_queue", "outbound_part", "receipts"}


def _nodes(plan: dict[str, Any], parent: str = "") -> list[tuple[str, str, bool]]:
    """(node type, relation, whether it is a probe) of every node: a probe has an index
    condition, or reads an index in order under a Limit (the first lane of the claim's loose
    index scan)."""
    probe = (any(k in plan for k in ("Index Cond", "Recheck Cond", "TID Cond"))
             or (parent == "Limit" and plan["Node Type"].startswith("Index")))
    out = [(plan["Node Type"], plan.get("Relation Name", ""), probe)]
    for child in plan.get("Plans", []):
        out += _nodes(child, plan["Node Type"])
    return out


async def _explain(conn: asyncpg.Connection, sql: str,
                   *args: Any) -> list[tuple[str, str, bool]]:
    explained = await conn.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
    return _nodes((json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"])


def _bad(nodes: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """Scans of a hot table that are not probes (an index scan without an index condition
    reads the whole index), and in the claim any hash or merge join."""
    return [(n, r, probe) for n, r, probe in nodes
            if r in HOT and n != "ModifyTable"
            and not (n in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan")
                     and probe)]


async def _hot_statements(conn: asyncpg.Connection, settings: dict[str, str],
                          growth: int) -> dict[str, list[tuple[str, str, bool]]]:
    """Tables analysed nearly empty, then grown `growth` times (the planner believes them
    small); the plans of the claim, the write-back, the raced-receipt lookups and the store."""
    items = [MtItem(account_id=None, source="api", from_addr="Shop",  # type: ignore[arg-type]
                    to_addr=f"+4477009{i:05d}", body="hi", category="transactional")
             for i in range(20)]
    await outbound.insert(conn, items, [None] * len(items))
    await conn.execute("ANALYZE outbound; ANALYZE outbound_queue; ANALYZE outbound_part;"
                       " ANALYZE receipts")
    await outbound.insert(conn, items * growth, [None] * len(items) * growth)
    await conn.execute(
        "INSERT INTO outbound_part (outbound_id, part_no, parts_total, connector, smsc_id,"
        " status) SELECT id, 1, 1, 'sim', 'p' || id, 'submitted' FROM outbound")
    await conn.execute("INSERT INTO receipts (connector, smsc_id) SELECT 'sim', 'q' || g"
                       " FROM generate_series(1, 2000) g")
    ids = [r["id"] for r in await conn.fetch("SELECT id FROM outbound ORDER BY id LIMIT 300")]
    msgs = orjson.dumps([{"id": i, "status": "submitted", "attempts_inc": 0, "parts_total": 1,
                          "connector": "sim"} for i in ids]).decode()
    parts = orjson.dumps([{"outbound_id": i, "part_no": 1, "parts_total": 1, "connector": "sim",
                           "smsc_id": f"x{i}", "command_status": 0, "status": "submitted",
                           "kannel_dlr": False} for i in ids]).decode()
    doc = json.dumps([{"connector": "sim", "smsc_id": f"p{i}", "state": "delivered",
                       "final": True, "siblings": ["sim"], "n": n} for n, i in enumerate(ids)])
    plans = {}
    async with conn.transaction():
        for key, value in PLANNED_CLAIM.items():  # as the claim's own connection has them
            await conn.execute(f"SET LOCAL {key} = {value}")
        plans["claim"] = await _explain(conn, outbound._CLAIM, "s1", 60.0, 100, 10, False)
    async with conn.transaction():
        for key, value in settings.items():
            await conn.execute(f"SET LOCAL {key} = {value}")
        plans["write_back"] = await _explain(conn, outbound._WRITE_BACK, "s1", msgs, parts)
        plans["waiting"] = await _explain(conn, receipts._WAITING, [f"q{i}" for i in range(300)])
        plans["matched_to_parts"] = await _explain(conn, receipts._MATCHED_TO_PARTS, ids, ids)
    plans["store"] = await _explain(conn, receipts._STORE, doc, "smsgw_receipts", 3600.0)
    return plans


@pytest.mark.parametrize("growth", [10, 30])
async def test_hot_statements_stay_on_index_probes_on_planned_connections(
        db_url: str, growth: int) -> None:
    """(With only `force_generic_plan`, as the receipt store's connections had it, both
    growths fail: growth 10 scans outbound, outbound_part and outbound_queue in the store and
    the write-back, growth 30 scans outbound_queue in the claim and the write-back.)"""
    conn = await db.connect(db_url, server_settings=dict(PLANNED))  # the pools' settings
    try:
        plans = await _hot_statements(conn, PLANNED, growth)
    finally:
        await conn.close()
    assert {name: _bad(nodes) for name, nodes in plans.items()} == {
        name: [] for name in plans}
    assert not [n for n, _, _ in plans["claim"] if n in ("Hash Join", "Merge Join")]
    assert ("Index Scan", "outbound", True) in plans["claim"]
    assert {("Index Scan", "outbound", True), ("Index Scan", "outbound_queue", True)} <= set(
        plans["write_back"])


async def test_planned_pool_connections_carry_the_settings(pool: asyncpg.Pool,
                                                           db_url: str) -> None:
    from smsgw.services.sender.settings import SenderSettings
    from smsgw.shared.runtime.config import load_config

    config = load_config("sender", SenderSettings, path=None,
                         env={"SMSGW_DATABASE_URL": db_url}, instance=1)
    planned = PlannedPool(pool, "test", 2, PLANNED_CLAIM)
    await planned.open(db_url, config)
    try:
        assert planned.pool is not pool
        async with planned.acquire() as conn:
            got = {k: await conn.fetchval(f"SHOW {k}") for k in PLANNED_CLAIM}
        assert got == PLANNED_CLAIM
    finally:
        await planned.close()
