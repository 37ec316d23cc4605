"""`--profile DIR` for the benchmark: py-spy on every daemon while the load runs.

Each daemon gets `py-spy record --format raw --nonblocking` (collapsed stacks, no pausing of
the target), stopped with SIGINT when the load ends; `summarise` reads the collapsed stacks and
lists the functions with the most samples: self (leaf) and inclusive, per daemon. py-spy is
optional (`pip install py-spy`); without it `--profile` says so and the run goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import sys
from pathlib import Path


class Profiler:
    """py-spy recorders for a set of pids."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))

    def available(self) -> bool:
        """True when py-spy is installed."""
        return Path(self.exe).exists()

    async def start(self, pids: dict[str, int]) -> None:
        """Start one recorder per process (names like `sender@1`)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            out = self.out_dir / f"{name}.collapsed"
            self.procs[name] = await asyncio.create_subprocess_exec(
                self.exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
                "--nonblocking", "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)

    async def stop(self) -> None:
        """SIGINT every recorder (py-spy then writes its file) and wait for them."""
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()


def summarise(path: Path, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Top functions by share of samples: `self` (leaf frames) and `inclusive`."""
    self_counts: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {}
    for line in lines:
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_short(f) for f in stack.split(";")]
        self_counts[frames[-1]] = self_counts.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count
    if not total:
        return {}

    def ranked(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(v * 100 / total, 1)) for k, v in
                sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"self": ranked(self_counts), "inclusive": ranked(
        {k: v for k, v in incl.items() if not k.startswith(("<module>", "run ("))}),
        "samples": [("total", float(total))]}


def _short(frame: str) -> str:
    # py-spy raw frames look like "func (path/to/file.py:123)": keep func and file name.
    name, _, loc = frame.partition(" (")
    file = loc.rsplit("/", 1)[-1].split(":")[0] if loc else ""
    return f"{name} ({file})" if file else name
