"""`smsgw reporter` (`python -m smsgw.services.reporter`): parse args, load config, run.

Everything else lives in `app.py` (the composition root) and `shared.runtime.daemon.Daemon`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from smsgw.services.reporter.app import ReporterDaemon


def main(argv: Sequence[str] | None = None) -> int:
    """Run the reporter until SIGTERM; returns the exit code (0, 1, 78 bad config)."""
    return ReporterDaemon.main(argv)


if __name__ == "__main__":
    sys.exit(main())
