"""`smsgw bench esme`: ESMEs bound to smsgw's SMPP server submitting as fast as their window
allows, through the sender to the simulator, receipts flowing back to the ESMEs.

A stack (`smsgw up`'s supervisor: embedded Postgres with fsync and synchronous_commit on, the
simulator, one receiver, processor and sender) runs with the SMPP server on. `--binds` ESMEs
(transceiver binds with the stack account's credentials) each keep `--window` submit_sm
outstanding until `--count` are accepted in total; they answer every deliver_sm. Reported, as
medians over `--runs` runs: submit_sm/s accepted (first submit → last ESME_ROK), submits
reaching the SMSC per second, receipts reaching the ESMEs per second (first submit → last
receipt), and CPU per message per process and for the gateway (daemons + Postgres), with
the conditions. Compare with `smsgw bench mt` (the HTTP API) on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from typing import Any

from smsgw.services.bench import procstats
from smsgw.services.bench.e2e import cpu_report, cpu_snapshot
from smsgw.shared.smpp import pdu as P


class BenchEsme(asyncio.Protocol):
    """One pipelining ESME on the project's codec (the driver must not be the bottleneck)."""

    def __init__(self, window: int, on_ack: Any, on_receipt: Any) -> None:
        self.window = window
        self.on_ack = on_ack
        self.on_receipt = on_receipt
        self.decoder = P.Decoder()
        self.transport: asyncio.Transport | None = None
        self.bound = asyncio.get_running_loop().create_future()
        self.outstanding = 0
        self.can_send = asyncio.Event()
        self.can_send.set()
        self.seq = itertools.count(2)
        self.rejected: dict[int, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.bound.done():
            self.bound.set_exception(ConnectionError("closed before the bind"))
        self.can_send.set()

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        out = []
        while (pdu := self.decoder.next_pdu()) is not None:
            kind = type(pdu)
            if kind is P.SubmitSmResp:
                self.outstanding -= 1
                if pdu.command_status == 0:
                    self.on_ack()
                else:
                    self.rejected[pdu.command_status] = self.rejected.get(pdu.command_status,
                                                                          0) + 1
                self.can_send.set()
            elif kind is P.DeliverSm:
                out.append(P.encode(P.DeliverSmResp(pdu.sequence_number)))
                self.on_receipt()
            elif kind is P.BindTransceiverResp:
                self.bound.set_result(pdu.command_status)
            elif kind is P.EnquireLink:
                out.append(P.encode(P.EnquireLinkResp(pdu.sequence_number)))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    async def submit_until(self, remaining: list[int], n: int) -> None:
        """Keep the window full until `remaining[0]` (shared) reaches zero."""
        frame = P.SubmitSm(source_addr="Bench", source_addr_ton=5, dest_addr_ton=1,
                           destination_addr="447700900123", registered_delivery=1,
                           short_message=b"esme bench %d" % n)
        while remaining[0] > 0 and self.transport is not None \
                and not self.transport.is_closing():
            free = self.window - self.outstanding
            if free <= 0:
                self.can_send.clear()
                await self.can_send.wait()
                continue
            take = min(free, remaining[0])
            remaining[0] -= take
            self.outstanding += take
            self.transport.write(b"".join(P.encode_submit_sm(frame, next(self.seq))
                                          for _ in range(take)))
            await asyncio.sleep(0)


async def one_run(args: argparse.Namespace, index: int) -> dict[str, Any]:
    """One stack, one measured run."""
    from smsgw.services.bench.stack import BENCH_ACCOUNT, Stack, StackOptions
    from smsgw.shared.core import db

    sections = {"receiver": {"smpp_server": {"window": args.window}}}
    pg_conf = ({"shared_preload_libraries": "pg_stat_statements",
                "pg_stat_statements.track": "all"} if args.statements else {})
    stack = Stack(StackOptions(sections=sections, log_level="warning", pg_conf=pg_conf,
                               receipt_delay_s=0.05 if args.receipts else None,
                               connector={"window": 100},
                               say=lambda m: sys.stderr.write(m + "\n")))
    await stack.start()
    try:
        password = await stack.esme_password("smsgw bench")
        conn = await db.connect(stack.dsn, **stack.connect_kwargs)
        try:
            pg = {r["name"]: r["setting"] for r in await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                ["fsync", "synchronous_commit", "full_page_writes"])}
            if args.statements:
                await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await conn.close()
        acked = [0]
        receipts = [0]
        t_ack = [0.0]
        t_receipt = [0.0]

        def on_ack() -> None:
            acked[0] += 1
            t_ack[0] = time.monotonic()

        def on_receipt() -> None:
            receipts[0] += 1
            t_receipt[0] = time.monotonic()
        loop = asyncio.get_running_loop()
        esmes: list[BenchEsme] = []
        for _ in range(args.binds):
            _t, esme = await loop.create_connection(
                lambda: BenchEsme(args.window, on_ack, on_receipt), "127.0.0.1",
                stack.esme_port)
            assert esme.transport is not None
            esme.transport.write(P.encode(P.BindTransceiver(system_id=BENCH_ACCOUNT,
                                                            password=password), 1))
            if await esme.bound != 0:
                raise RuntimeError("the bench ESME could not bind")
            esmes.append(esme)
        if args.statements:
            await _reset_statements(stack)
        sim0 = (await stack.sim_stats())["counters"]["submits"]
        cpu0 = cpu_snapshot(stack)
        start = time.monotonic()
        remaining = [args.count]
        await asyncio.gather(*(e.submit_until(remaining, i) for i, e in enumerate(esmes)))
        deadline = time.monotonic() + args.timeout
        reached_at = None
        while time.monotonic() < deadline:
            sim = (await stack.sim_stats())["counters"]["submits"] - sim0
            if reached_at is None and sim >= acked[0] and acked[0] + sum(
                    sum(e.rejected.values()) for e in esmes) >= args.count:
                reached_at = time.monotonic()
            if reached_at is not None and (not args.receipts or receipts[0] >= acked[0]):
                break
            await asyncio.sleep(0.05)
        cpu1 = cpu_snapshot(stack)
        statements = await _statements(stack, acked[0]) if args.statements else []
        sim = (await stack.sim_stats())["counters"]["submits"] - sim0
        elapsed_ack = max(t_ack[0] - start, 1e-9)
        rejected: dict[str, int] = {}
        for e in esmes:
            for code, n in e.rejected.items():
                rejected[P.status_name(code)] = rejected.get(P.status_name(code), 0) + n
        return {
            "run": index, "accepted": acked[0], "rejected": rejected,
            "submit_sm_per_s": round(acked[0] / elapsed_ack),
            "reached_smsc": sim,
            "smsc_per_s": round(sim / ((reached_at or time.monotonic()) - start)),
            "receipts_to_esme": receipts[0],
            "receipts_per_s": round(receipts[0] / max(t_receipt[0] - start, 1e-9))
            if receipts[0] else None,
            "cpu": cpu_report(cpu0, cpu1, acked[0], stack), "pg_settings": pg,
            "statements": statements,
        }
    finally:
        await stack.stop()


