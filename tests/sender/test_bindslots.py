"""Global bind slots: two senders share one connector's binds and TPS, also across a lost slot."""

from __future__ import annotations

import asyncio

import asyncpg

from smsgw.services.smsc_sim.server import SimConfig, Simulator
from smsgw.shared.smpp.bindslots import slot_classid, slot_holders

from .conftest import add_mt, all_final, connector, start_stack, wait_until
from .test_submit import max_in_window


def test_slot_keys_are_stable_and_distinct() -> None:
    """The lock key is a pure function of the name (same in every process and host)."""
    assert slot_classid("c1") == slot_classid("c1")
    assert slot_classid("c1") != slot_classid("c2")


async def test_two_senders_never_exceed_binds_or_tps(db_url: str, pool: asyncpg.Pool) -> None:
    """1. connector binds=2, tps=100, burst 0; the simulator refuses a third bind (and counts
    it)  2. two senders start together, 350 MTs queued  3. mid-run, pg_terminate_backend kills
    the connection holding one of sender A's slots  4. A unbinds that session; a slot holder
    binds again only after the grace period  5. all messages end submitted; the simulator never
    had more than 2 binds, refused none, and never saw more than 100 submits in any second."""
    async with Simulator(SimConfig(max_binds=2)) as sim:
        conn_cfg = connector("shared", sim.port, binds=2, tps=100, burst=0, window=10)
        ids = await add_mt(pool, 350)
        a, b = await asyncio.gather(
            start_stack(db_url, pool, [conn_cfg], owner="A", grace_s=None),
            start_stack(db_url, pool, [conn_cfg], owner="B", grace_s=None))
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, sim.bind_count)
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        try:
            await wait_until(lambda: a.managers["shared"].up() + b.managers["shared"].up() == 2)
            await wait_until(lambda: len(sim.submits) > 100, timeout=10)
            admin = await asyncpg.connect(db_url)
            try:
                holders = await slot_holders(admin, "shared")
                victim = a if a.managers["shared"].held_slots() else b
                slot = victim.managers["shared"].held_slots()[0]
                binds_before = sim.counters.binds
                await admin.execute("SELECT pg_terminate_backend($1)", holders[slot])
            finally:
                await admin.close()
            await wait_until(lambda: sim.counters.binds > binds_before, timeout=10)
            await wait_until(lambda: all_final(pool, ids, {"submitted"}), timeout=30)
        finally:
            watcher.cancel()
            await asyncio.gather(a.close(), b.close())
        assert sim.counters.bind_rejected == 0
        assert peak <= 2
        assert sim.counters.unbinds >= 1  # the session on the lost slot was unbound
        assert max_in_window(sim.timestamps()) <= 100
        assert len(sim.submits) == 350


async def test_bind_and_loss_are_published_at_once_not_at_the_next_check(
        db_url: str) -> None:
    """1. A bind manager whose own loop wakes only every 30 s (retry_s = check_s = 30) takes
    its slot and binds to the simulator. 2. `on_up` hears n = 1 as soon as the bind is up
    (the sender's claim loop is woken by it), not at the loop's next tick. 3. The simulator
    drops the connection: `on_up` hears n = 0 at once as well."""
    from smsgw.shared.smpp.bindslots import BindManager

    heard: list[tuple[int, float]] = []
    loop = asyncio.get_running_loop()
    async with Simulator(SimConfig()) as sim:
        c = connector("pub", sim.port, binds=1)
        manager = BindManager(c, c.bind_mode, db_url, grace_s=0.05, retry_s=30.0, check_s=30.0,
                              on_up=lambda _mode, n: heard.append((n, loop.time())))
        stop = asyncio.Event()
        started = loop.time()
        task = asyncio.create_task(manager.run(stop))
        try:
            await wait_until(lambda: any(n == 1 for n, _ in heard), timeout=10)
            assert next(t for n, t in heard if n == 1) - started < 10
            await sim.drop_connections()
            dropped = loop.time()
            await wait_until(lambda: any(n == 0 and t >= dropped for n, t in heard), timeout=10)
        finally:
            stop.set()
            await task
