"""`smsgw bench kannel`: Kannel beside smsgw on this machine, driven the same way.

Kannel (Debian's `bearerbox` + `smsbox`, `apt-get install -y kannel`) is started with a
generated configuration the way an operator would run it for speed: one SMPP transceiver to the
project's SMSC simulator with `max-pending-submits` = the window, no message store (memory
queues; `--store spool` for Kannel's durable store), `dlr-storage = internal`, sendsms on
smsbox, one catch-all `sms-service` whose `get-url` is a local application and whose
`max-messages = 0` (no reply SMS), logs at warning level and no access logs (smsgw writes no
line per message either). The load is the one `smsgw bench sendsms|mo` uses — the same lean
HTTP driver (one message per request, `--concurrency` in flight), the same simulator process
(receipts after `--receipt-delay` when `registered_delivery` asks), the same application sink:

- `mt`: GET /cgi-bin/sendsms, no delivery report asked;
- `dlr`: the same with `dlr-mask=3` and a `dlr-url` per message (one callback each);
- `mo`: the simulator sends deliver_sm at `--rate`, each forwarded by a get-url request.

Gateway CPU per message is bearerbox + smsbox from /proc over the run window (first request to
the last callback / submit), like smsgw's daemons + Postgres in `smsgw bench`. With
`--with-smsgw` each Kannel run is followed by the same scenario on a fresh smsgw stack
(`sendsms --no-receipts`, `sendsms --status-callback`, `mo`), so the ratio comes from
alternating runs in one sitting. Kannel holds messages in memory (`--store none`): a crash
loses what it has accepted; smsgw's figures are durable (fsync and synchronous_commit on).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from smsgw.services.bench import e2e, procstats

SCENARIOS = ("mt", "dlr", "mo")
SMSGW_SCENARIO = {"mt": ("sendsms", ["--no-receipts"]),
                  "dlr": ("sendsms", ["--status-callback"]),
                  "mo": ("mo", [])}
INSTALL_LINE = "apt-get update && apt-get install -y kannel"
USER = "bench"
SYSTEM_ID = "kannel"
WAIT_S = 30.0


def conf_groups(groups: list[tuple[str, dict[str, Any]]]) -> str:
    """kannel.conf text: `group = NAME` then `key = value` lines (strings quoted)."""
    out = []
    for name, keys in groups:
        out.append(f"group = {name}")
        for key, value in keys.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            if isinstance(value, str) and not value.isdigit():
                value = '"' + value.replace('"', '\\"') + '"'
            out.append(f"{key} = {value}")
        out.append("")
    return "\n".join(out)


def find_binary(name: str) -> str | None:
    """`bearerbox`/`smsbox` from `$KANNEL_BIN_DIR` when set (a Kannel built elsewhere),
    else on PATH or in Debian's /usr/sbin (not on every user's PATH)."""
    given = os.environ.get("KANNEL_BIN_DIR")
    if given is None:
        found = shutil.which(name)
        if found:
            return found
    for folder in [given] if given is not None else ["/usr/sbin", "/usr/local/sbin", "/sbin"]:
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_port(port: int, within_s: float, what: str,
                    alive: Callable[[], bool] = lambda: True) -> None:
    """Until something accepts on 127.0.0.1:port."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"{what} exited before listening on {port}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        w.close()
        with contextlib.suppress(OSError):
            await w.wait_closed()
        return
    raise RuntimeError(f"{what} did not listen on {port} within {within_s}s")



