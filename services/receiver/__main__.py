"""`smsgw receiver` / `python -m smsgw.services.receiver`: parse args, load config, run the daemon.

Everything else lives in `app.py` (the composition root) and `shared.runtime.daemon.Daemon`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from smsgw.services.receiver.app import ReceiverDaemon


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver until SIGTERM; returns the exit code (0, 1, 78 bad config)."""
    return ReceiverDaemon.main(argv)


if __name__ == "__main__":
    sys.exit(main())
