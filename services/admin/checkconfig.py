"""`smsgw check-config [--config FILE]`: validate the whole configuration, as the daemons will.

Checks the shared sections and every daemon's section (each daemon only checks its own), plus
every `SMSGW_*` variable in the environment. Prints every problem as `path: message` and exits
78, or prints a summary and exits 0. No database or network I/O.

The file is `--config`, else `./smsgw.toml` when present, else the config `smsgw up` runs its
daemons with (`DATA_DIR/smsgw.toml`, `--data-dir`, default `./.smsgw`); `--database-url` stands
for `SMSGW_DATABASE_URL` (`shared.runtime.admin_config`, as for every admin command).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from smsgw.services.processor.settings import ProcessorSettings
from smsgw.services.receiver.settings import ReceiverSettings
from smsgw.services.reporter.settings import ReporterSettings
from smsgw.services.sender.settings import SenderSettings
from smsgw.shared.core.errors import ConfigError
from smsgw.shared.runtime.admin_config import add_target_args, default_config_path
from smsgw.shared.runtime.config import ENV_DATABASE_URL, DaemonSection, load_all

EXIT_CONFIG = 78
SECTIONS: dict[str, type[DaemonSection]] = {
    "receiver": ReceiverSettings, "processor": ProcessorSettings, "sender": SenderSettings,
    "reporter": ReporterSettings}


def main(argv: Sequence[str] | None = None) -> int:
    """Validate the config; 0 when valid, 78 with every problem on stderr otherwise."""
    parser = argparse.ArgumentParser(
        prog="smsgw check-config",
        description="Validate smsgw.toml and the SMSGW_* environment for every daemon.",
        epilog="With no --config and no ./smsgw.toml, next to `smsgw up` it checks the config "
               "up runs its daemons with (./.smsgw/smsgw.toml).")
    add_target_args(parser)
    parser.add_argument("--instance", type=int, metavar="N", help="instance number to check")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    env = dict(os.environ)
    if args.instance is not None:
        env["SMSGW_INSTANCE"] = str(args.instance)
    if args.database_url:
        env[ENV_DATABASE_URL] = args.database_url
    path = args.config if args.config is not None else default_config_path(args)
    try:
        loaded = load_all(path, env, sections=SECTIONS)
    except ConfigError as exc:
        for line in exc.errors:
            sys.stderr.write(f"{line}\n")
        sys.stderr.write(f"smsgw check-config: {len(exc.errors)} problem(s)\n")
        return EXIT_CONFIG
    any_cfg = next(iter(loaded.values()))
    sys.stdout.write(f"config OK: {len(any_cfg.connectors)} connectors, "
                     f"{len(any_cfg.routes)} routes\n")
    for name, cfg in loaded.items():
        sys.stdout.write(f"  {name}@{cfg.instance}: metrics port {cfg.daemon.metrics_port}, "
                         f"log level {cfg.daemon.log_level}, drain {cfg.daemon.drain_s:g}s\n")
    return 0
