"""`smsgw bench SCENARIO`: one entry point for every benchmark.

Component benchmarks measure one piece alone; end-to-end scenarios drive the whole gateway.
Each prints its conditions (machine, versions, Postgres durability settings) with its figures.
"""

from __future__ import annotations

import importlib
import sys

SCENARIOS: dict[str, tuple[str, str]] = {
    # component benchmarks
    "queue": ("bench.queue_bench", "queue core alone: enqueue -> claim -> ack, batch 1/10/100"),
    "smpp": ("bench.smpp_bench", "SMPP codec ops/s and pipelined submit_sm round trips"),
    "receiver": ("bench.receiver_bench",
                 "receiver alone: POST /v1/messages and /cgi-bin/sendsms"),
    "processor": ("bench.processor_bench",
                  "processor alone: prefilled inbound queue with rules"),
    "sender": ("bench.sender_bench", "sender alone: prefilled outbound queue to the simulator"),
    "esme": ("bench.esme_bench",
             "ESMEs bound to the SMPP server: submit_sm -> SMSC -> receipts back to the ESMEs"),
    "report": ("bench.report_bench",
               "reporter alone: a campaign report over 1M and 10M history rows (time, RSS)"),
    "kannel": ("bench.kannel_bench",
               "Kannel (bearerbox + smsbox, memory queues) driven like mt/sendsms/mo; "
               "--with-smsgw alternates smsgw's runs"),
    # end-to-end scenarios (issue 8)
    "mt": ("bench.e2e", "HTTP POST /v1/messages -> submit_sm -> receipt -> delivered"),
    "sendsms": ("bench.e2e", "the same through the Kannel-compatible /cgi-bin/sendsms"),
    "mo": ("bench.e2e", "simulator deliver_sm -> processor -> application sink"),
    "promo": ("bench.e2e", "MO keyword -> auto-reply MT -> submit_sm -> receipt"),
    "intake": ("bench.e2e", "HTTP webhooks only"),
}
E2E = {"mt", "sendsms", "mo", "promo", "intake"}


def _usage() -> str:
    lines = ["usage: smsgw bench SCENARIO [options]   (smsgw bench SCENARIO --help)", "",
             "scenarios:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SCENARIOS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the scenario's `main(argv)`; end-to-end scenarios get their name first."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in SCENARIOS:
        sys.stderr.write(f"smsgw bench: unknown scenario {name!r}\n\n{_usage()}\n")
        return 2
    module = importlib.import_module("smsgw.services." + SCENARIOS[name][0])
    return int(module.main([name, *rest] if name in E2E else rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
