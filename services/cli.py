"""The one console script, `smsgw`: a thin dispatcher to each subcommand's `main(argv) -> int`.

Subcommands are imported lazily so `smsgw --help` and small commands stay fast, and so a daemon
imports only what it runs. systemd runs `smsgw <daemon>` directly (no shell wrapper).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module under smsgw.services, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "receiver": ("receiver.__main__", "main",
                 "run the receiver daemon (HTTP API, webhooks, SMPP MO)"),
    "processor": ("processor.__main__", "main",
                  "run the processor daemon (rules, callbacks)"),
    "sender": ("sender.__main__", "main", "run the sender daemon (SMPP submit, receipts)"),
    "reporter": ("reporter.__main__", "main",
                 "run the reporter daemon (campaign, traffic, inbound, opt-out reports)"),
    "smsc-sim": ("smsc_sim.__main__", "main",
                 "run the SMSC simulator (SMPP server for tests and demos)"),
    "migrate": ("admin.migrate", "main", "apply database migrations"),
    "up": ("admin.up", "main",
           "run everything locally (embedded Postgres, all daemons, simulator)"),
    "check-config": ("admin.checkconfig", "main", "validate the configuration and exit"),
    "accounts": ("admin.accounts", "main", "manage accounts and API keys"),
    "connectors": ("admin.connectors", "main",
                   "list connectors; stop, start or isolate one in every daemon, live"),
    "rules": ("processor.rules_cli", "main", "import/export/list/test processor rules"),
    "status": ("admin.status", "main", "queue depths, rates, binds"),
    "trace": ("admin.trace", "main", "a message's whole history"),
    "requeue": ("admin.requeue", "main", "requeue dead rows"),
    "send": ("admin.send", "main", "send one test MT"),
    "reports": ("admin.reports", "main", "request, list, show, cancel, download reports"),
    "erase": ("admin.erase", "main",
              "erase a number's messages, keep a hashed suppression"),
    "bench": ("bench.__main__", "main",
              "benchmarks: queue, smpp, mt, sendsms, mo, promo, intake"),
    "fuzz": ("bench.fuzz", "main", "fuzz runs: smpp, http, attacks"),
    "chaos": ("bench.chaos", "main", "reliability suite (kill -9, Postgres restart, ...)"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: smsgw COMMAND [options]   (smsgw COMMAND --help for each)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch `smsgw COMMAND ARGS…` to the command's `main(ARGS)`."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage() + "\n")
        return 0 if args else 2
    name, rest = args[0], args[1:]
    # structlog imports `rich` (and through it pygments) for its development console renderer
    # whenever rich is installed, as test and lint tools install it; smsgw never renders with
    # it, and the import cost ~60 to 150 ms of every daemon's and admin command's start here. A
    # None entry makes that optional import fail at once (structlog then uses plain tracebacks).
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]
    if name not in COMMANDS:
        sys.stderr.write(f"smsgw: unknown command {name!r}\n\n{_usage()}\n")
        return 2
    module_name, func, _ = COMMANDS[name]
    try:
        module = importlib.import_module(f"smsgw.services.{module_name}")
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            sys.stderr.write(f"smsgw: command {name!r} is not available in this build\n")
            return 2
        raise
    return int(getattr(module, func)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
