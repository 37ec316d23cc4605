"""`smsgw fuzz TARGET`: the bad-input runs in one place (SMPP decoder, HTTP API, webhooks,
attacks with a log scan for secrets)."""

from __future__ import annotations

import importlib
import sys

TARGETS: dict[str, tuple[str, str]] = {
    "smpp": ("smsc_sim.fuzz", "random and mutated byte streams into the SMPP decoder"),
    "esme": ("bench.fuzz_esme",
             "malformed PDUs at the receiver's SMPP server for ESMEs (a stack; never a crash, "
             "a hang or unbounded memory)"),
    "http": ("bench.fuzz_http",
             "the HTTP API from its OpenAPI document, and the webhooks"),
    "attacks": ("bench.fuzz_attacks",
                "non-UTF-8 bytes, Unicode/IDNA hosts (SSRF canary), NUL, slow clients; then "
                "a log scan for every secret"),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch `smsgw fuzz TARGET ARGS` to the target's `main(ARGS)`; `all` runs each in turn."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        sys.stdout.write("usage: smsgw fuzz {smpp,esme,http,attacks,all} [options]\n\n" + "\n".join(
            f"  {n:<8} {h}" for n, (_, h) in TARGETS.items())
            + "\n  all      every target in turn\n")
        return 0 if args else 2
    names = list(TARGETS) if args[0] == "all" else [args[0]]
    for name in names:
        if name not in TARGETS:
            sys.stderr.write(f"smsgw fuzz: unknown target {name!r}\n")
            return 2
        rc = int(importlib.import_module("smsgw.services." + TARGETS[name][0]).main(args[1:]) or 0)
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
