"""SMPP intake over real sockets: rx binds through global bind slots, MO, fragments, receipts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import asyncpg
import pytest

from smsgw.services.receiver.context import ReceiverContext, build_context
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.smpp_intake import SmppIntake
from smsgw.services.smsc_sim.server import Simulator
from smsgw.shared.core import db
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.connector import ConnectorSettings

from .conftest import SERVER_SECRET, webhook_settings


def connector(port: int, binds: int, name: str = "rx1") -> ConnectorSettings:
    return ConnectorSettings(name=name, port=port, system_id="smsgw", bind_mode="receiver",
                             binds=binds, default_country="GB", reconnect_min_s=0.05,
                             reconnect_max_s=0.2, enquire_link_s=0)


@dataclass
class Instance:
    """One receiver instance's SMPP side: its context, intake and bound-session count."""

    ctx: ReceiverContext
    intake: SmppIntake
    stop: asyncio.Event
    task: asyncio.Task[None]
    pool: asyncpg.Pool
    bound: dict[str, int] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait_bound(self, n: int) -> None:
        """Wait (≤ 10 s) until this instance has `n` bound rx sessions."""
        await wait_total([self], n)

    async def shutdown(self) -> None:
        """Stop as the daemon does: unbind (handlers finish first), then flush and close."""
        self.stop.set()
        await self.task
        await self.ctx.close(timeout_s=2)
        await self.pool.close()


StartInstance = Callable[[list[ConnectorSettings]], "asyncio.Future[Instance]"]


@pytest.fixture
async def start_instance(db_url: str) -> AsyncIterator[Callable[..., object]]:
    """Start receiver instances (own pool, own committers, own rx binds) on the test DB."""
    running: list[Instance] = []

    async def start(connectors: list[ConnectorSettings]) -> Instance:
        pool = await db.create_pool(db_url, min_size=1, max_size=4)
        ctx = build_context(pool, ReceiverOptions(default_country="GB"), webhook_settings(),
                            server_secret=SERVER_SECRET)
        holder: dict[str, Instance] = {}

        def on_up(name: str, mode: str, n: int) -> None:
            inst = holder["i"]
            inst.bound[name] = n
            inst.changed.set()

        intake = SmppIntake(connectors, db_url, ctx.intake, on_up=on_up, retry_s=0.1,
                            check_s=0.2, grace_s=0.05)
        stop = asyncio.Event()
        inst = Instance(ctx, intake, stop, asyncio.get_running_loop().create_task(
            intake.run(stop)), pool)
        holder["i"] = inst
        running.append(inst)
        return inst

    yield start
    for inst in running:
        if not inst.stop.is_set():
            with contextlib.suppress(Exception):
                await inst.shutdown()


async def test_two_receivers_share_one_bind_slot(start_instance, pool: asyncpg.Pool) -> None:  # type: ignore[no-untyped-def]
    """1. two receiver instances on a connector with binds=1
    2. the simulator counts one bind, also after the loser retried several times
    3. an MO goes through the one bind and is committed before ESME_ROK."""
    async with Simulator() as sim:
        conns = [connector(sim.port, binds=1)]
        a = await start_instance(conns)
        b = await start_instance(conns)
        await wait_total([a, b], 1)
        await asyncio.sleep(1.0)  # ~10 acquisition retries of the other instance
        assert sim.bind_count == 1 and sim.counters.binds == 1
        assert sum(a.bound.values()) + sum(b.bound.values()) == 1
        status = await sim.send_mo("STOP", source_addr="447700900123")
        assert status == P.SMPP_ESME_ROK
        row = await pool.fetchrow("SELECT * FROM inbound")
        assert row["from_addr"] == "+447700900123" and row["body"] == "STOP"
        assert row["channel"] == "smpp" and row["connector"] == "rx1"
        # Positive control for the quiet second above: the other instance was trying all along,
        # so it binds as soon as the slot is free — and still only one bind is up.
        winner, loser = (a, b) if sum(a.bound.values()) else (b, a)
        await winner.shutdown()
        await wait_total([loser], 1)
        assert sim.counters.binds == 2 and sim.bind_count == 1


