"""The sender's metrics, on the per-process registry the composition root passes in.

Names and labels follow docs/ARCHITECTURE.md "Metrics naming" (labels only from the fixed set:
connector, bind, outcome, reason, state, status). Every expected label set is initialised per
connector
by `init_connector`, so `rate()` starts at zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from smsgw.shared.runtime.metrics import Tally

SUBMIT_OUTCOMES = ("ok", "throttled", "rejected", "timeout", "not_sent", "retry")
MESSAGE_OUTCOMES = ("submitted", "rejected", "retry", "dead", "submit_unknown", "expired",
                    "suppressed")
WAIT_REASONS = ("no_bind", "no_route", "quiet_hours", "scheduled", "stopped")
CONNECTOR_STATES = ("running", "stopped", "isolated")  # shared.domain.connector_state
DLR_OUTCOMES = ("matched", "retry", "orphan")


@dataclass(frozen=True, slots=True)
class SenderMetrics:
    """Every metric the sender exports."""

    submits: Counter
    submit_duration: Histogram
    messages: Counter
    possible_duplicates: Counter
    waiting: Counter
    session_up: Gauge
    window_in_use: Gauge
    claimed: Counter
    writeback_batch: Histogram
    dlr_matched: Counter
    dlr_received: Counter
    inbound: Counter
    backpressure: Counter
    connector_state: Gauge
    # the per-message updates (submit results and durations, receipts, outcomes), applied at
    # each scrape (`Tally`)
    tally: Tally
    # labels() children by (metric, label values): labels() validates its arguments and takes a
    # lock on every call (~1.5 µs), and the hot path used it several times per message.
    children: dict[tuple[int, tuple[str, ...]], Any] = field(default_factory=dict)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)` (label values in declaration order), cached."""
        key = (id(metric), values)
        found = self.children.get(key)
        if found is None:
            found = self.children[key] = metric.labels(*values)
        return found

    @classmethod
    def create(cls, registry: CollectorRegistry) -> SenderMetrics:
        """Register the sender's metrics on `registry`."""
        tally = Tally(registry)  # first: it flushes before the metrics below are collected
        return cls(
            tally=tally,
            # One per submit_sm answered or given up, by outcome (ok, throttled, rejected, ...).
            submits=Counter("smsgw_sender_submits_total", "submit_sm results by outcome.",
                            ["connector", "outcome"], registry=registry),
            # Time from writing submit_sm to its submit_sm_resp (window wait excluded).
            submit_duration=Histogram(
                "smsgw_sender_submit_duration_seconds", "submit_sm round trip.",
                ["connector"], registry=registry,
                buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)),
            # Messages leaving the submit stage, by outcome (submitted, rejected, retry, ...).
            messages=Counter("smsgw_sender_messages_total", "MT messages by submit outcome.",
                             ["outcome"], registry=registry),
            # Every submit whose outcome is unknown and that may be sent twice (guarantee 4).
            possible_duplicates=Counter(
                "smsgw_possible_duplicates_total",
                "Submits that may have reached the SMSC twice (no response, lease takeover).",
                ["connector"], registry=registry),
            # Messages put back to wait, by reason (no bound connector, no route, quiet hours,
            # a schedule the connector does not pass to the SMSC).
            waiting=Counter("smsgw_sender_waiting_total",
                            "Claimed messages deferred without an attempt, by reason.",
                            ["reason"], registry=registry),
            # Bound sessions per connector and bind mode (0 when down).
            session_up=Gauge("smsgw_smpp_session_up", "Bound SMPP sessions.",
                             ["connector", "bind"], registry=registry),
            # submit_sm written and not yet answered, per connector.
            window_in_use=Gauge("smsgw_smpp_window_in_use", "Outstanding submit_sm.",
                                ["connector"], registry=registry),
            # Rows leased per claim (fresh and reclaimed).
            claimed=Counter("smsgw_sender_claimed_total", "Outbound rows claimed.",
                            ["outcome"], registry=registry),
            # Messages per write-back statement (batching efficiency).
            writeback_batch=Histogram(
                "smsgw_sender_writeback_batch_rows", "Messages per write-back statement.",
                registry=registry, buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)),
            # Receipts processed by the matcher, by outcome (matched, retry, orphan).
            dlr_matched=Counter("smsgw_dlr_matched_total", "Receipts by matching outcome.",
                                ["outcome"], registry=registry),
            # Receipts stored from this daemon's transceiver binds, by mapped state.
            dlr_received=Counter("smsgw_dlr_received_total", "Delivery receipts received.",
                                 ["connector", "state"], registry=registry),
            # MO stored from this daemon's transceiver binds (same name as the receiver's).
            inbound=Counter("smsgw_inbound_messages_total", "MO messages received.",
                            ["channel", "provider", "outcome"], registry=registry),
            # deliver_sm answered with a transient error instead of being stored.
            backpressure=Counter("smsgw_backpressure_rejections_total",
                                 "Intake refused for backpressure, by reason.", ["reason"],
                                 registry=registry),
            # 1 for the run-time state an operator set (smsgw connectors), 0 for the others.
            connector_state=Gauge("smsgw_connector_state",
                                  "Connector run-time state (1 = current).",
                                  ["connector", "state"], registry=registry),
        )

    def show_state(self, name: str, state: str) -> None:
        """Set `smsgw_connector_state` of one connector to `state`."""
        for s in CONNECTOR_STATES:
            self.connector_state.labels(connector=name, state=s).set(1 if s == state else 0)

    def init_connector(self, name: str, bind: str) -> None:
        """Create every label set of one connector at zero."""
        for outcome in SUBMIT_OUTCOMES:
            self.submits.labels(connector=name, outcome=outcome)
        self.submit_duration.labels(connector=name)
        self.possible_duplicates.labels(connector=name)
        self.session_up.labels(connector=name, bind=bind).set(0)
        self.window_in_use.labels(connector=name).set(0)
        self.show_state(name, "running")

    def init_static(self) -> None:
        """Create the connector-independent label sets at zero."""
        for outcome in MESSAGE_OUTCOMES:
            self.messages.labels(outcome=outcome)
        for reason in WAIT_REASONS:
            self.waiting.labels(reason=reason)
        for outcome in ("fresh", "reclaimed"):
            self.claimed.labels(outcome=outcome)
        for outcome in DLR_OUTCOMES:
            self.dlr_matched.labels(outcome=outcome)