class KannelSide:
    """The simulator and Kannel for one run; what `e2e`'s driver needs of a stack
    (`api_url`, `api_key`, `sim`, `sim_stats`)."""

    def __init__(self, folder: Path, a: argparse.Namespace, sink_url: str | None) -> None:
        self.folder, self.a, self.sink_url = folder, a, sink_url
        self.api_key = secrets.token_hex(8)
        self.smpp_port, self.control_port = free_port(), free_port()
        self.admin_port, self.box_port, self.sendsms_port = (free_port(), free_port(),
                                                             free_port())
        self.sim_proc: asyncio.subprocess.Process | None = None
        self.procs: list[asyncio.subprocess.Process] = []
        self.session: aiohttp.ClientSession | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.sendsms_port}"

    def conf(self) -> str:
        f, a = self.folder, self.a
        core: dict[str, Any] = {
            "admin-port": self.admin_port, "admin-interface": "127.0.0.1",
            "admin-password": secrets.token_hex(8), "admin-allow-ip": "127.0.0.1",
            "smsbox-port": self.box_port, "smsbox-interface": "127.0.0.1",
            "box-allow-ip": "127.0.0.1", "log-file": str(f / "bearerbox.log"),
            "log-level": a.kannel_log_level, "dlr-storage": "internal"}
        if a.store == "spool":
            core |= {"store-type": "spool", "store-location": str(f / "spool")}
        groups: list[tuple[str, dict[str, Any]]] = [
            ("core", core),
            ("smsc", {"smsc": "smpp", "smsc-id": "sim", "host": "127.0.0.1",
                      "port": self.smpp_port, "transceiver-mode": True,
                      "system-id": SYSTEM_ID, "smsc-password": "kannel", "system-type": "",
                      "max-pending-submits": a.window, "enquire-link-interval": 30,
                      "reconnect-delay": 1, "log-level": a.kannel_log_level}),
            ("smsbox", {"bearerbox-host": "127.0.0.1", "bearerbox-port": self.box_port,
                        "sendsms-port": self.sendsms_port, "sendsms-interface": "127.0.0.1",
                        "log-file": str(f / "smsbox.log"), "log-level": a.kannel_log_level,
                        "http-request-retry": 0}),
            ("sendsms-user", {"username": USER, "password": self.api_key,
                              "max-messages": 10, "concatenation": True})]
        if self.sink_url is not None and self.a.scenario == "mo":
            groups.append(("sms-service", {
                "name": "bench", "keyword": "default", "catch-all": True,
                "get-url": self.sink_url + "?from=%p&to=%P&text=%a", "max-messages": 0}))
        else:
            groups.append(("sms-service", {"name": "default", "keyword": "default",
                                           "catch-all": True, "text": "", "max-messages": 0}))
        return conf_groups(groups)

    async def start(self) -> None:
        bearerbox, smsbox = find_binary("bearerbox"), find_binary("smsbox")
        if bearerbox is None or smsbox is None:
            raise RuntimeError(f"Kannel is not installed ({INSTALL_LINE})")
        if self.a.store == "spool":
            (self.folder / "spool").mkdir()
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.sim_proc = await self._spawn(
            [sys.executable, "-m", "smsgw.services.bench.simctl", "--port",
             str(self.smpp_port), "--control-port", str(self.control_port),
             "--receipt-delay", str(self.a.receipt_delay)], "smsc-sim")
        await wait_port(self.control_port, WAIT_S, "the SMSC simulator", self._alive)
        conf = self.folder / "kannel.conf"
        conf.write_text(self.conf())
        conf.chmod(0o600)  # it holds the sendsms password
        self.procs.append(await self._spawn([bearerbox, str(conf)], "bearerbox"))
        await wait_port(self.box_port, WAIT_S, "bearerbox", self._alive)
        self.procs.append(await self._spawn([smsbox, str(conf)], "smsbox"))
        await wait_port(self.sendsms_port, WAIT_S, "smsbox", self._alive)
        deadline = time.monotonic() + WAIT_S
        while (await self.sim_stats())["counters"]["current_binds"] < 1:
            if time.monotonic() > deadline:
                raise RuntimeError("bearerbox did not bind to the simulator; see "
                                   f"{self.folder / 'bearerbox.log'}")
            await asyncio.sleep(0.1)

    async def _spawn(self, argv: list[str], name: str) -> asyncio.subprocess.Process:
        with open(self.folder / f"{name}.out", "wb") as out:  # noqa: ASYNC230
            return await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)

    def _alive(self) -> bool:
        procs = [*self.procs, *([self.sim_proc] if self.sim_proc else [])]
        return all(p.returncode is None for p in procs)

    def cpu_s(self) -> dict[str, float]:
        """CPU seconds of bearerbox, smsbox and the simulator now."""
        names = ("bearerbox", "smsbox")
        out = {n: procstats.tree_cpu_s(p.pid) for n, p in zip(names, self.procs, strict=False)}
        if self.sim_proc is not None:
            out["smsc-sim"] = procstats.tree_cpu_s(self.sim_proc.pid)
        return out

    def peak_rss_kb(self) -> dict[str, int | None]:
        return {n: procstats.status_kb(p.pid, "VmHWM")
                for n, p in zip(("bearerbox", "smsbox"), self.procs, strict=False)}

    async def sim_stats(self) -> dict[str, Any]:
        return await self._control("GET", "/stats")

    async def sim(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self._control("POST", path, body or {})

    async def _control(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        assert self.session is not None
        async with self.session.request(
                method, f"http://127.0.0.1:{self.control_port}{path}", json=body) as r:
            return dict(await r.json())

    async def stop(self) -> None:
        await terminate([*reversed(self.procs), *([self.sim_proc] if self.sim_proc else [])])
        if self.session is not None:
            await self.session.close()


async def terminate(procs: list[asyncio.subprocess.Process], grace_s: float = 10.0) -> None:
    """SIGTERM each process in turn (smsbox before bearerbox), SIGKILL after `grace_s`."""
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()


def kannel_version() -> str:
    binary = find_binary("bearerbox")
    if binary is None:
        return "not installed"
    res = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10,
                         check=False)
    for line in (res.stdout + res.stderr).splitlines():
        if "version" in line.lower():
            return line.strip().strip(".").replace("`", "").replace("'", "")[:80]
    return "unknown"


async def _drain(run: e2e.Run, side: KannelSide, want: int, timeout_s: float) -> float:
    """Wait until `want` submits (mt) / callbacks or MO at the sink arrived, or nothing moved
    for 5 s; return the time of the last one seen."""
    last_n, last_t = -1, time.time()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if run.sink is not None:
            n = len(run.sink.seen)
        else:
            n = int((await side.sim_stats())["counters"]["submit_ok"])
        if n != last_n:
            last_n, last_t = n, time.time()
        if n >= want or time.time() - last_t > 5.0:
            break
        await asyncio.sleep(0.1)
    if run.sink is not None and run.sink.seen:
        return max(run.sink.seen.values())
    stats = await side.sim_stats()
    return float(stats.get("last_submit_at") or last_t)


async def kannel_run(a: argparse.Namespace, index: int) -> dict[str, Any]:
    """One Kannel run: start, drive, drain, measure."""
    folder = Path(tempfile.mkdtemp(prefix="smsgw-bench-kannel-"))
    sink = (e2e.Sink("MO") if a.scenario == "mo" else e2e.Sink("B") if a.scenario == "dlr"
            else None)
    sink_url = await sink.start() if sink else None
    side = KannelSide(folder, a, sink_url)
    driver_args = argparse.Namespace(**vars(a))
    driver_args.status_callback = a.scenario == "dlr"
    run = e2e.Run("mo" if a.scenario == "mo" else "sendsms", driver_args,
                  uuid.uuid4().hex[:8], side, sink=sink, sink_url=sink_url)  # type: ignore[arg-type]
    try:
        await side.start()
        e2e._say(f"run {index + 1}/{a.runs}: kannel {a.scenario}, store {a.store}, "
                 f"load average {procstats.machine().get('loadavg_at_start')}")
        sim0, cpu0 = await side.sim_stats(), side.cpu_s()
        load_stop = asyncio.Event()
        if a.scenario == "mo":
            await e2e.drive_mo(run, load_stop)
        else:
            await e2e.drive_http(run, load_stop)
        acked = len(run.driver.acked)
        last = await _drain(run, side, acked, a.drain_timeout)
        cpu1, sim1 = side.cpu_s(), await side.sim_stats()
        c0, c1 = sim0["counters"], sim1["counters"]
        submits = c1["submit_ok"] - c0["submit_ok"]
        window_s = max(last - run.driver.started_at, 1e-9)
        used = {n: round(cpu1[n] - cpu0.get(n, 0.0), 2) for n in cpu1}
        gateway = used.get("bearerbox", 0.0) + used.get("smsbox", 0.0)
        delivered = len(sink.seen) if sink else submits
        return {
            "gateway": "kannel", "scenario": a.scenario, "store": a.store,
            "acked": acked, "submit_sm": submits,
            "receipts_sent": c1["receipts_sent"] - c0["receipts_sent"],
            "sink_received": len(sink.seen) if sink else None,
            "window_s": round(window_s, 2),
            "per_s": round(delivered / window_s, 1),
            "submit_sm_per_s": round(submits / window_s, 1) if submits else None,
            "cpu_s": used, "gateway_cpu_s": round(gateway, 2),
            "gateway_us_per_msg": round(gateway * 1e6 / acked, 1) if acked else None,
            "peak_rss_kb": side.peak_rss_kb(),
            "driver": {"sent": run.driver.sent, "retries": run.driver.retries,
                       "errors": run.driver.errors},
            "lost": max(acked - delivered, 0) if a.scenario != "mt" else max(acked - submits, 0),
        }
    finally:
        await side.stop()
        if sink is not None:
            await sink.stop()
        if a.keep:
            e2e._say(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


async def smsgw_run(a: argparse.Namespace) -> dict[str, Any]:
    """The same scenario on a fresh smsgw stack (`smsgw bench sendsms|mo`)."""
    scenario, extra = SMSGW_SCENARIO[a.scenario]
    argv = [*extra, "--count", str(a.count), "--concurrency", str(a.concurrency),
            "--receipt-delay", str(a.receipt_delay), "--quiet"]
    if a.duration is not None:
        argv += ["--duration", str(a.duration)]
    if a.rate:
        argv += ["--rate", str(a.rate)]
    sa = e2e.build_parser(scenario).parse_args(argv)
    r = await e2e.one_run(scenario, sa, 0)
    f = r["figures"]
    per = {k: v["cpu_s"] for k, v in r["cpu"]["per_process"].items()}
    delivered = f.get("sink_received") if a.scenario != "mt" else f.get("submit_sm")
    return {"gateway": "smsgw", "scenario": scenario, "acked": f["acked"],
            "submit_sm": f["submit_sm"], "submit_sm_per_s": f.get("submit_sm_per_s"),
            "sink_received": f.get("sink_received"),
            "window_s": f["sustained_s"],
            "per_s": round((delivered or 0) / max(f["sustained_s"], 1e-9), 1),
            "cpu_s": per, "gateway_cpu_s": r["cpu"]["gateway_cpu_s"],
            "gateway_us_per_msg": r["cpu"]["gateway_us_per_msg"],
            "durable": r["conditions"]["durable"], "ok": r["verdict"]["ok"]}


def _med(values: list[Any]) -> Any:
    nums = [v for v in values if isinstance(v, int | float)]
    return round(statistics.median(nums), 1) if nums else None


def render(a: argparse.Namespace, kannel: list[dict[str, Any]],
           smsgw: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [f"smsgw bench kannel {a.scenario} — {len(kannel)} run(s), medians",
             "conditions:",
             f"  machine: {machine.get('cpu_model')} ({machine.get('usable_cores')} usable "
             f"cores), load at start {machine.get('loadavg_at_start')}",
             f"  Kannel: {kannel_version()}, store {a.store}"
             f"{' (memory only: a crash loses accepted messages)' if a.store == 'none' else ''}"
             f", max-pending-submits {a.window}, dlr-storage internal, log-level "
             f"{a.kannel_log_level}, no access logs",
             f"  load: {a.count if a.duration is None else f'{a.duration} s of'} messages, "
             f"concurrency {a.concurrency}, rate {a.rate or 'as fast as answered'}, receipts "
             f"after {a.receipt_delay} s when asked"]
    for label, rows in (("kannel", kannel), ("smsgw (durable)", smsgw)):
        if not rows:
            continue
        lines.append(f"{label}:")
        lines.append(f"  messages/s {_med([r['per_s'] for r in rows])}   "
                     f"submit_sm/s {_med([r.get('submit_sm_per_s') for r in rows])}   "
                     f"gateway CPU-us/msg {_med([r['gateway_us_per_msg'] for r in rows])} "
                     f"(runs: {', '.join(str(r['gateway_us_per_msg']) for r in rows)})")
        names = sorted({n for r in rows for n in r["cpu_s"]})
        lines.append("  CPU s: " + ", ".join(
            f"{n} {_med([r['cpu_s'].get(n) for r in rows])}" for n in names))
    if kannel and smsgw:
        k = _med([r["gateway_us_per_msg"] for r in kannel])
        s = _med([r["gateway_us_per_msg"] for r in smsgw])
        if k and s:
            lines.append(f"ratio smsgw / kannel CPU per message: {s / k:.2f}x")
    problems = [f"kannel run {i + 1}: {r['lost']} acknowledged messages not delivered"
                for i, r in enumerate(kannel) if r["lost"]]
    problems += [f"smsgw run {i + 1}: checks failed" for i, r in enumerate(smsgw)
                 if not r["ok"]]
    lines.append("checks: " + ("OK" if not problems else "; ".join(problems)))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smsgw bench kannel",
        description="Kannel (bearerbox + smsbox, memory queues) measured the way `smsgw bench` "
                    "measures smsgw: the same simulator, driver and application sink; with "
                    "--with-smsgw, alternating runs of smsgw's same scenario.",
        epilog="Needs Kannel: " + INSTALL_LINE + ". Example: smsgw bench kannel mo --rate 1000 "
               "--duration 15 --runs 3 --with-smsgw")
    p.add_argument("scenario", choices=SCENARIOS,
                   help="mt: sendsms, no DLR; dlr: sendsms with dlr-mask 3 and a dlr-url; "
                        "mo: simulator MO forwarded by get-url")
    p.add_argument("--count", type=int, default=20000, help="messages per run")
    p.add_argument("--duration", type=float, default=None,
                   help="seconds of load instead of --count (mo: with --rate)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="messages per second offered (0: as fast as answered)")
    p.add_argument("--concurrency", type=int, default=64, help="requests (or MO window) in flight")
    p.add_argument("--sources", type=int, default=100000, help="distinct numbers used")
    p.add_argument("--window", type=int, default=1000, help="Kannel's max-pending-submits")
    p.add_argument("--receipt-delay", type=float, default=0.05, help="seconds")
    p.add_argument("--store", choices=("none", "spool"), default="none",
                   help="Kannel's message store (none: memory only)")
    p.add_argument("--kannel-log-level", type=int, default=3, choices=range(0, 5),
                   help="Kannel's log-level (0 debug … 3 warning … 4 error)")
    p.add_argument("--runs", type=int, default=1, help="repeat; figures are medians")
    p.add_argument("--with-smsgw", action="store_true",
                   help="after each Kannel run, the same scenario on a fresh smsgw stack")
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--keep", action="store_true", help="keep Kannel's folder (config, logs)")
    p.add_argument("--json", type=Path, default=None, help="write the results here too")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(http_client="lean", client_ref=False, receipts=True, forward_batch=1)
    return p


async def run_all(a: argparse.Namespace) -> int:
    machine = procstats.machine()
    kannel: list[dict[str, Any]] = []
    smsgw: list[dict[str, Any]] = []
    for i in range(a.runs):
        kannel.append(await kannel_run(a, i))
        if a.with_smsgw:
            smsgw.append(await smsgw_run(a))
    sys.stdout.write(render(a, kannel, smsgw, machine) + "\n")
    if a.json:
        a.json.write_text(json.dumps({"machine": machine, "kannel": kannel, "smsgw": smsgw},
                                     indent=2, default=str))
    ok = all(not r["lost"] for r in kannel) and all(r["ok"] for r in smsgw)
    return 0 if ok else 1


def main(argv: list[str]) -> int:
    a = build_parser().parse_args(argv)
    if a.scenario == "mo" and a.duration is not None and not a.rate:
        build_parser().error("mo with --duration needs --rate")
    if find_binary("bearerbox") is None:
        sys.stderr.write(f"smsgw bench kannel: Kannel is not installed ({INSTALL_LINE})\n")
        return 2
    try:
        return asyncio.run(run_all(a))
    except RuntimeError as exc:
        sys.stderr.write(f"smsgw bench kannel: {exc}\n")
        return 1
