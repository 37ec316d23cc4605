"""Dashboards and alerts against a real Prometheus scraping a real gateway (opt-in, ~1-2 min).

Run it with `-m prometheus` (`./run-tests -m prometheus tests/ops`); it needs Debian's
`prometheus` package (`apt-get install -y prometheus`, 2.42 on Debian 12) and is skipped
without it. Grafana is not packaged here, so the dashboards are checked through the queries
Grafana would send.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy/prometheus/alerts.yml"
DASHBOARDS = sorted((REPO / "grafana/dashboards").glob("*.json"))
RATE_INTERVAL = "15s"  # what $__rate_interval becomes at a 1 s scrape interval
CONNECTOR = "sim"
# A comparison with a number: the alert thresholds (`> 300`, `== 0`, `>= 20`).
_THRESHOLD_RE = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*-?\d+(?:\.\d+)?(?![\w.\]])")

pytestmark = [
    pytest.mark.prometheus,
    pytest.mark.timeout(600),
    pytest.mark.skipif(shutil.which("prometheus") is None,
                       reason="prometheus not installed (apt-get install -y prometheus)"),
]


def strip_thresholds(expr: str) -> str:
    """The alert expression without its threshold comparisons."""
    return _THRESHOLD_RE.sub("", expr)


def substitute(expr: str) -> str:
    """Grafana's variables as the dashboard would send them."""
    return (expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace("$connector", CONNECTOR))


class Prom:
    """A Prometheus server scraping the daemons of one `smsgw up`."""

    def __init__(self, tmp: Path, targets: dict[str, list[str]], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        rules = yaml.safe_load(ALERTS.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
            for rule in group["rules"]:
                rule["for"] = "0s"  # fire as soon as the condition holds: the test is short
        (tmp / "alerts.yml").write_text(yaml.safe_dump(rules))
        cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
               "rule_files": [str(tmp / "alerts.yml")],
               "scrape_configs": [{"job_name": job, "static_configs": [{"targets": t}]}
                                  for job, t in targets.items()]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        self.log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["prometheus", f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            data = json.loads(resp.read())
        assert data["status"] == "success", data
        return data["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.get("/api/v1/query", query=expr)["result"])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def _send(api: str, key: str, n: int) -> list[int]:
    ids = []
    for i in range(n):
        body = json.dumps({"to": f"+4477009{i:05d}", "from": "smsgw", "text": f"m{i}"}).encode()
        req = urllib.request.Request(f"{api}/v1/messages", data=body, method="POST", headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            ids.append(json.loads(resp.read())["id"])
    return ids


def _send_unauthorised(api: str) -> None:
    req = urllib.request.Request(f"{api}/v1/messages", data=b"{}", method="POST",
                                 headers={"Authorization": "Bearer smsgw_wrong"})
    try:
        urllib.request.urlopen(req, timeout=30).close()
    except urllib.error.HTTPError as exc:
        assert exc.code == 401
    else:
        raise AssertionError("a wrong key was accepted")


def test_every_panel_and_alert_against_a_real_prometheus(up_factory: Any, ops: Any,
                                                         tmp_path: Path) -> None:
    """1. Start an SMSC simulator (receipts 80 % DELIVRD, MO traffic) and `smsgw up` with a
       connector `sim` pointing at it; start Prometheus scraping the three daemons every second
       with the alert rules (their `for:` set to 0s).
    2. Send messages through the API (and one with a wrong key), SIGHUP `up` (which passes it
       to every daemon: a config reload), and wait until the messages have receipts.
    3. Every dashboard query, `$__rate_interval` and `$connector` substituted, returns at
       least one series; the `$connector` variable's query lists `sim`.
    4. Every alert rule is loaded and healthy, and its expression without the threshold
       returns data.
    5. Stop the simulator: SmsgwBindDown fires for connector sim.
    """
    base = ops.free_block([0, 1])
    sim = subprocess.Popen(
        [sys.executable, "-m", "smsgw.services.cli", "smsc-sim", "--port", str(base),
         "--receipt-delay", "0.2", "--receipt-stats", "DELIVRD=0.8,UNDELIV=0.2",
         "--mo-rate", "1", "--mo-text", "HELLO there", "--stats-s", "0"],
        env=ops.clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = tmp_path / "smsgw.toml"
    cfg.write_text(f'[[connectors]]\nname = "{CONNECTOR}"\nhost = "127.0.0.1"\nport = {base}\n'
                   'system_id = "smsgw"\n')
    up = up_factory(extra=["--config", str(cfg), "--no-sim"])
    prom = None
    try:
        up.start()
        up.wait_up()
        eps = up.endpoints()
        targets: dict[str, list[str]] = {}
        for m in eps["metrics"]:
            targets.setdefault(f"smsgw-{m['daemon']}", []).append(
                m["url"].removeprefix("http://").removesuffix("/metrics"))
        prom = Prom(tmp_path, targets, base + 1)
        ops.wait_for(prom.ready, 60, "prometheus to be ready")
        key = (up.data_dir / "demo-api-key").read_text().strip()
        ids = _send(up.api, key, 20)
        _send_unauthorised(up.api)  # one 401: the HTTP error panel has a reason to show
        up.signal(signal.SIGHUP)    # up passes it on: every daemon reloads its config
        ops.wait_for(lambda: all(
            json.loads(up.smsgw("trace", str(i), "--mt", "--json").stdout or "[{}]")[0]
            .get("receipts") for i in ids[-3:]), 90, "receipts for the messages")
        ops.wait_for(lambda: len([r for r in prom.query('up{job=~"smsgw-.*"}')
                                  if r["value"][1] == "1"]) == 3, 60, "three daemons scraped")
        time.sleep(20)  # a few rate windows of samples with traffic in them

        failures = []
        for dash in DASHBOARDS:
            d = json.loads(dash.read_text())
            for panel in d["panels"]:
                for t in panel.get("targets", []):
                    expr = substitute(t["expr"])
                    if not prom.query(expr):
                        failures.append(f"{dash.name} / {panel['title']}: {expr}")
        assert not failures, "panel queries without a series:\n" + "\n".join(failures)
        values = prom.get("/api/v1/label/connector/values",
                          **{"match[]": "smsgw_smpp_session_up"})
        assert CONNECTOR in values

        groups = ops.wait_for(lambda: [g for g in prom.get("/api/v1/rules")["groups"]
                                       if all(r.get("lastEvaluation", "").startswith("20")
                                              for r in g["rules"])], 30, "rules evaluated")
        rules = [r for g in groups for r in g["rules"]]
        assert len(rules) == len([r for g in yaml.safe_load(ALERTS.read_text())["groups"]
                                  for r in g["rules"]])
        bad = [f"{r['name']}: {r.get('lastError')}" for r in rules if r["health"] != "ok"]
        assert not bad, bad
        empty = [r["name"] for r in rules if not prom.query(strip_thresholds(r["query"]))]
        assert not empty, f"alert expressions without data (threshold removed): {empty}"

        sim.send_signal(signal.SIGTERM)
        sim.wait(timeout=30)

        def bind_down_firing() -> bool:
            alerts = prom.get("/api/v1/alerts")["alerts"]
            return any(a["labels"]["alertname"] == "SmsgwBindDown" and a["state"] == "firing"
                       and a["labels"].get("connector") == CONNECTOR for a in alerts)
        ops.wait_for(bind_down_firing, 90, "SmsgwBindDown to fire after the simulator stopped")
    finally:
        if sim.poll() is None:
            sim.kill()
        if prom is not None:
            prom.stop()
