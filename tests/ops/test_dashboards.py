"""Dashboards and alert rules, checked without a Prometheus server: generated JSON is current,
every metric a panel or alert uses is one the daemons register, and `promtool check rules`
passes. (tests/ops/test_prometheus.py runs every query against a real Prometheus, opt-in.)
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.receiver.esme_metrics import EsmeMetrics
from smsgw.services.receiver.metrics import ReceiverMetrics
from smsgw.services.sender.metrics import SenderMetrics
from smsgw.shared.runtime.metrics import RuntimeMetrics, create_registry

REPO = Path(__file__).resolve().parents[2]
ALERTS = REPO / "deploy/prometheus/alerts.yml"
DASHBOARDS = sorted((REPO / "grafana/dashboards").glob("*.json"))
_METRIC_RE = re.compile(r"\bsmsgw_[a-z_]+\b")


def exported_names() -> set[str]:
    """Every sample name the daemons can export (counters with _total, histogram series)."""
    names: set[str] = set()
    for build in (ReceiverMetrics.create, ProcessorMetrics.create, SenderMetrics.create,
                  EsmeMetrics.create):
        registry: CollectorRegistry = create_registry("test")
        RuntimeMetrics.create(registry)
        build(registry)
        for fam in registry.collect():
            base = fam.name
            names.add(base)
            if fam.type == "counter":
                names.add(base + "_total")
            if fam.type == "histogram":
                names.update({base + s for s in ("_bucket", "_sum", "_count")})
    return names


def panel_exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def test_dashboards_are_generated_from_the_builder() -> None:
    """The committed JSON equals what grafana/build_dashboards.py writes (edit the script)."""
    spec = importlib.util.spec_from_file_location("build_dashboards",
                                                  REPO / "grafana/build_dashboards.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rendered = mod.render_all()
    assert set(rendered) == {p.name for p in DASHBOARDS}
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], path.name


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_uses_only_exported_metrics(path: Path) -> None:
    """1. Collect every smsgw_* name in the dashboard's queries.
    2. Each is registered by the runtime or a daemon's metrics module.
    """
    exported = exported_names()
    dash = json.loads(path.read_text())
    used = {m for e in panel_exprs(dash) for m in _METRIC_RE.findall(e)}
    assert used, "no smsgw metric used"
    assert used <= exported, sorted(used - exported)
    assert all(p["datasource"]["uid"] == "smsgw-prometheus" for p in dash["panels"]
               if p["type"] != "row")


def test_overview_covers_the_required_panels() -> None:
    """The overview has the panels the issue lists (by the metric each needs)."""
    dash = json.loads((REPO / "grafana/dashboards/overview.json").read_text())
    text = " ".join(panel_exprs(dash))
    for needed in ("smsgw_queue_messages", "smsgw_queue_oldest_queued_age_seconds",
                   "histogram_quantile", "smsgw_smpp_session_up", "smsgw_smpp_window_in_use",
                   'outcome="throttled"', "smsgw_dlr_received_total",
                   "smsgw_backpressure_rejections_total", "smsgw_possible_duplicates_total"):
        assert needed in text, needed


def test_connector_dashboard_has_the_connector_variable() -> None:
    dash = json.loads((REPO / "grafana/dashboards/connector.json").read_text())
    assert [v["name"] for v in dash["templating"]["list"]] == ["connector"]
    assert all("$connector" in e for e in panel_exprs(dash))


def test_alerts_use_only_exported_metrics() -> None:
    exported = exported_names()
    names = {r["alert"] for r in alert_rules()}
    assert {"SmsgwDaemonDown", "SmsgwQueueOldestAgeHigh", "SmsgwBindDown",
            "SmsgwDeliveryRatioLow", "SmsgwDeadRowsGrowing", "SmsgwOrphanReceiptsGrowing"} <= names
    used = {m for r in alert_rules() for m in _METRIC_RE.findall(r["expr"])}
    assert used <= exported, sorted(used - exported)


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus)")
def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts the alert file."""
    res = subprocess.run(["promtool", "check", "rules", str(ALERTS)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 6 rules found" in res.stdout


@pytest.mark.skipif(shutil.which("promtool") is None,
                    reason="promtool not installed (apt-get install prometheus)")
def test_promtool_check_config(tmp_path: Path) -> None:
    """The compose Prometheus config passes `promtool check config` (rule path made local)."""
    cfg = yaml.safe_load((REPO / "deploy/prometheus/prometheus.yml").read_text())
    cfg["rule_files"] = [str(ALERTS)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    res = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
