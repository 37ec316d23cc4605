"""Sender test harness: the SMSC simulator on 127.0.0.1:0, real Postgres, the real sender parts.

`sender_stack` builds what the daemon's composition root builds (bind managers, lanes, the
submitter, the receipt store and matcher) from arguments, runs it as tasks, and stops it with
the same drain as SIGTERM. Nothing of ours is mocked: the SMSC is the project's simulator.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pytest

from smsgw.services.sender.lanes import Lane
from smsgw.services.sender.matching import MatchSettings, ReceiptStore, run_matcher
from smsgw.services.sender.routing import Router
from smsgw.services.sender.settings import SenderSettings
from smsgw.services.sender.submitter import Submitter
from smsgw.services.smsc_sim.server import SimConfig, Simulator
from smsgw.shared.domain.intake import DeliverIntake, flush_inbound
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue import store
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.smpp.bindslots import BindManager
from smsgw.shared.smpp.connector import ConnectorSettings


def connector(name: str, port: int, **kw: Any) -> ConnectorSettings:
    """A connector pointing at a simulator, with test-friendly timers."""
    base: dict[str, Any] = dict(name=name, host="127.0.0.1", port=port, system_id="smsgw",
                                window=10, binds=1, response_timeout_s=2.0,
                                reconnect_min_s=0.1, reconnect_max_s=0.5, enquire_link_s=0)
    base.update(kw)
    return ConnectorSettings(**base)


async def add_mt(pool: asyncpg.Pool, n: int = 1, **cols: Any) -> list[int]:
    """Enqueue `n` MT rows (defaults: transactional, +447700900001, short text)."""
    row = {"from_addr": "SMSGW", "to_addr": "+447700900001", "body": "hello", "source": "api"}
    row.update(cols)
    async with pool.acquire() as conn:
        res = await store.enqueue(conn, "outbound", [dict(row) for _ in range(n)])
    return [r.id for r in res]


async def statuses(pool: asyncpg.Pool, ids: Sequence[int] | None = None) -> dict[int, str]:
    """id -> status of outbound rows (hot and history)."""
    rows = await pool.fetch(
        "SELECT id, status FROM outbound UNION ALL SELECT id, status FROM outbound_history")
    return {r["id"]: r["status"] for r in rows if ids is None or r["id"] in ids}


async def wait_until(pred: Callable[[], Any], timeout: float = 20.0,  # noqa: ASYNC109
                     every: float = 0.05) -> Any:
    """Poll an (async) predicate until truthy; fail the test after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if loop.time() > end:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(every)


async def all_final(pool: asyncpg.Pool, ids: Sequence[int], finals: set[str]) -> bool:
    """True when every id is in one of `finals`."""
    got = await statuses(pool, ids)
    return len(got) == len(ids) and all(s in finals for s in got.values())


@dataclass
class Stack:
    """One running sender (bind managers + submitter) with its stop event."""

    submitter: Submitter
    managers: dict[str, BindManager]
    stop: asyncio.Event
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def close(self) -> None:
        """SIGTERM-like: stop claiming, drain, release, unbind."""
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 30)

    async def wait_bound(self, n_per_connector: int = 1,
                         timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """Wait until every connector has `n_per_connector` bound sessions."""
        await wait_until(lambda: all(m.up() >= n_per_connector
                                     for m in self.managers.values()), timeout)


async def start_stack(db_url: str, pool: asyncpg.Pool, connectors: Sequence[ConnectorSettings],
                      *, routes: Router | None = None, owner: str = "sender-test",
                      grace_s: float | None = 0.05, receipts: bool = True,
                      match: MatchSettings | None = None, **settings: Any) -> Stack:
    """Build and start a sender on `connectors` (see module docstring). With `receipts`, the
    trx binds store deliver_sm through the shared intake and a matcher runs."""
    stop = asyncio.Event()
    match = match or MatchSettings.from_config(
        connectors, SenderSettings(receipt_retry_base_s=0.2, receipt_min_age_s=0.2))
    # the daemon's receipt flush: store, matching at once what needs nothing else
    store_receipts = ReceiptStore(lambda: match)
    committers = [GroupCommitter(pool, flush_inbound, name="inbound"),
                  GroupCommitter(pool, store_receipts, name="receipts", transactional=False)]
    for gc in committers:
        gc.start()
    intake = DeliverIntake(inbound=committers[0], receipts=committers[1])
    managers = {c.name: BindManager(c, c.bind_mode, db_url,
                                    handler=intake.handler_for(c, batch=True),  # as the daemon
                                    grace_s=grace_s, retry_s=0.2, check_s=0.5)
                for c in connectors}
    lanes = {c.name: Lane(c, managers[c.name].sessions, lambda *a: None) for c in connectors}
    router = routes or Router.from_settings([], connectors)
    # drain_s is the daemon's (not the submitter's): low so that a short test lease_s validates
    cfg = SenderSettings(**{"flush_s": 0.02, "lease_s": 30.0, "drain_s": 1.0, **settings})
    sub = Submitter(pool, lanes, router, cfg, owner=owner,
                    wait_for_work=lambda: asyncio.sleep(0.1),
                    hasher=NumberHasher.from_secret("test-server-secret"))
    stack = Stack(sub, managers, stop)
    manager_stop = asyncio.Event()

    async def run_submitter() -> None:
        try:
            await sub.run(stop)
        finally:
            manager_stop.set()  # unbind after the drain, as the daemon does

    async def run_intake_and_matcher() -> None:
        if receipts:
            await run_matcher(pool, match, stop=stop,
                              wait_for_work=lambda: asyncio.sleep(0.05))
        await manager_stop.wait()
        for gc in committers:
            await gc.close()

    stack.tasks = [asyncio.create_task(m.run(manager_stop)) for m in managers.values()]
    stack.tasks.append(asyncio.create_task(run_submitter()))
    stack.tasks.append(asyncio.create_task(run_intake_and_matcher()))
    return stack


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A simulator with default settings (receipts off)."""
    async with Simulator(SimConfig()) as s:
        yield s


@contextlib.asynccontextmanager
async def running(db_url: str, pool: asyncpg.Pool, connectors: Sequence[ConnectorSettings],
                  **kw: Any) -> AsyncIterator[Stack]:
    """`start_stack` as a context manager that always drains."""
    stack = await start_stack(db_url, pool, connectors, **kw)
    try:
        yield stack
    finally:
        await stack.close()
