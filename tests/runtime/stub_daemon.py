"""A test daemon on the real runtime whose worker misbehaves on purpose (run as a script).

`STUB_MODE=stubborn`: the worker ignores `stop` (in-flight work outliving the drain deadline);
`STUB_MODE=crash`: the worker raises once the daemon is ready; `STUB_MODE=gc`: the worker logs
the garbage collector's state (`gc_state`), then waits for stop. `release()` logs `release_ran`.
This is not a mock: it is one more daemon built on `shared.runtime.daemon.Daemon`, like the
real ones.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys

from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.runtime.config import DaemonSection
from smsgw.shared.runtime.daemon import Daemon


class StubDaemon(Daemon[DaemonSection]):
    name = "stub"  # config section [stub], env SMSGW_STUB__*
    settings_model = DaemonSection
    listen_channels = (CHANNELS["outbound"],)

    async def setup(self) -> None:
        mode = os.environ["STUB_MODE"]
        work = {"stubborn": self.stubborn, "crash": self.crash, "gc": self.report_gc}[mode]
        self.add_worker(mode, work)

    async def stubborn(self) -> None:
        self.log.info("stubborn_working")
        await asyncio.sleep(3600)  # ignores stop on purpose

    async def crash(self) -> None:
        self.log.info("about_to_crash")
        raise RuntimeError("boom: worker failed")

    async def report_gc(self) -> None:
        self.log.info("gc_state", thresholds=list(gc.get_threshold()),
                      frozen=gc.get_freeze_count())
        await self.stop.wait()

    async def release(self) -> None:
        self.log.info("release_ran")


if __name__ == "__main__":
    sys.exit(StubDaemon.main(sys.argv[1:]))
