"""Write grafana/dashboards/overview.json and connector.json.

Run: python grafana/build_dashboards.py

The dashboards are generated so that every panel follows the same conventions (datasource uid,
`$__rate_interval`, units) and use only metric names the daemons export (docs/ARCHITECTURE.md
"Metrics naming": keep the metric list and the dashboards in the same change).
tests/ops/test_dashboards.py checks the
committed JSON is what this script writes, and the opt-in Prometheus test runs every query.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DS = {"type": "prometheus", "uid": "smsgw-prometheus"}
RI = "$__rate_interval"
FINAL_STATES = "delivered|undeliverable|expired|rejected|unknown_receipt"
OUT = Path(__file__).resolve().parent / "dashboards"


class Grid:
    """Lays panels out left to right, 24 columns wide."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_h = 0
        self.next_id = 1

    def place(self, w: int, h: int) -> dict[str, int]:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def panel(grid: Grid, title: str, targets: list[tuple[str, str]], *, unit: str = "short",
          kind: str = "timeseries", w: int = 12, h: int = 8, description: str = "",
          stack: bool = False, minmax: tuple[float, float] | None = None) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": unit}
    if minmax:
        defaults["min"], defaults["max"] = minmax
    if kind == "timeseries":
        defaults["custom"] = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10,
                              "showPoints": "never",
                              "stacking": {"mode": "normal" if stack else "none"}}
    return {
        "id": grid.new_id(), "type": kind, "title": title, "description": description,
        "datasource": DS, "gridPos": grid.place(w, h),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right",
                               "calcs": ["lastNotNull", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}} if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
              "colorMode": "value", "graphMode": "area", "textMode": "auto"},
        "targets": [target(e, leg, chr(ord("A") + i)) for i, (e, leg) in enumerate(targets)],
    }


def row(grid: Grid, title: str) -> dict[str, Any]:
    grid.x, grid.y, grid.row_h = 0, grid.y + grid.row_h, 0
    pos = grid.place(24, 1)
    grid.x, grid.y, grid.row_h = 0, grid.y + 1, 0
    return {"id": grid.new_id(), "type": "row", "title": title, "collapsed": False,
            "gridPos": pos, "panels": []}


def quantiles(metric: str, by: str = "", sel: str = "") -> list[tuple[str, str]]:
    group = f"le, {by}" if by else "le"
    legend = f"p{{q}} {{{{{by}}}}}" if by else "p{q}"
    return [(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket{sel}[{RI}])))",
             legend.format(q=int(q * 100))) for q in (0.5, 0.95, 0.99)]


def dashboard(uid: str, title: str, panels: list[dict[str, Any]],
              variables: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "uid": uid, "title": title, "tags": ["smsgw"], "timezone": "utc",
        "schemaVersion": 39, "version": 1, "editable": False, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"}, "graphTooltip": 1,
        "templating": {"list": variables or []}, "annotations": {"list": []},
        "links": [], "panels": panels,
    }