def _fragment(ref: int, total: int, seq: int, text: str) -> bytes:
    return bytes([5, 0, 3, ref, total, seq]) + text.encode("ascii")


async def test_fragments_over_two_instances_and_a_restart(start_instance,  # type: ignore[no-untyped-def]
                                                          pool: asyncpg.Pool) -> None:
    """1. instance A holds both binds of a binds=2 connector; B waits for a slot
    2. fragment 2 of 3 arrives at A; A restarts (stops; a new A' starts)
    3. B takes the freed slots; fragments 1 and 3 arrive there (one of them twice)
    4. exactly one inbound message with the text in order; fragments all done."""
    async with Simulator() as sim:
        conns = [connector(sim.port, binds=2)]
        a = await start_instance(conns)
        await a.wait_bound(2)
        b = await start_instance(conns)
        assert await sim.send_mo(_fragment(42, 3, 2, "lo wo"), esm_class=0x40,
                                 source_addr="447700900123") == P.SMPP_ESME_ROK
        assert await pool.fetchval("SELECT count(*) FROM inbound") == 0
        await a.shutdown()
        await b.wait_bound(2)
        a2 = await start_instance(conns)
        for frag in (_fragment(42, 3, 1, "hel"), _fragment(42, 3, 3, "rld"),
                     _fragment(42, 3, 3, "rld")):
            assert await sim.send_mo(frag, esm_class=0x40,
                                     source_addr="447700900123") == P.SMPP_ESME_ROK
        rows = await pool.fetch("SELECT * FROM inbound")
        assert len(rows) == 1 and rows[0]["body"] == "hello world"
        assert rows[0]["meta"]["concat"]["received"] == [1, 2, 3]
        assert await pool.fetchval(
            "SELECT count(*) FROM mo_parts WHERE status = 'done'") == 4  # 3 + the re-send
        assert sum(a2.bound.values()) == 0


async def test_receipt_stored_for_matching(start_instance, pool: asyncpg.Pool) -> None:  # type: ignore[no-untyped-def]
    """A receipt deliver_sm (esm_class 0x04) becomes a queued receipts row, never an MO."""
    async with Simulator() as sim:
        inst = await start_instance([connector(sim.port, binds=1)])
        await inst.wait_bound(1)
        text = (b"id:0A1B2C sub:001 dlvrd:001 submit date:2611271200 done date:2611271201"
                b" stat:DELIVRD err:000 text:hello")
        status = await sim.deliver(P.DeliverSm(source_addr="447700900123",
                                               destination_addr="MyBrand", esm_class=0x04,
                                               short_message=text))
        assert status == P.SMPP_ESME_ROK
        row = await pool.fetchrow("SELECT * FROM receipts")
        assert row["smsc_id"] == "0A1B2C" and row["state"] == "delivered" and row["final"]
        assert row["status"] == "queued" and row["done_date"] is not None
        assert await pool.fetchval("SELECT count(*) FROM inbound") == 0


async def wait_total(instances: list[Instance], n: int) -> None:
    """Wait (≤ 10 s) until the instances together have `n` bound sessions."""
    async with asyncio.timeout(10):
        while sum(sum(i.bound.values()) for i in instances) != n:
            for i in instances:
                i.changed.clear()
            waiters = [asyncio.ensure_future(i.changed.wait()) for i in instances]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters:
                    w.cancel()


async def test_inbound_watermark_answers_transient_but_receipts_pass(  # type: ignore[no-untyped-def]
        start_instance, pool: asyncpg.Pool) -> None:
    """1. the inbound queue is over its watermark (snapshot)
    2. an MO deliver_sm gets the connector's transient status (0x64) and is not stored
    3. a receipt still gets ESME_ROK: receipts check only their own queue."""
    async with Simulator() as sim:
        inst = await start_instance([connector(sim.port, binds=1)])
        await inst.wait_bound(1)
        inst.ctx.admission.set_snapshot("inbound", depth=10**9)
        inst.ctx.admission.set_snapshot("outbound", depth=10**9)
        assert await sim.send_mo("hello") == 0x64
        receipt = P.DeliverSm(source_addr="447700900123", destination_addr="X", esm_class=0x04,
                              short_message=b"id:77 stat:DELIVRD err:000 text:x")
        assert await sim.deliver(receipt) == P.SMPP_ESME_ROK
        assert await pool.fetchval("SELECT count(*) FROM inbound") == 0
        assert await pool.fetchval("SELECT count(*) FROM receipts") == 1
        metric = inst.ctx.metrics.backpressure_rejections.labels(reason="inbound_watermark")
        assert metric._value.get() == 1


