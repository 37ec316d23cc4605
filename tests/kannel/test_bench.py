"""`smsgw bench kannel` (opt-in with the differential suite: `pytest -m kannel tests/kannel`).

A short run of each scenario through the command itself: Kannel starts from the generated
configuration, binds to the simulator, and every message the driver had accepted reaches the
simulator (mt), the application as a dlr-url callback (dlr) or as a get-url request (mo); the
report names Kannel's version and store, and a CPU figure per message.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ..harness import clean_env

pytestmark = [pytest.mark.kannel, pytest.mark.timeout(180)]


@pytest.mark.parametrize(("scenario", "extra"), [
    ("mt", ["--count", "300"]),
    ("dlr", ["--count", "300"]),
    ("mo", ["--count", "300", "--rate", "200"]),
])
def test_bench_kannel_delivers_every_accepted_message(scenario: str, extra: list[str],
                                                      tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    res = subprocess.run(
        [sys.executable, "-m", "smsgw.services.cli", "bench", "kannel", scenario, *extra,
         "--json", str(out), "--quiet"], env=clean_env(), capture_output=True, text=True,
        timeout=170, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Kannel bearerbox version 1.4" in res.stdout and "store none" in res.stdout
    assert "checks: OK" in res.stdout
    [run] = json.loads(out.read_text())["kannel"]
    assert run["acked"] == 300 and run["lost"] == 0
    if scenario == "mt":
        assert run["submit_sm"] >= 300
    else:
        assert run["sink_received"] == 300
    assert run["gateway_us_per_msg"] > 0 and run["cpu_s"]["bearerbox"] > 0