def overview() -> dict[str, Any]:
    g = Grid()
    p: list[dict[str, Any]] = [row(g, "Throughput")]
    p.append(panel(g, "Messages per second by stage", [
        (f'sum(rate(smsgw_receiver_mt_messages_total{{outcome="accepted"}}[{RI}]))',
         "MT accepted (API)"),
        (f'sum(rate(smsgw_inbound_messages_total{{outcome="accepted"}}[{RI}]))', "MO received"),
        (f"sum(rate(smsgw_processor_messages_total[{RI}]))", "MO processed"),
        (f'sum(rate(smsgw_sender_submits_total{{outcome="ok"}}[{RI}]))', "parts submitted"),
        (f"sum(rate(smsgw_dlr_received_total[{RI}]))", "receipts"),
        (f'sum(rate(smsgw_callbacks_total{{outcome="done"}}[{RI}]))', "callbacks delivered"),
    ], unit="reqps", w=24, description="Each stage's rate: intake, processor, submit, receipts, "
                                      "callbacks. A gap between two lines is a queue growing."))
    p.append(row(g, "Queues"))
    p.append(panel(g, "Queue depth", [
        ("sum by (queue, status) (smsgw_queue_messages)", "{{queue}} {{status}}")],
        description="Rows per queue and status (snapshot refreshed by the daemons)."))
    p.append(panel(g, "Oldest queued row", [
        ("max by (queue) (smsgw_queue_oldest_queued_age_seconds)", "{{queue}}")], unit="s",
        description="Alert SmsgwQueueOldestAgeHigh fires above 5 minutes."))
    p.append(row(g, "Latency"))
    p.append(panel(g, "Stage latency: submit_sm round trip",
                   quantiles("smsgw_sender_submit_duration_seconds"), unit="s", w=8))
    p.append(panel(g, "Stage latency: processor batch",
                   quantiles("smsgw_processor_batch_duration_seconds"), unit="s", w=8))
    p.append(panel(g, "Stage latency: intake commit",
                   quantiles("smsgw_receiver_commit_duration_seconds", "queue"), unit="s", w=8))
    p.append(panel(g, "Stage latency: API request (202 after commit)",
                   quantiles("smsgw_receiver_request_duration_seconds", "source"), unit="s",
                   w=12))
    p.append(panel(g, "Callback delivery", quantiles("smsgw_callback_duration_seconds"),
                   unit="s", w=12))
    p.append(row(g, "SMPP"))
    p.append(panel(g, "Binds up", [
        ("sum by (connector, bind) (smsgw_smpp_session_up)", "{{connector}} {{bind}}")], w=8,
        description="Bound sessions per connector and bind type. 0 = SmsgwBindDown."))
    p.append(panel(g, "Window in use", [
        ("sum by (connector) (smsgw_smpp_window_in_use)", "{{connector}}")], w=8))
    p.append(panel(g, "Throttling (submit_sm answered THROTTLED)", [
        (f'sum by (connector) (rate(smsgw_sender_submits_total{{outcome="throttled"}}[{RI}]))',
         "{{connector}}")], unit="reqps", w=8))
    p.append(row(g, "Customers' ESMEs (the receivers' SMPP server)"))
    p.append(panel(g, "ESME binds", [
        ("sum by (account, bind) (smsgw_esme_binds) or on() vector(0)",
         "{{account}} {{bind}}")], w=6,
        description="Customers' ESMEs bound to the receivers, per account and bind mode."))
    p.append(panel(g, "ESME requests waiting for their commit", [
        ("sum(smsgw_esme_window_in_use)", "in flight")], w=6,
        description="submit_sm and friends accepted into a bind's window, not yet answered."))
    p.append(panel(g, "Receipts and MO waiting for ESMEs", [
        ("sum by (source) (smsgw_esme_deliveries_queued)", "{{source}}")], w=6,
        description="Rows of esme_deliveries queued or in flight; they wait while the "
                    "account has no receiver bind."))
    p.append(panel(g, "Oldest receipt or MO waiting for an ESME", [
        ("max by (source) (smsgw_esme_deliveries_oldest_age_seconds)", "{{source}}")],
        unit="s", w=6, description="Expired after [receiver.smpp_server] "
                                   "delivery_retention_s."))
    p.append(panel(g, "Deliveries to ESMEs", [
        (f"sum by (source, outcome) (rate(smsgw_esme_deliveries_total[{RI}]))",
         "{{source}} {{outcome}}")], unit="reqps", w=24))
    p.append(row(g, "Delivery"))
    p.append(panel(g, "Receipt states", [
        (f"sum by (state) (rate(smsgw_dlr_received_total[{RI}]))", "{{state}}")],
        unit="reqps", stack=True, w=8))
    p.append(panel(g, "Delivery ratio", [
        (f'(sum by (connector) (rate(smsgw_dlr_received_total{{state="delivered"}}[{RI}])) '
         f'or sum by (connector) (rate(smsgw_dlr_received_total{{state=~"{FINAL_STATES}"}}'
         f'[{RI}])) * 0) / sum by (connector) (rate(smsgw_dlr_received_total'
         f'{{state=~"{FINAL_STATES}"}}[{RI}]))', "{{connector}}")],
        unit="percentunit", minmax=(0, 1), w=8,
        description="Delivered among final receipts, per connector."))
    p.append(panel(g, "Receipt matching", [
        (f"sum by (outcome) (rate(smsgw_dlr_matched_total[{RI}]))", "{{outcome}}")],
        unit="reqps", w=8, description="orphan = no submitted part matched within the window."))
    p.append(row(g, "Errors and protection"))
    p.append(panel(g, "Errors", [
        (f'sum by (outcome) (rate(smsgw_sender_messages_total{{outcome=~"rejected|dead|'
         f'submit_unknown|expired"}}[{RI}]))', "MT {{outcome}}"),
        (f'sum by (outcome) (rate(smsgw_processor_messages_total{{outcome=~"failed|dead"}}'
         f'[{RI}]))', "MO {{outcome}}"),
        (f'sum by (kind, outcome) (rate(smsgw_callbacks_total{{outcome=~"dead|refused"}}'
         f'[{RI}]))', "callback {{kind}} {{outcome}}"),
        (f"sum by (reason) (rate(smsgw_receiver_requests_rejected_total[{RI}]))",
         "HTTP 4xx {{reason}}"),
    ], unit="reqps", w=8))
    p.append(panel(g, "Backpressure rejections", [
        (f"sum by (reason) (rate(smsgw_backpressure_rejections_total[{RI}]))", "{{reason}}"),
        ("max(smsgw_processor_paused)", "processor paused (outbound watermark)"),
    ], w=8, description="503/transient SMPP answers asking peers to retry later."))
    p.append(panel(g, "Possible duplicates", [
        ("sum by (connector) (increase(smsgw_possible_duplicates_total[1h]))",
         "{{connector}}")], w=8, description="Submits whose outcome was unknown and that may "
                                             "have reached the SMSC twice (guarantee 4)."))
    p.append(row(g, "Daemons"))
    p.append(panel(g, "Daemons up", [('up{job=~"smsgw-.*"}', "{{job}} {{instance}}")],
                   kind="stat", w=12, h=5))
    p.append(panel(g, "Config reloads", [
        ("sum by (outcome) (increase(smsgw_config_reloads_total[1h]))", "{{outcome}}")],
        kind="stat", w=12, h=5))
    return dashboard("smsgw-overview", "smsgw overview", p)


