"""`smsgw fuzz smpp`: random and mutated byte streams through the SMPP decoder.

Each stream is either random bytes or a valid PDU stream mutated (bytes flipped, inserted,
deleted, truncated, lengths rewritten), fed to a fresh Decoder in random-sized chunks. The only
acceptable outcomes are PDUs, "need more data" and SmppProtocolError; anything else is a bug
and stops the run with the offending stream in hex. Every decode step must consume a frame or
stop, so a hang is detected as lack of progress, and the resident set is reported so that
unbounded memory shows. Default: 1,000,000 streams (a few minutes on one core).
"""

import argparse
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from smsgw.shared.core.errors import SmppProtocolError
from smsgw.shared.smpp import pdu as P

_SEEDS: list[bytes] = [
    P.encode(pdu)
    for pdu in (
        P.SubmitSm(1, source_addr="12345", destination_addr="447700900123",
                   short_message=b"hello", tlvs=((P.Tag.SAR_MSG_REF_NUM, b"\x00\x01"),)),
        P.DeliverSm(2, esm_class=4, short_message=b"id:1 sub:001 dlvrd:001 stat:DELIVRD",
                    tlvs=((P.Tag.RECEIPTED_MESSAGE_ID, b"1\0"), (P.Tag.MESSAGE_STATE, b"\x02"))),
        P.DataSm(3, source_addr="1", tlvs=((P.Tag.MESSAGE_PAYLOAD, b"payload"),)),
        P.BindTransceiver(4, system_id="esme", password="pw"),
        P.BindTransceiverResp(5, 0, "smsc", ((P.Tag.SC_INTERFACE_VERSION, b"\x34"),)),
        P.SubmitSmResp(6, 0, "abcdef"),
        P.QuerySm(7, 0, "abc", 1, 1, "123"),
        P.QuerySmResp(8, 0, "abc", "", 2, 0),
        P.Outbind(9, 0, "smsc", "pw"),
        P.EnquireLink(10),
        P.GenericNack(11, 3),
    )
]  # fmt: skip


@dataclass(slots=True)
class FuzzStats:
    """Counts of what the decoder did across a run."""

    streams: int = 0
    pdus: int = 0
    pdu_errors: int = 0
    framing_errors: int = 0
    max_buffered: int = 0


def make_stream(rng: random.Random) -> bytes:
    """One random or mutated stream."""
    if rng.random() < 0.2:
        return rng.randbytes(rng.randint(0, 96))
    data = bytearray(b"".join(rng.choice(_SEEDS) for _ in range(rng.randint(1, 3))))
    for _ in range(rng.randint(1, 8)):
        _mutate(rng, data)
    return bytes(data)


def _mutate(rng: random.Random, data: bytearray) -> None:
    op = rng.randrange(6)
    pos = rng.randrange(len(data) + 1)
    if op == 0 and data:
        data[min(pos, len(data) - 1)] = rng.randrange(256)
    elif op == 1:
        data[pos:pos] = rng.randbytes(rng.randint(1, 16))
    elif op == 2:
        del data[pos : pos + rng.randint(1, 16)]
    elif op == 3:
        del data[pos:]
    elif op == 4 and len(data) >= 4:  # rewrite the first command_length
        data[0:4] = rng.choice([0, 15, 16, 17, len(data), len(data) + 1, 0xFFFFFFFF,
                                rng.randrange(1 << 32)]).to_bytes(4, "big")  # fmt: skip
    elif op == 5 and data:  # a TLV length or sm_length that overruns
        data[min(pos, len(data) - 1)] = 0xFF


def feed_stream(stream: bytes, rng: random.Random, stats: FuzzStats, max_length: int) -> None:
    """Decode one stream in random chunks; raise AssertionError on a crash or a hang."""
    decoder = P.Decoder(max_length=max_length)
    pos = 0
    while pos < len(stream) or pos == 0:
        step = rng.randint(1, 64)
        decoder.feed(stream[pos : pos + step])
        pos += step
        # Each iteration consumes a frame or returns/raises: the bound proves progress.
        for _ in range(len(stream) + 2):
            try:
                if decoder.next_pdu() is None:
                    break
                stats.pdus += 1
            except P.SmppFramingError:
                stats.framing_errors += 1
                return
            except SmppProtocolError:
                stats.pdu_errors += 1
        else:
            raise AssertionError("decoder made no progress")
        stats.max_buffered = max(stats.max_buffered, decoder.buffered)
        if decoder.buffered > max_length + 64:
            raise AssertionError(f"decoder buffered {decoder.buffered} octets")


def run(
    n: int,
    seed: int = 0,
    max_length: int = 4096,
    progress: Callable[[FuzzStats], None] | None = None,
) -> FuzzStats:
    """Fuzz `n` streams from `seed`; `progress` is called every 100,000 streams."""
    rng = random.Random(seed)
    stats = FuzzStats()
    for i in range(n):
        stream = make_stream(rng)
        try:
            feed_stream(stream, rng, stats, max_length)
        except Exception as exc:
            raise AssertionError(f"stream {i} ({stream.hex()}) broke the decoder: {exc!r}") from exc
        stats.streams += 1
        if progress is not None and stats.streams % 100_000 == 0:
            progress(stats)
    return stats


def main(argv: list[str]) -> int:
    """Entry point of `smsgw fuzz smpp`; exit 0 when no stream broke the decoder."""
    parser = argparse.ArgumentParser(prog="smsgw fuzz smpp", description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--streams", type=int, default=1_000_000, help="streams to run")
    parser.add_argument("--seed", type=int, default=0, help="random seed (runs are repeatable)")
    parser.add_argument("--max-length", type=int, default=4096, help="decoder max PDU length")
    args = parser.parse_args(argv)
    start = time.monotonic()

    def report(stats: FuzzStats) -> None:
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sys.stdout.write(
            f"{stats.streams} streams  pdus={stats.pdus} pdu_errors={stats.pdu_errors} "
            f"framing_errors={stats.framing_errors} max_buffered={stats.max_buffered} "
            f"maxrss={rss_mb:.1f}MiB  {time.monotonic() - start:.1f}s\n"
        )
        sys.stdout.flush()

    try:
        stats = run(args.streams, args.seed, args.max_length, report)
    except AssertionError as exc:
        sys.stdout.write(f"FAIL: {exc}\n")
        return 1
    if stats.streams % 100_000:
        report(stats)
    sys.stdout.write("OK: no crash, no hang, bounded buffer\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
