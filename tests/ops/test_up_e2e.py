"""`smsgw up` end to end, as a newcomer runs it: embedded Postgres in its own data folder, the
three daemons and the simulator as supervised children, the documented curl line, `smsgw
trace`, a SIGKILLed child restarted, Ctrl-C stopping everything in order, and a second run
reusing the data.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(400)
DAEMON_LOGS = ("receiver-1", "processor-1", "sender-1")


def send_documented_curl(up: Any, ops: Any) -> dict[str, Any]:
    """Send the banner's curl line: with curl when installed, else the same request."""
    line = up.curl_line()
    assert "/v1/messages" in line and "Authorization: Bearer smsgw_" in line
    if shutil.which("curl"):
        res = subprocess.run([*shlex.split(line), "-w", "\n%{http_code}"],
                             capture_output=True, text=True, timeout=30)
        body, _, code = res.stdout.rpartition("\n")
        assert code == "202", res.stdout + res.stderr
        return json.loads(body)
    url, headers, data = ops.curl_equivalent(line)
    req = urllib.request.Request(url, data=data, headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 202
        return json.loads(resp.read())


def trace_mt(up: Any, msg_id: int) -> dict[str, Any] | None:
    res = up.smsgw("trace", str(msg_id), "--mt", "--json")
    if res.returncode != 0:
        return None
    traces = json.loads(res.stdout)
    return traces[0] if traces else None


def delivered_with_receipt(up: Any, msg_id: int) -> dict[str, Any] | None:
    t = trace_mt(up, msg_id)
    if t and t["message"]["status"] == "delivered" and t["receipts"]:
        return t
    return None


def first_event_at(path: Path, event: str, ops: Any) -> str:
    stamps = [e["timestamp"] for e in ops.log_events(path) if e.get("event") == event]
    assert stamps, f"{path.name}: no {event} event"
    return str(stamps[-1])


def last_line_at(path: Path, ops: Any) -> str:
    return str(ops.log_events(path)[-1]["timestamp"])


def test_help_explains_everything() -> None:
    """`smsgw up --help` names the embedded Postgres (fsync on), the flags and the stop order."""
    res = subprocess.run([sys.executable, "-m", "smsgw.services.cli", "up", "--help"],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0
    for word in ("fsync on", "--processors", "--senders", "--data-dir", "--api-port",
                 "--metrics-port-base", "--smpp-port", "SIGHUP", "receivers first"):
        assert word in res.stdout, word


def test_up_sends_a_message_restarts_a_killed_child_and_stops_in_order(
        up_factory: Any, ops: Any) -> None:
    """1. `smsgw up` on an empty data folder: embedded Postgres, migrations, demo key, the
       simulator and the four daemons; it prints the banner with a curl line.
    2. The curl line sends a message (202); `smsgw trace ID` shows it delivered, with its part
       and the simulator's receipt.
    3. SIGKILL the sender child: up restarts it (new pid, READY again) and a second message is
       delivered through the new sender.
    4. SIGINT (Ctrl-C) to up: exit 0; the receiver drained before the processor, the processor
       before the sender, the sender before the simulator stopped; no child and no Postgres
       left running.
    5. A second `smsgw up` on the same folder reuses the data: no new demo account, the same
       key, and the first message still traces.
    """
    up = up_factory()
    up.start()
    up.wait_up()
    assert "fsync on" in up.text()
    sent = send_documented_curl(up, ops)
    t = ops.wait_for(lambda: delivered_with_receipt(up, sent["id"]), 60,
                     "the message to be delivered with a receipt")
    assert t["parts"] and t["parts"][0]["smsc_id"]
    assert t["receipts"][0]["state"] == "delivered"

    # 3. kill -9 the sender; up restarts it
    eps = up.endpoints()
    old_pid = eps["children"]["sender@1"]
    up_pid = eps["pid"]
    os.kill(old_pid, signal.SIGKILL)
    ops.wait_for(lambda: up.endpoints()["restarts"]["sender@1"] == 1, 30, "sender restart")
    new_pid = up.endpoints()["children"]["sender@1"]
    assert new_pid != old_pid and ops.pid_alive(new_pid)
    sender_log = up.data_dir / "logs" / "sender-1.log"
    ops.wait_for(lambda: sum(e.get("event") == "daemon_ready"
                             for e in ops.log_events(sender_log)) >= 2, 60,
                 "the restarted sender to be ready")
    second = send_documented_curl(up, ops)
    ops.wait_for(lambda: delivered_with_receipt(up, second["id"]), 60,
                 "the second message to be delivered by the restarted sender")

    # 4. Ctrl-C: ordered stop, nothing left behind
    children = up.endpoints()["children"]
    up.signal(signal.SIGINT)
    assert up.wait_exit(120) == 0, up.text()
    logs = up.data_dir / "logs"
    receiver_done = last_line_at(logs / "receiver-1.log", ops)
    processor_drain = first_event_at(logs / "processor-1.log", "drain_started", ops)
    processor_done = last_line_at(logs / "processor-1.log", ops)
    sender_drain = first_event_at(logs / "sender-1.log", "drain_started", ops)
    assert first_event_at(logs / "receiver-1.log", "drain_started", ops) <= receiver_done
    assert receiver_done <= processor_drain, "processor stopped before the receiver finished"
    assert processor_done <= sender_drain, "sender stopped before the processor finished"
    stopped = [line for line in up.err if line.startswith("[smsgw up] stopped")]
    assert [s.split()[3].rstrip(":") for s in stopped] == [
        "receiver", "processor", "sender", "reporter", "smsc-sim", "postgres"], stopped
    for name, pid in children.items():
        assert not ops.pid_alive(pid), f"{name} (pid {pid}) left behind"
    assert not ops.pid_alive(up_pid)
    assert not (up.data_dir / "pg" / "postmaster.pid").exists(), "postgres left running"
    assert not (up.data_dir / "endpoints.json").exists()

    # 5. second run on the same folder
    key = (up.data_dir / "demo-api-key").read_text()
    again = up_factory(data_dir=up.data_dir)
    again.start()
    again.wait_up()
    assert "created account" not in again.text()
    assert (up.data_dir / "demo-api-key").read_text() == key
    assert delivered_with_receipt(again, sent["id"])
    again.signal(signal.SIGINT)
    assert again.wait_exit(120) == 0, again.text()


def test_bad_config_exits_78_without_restart_loop(up_factory: Any, tmp_path: Path) -> None:
    """1. Give up a config with an unknown key in a daemon section.
    2. The daemon exits 78; up does not restart it, stops everything and exits 78.
    """
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[sender]\nno_such_key = 1\n")
    up = up_factory(extra=["--config", str(cfg), "--no-demo"])
    up.start()
    assert up.wait_exit(150) == 78, up.text()
    assert "restarting" not in up.text()
    assert not (up.data_dir / "pg" / "postmaster.pid").exists()


@pytest.mark.parametrize(("child", "offset"), [("reporter", 4), ("sender", 3)])
def test_a_child_that_cannot_start_says_why(up_factory: Any, ops: Any, child: str,
                                            offset: int) -> None:
    """1. Hold a child's metrics port (another process has it).
    2. up says which child did not start AND the error from its log (not only the log's
       path) — the bind error itself, not an error of the clean-up after it (the sender
       released leases it never took: AttributeError) —, stops what it started and exits 1."""
    metrics_base = ops.free_block([1, 2, 3, 4])
    with socket.socket() as held:
        held.bind(("127.0.0.1", metrics_base + offset))  # METRICS_OFFSET[child]
        held.listen()
        up = up_factory(extra=["--no-demo", "--metrics-port-base", str(metrics_base)])
        up.start()
        assert up.wait_exit(150) == 1, up.text()
    said = [line for line in up.err if f"{child}@1: not ready" in line]
    assert said, up.text()
    assert "daemon_crashed: OSError" in said[0], said[0]
    assert "address already in use" in said[0].lower(), said[0]
    assert "restarting" not in up.text()
    assert not (up.data_dir / "pg" / "postmaster.pid").exists()
