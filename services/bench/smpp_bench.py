"""`smsgw bench smpp`: codec PDUs/s and pipelined submit_sm round trips/s against the simulator.

Prints the conditions first (machine, cores, load, Python, event loop) because the figures only
mean something next to them, then medians of several runs:
- codec: encode submit_sm, decode submit_sm_resp, decode a deliver_sm receipt;
- receipts: `parse_receipt` on the simulator's own receipt, text only and with its TLVs;
- round trips: our Session against the simulator at window 1, 10 and 100;
- simulator: submit_sm/s it answers for a raw pipelined client (so it is never the bottleneck).
The simulator runs in a child process by default, so client and server each get a core.
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from smsgw.shared.core.aio import loop_runner
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.receipts import parse_receipt
from smsgw.shared.smpp.session import Session, SessionConfig, SubmitOutcome

SUBMIT = P.SubmitSm(
    source_addr="12345", source_addr_ton=1, source_addr_npi=1,
    destination_addr="447700900123", dest_addr_ton=1, dest_addr_npi=1,
    registered_delivery=1, short_message=b"Your code is 123456. It expires in 10 minutes.",
)  # fmt: skip
SUBMIT_RESP = P.encode(P.SubmitSmResp(42, 0, "0b1c2d3e4f5a6b7c"))
RECEIPT = P.encode(
    P.DeliverSm(
        7, source_addr="447700900123", destination_addr="12345", esm_class=4,
        short_message=b"id:0b1c2d3e4f5a6b7c sub:001 dlvrd:001 submit date:2601011200 "
        b"done date:2601011201 stat:DELIVRD err:000 text:Your code is 12345",
        tlvs=((P.Tag.RECEIPTED_MESSAGE_ID, b"0b1c2d3e4f5a6b7c\0"), (P.Tag.MESSAGE_STATE, b"\x02")),
    )
)  # fmt: skip


def conditions() -> dict[str, Any]:
    """What the numbers were measured on."""
    try:
        import uvloop

        loop = f"uvloop {uvloop.__version__}"
    except ImportError:
        loop = "asyncio"
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "cores": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "event_loop": loop,
        "os": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def _rate(fn: Callable[[], Any], number: int, runs: int) -> float:
    times = timeit.repeat(fn, number=number, repeat=runs)
    return statistics.median(number / t for t in times)


def _build_submit() -> P.SubmitSm:
    return P.SubmitSm(
        source_addr="12345", destination_addr="447700900123", short_message=b"hello",
        registered_delivery=1,
    )  # fmt: skip


def bench_codec(runs: int, number: int) -> dict[str, float]:
    """Median ops/s of the three hot codec paths."""
    return {
        "encode_submit_sm_per_s": _rate(lambda: P.encode_submit_sm(SUBMIT, 5), number, runs),
        "encode_generic_submit_sm_per_s": _rate(lambda: P.encode(SUBMIT, 5), number, runs),
        "decode_submit_sm_resp_per_s": _rate(lambda: P.decode_frame(SUBMIT_RESP), number, runs),
        "decode_deliver_sm_receipt_per_s": _rate(lambda: P.decode_frame(RECEIPT), number, runs),
        "build_submit_sm_per_s": _rate(_build_submit, number // 2, runs),
    }


def receipt_samples() -> dict[str, P.DeliverSm]:
    """The simulator's DELIVRD receipt for one submit: text only, and with its TLVs.

    Built by the simulator itself (receipted_message_id + message_state; no
    network_error_code for DELIVRD), so the figure follows whatever it really sends, then
    encoded and decoded so the fields have the types the intake sees.
    """
    from datetime import UTC, datetime

    from smsgw.services.smsc_sim.server import SimConfig, Simulator

    submitted = datetime(2026, 1, 1, 12, 0, 5, tzinfo=UTC)
    out = {}
    for name, tlvs in (("text", False), ("tlvs", True)):
        sim = Simulator(SimConfig(receipt_tlvs=tlvs))
        pdu = sim.receipt_for(SUBMIT, "0b1c2d3e4f5a6b7c", submitted, "DELIVRD")
        out[name] = P.decode_frame(P.encode(pdu))
    return out


def _intake_call(parse: Callable[..., Any], pdu: Any, zone: Any) -> Callable[[], Any]:
    sm, tlvs, esm, dc = pdu.short_message, pdu.tlvs, pdu.esm_class, pdu.data_coding
    return lambda: parse(sm, tlvs, esm, data_coding=dc, tz=zone, stat_map={}, id_mode="as_is")


def bench_receipts(
    runs: int, number: int, parse: Callable[..., Any] = parse_receipt
) -> dict[str, float]:
    """Median receipts/s and µs/receipt of `parse` as the intake calls it (zone as ZoneInfo,
    no stat overrides, id mode as_is), for the text-only and the TLV receipt."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Europe/Berlin")
    out: dict[str, float] = {}
    for name, pdu in receipt_samples().items():
        rate = _rate(_intake_call(parse, pdu, zone), number, runs)
        out[f"parse_receipt_{name}_per_s"] = rate
        out[f"parse_receipt_{name}_us"] = 1e6 / rate
    return out


