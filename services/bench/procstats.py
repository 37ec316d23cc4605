"""/proc sampling for the benchmark and the soak: CPU seconds, peak RSS, open descriptors.

CPU comes from `/proc/<pid>/stat` (utime + stime, in clock ticks), sampled before and after a
run. A process that forks workers (Postgres: one backend per connection, some of which exit
during the run) is counted as the whole tree: the root's own time, plus the time of children it
has already reaped (cutime + cstime: the postmaster waits for every backend), plus the live
children's own time — so a backend that exits between the samples is not lost.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class CpuSample:
    """CPU seconds of a process (and its reaped children) at one moment."""

    own_s: float
    reaped_children_s: float

    @property
    def total_s(self) -> float:
        """Own plus reaped children."""
        return self.own_s + self.reaped_children_s


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return raw[raw.rindex(")") + 2:].split()


def cpu(pid: int) -> CpuSample | None:
    """utime+stime and cutime+cstime of `pid` in seconds (None when it is gone)."""
    f = _stat_fields(pid)
    if f is None:
        return None
    # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return CpuSample((int(f[11]) + int(f[12])) / TICKS, (int(f[13]) + int(f[14])) / TICKS)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (by scanning /proc: no psutil needed)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None and int(f[1]) == pid:
                out.append(int(entry))
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of `pid`, its reaped children and its live children (one level: Postgres)."""
    root = cpu(pid)
    if root is None:
        return 0.0
    total = root.total_s
    for child in children(pid):
        c = cpu(child)
        if c is not None:
            total += c.own_s
    return total


def status_kb(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    """Number of open file descriptors of `pid`."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None


def postmaster_pid(datadir: Path) -> int | None:
    """The postmaster's pid from `postmaster.pid` (first line)."""
    try:
        return int((datadir / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, IndexError, ValueError):
        return None


def machine() -> dict[str, object]:
    """Machine facts for the conditions block."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    load = os.getloadavg()
    return {"host": platform.node(), "kernel": platform.release(), "cpu_model": model,
            "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(mem_kb / 1048576, 1), "python": platform.python_version(),
            "loadavg_at_start": [round(x, 2) for x in load]}
