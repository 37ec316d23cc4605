"""The benchmark's SMSC: the project's simulator in its own process, with a control site.

`python -m smsgw.services.bench.simctl --port P --control-port C [--receipt-delay S] ...` runs
`services.smsc_sim.server.Simulator` (so its CPU is measured apart from the load driver and the
daemons) plus a small HTTP control site on 127.0.0.1:C that the benchmark and the chaos suite
use while the gateway runs:

- `GET  /stats`   the simulator's own counters, plus the duplicate count it saw itself
                  (submits whose short_message it had already accepted once) and the MO
                  driver's progress;
- `POST /inject`  fault parameters (`Faults` fields: throttle_next, error_next, error_status,
                  drop_after, response_delay_s, ...); `POST /clear` removes them;
- `POST /drop`    close every SMPP connection at once (a cut cable);
- `POST /mo`      start the MO load: `{"count", "rate", "window", "sources", "prefix", "to"}`.

Why not the simulator's own `--mo-rate`: it sends from one number with one deliver_sm in
flight per bind, so per-subscriber ordering in the processor would serialise the whole run and
the window would cap the rate at one commit round trip. The driver here spreads MO over
`sources` numbers, keeps `window` deliver_sm in flight, and redelivers on every error status or
timeout, as an SMSC does; each text is unique (`<prefix> <n>`), so the database can be checked
message by message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from smsgw.services.smsc_sim.server import SimConfig, Simulator, parse_stats
from smsgw.shared.smpp import pdu as P

log = logging.getLogger("smsgw.bench.simctl")
RECEIPT_ATTEMPTS = 40  # about 3 minutes of redelivery with the backoff below


class CountingSimulator(Simulator):
    """A simulator that remembers a digest of every accepted submit's (destination, text).

    A second accepted submit with the same digest is a duplicate SMS as the subscriber would
    see it; the benchmark compares this count with the sender's `smsgw_possible_duplicates_total`.
    """

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.receipt_retries = 0  # receipt deliveries repeated (error status, timeout, no bind)
        self.receipts_abandoned = 0
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.first_submit_at: float | None = None
        self.last_submit_at: float | None = None

    def record(self, conn: Any, pdu: P.SubmitSm, message_id: str | None) -> None:
        """Count duplicates by content; keep no PDU (memory stays flat on long runs)."""
        if message_id is None:
            return
        now = time.time()
        if self.first_submit_at is None:
            self.first_submit_at = now
        self.last_submit_at = now
        body = pdu.short_message or b""
        for tag, value in getattr(pdu, "tlvs", ()) or ():
            if tag == P.Tag.MESSAGE_PAYLOAD:
                body = value
        digest = hashlib.blake2b(pdu.destination_addr.encode() + b"\0" + body,
                                 digest_size=16).digest()
        if digest in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(digest)


    async def _send_receipt(self, conn: Any, submit: P.SubmitSm, message_id: str,
                            submitted: datetime) -> None:
        """Deliver a receipt until the ESME answers ESME_ROK, as an SMSC does.

        The base simulator sends a receipt once and forgets it when the connection is gone or
        the answer is an error; a real SMSC keeps it and redelivers (on any rx/trx bind) with
        backoff. Without this, a receipt sent while a sender is being killed, or answered
        with a transient error while Postgres restarts, would be lost by the simulator and the
        message would wait for it forever.
        """
        pdu = self.receipt_for(submit, message_id, submitted)
        delay = 0.2
        for _ in range(RECEIPT_ATTEMPTS):
            target = conn if conn.bind_mode == "transceiver" else None
            if target is None or target.transport is None or target.transport.is_closing():
                receivers = self._bound_receivers()
                target = self._rng.choice(receivers) if receivers else None
            if target is not None:
                try:
                    resp = await target.deliver(pdu)
                except (ConnectionError, TimeoutError):
                    resp = None
                except asyncio.CancelledError:
                    # the base connection cancels its pending futures when the link drops;
                    # only a cancellation of this task itself (shutdown) ends the redelivery
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    resp = None
                if resp is not None and resp.command_status == P.SMPP_ESME_ROK:
                    self.counters.receipts_sent += 1
                    return
            self.receipt_retries += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self.receipts_abandoned += 1


@dataclass(slots=True)
class MoRun:
    """Progress of one MO load run (all counts are deliver_sm attempts or messages)."""

    count: int
    rate: float
    window: int
    sources: int
    prefix: str
    to: str
    acked: int = 0  # messages answered ESME_ROK (each once)
    attempts: int = 0
    error_status: int = 0  # attempts answered with an error status (then redelivered)
    timeouts: int = 0  # attempts without an answer in time (redelivered: may duplicate)
    no_bind: int = 0  # waits because no receiver bind was up
    started_at: float = 0.0
    first_ack_at: float | None = None
    last_ack_at: float | None = None
    done: bool = False
    statuses: dict[str, int] = field(default_factory=dict)


async def run_mo(sim: Simulator, run: MoRun, stop: asyncio.Event) -> None:
    """Deliver `run.count` unique MO messages with `run.window` in flight, at `run.rate`."""
    run.started_at = time.time()
    counter = iter(range(run.count))
    loop = asyncio.get_running_loop()
    interval = 1.0 / run.rate if run.rate > 0 else 0.0
    next_at = [loop.time()]

    async def pace() -> None:
        if interval <= 0:
            return
        at = next_at[0]
        next_at[0] = max(at, loop.time() - 1.0) + interval  # no catch-up bursts after a stall
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    async def one(n: int) -> None:
        source = f"4477009{n % run.sources:05d}"
        text = f"{run.prefix} {n}"
        while not stop.is_set():
            run.attempts += 1
            try:
                status = await sim.send_mo(text, source_addr=source, destination_addr=run.to)
            except ConnectionError:
                run.no_bind += 1
                await asyncio.sleep(0.2)
                continue
            except TimeoutError:
                run.timeouts += 1
                continue
            key = hex(status)
            run.statuses[key] = run.statuses.get(key, 0) + 1
            if status == P.SMPP_ESME_ROK:
                now = time.time()
                run.acked += 1
                run.first_ack_at = run.first_ack_at or now
                run.last_ack_at = now
                return
            run.error_status += 1
            await asyncio.sleep(0.05)  # the gateway asked for a retry: back off a little

    async def worker() -> None:
        for n in counter:
            if stop.is_set():
                return
            await pace()
            await one(n)

    await asyncio.gather(*(worker() for _ in range(max(run.window, 1))))
    run.done = True


class Control:
    """The control site's state: the simulator, the current MO run and its task."""

    def __init__(self, sim: CountingSimulator) -> None:
        self.sim = sim
        self.mo: MoRun | None = None
        self.mo_task: asyncio.Task[None] | None = None
        self.stop_mo = asyncio.Event()

    def stats(self) -> dict[str, Any]:
        """Counters as JSON."""
        return {"counters": asdict(self.sim.counters), "accepted_distinct": len(self.sim.seen),
                "duplicates": self.sim.duplicates, "receipt_retries": self.sim.receipt_retries,
                "receipts_abandoned": self.sim.receipts_abandoned,
                "first_submit_at": self.sim.first_submit_at,
                "last_submit_at": self.sim.last_submit_at,
                "mo": asdict(self.mo) if self.mo else None}

    def app(self) -> web.Application:
        """The control routes."""
        app = web.Application()
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/inject", self._inject)
        app.router.add_post("/clear", self._clear)
        app.router.add_post("/drop", self._drop)
        app.router.add_post("/mo", self._mo)
        app.router.add_post("/mo/stop", self._mo_stop)
        return app

    async def _stats(self, _r: web.Request) -> web.Response:
        return web.json_response(self.stats())

    async def _inject(self, request: web.Request) -> web.Response:
        try:
            self.sim.inject(**await request.json())
        except (AttributeError, TypeError, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response(asdict(self.sim.faults))

    async def _clear(self, _r: web.Request) -> web.Response:
        self.sim.clear_faults()
        return web.json_response(asdict(self.sim.faults))

    async def _drop(self, _r: web.Request) -> web.Response:
        n = len(self.sim.connections)
        await self.sim.drop_connections()
        return web.json_response({"dropped": n})

    async def _mo(self, request: web.Request) -> web.Response:
        if self.mo_task is not None and not self.mo_task.done():
            return web.json_response({"error": "an MO run is in progress"}, status=409)
        body = await request.json()
        self.mo = MoRun(count=int(body["count"]), rate=float(body.get("rate", 0)),
                        window=int(body.get("window", 64)), sources=int(body.get("sources", 10000)),
                        prefix=str(body.get("prefix", "MO")), to=str(body.get("to", "12345")))
        self.stop_mo.clear()
        self.mo_task = asyncio.create_task(run_mo(self.sim, self.mo, self.stop_mo),
                                           name="simctl.mo")
        return web.json_response({"started": True})

    async def _mo_stop(self, _r: web.Request) -> web.Response:
        self.stop_mo.set()
        return web.json_response({"stopped": True})


def build_parser() -> argparse.ArgumentParser:
    """Command line of the benchmark simulator."""
    p = argparse.ArgumentParser(prog="python -m smsgw.services.bench.simctl")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--control-port", type=int, required=True)
    p.add_argument("--receipt-delay", type=float, default=None)
    p.add_argument("--receipt-stats", default="DELIVRD=1")
    p.add_argument("--id-format", choices=("hex", "dec"), default="hex")
    return p


async def serve(args: argparse.Namespace) -> None:
    """Run the simulator and the control site until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cfg = SimConfig(host=args.host, port=args.port, receipt_delay_s=args.receipt_delay,
                    receipt_stats=parse_stats(args.receipt_stats), id_format=args.id_format,
                    keep_submits=False)
    sim = CountingSimulator(cfg)
    ctl = Control(sim)
    runner = web.AppRunner(ctl.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.control_port).start()
    async with sim:
        log.info("simctl_listening port=%s control=%s", sim.port, args.control_port)
        await stop.wait()
        ctl.stop_mo.set()
        if ctl.mo_task is not None:
            ctl.mo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ctl.mo_task
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    import uvloop

    uvloop.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