async def _reset_statements(stack: Any) -> None:
    from smsgw.shared.core import db
    conn = await db.connect(stack.dsn, **stack.connect_kwargs)
    try:
        await conn.execute("SELECT pg_stat_statements_reset()")
    finally:
        await conn.close()


async def _statements(stack: Any, messages: int) -> list[dict[str, Any]]:
    from smsgw.services.bench.e2e import top_statements
    from smsgw.shared.core import db
    conn = await db.connect(stack.dsn, **stack.connect_kwargs)
    try:
        return await top_statements(conn, messages)
    finally:
        await conn.close()


def build_parser() -> argparse.ArgumentParser:
    """`smsgw bench esme` options."""
    p = argparse.ArgumentParser(prog="smsgw bench esme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=20_000, help="submits per run (%(default)s)")
    p.add_argument("--binds", type=int, default=2, help="ESME binds (%(default)s)")
    p.add_argument("--window", type=int, default=100,
                   help="outstanding submit_sm per bind (%(default)s)")
    p.add_argument("--runs", type=int, default=3, help="runs; medians reported (%(default)s)")
    p.add_argument("--no-receipts", dest="receipts", action="store_false",
                   help="registered_delivery without simulator receipts")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds a run may take after the last submit (%(default)s)")
    p.add_argument("--statements", action="store_true",
                   help="load pg_stat_statements and print the top statements by server time "
                        "per message (last run)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    return p


def _median(results: list[dict[str, Any]], key: str) -> Any:
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv: list[str]) -> int:
    """Run the benchmark and print conditions and figures."""
    args = build_parser().parse_args(argv)
    results = [asyncio.run(one_run(args, i)) for i in range(args.runs)]
    us = [r["cpu"]["gateway_us_per_msg"] for r in results if r["cpu"]["gateway_us_per_msg"]]
    per = {name: statistics.median(r["cpu"]["per_process"][name]["us_per_msg"] or 0
                                   for r in results)
           for name in results[0]["cpu"]["per_process"]}
    summary = {"conditions": {**procstats.machine(), "pg_settings": results[0]["pg_settings"],
                              "count": args.count, "binds": args.binds, "window": args.window,
                              "receipts": args.receipts, "runs": args.runs},
               "median": {k: _median(results, k) for k in
                          ("submit_sm_per_s", "smsc_per_s", "receipts_per_s")}
               | {"gateway_cpu_us_per_msg": statistics.median(us) if us else None,
                  "cpu_us_per_msg": per},
               "runs": results}
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2, default=str) + "\n")
        return 0
    m = summary["median"]
    c = summary["conditions"]
    sys.stdout.write(
        f"smsgw bench esme: {args.count} submit_sm x {args.runs} runs, {args.binds} binds, "
        f"window {args.window}, receipts {'on' if args.receipts else 'off'}\n"
        f"conditions: {json.dumps({k: v for k, v in c.items() if k != 'runs'})}\n"
        f"medians: {m['submit_sm_per_s']} submit_sm/s accepted, {m['smsc_per_s']} submits/s "
        f"reaching the SMSC, {m['receipts_per_s']} receipts/s reaching the ESMEs\n"
        f"CPU per message (us): gateway {m['gateway_cpu_us_per_msg']}; "
        + ", ".join(f"{k} {v}" for k, v in m["cpu_us_per_msg"].items()) + "\n")
    for st in results[-1]["statements"]:
        sys.stdout.write(f"  {st['us_per_msg']:>7} us/msg {st['share_pct']:>5}% "
                         f"{st['calls']:>7} calls {st['rows']:>7} rows  {st['query']}\n")
    return 0
