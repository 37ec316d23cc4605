"""`smsgw up` killed with SIGKILL leaves no child behind.

`up` cannot stop its children when it is killed outright, so each child asks the kernel for a
SIGTERM when its parent dies (PR_SET_PDEATHSIG, services/admin/up.py). Checked on real
processes: every child listed in endpoints.json exits within a bound (polled, not slept), and
each daemon's own log shows it drained on SIGTERM — the signal the kernel sent, not a crash.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(300)
EXIT_BOUND_S = 60.0  # the daemons' drain (nothing in flight) plus a loaded 2-core machine


def test_up_killed_with_sigkill_takes_every_child_with_it(up_factory: Any, ops: Any,
                                                          db_url: str) -> None:
    """1. `smsgw up` against the test database (no embedded Postgres): simulator, receiver,
       processor and sender are running. 2. SIGKILL `up` itself. 3. Within EXIT_BOUND_S every
       child has exited; each daemon logged `drain_started` for SIGTERM."""
    up = up_factory()
    up.env["SMSGW_DATABASE_URL"] = db_url
    up.start()
    up.wait_up()
    eps = up.endpoints()
    children: dict[str, int] = eps["children"]
    assert {"receiver@1", "processor@1", "sender@1"} <= set(children), children
    assert len(children) >= 4, children  # and the simulator
    assert all(ops.pid_alive(pid) for pid in children.values())

    os.kill(eps["pid"], signal.SIGKILL)
    assert up.wait_exit(30) == -signal.SIGKILL
    ops.wait_for(lambda: not [n for n, pid in children.items() if ops.pid_alive(pid)],
                 EXIT_BOUND_S, "every child of the killed `smsgw up` to exit")
    logs = up.data_dir / "logs"
    for daemon in ("receiver", "processor", "sender"):
        events = ops.log_events(logs / f"{daemon}-1.log")
        assert any(e.get("event") == "drain_started" and e.get("signal") == "SIGTERM"
                   for e in events), (daemon, events[-5:])