async def test_nul_in_an_mo_is_stored_as_replacement_not_refused_forever(  # type: ignore[no-untyped-def]
        start_instance, pool: asyncpg.Pool) -> None:
    """Anyone can send an SMS whose UCS-2 or Latin-1 text holds U+0000. Postgres text cannot
    store NUL: before the fix the MO failed its insert, the SMSC got an error and redelivered
    it forever. Now each NUL is stored as U+FFFD (as a decoder does with bad bytes), the MO is
    acknowledged with ESME_ROK and stored once — in text, in a fragment and in binary UTF-8."""
    async with Simulator() as sim:
        inst = await start_instance([connector(sim.port, binds=1)])
        await inst.wait_bound(1)
        ucs2 = P.DeliverSm(source_addr="447700900123", destination_addr="60060",
                           data_coding=8, short_message="A\x00B".encode("utf-16-be"))
        latin1 = P.DeliverSm(source_addr="447700900124", destination_addr="60060",
                             data_coding=3, short_message=b"C\x00D")
        binary = P.DeliverSm(source_addr="447700900126", destination_addr="60060",
                             data_coding=4, short_message=b"G\x00H")
        frag = P.DeliverSm(source_addr="447700900125", destination_addr="60060", esm_class=0x40,
                           data_coding=8, short_message=b"\x05\x00\x03\x07\x02\x01"
                           + "E\x00F".encode("utf-16-be"))
        for pdu in (ucs2, latin1, binary, frag):
            assert await sim.deliver(pdu) == P.SMPP_ESME_ROK
        bodies = {r["from_addr"]: r["body"] for r in await pool.fetch(
            "SELECT from_addr, body FROM inbound")}
        assert bodies["+447700900123"] == "A\ufffdB"
        assert bodies["+447700900124"] == "C\ufffdD"
        assert bodies.get("+447700900126") in ("G\ufffdH", None)  # binary: text or no text
        assert await pool.fetchval("SELECT body FROM mo_parts") == "E\ufffdF"


async def test_reload_adds_rebinds_and_removes_rx_connectors(start_instance) -> None:  # type: ignore[no-untyped-def]
    """SIGHUP's `update_connectors` (issue 19): 1. rx1 only: one bind on its simulator;
    2. rx1 and rx2: rx2 binds, rx1 is not rebound; 3. rx2 with a changed bind key (system_id):
    rx2 rebinds once, rx1 (removed) unbinds cleanly (unbind_resp, not a dropped socket)."""
    async with Simulator() as s1, Simulator() as s2:
        inst = await start_instance([connector(s1.port, binds=1)])
        await wait_until_true(lambda: s1.bind_count == 1)
        inst.intake.update_connectors([connector(s1.port, binds=1),
                                       connector(s2.port, binds=1, name="rx2")])
        await wait_until_true(lambda: s2.bind_count == 1)
        assert s1.counters.binds == 1
        changed = connector(s2.port, binds=1, name="rx2").model_copy(
            update={"system_id": "other"})
        inst.intake.update_connectors([changed])
        await wait_until_true(lambda: s1.bind_count == 0 and s2.counters.binds == 2
                              and s2.bind_count == 1)
        assert s1.counters.unbinds == 1 and s2.counters.unbinds == 1


async def wait_until_true(pred: Callable[[], bool], within_s: float = 10.0) -> None:
    """Poll `pred` every 20 ms; fail after `within_s`."""
    for _ in range(int(within_s / 0.02)):
        if pred():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not met within {within_s} s")