def connector() -> dict[str, Any]:
    g = Grid()
    c = '{connector="$connector"}'
    var = {
        "name": "connector", "label": "connector", "type": "query", "datasource": DS,
        "query": {"query": "label_values(smsgw_smpp_session_up, connector)",
                  "refId": "connector"},
        "definition": "label_values(smsgw_smpp_session_up, connector)",
        "refresh": 2, "includeAll": False, "multi": False, "sort": 1,
    }
    p = [
        panel(g, "Run-time state", [
            (f"max by (state) (smsgw_connector_state{c}) == 1", "{{state}}")],
            kind="stat", w=24, h=4,
            description="What an operator set with `smsgw connectors stop|start|isolate` "
                        "(running, stopped, isolated), as every sender and receiver applies "
                        "it."),
        panel(g, "Binds up", [(f"sum by (bind, job, instance) (smsgw_smpp_session_up{c})",
                               "{{bind}} {{job}} {{instance}}")], w=8),
        panel(g, "Window in use", [(f"sum by (job, instance) (smsgw_smpp_window_in_use{c})",
                                    "{{job}} {{instance}}")], w=8),
        panel(g, "Possible duplicates (1h)", [
            (f"sum(increase(smsgw_possible_duplicates_total{c}[1h]))", "possible duplicates")],
            kind="stat", w=8),
        panel(g, "submit_sm results", [
            (f"sum by (outcome) (rate(smsgw_sender_submits_total{c}[{RI}]))", "{{outcome}}")],
            unit="reqps", stack=True),
        panel(g, "submit_sm round trip",
              quantiles("smsgw_sender_submit_duration_seconds", sel=c), unit="s"),
        panel(g, "Receipt states", [
            (f"sum by (state) (rate(smsgw_dlr_received_total{c}[{RI}]))", "{{state}}")],
            unit="reqps", stack=True),
        panel(g, "Delivery ratio", [
            (f'(sum(rate(smsgw_dlr_received_total{{connector="$connector",state="delivered"}}'
             f'[{RI}])) or sum(rate(smsgw_dlr_received_total{{connector="$connector",'
             f'state=~"{FINAL_STATES}"}}[{RI}])) * 0) / sum(rate(smsgw_dlr_received_total'
             f'{{connector="$connector",state=~"{FINAL_STATES}"}}[{RI}]))', "delivered")],
            unit="percentunit", minmax=(0, 1)),
        panel(g, "Throttled submits", [
            (f'sum(rate(smsgw_sender_submits_total{{connector="$connector",'
             f'outcome="throttled"}}[{RI}]))', "throttled")], unit="reqps"),
        panel(g, "MO received on this connector", [
            (f'sum by (outcome) (rate(smsgw_inbound_messages_total{{channel="smpp",'
             f'provider="$connector"}}[{RI}]))', "{{outcome}}")], unit="reqps"),
    ]
    return dashboard("smsgw-connector", "smsgw connector", p, [var])


def render_all() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(fn(), indent=2) + "\n"
            for name, fn in (("overview.json", overview), ("connector.json", connector))}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render_all().items():
        (OUT / name).write_text(text)
        sys.stdout.write(f"wrote {OUT / name}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