async def _round_trips(port: int, window: int, seconds: float) -> float:
    cfg = SessionConfig("127.0.0.1", port, "bench", window=window, enquire_link_s=0)
    session = Session(cfg)
    await session.open()
    done = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop_at:
            result = await session.submit(SUBMIT)
            if result.outcome is not SubmitOutcome.OK:
                raise RuntimeError(f"bench submit failed: {result}")
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(window)))
    elapsed = time.perf_counter() - start
    await session.close(5.0)
    return done / elapsed


class _Blaster(asyncio.Protocol):
    """Raw pipelined client: keeps `depth` submits in flight, counts responses."""

    def __init__(self, depth: int, done: asyncio.Future[None], total: int) -> None:
        self.depth, self.done, self.total = depth, done, total
        self.decoder = P.Decoder()
        self.sent = self.received = 0
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(P.encode(P.BindTransmitter(1, system_id="bench")))

    def _send(self, n: int) -> None:
        n = min(n, self.total - self.sent)
        frames = [P.encode_submit_sm(SUBMIT, self.sent + i + 2) for i in range(n)]
        self.sent += n
        if frames:
            self.transport.write(b"".join(frames))

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        got = 0
        for pdu in self.decoder:
            if type(pdu) is P.BindTransmitterResp:
                self._send(self.depth)
            elif type(pdu) is P.SubmitSmResp:
                got += 1
        self.received += got
        if self.received >= self.total and not self.done.done():
            self.done.set_result(None)
        else:
            self._send(got)


async def _sim_throughput(port: int, total: int, depth: int = 2000) -> float:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    start = time.perf_counter()
    transport, _ = await loop.create_connection(
        lambda: _Blaster(depth, done, total), "127.0.0.1", port
    )
    try:
        async with asyncio.timeout(120):
            await done
    finally:
        transport.close()
    return total / (time.perf_counter() - start)


def _start_sim_process() -> tuple[subprocess.Popen[str], int]:
    """The simulator in a child process; its first log line tells the port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "smsgw.services.smsc_sim", "--port", "0", "--stats-s", "0",
         "--log-level", "info"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:
        event = json.loads(line)
        if event.get("event") == "smsc_sim_listening":
            return proc, int(event["port"])
    proc.kill()
    raise RuntimeError("simulator did not start")


async def bench_network(port: int, runs: int, seconds: float, sim_total: int) -> dict[str, Any]:
    """Median round trips/s per window and the simulator's own throughput."""
    out: dict[str, Any] = {}
    for window in (1, 10, 100):
        rates = [await _round_trips(port, window, seconds) for _ in range(runs)]
        out[f"round_trips_per_s_window_{window}"] = statistics.median(rates)
    sim_rates = [await _sim_throughput(port, sim_total) for _ in range(runs)]
    out["simulator_submit_sm_per_s"] = statistics.median(sim_rates)
    return out


async def _in_process_network(runs: int, seconds: float, sim_total: int) -> dict[str, Any]:
    from smsgw.services.smsc_sim.server import SimConfig, Simulator

    async with Simulator(SimConfig(keep_submits=False)) as sim:
        return await bench_network(sim.port, runs, seconds, sim_total)


def main(argv: list[str]) -> int:
    """Entry point of `smsgw bench smpp`; prints JSON-ish lines and returns 0."""
    parser = argparse.ArgumentParser(prog="smsgw bench smpp", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (median reported)")
    parser.add_argument("--codec-number", type=int, default=200_000, help="codec ops per run")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per round-trip run")
    parser.add_argument(
        "--sim-total", type=int, default=100_000, help="submits per simulator throughput run"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the simulator in this process (one core for both sides)",
    )
    parser.add_argument(
        "--receipt-number", type=int, default=50_000, help="receipts parsed per run"
    )
    parser.add_argument("--codec-only", action="store_true", help="skip the network figures")
    args = parser.parse_args(argv)

    print(json.dumps({"conditions": conditions()}))
    print(json.dumps({"codec": _rounded(bench_codec(args.runs, args.codec_number))}))
    receipts = bench_receipts(args.runs, args.receipt_number)
    print(json.dumps({"receipts": _rounded_receipts(receipts)}))
    if args.codec_only:
        return 0
    runner = loop_runner()
    if args.in_process:
        net = runner(_in_process_network(args.runs, args.seconds, args.sim_total))
        where = "in-process"
    else:
        proc, port = _start_sim_process()
        try:
            net = runner(bench_network(port, args.runs, args.seconds, args.sim_total))
        finally:
            proc.terminate()
            proc.wait(10)
        where = "child process"
    print(json.dumps({"network": _rounded(net), "simulator": where}))
    return 0


def _rounded(figures: dict[str, float]) -> dict[str, int]:
    return {k: round(v) for k, v in figures.items()}


def _rounded_receipts(figures: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) if k.endswith("_us") else round(v) for k, v in figures.items()}


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
