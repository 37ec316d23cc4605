"""`smsgw_possible_duplicates_total` counts exactly the messages whose submit outcome was lost.

A sender is killed (SIGKILL) while its window is full of submits the SMSC has not answered:
every message it held leased (`sending`) is a possible duplicate — it may have reached the SMSC
or not — and nothing else is. Postgres says how many that is (rows in `sending` after the kill);
the restarted sender's /metrics, read with prometheus_client's own parser, must count exactly
that many, and the `possible_duplicate` events agree.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from prometheus_client.parser import text_string_to_metric_families

from smsgw.services.smsc_sim.server import Simulator

from .conftest import add_mt, all_final, wait_until
from .test_daemon import spawn  # noqa: F401 - the `smsgw sender` process fixture


def _config(path: Path, port: int) -> None:
    """One simulator connector (window 10, no TPS limit worth noting, a response timeout far
    above the test's kill) and a fast-cycling [sender] with a 3 s lease."""
    sender = {"metrics_port": 0, "drain_s": 1, "lease_s": 3, "poll_s": 0.2, "bind_grace_s": 0.2,
              "bind_retry_s": 0.3, "bind_check_s": 0.5, "flush_s": 0.02, "not_sent_retry_s": 0.2}
    lines = ["[[connectors]]", 'name = "sim"', 'host = "127.0.0.1"', f"port = {port}",
             'system_id = "smsgw"', "binds = 1", "window = 10", "tps = 500", "burst = 10",
             "enquire_link_s = 0", "response_timeout_s = 60", "reconnect_min_s = 0.1",
             "reconnect_max_s = 0.5", "", "[sender]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in sender.items()]
    path.write_text("\n".join(lines) + "\n")


async def _metric_total(port: int, name: str) -> float:
    async with aiohttp.ClientSession() as http, \
            http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples if sample.name == name)


async def test_killed_window_counts_each_lost_submit_once(
        tmp_path: Path, pool: asyncpg.Pool, spawn: Any) -> None:  # noqa: F811
    """1. The SMSC holds every response for 60 s; 40 MTs; the first sender fills its window.
    2. SIGKILL it: N rows stay `sending` under its lease (N > 0, counted in Postgres).
    3. The SMSC answers at once again; a second sender takes the N over once their lease has
       expired and submits everything: all 40 end submitted.
    4. Its smsgw_possible_duplicates_total is exactly N, and so is the number of
       `possible_duplicate` events; the SMSC saw at most N submits more than 40."""
    async with Simulator() as sim:
        sim.inject(response_delay_s=60)
        _config(tmp_path / "smsgw.toml", sim.port)
        ids = await add_mt(pool, 40)
        first = await spawn()
        await wait_until(lambda: sim.counters.submits >= 10, timeout=20)
        first.proc.send_signal(signal.SIGKILL)
        assert await first.exit_code() == -signal.SIGKILL
        lost = await pool.fetchval("SELECT count(*) FROM outbound WHERE status = 'sending'")
        assert lost >= 10  # at least the unanswered window
        assert await pool.fetchval(
            "SELECT count(*) FROM events WHERE event = 'possible_duplicate'") == 0

        sim.inject(response_delay_s=0)
        second = await spawn()
        await wait_until(lambda: all_final(pool, ids, {"submitted"}), timeout=40)
        port = int(next(e["port"] for e in second.events
                        if e.get("event") == "http_site_started" and e.get("site") == "health"))
        assert await _metric_total(port, "smsgw_possible_duplicates_total") == lost
        assert await pool.fetchval(
            "SELECT count(*) FROM events WHERE event = 'possible_duplicate'") == lost
        assert sim.counters.submits - 40 <= lost
        second.proc.send_signal(signal.SIGTERM)
        assert await second.exit_code() == 0
