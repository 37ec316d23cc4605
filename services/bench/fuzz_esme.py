"""`smsgw fuzz esme`: malformed PDUs at the receiver's SMPP server for customer ESMEs.

A stack (`smsgw up`'s supervisor: Postgres, simulator, the daemons) runs with the SMPP server
on; several connections — half of them bound with the stack account's real credentials first,
half never bound — send random and mutated PDU streams (`smsc_sim.fuzz.make_stream`: bit flips,
insertions, truncations, command_length rewritten, lengths that overrun; wrong command ids,
C-strings without NUL, unknown TLVs). A stream whose last frame is cut off is completed with
zero octets (as the listener's decoder, the same codec, reads it), then an enquire_link
probes the connection: it must be answered, or the connection closed, within
`--probe-timeout` (a connection that neither answers nor closes is a hang). A closed
connection is reopened. (A frame that stays cut off is closed by `pdu_timeout_s`, tested
apart.)

At the end: the receiver has not restarted (same pid, no `daemon_crashed` in its log), its
resident memory grew by less than `--max-rss-growth-mb`, and it still binds and answers a
submit_sm. Default: 1,000,000 streams (each 1-3 PDUs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from smsgw.services.smsc_sim.fuzz import make_stream
from smsgw.shared.smpp import pdu as P

PROBE_SEQ = 0x7FFFFF00


@dataclass(slots=True)
class EsmeFuzzStats:
    """What the run did and saw."""

    streams: int = 0
    bytes_sent: int = 0
    probes_answered: int = 0
    closed_by_server: int = 0
    connections: int = 0
    hangs: int = 0
    answers: int = 0
    problems: list[str] = field(default_factory=list)


async def _probe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 decoder: P.Decoder, timeout_s: float, stats: EsmeFuzzStats) -> bool:
    """Send an enquire_link; True when answered, False when the server closed (a hang is
    recorded as a problem)."""
    try:
        writer.write(P.encode(P.EnquireLink(), PROBE_SEQ))
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    while (pdu := decoder.next_pdu()) is not None:
                        stats.answers += 1
                        if type(pdu) is P.EnquireLinkResp and pdu.sequence_number == PROBE_SEQ:
                            stats.probes_answered += 1
                            return True
                except P.SmppFramingError:
                    decoder = P.Decoder()  # our side: skip what we cannot frame
                except P.SmppProtocolError:
                    continue
                data = await reader.read(65536)
                if not data:
                    stats.closed_by_server += 1
                    return False
                decoder.feed(data)
    except TimeoutError:
        stats.hangs += 1
        stats.problems.append("a connection neither answered enquire_link nor closed")
        return False
    except (ConnectionError, OSError):
        stats.closed_by_server += 1
        return False


def complete(stream: bytes, max_length: int) -> bytes:
    """`stream` plus the zero octets that finish its last, cut-off frame (as the server's
    decoder, the same codec, sees it), so an enquire_link after it is read as a PDU of its
    own; a stream whose framing breaks is left as it is (the server must close)."""
    decoder = P.Decoder(max_length)
    decoder.feed(stream)
    while True:
        try:
            if decoder.next_pdu() is None:
                break
        except P.SmppFramingError:
            return stream
        except P.SmppProtocolError:
            continue
    tail = stream[len(stream) - decoder.buffered:] if decoder.buffered else b""
    if not tail:
        return stream
    pad = bytes(max(0, 4 - len(tail)))  # the rest of a cut-off command_length: zeros
    length = int.from_bytes((tail + pad)[:4], "big")
    if length > max_length or length < 16:
        return stream + pad  # framing breaks: the server closes
    return stream + pad + bytes(length - len(tail) - len(pad))


async def _connection(host: str, port: int, bind: tuple[str, str] | None, rng: random.Random,
                      quota: int, stats: EsmeFuzzStats, probe_timeout_s: float,
                      max_length: int) -> None:
    sent = 0
    while sent < quota:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            stats.problems.append(f"connect failed: {exc}")
            await asyncio.sleep(0.5)
            continue
        stats.connections += 1
        decoder = P.Decoder()
        try:
            if bind is not None:
                writer.write(P.encode(P.BindTransceiver(system_id=bind[0], password=bind[1]), 1))
            alive = True
            while alive and sent < quota:
                stream = complete(make_stream(rng), max_length)
                writer.write(stream)
                sent += 1
                stats.streams += 1
                stats.bytes_sent += len(stream)
                alive = await _probe(reader, writer, decoder, probe_timeout_s, stats)
        except (ConnectionError, OSError):
            stats.closed_by_server += 1
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()


async def fuzz_listener(host: str, port: int, *, streams: int, seed: int = 0,
                        connections: int = 4, credentials: tuple[str, str] | None = None,
                        probe_timeout_s: float = 10.0,
                        max_length: int = 8192) -> EsmeFuzzStats:
    """Send `streams` fuzzed streams over `connections` connections (half bound with
    `credentials`, when given); return what happened."""
    stats = EsmeFuzzStats()
    quota = max(1, streams // connections)
    await asyncio.gather(*(
        _connection(host, port, credentials if i % 2 == 0 else None, random.Random(seed + i),
                    quota, stats, probe_timeout_s, max_length) for i in range(connections)))
    return stats


async def still_serves(host: str, port: int, credentials: tuple[str, str]) -> str | None:
    """None when a bind and a submit_sm are answered ESME_ROK, else what went wrong."""
    reader, writer = await asyncio.open_connection(host, port)
    decoder = P.Decoder()

    async def answer() -> Any:
        async with asyncio.timeout(10):
            while (pdu := decoder.next_pdu()) is None:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed")
                decoder.feed(data)
            return pdu
    try:
        writer.write(P.encode(P.BindTransceiver(system_id=credentials[0],
                                                password=credentials[1]), 1))
        bound = await answer()
        if bound.command_status != 0:
            return f"bind answered {P.status_name(bound.command_status)}"
        writer.write(P.encode(P.SubmitSm(source_addr="Fuzz", source_addr_ton=5,
                                         destination_addr="447700900123", dest_addr_ton=1,
                                         short_message=b"after the fuzz run"), 2))
        resp = await answer()
        return None if resp.command_status == 0 else \
            f"submit_sm answered {P.status_name(resp.command_status)}"
    finally:
        writer.close()


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start a stack, fuzz its receiver's listener, check it survived; return the report."""
    from smsgw.services.bench.stack import BENCH_ACCOUNT, Stack, StackOptions

    # generous failed-bind limits: fuzzed binds would otherwise lock the real one out
    # and a frame the prediction missed is closed (pdu_timeout_s) well before a probe gives up
    sections = {"receiver": {"smpp_server": {"failed_bind_limit": 1_000_000,
                                             "failed_bind_delay_s": 0.0,
                                             "pdu_timeout_s": 2.0,
                                             "max_binds": args.connections * 4}}}
    stack = Stack(StackOptions(sections=sections, receipt_delay_s=None, keep=args.keep,
                               say=lambda m: sys.stderr.write(m + "\n")))
    await stack.start()
    try:
        creds = (BENCH_ACCOUNT, await stack.esme_password("smsgw fuzz"))
        child = stack.child("receiver@1")
        assert child.proc is not None
        pid = child.proc.pid
        rss_before = _rss_kb(pid)
        started = time.monotonic()
        stats = await fuzz_listener("127.0.0.1", stack.esme_port, streams=args.streams,
                                    seed=args.seed, connections=args.connections,
                                    credentials=creds, probe_timeout_s=args.probe_timeout)
        elapsed = time.monotonic() - started
        problems = list(dict.fromkeys(stats.problems))[:20]
        if child.proc is None or child.proc.pid != pid or child.restarts:
            problems.append("the receiver restarted during the run")
        rss_after = _rss_kb(pid) if child.proc is not None and child.proc.pid == pid else 0
        growth_mb = (rss_after - rss_before) / 1024
        if growth_mb > args.max_rss_growth_mb:
            problems.append(f"receiver RSS grew {growth_mb:.1f} MB")
        log_path = child.log_path
        crashed = log_path.is_file() and "daemon_crashed" in log_path.read_text(errors="replace")
        if crashed:
            problems.append("the receiver logged daemon_crashed")
        after = await still_serves("127.0.0.1", stack.esme_port, creds)
        if after is not None:
            problems.append(f"after the run: {after}")
        return {"streams": stats.streams, "seconds": round(elapsed, 1),
                "streams_per_s": round(stats.streams / elapsed) if elapsed else None,
                "receiver_rss_mb": {"before": round(rss_before / 1024, 1),
                                    "after": round(rss_after / 1024, 1)},
                "stats": {k: v for k, v in asdict(stats).items() if k != "problems"},
                "problems": problems, "ok": not problems}
    finally:
        await stack.stop()


def build_parser() -> argparse.ArgumentParser:
    """`smsgw fuzz esme` options."""
    p = argparse.ArgumentParser(prog="smsgw fuzz esme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--streams", type=int, default=1_000_000,
                   help="fuzzed streams to send, 1-3 PDUs each (%(default)s)")
    p.add_argument("--connections", type=int, default=8, help="connections (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    p.add_argument("--probe-timeout", type=float, default=10.0,
                   help="seconds an enquire_link probe may wait (%(default)s)")
    p.add_argument("--keep", action="store_true",
                   help="keep the stack's data folder (its logs) after the run")
    p.add_argument("--max-rss-growth-mb", type=float, default=64.0,
                   help="allowed growth of the receiver's resident memory (%(default)s)")
    return p


def main(argv: list[str]) -> int:
    """Run it; print the JSON report; exit 1 when a problem was found."""
    args = build_parser().parse_args(argv)
    report = asyncio.run(run(args))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")
    return 0 if report["ok"] else 1
