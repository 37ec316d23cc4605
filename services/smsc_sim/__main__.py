"""`smsgw smsc-sim`: run the SMSC simulator as a process (demos, load tests, manual checks).

Logs one JSON object per line on stdout: `smsc_sim_listening` at start, `smsc_sim_stats` with
the counters every `--stats-s` seconds, `smsc_sim_stopped` at exit. SIGINT/SIGTERM stop it.
"""

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
import time
from typing import Any

from smsgw.services.smsc_sim.server import SimConfig, Simulator, parse_stats
from smsgw.shared.smpp import pdu as P

log = logging.getLogger("smsgw.smsc_sim")

_RECORD_KEYS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, event (the message) and the `extra` keys."""

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "event": record.getMessage(),
            "daemon": "smsc-sim",
            "logger": record.name,
        }
        event.update({k: v for k, v in vars(record).items() if k not in _RECORD_KEYS})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `smsgw smsc-sim`."""
    p = argparse.ArgumentParser(
        prog="smsgw smsc-sim",
        description="SMPP 3.4 SMSC simulator: accepts binds, answers submit_sm, sends "
        "receipts and MO, injects faults. Logs JSON lines on stdout.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=2775, help="TCP port (0: any free port)")
    p.add_argument("--system-id", default=None, help="required system_id (default: any)")
    p.add_argument("--password", default=None, help="required password (default: any)")
    p.add_argument("--max-binds", type=int, default=None, help="concurrent bind limit")
    p.add_argument(
        "--id-format",
        choices=("hex", "dec"),
        default="hex",
        help="base of submit_sm_resp message ids",
    )
    p.add_argument(
        "--receipt-id-format",
        choices=("same", "hex", "dec"),
        default="same",
        help="base of the ids inside receipts",
    )
    p.add_argument(
        "--receipt-delay",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send receipts this long after submits that ask for one (off if unset)",
    )
    p.add_argument(
        "--receipt-stats",
        default="DELIVRD=1",
        metavar="STAT=W,...",
        help="stat mix of receipts, e.g. DELIVRD=0.9,UNDELIV=0.08,EXPIRED=0.02",
    )
    p.add_argument(
        "--no-receipt-tlvs",
        action="store_true",
        help="send receipt text only (no receipted_message_id/message_state TLVs)",
    )
    p.add_argument(
        "--mo-rate",
        type=float,
        default=0.0,
        metavar="PER_S",
        help="MO messages per second per receiver/transceiver bind",
    )
    p.add_argument("--mo-text", default="Hello from the simulator", help="MO message text")
    p.add_argument(
        "--throttle-fraction",
        type=float,
        default=0.0,
        help="answer this fraction of submits with ESME_RTHROTTLED",
    )
    p.add_argument(
        "--error-fraction",
        type=float,
        default=0.0,
        help="answer this fraction of submits with --error-status",
    )
    p.add_argument(
        "--error-status",
        type=lambda s: int(s, 0),
        default=P.SMPP_ESME_RSYSERR,
        help="command_status for injected errors (e.g. 0x45)",
    )
    p.add_argument(
        "--response-delay",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="delay every submit_sm_resp",
    )
    p.add_argument(
        "--keep-submits",
        action="store_true",
        help="keep every submit in memory (tests; grows without bound)",
    )
    p.add_argument("--stats-s", type=float, default=10.0, help="counter log period (0: off)")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    return p


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """Map parsed arguments to SimConfig."""
    return SimConfig(
        host=args.host,
        port=args.port,
        system_id=args.system_id,
        password=args.password,
        max_binds=args.max_binds,
        id_format=args.id_format,
        receipt_id_format=args.receipt_id_format,
        receipt_delay_s=args.receipt_delay,
        receipt_stats=parse_stats(args.receipt_stats),
        receipt_tlvs=not args.no_receipt_tlvs,
        mo_rate=args.mo_rate,
        mo_text=args.mo_text,
        keep_submits=args.keep_submits,
    )


async def serve(args: argparse.Namespace, stop: asyncio.Event) -> None:
    """Run the simulator until `stop` is set, logging counters periodically."""
    async with Simulator(config_from_args(args)) as sim:
        sim.inject(
            throttle_fraction=args.throttle_fraction,
            error_fraction=args.error_fraction,
            error_status=args.error_status,
            response_delay_s=args.response_delay,
        )
        period = args.stats_s if args.stats_s > 0 else None
        while not stop.is_set():
            try:
                async with asyncio.timeout(period):
                    await stop.wait()
            except TimeoutError:
                log.info("smsc_sim_stats", extra=dataclasses.asdict(sim.counters))
        log.info("smsc_sim_stopped", extra=dataclasses.asdict(sim.counters))


def main(argv: list[str]) -> int:
    """Entry point of `smsgw smsc-sim`; returns the exit code."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.log_level)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # The handlers only set the event; the main task shuts the server down.
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(args, stop)

    try:
        import uvloop

        uvloop.run(run())
    except OSError as exc:
        log.error("smsc_sim_failed", extra={"error": str(exc)})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
