"""The receiver's metrics, on the per-process registry (names and labels: docs/ARCHITECTURE.md
"Metrics naming").

`ReceiverMetrics` also implements `shared.domain.intake.IntakeObserver`, so SMPP intake and the HTTP
handlers count into the same series.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from smsgw.shared.runtime.metrics import Tally

# Rows per group commit: 1, 2, 4 … 2048 (a mean near 1 under load means no coalescing).
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

QUEUES = ("outbound", "inbound", "receipts")
REASONS = ("outbound_watermark", "outbound_age", "inbound_watermark", "inbound_age",
           "receipts_watermark", "database_unavailable", "intake_full")


@dataclass(frozen=True, slots=True)
class ReceiverMetrics:
    """Every series the receiver exports (besides the runtime's)."""

    mt_messages: Counter
    inbound_messages: Counter
    dlr_received: Counter
    backpressure_rejections: Counter
    requests_rejected: Counter
    commit_batch_rows: Histogram
    commit_duration: Histogram
    request_duration: Histogram
    smpp_session_up: Gauge
    connector_state: Gauge
    # pre-resolved children for the hot path (labels() costs a lock and a dict lookup)
    mt_children: dict[tuple[str, str], Counter]
    duration_children: dict[str, Histogram]
    # the per-request updates (MT outcome, request duration), applied at each scrape
    tally: Tally

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ReceiverMetrics:
        """Register the receiver's metrics on `registry` and initialise the known labels."""
        tally = Tally(registry)  # first: it flushes before the metrics below are collected
        m = cls(
            # MTs taken by the API or sendsms: outcome accepted|duplicate|conflict
            mt_messages=Counter("smsgw_receiver_mt_messages_total",
                                "MT messages received, by source and outcome.",
                                ["source", "outcome"], registry=registry),
            # MO taken (webhook or SMPP): outcome accepted|duplicate|rejected
            inbound_messages=Counter("smsgw_inbound_messages_total",
                                     "MO messages received, by channel, provider and outcome.",
                                     ["channel", "provider", "outcome"], registry=registry),
            # receipts stored for matching, by connector and mapped state
            dlr_received=Counter("smsgw_dlr_received_total",
                                 "Delivery receipts received, by connector and state.",
                                 ["connector", "state"], registry=registry),
            # refused with 503 / a transient SMPP status to make the peer retry
            backpressure_rejections=Counter(
                "smsgw_backpressure_rejections_total",
                "Intake refused because of a watermark, a full buffer or the database.",
                ["reason"], registry=registry),
            # 4xx answers: reason validation|unauthorized|rate_limited|too_large|not_found|…
            requests_rejected=Counter("smsgw_receiver_requests_rejected_total",
                                      "HTTP requests refused with a 4xx, by reason.",
                                      ["reason"], registry=registry),
            # rows written per group-commit transaction, per queue
            commit_batch_rows=Histogram("smsgw_receiver_commit_batch_rows",
                                        "Rows per group-commit transaction (one INSERT each).",
                                        ["queue"], buckets=_BATCH_BUCKETS, registry=registry),
            # time from taking a batch to its commit, per queue
            commit_duration=Histogram("smsgw_receiver_commit_duration_seconds",
                                      "Group-commit flush time (insert + commit).", ["queue"],
                                      buckets=_LATENCY_BUCKETS, registry=registry),
            # end-to-end handler time, per source (api|sendsms|twilio|vonage|generic)
            request_duration=Histogram("smsgw_receiver_request_duration_seconds",
                                       "HTTP intake request duration.", ["source"],
                                       buckets=_LATENCY_BUCKETS, registry=registry),
            # bound rx sessions per connector (the sender exports its tx/trx binds)
            smpp_session_up=Gauge("smsgw_smpp_session_up",
                                  "Bound SMPP sessions of this daemon, by connector and bind.",
                                  ["connector", "bind"], registry=registry),
            # 1 for the run-time state of each rx connector (smsgw connectors), else 0
            connector_state=Gauge("smsgw_connector_state",
                                  "Connector run-time state (1 = current).",
                                  ["connector", "state"], registry=registry),
            mt_children={}, duration_children={}, tally=tally,
        )
        for reason in REASONS:
            m.backpressure_rejections.labels(reason=reason)
        for source in ("api", "sendsms"):
            for outcome in ("accepted", "duplicate", "conflict"):
                m.mt_children[(source, outcome)] = m.mt_messages.labels(source=source,
                                                                        outcome=outcome)
        for source in ("api", "sendsms", "twilio", "vonage", "generic"):
            m.duration_children[source] = m.request_duration.labels(source=source)
        # provider webhooks (services/receiver/webhooks.py): stored, redelivered, refused with
        # a 4xx, stored with a number in a format the provider should not have sent
        for provider in ("twilio", "vonage", "generic"):
            for outcome in ("accepted", "duplicate", "rejected", "number_unparsed"):
                m.inbound_messages.labels(channel="http", provider=provider, outcome=outcome)
        return m

    def show_state(self, connector: str, state: str) -> None:
        """Set `smsgw_connector_state` of one rx connector to `state`."""
        for s in ("running", "stopped", "isolated"):
            self.connector_state.labels(connector=connector, state=s).set(int(s == state))

    def mt(self, source: str, outcome: str, n: int = 1) -> None:
        """Count MTs taken by `source` with `outcome`."""
        self.tally.inc(self.mt_children[(source, outcome)], n)

    def duration(self, source: str, seconds: float) -> None:
        """Observe one intake request's duration."""
        self.tally.observe(self.duration_children[source], seconds)

    def commit_observer(self, queue: str):  # type: ignore[no-untyped-def]
        """An `on_commit(rows, seconds)` callback for the group committer of `queue`."""
        rows = self.commit_batch_rows.labels(queue=queue)
        duration = self.commit_duration.labels(queue=queue)

        def observe(n: int, seconds: float) -> None:
            rows.observe(n)
            duration.observe(seconds)
        return observe

    # -- shared.domain.intake.IntakeObserver ---------------------------------------------------

    def mo(self, channel: str, provider: str, outcome: str) -> None:
        """Count one MO by channel, provider and outcome."""
        self.inbound_messages.labels(channel=channel, provider=provider, outcome=outcome).inc()

    def receipt(self, connector: str, state: str) -> None:
        """Count one stored receipt."""
        self.dlr_received.labels(connector=connector, state=state).inc()

    def rejected(self, reason: str) -> None:
        """Count one backpressure rejection."""
        self.backpressure_rejections.labels(reason=reason).inc()
