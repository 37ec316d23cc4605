"""The processor's metrics, on the per-process registry the composition root builds.

Labels come from fixed code sets only (outcome, kind, reason, job): never a number, a rule name
or an exception text. Every expected label set is initialised so `rate()` starts at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

MESSAGE_OUTCOMES = ("applied", "no_rule", "optout", "flooded", "over_quota", "failed", "retried",
                    "dead")
CALLBACK_OUTCOMES = ("done", "retried", "dead", "refused")
CALLBACK_KINDS = ("mo", "status")
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 200, 300, 500, 1000)
DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass(frozen=True, slots=True)
class ProcessorMetrics:
    """Counters, gauges and histograms of the processor daemon."""

    messages: Counter
    batch_rows: Histogram
    batch_duration: Histogram
    batch_failures: Counter
    replies: Counter
    paused: Gauge
    rules_loaded: Gauge
    rules_reloads: Counter
    callbacks: Counter
    callback_duration: Histogram
    callbacks_in_flight: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ProcessorMetrics:
        """Register the processor metrics on `registry` and initialise their label sets."""
        m = cls(
            # inbound messages by what the processor did with them
            messages=Counter("smsgw_processor_messages_total",
                             "Inbound messages processed, by outcome.", ["outcome"],
                             registry=registry),
            # rows per batch transaction (batching is what makes the processor cheap)
            batch_rows=Histogram("smsgw_processor_batch_rows", "Inbound rows per batch.",
                                 buckets=BATCH_BUCKETS, registry=registry),
            # wall time of one batch transaction, claim to commit
            batch_duration=Histogram("smsgw_processor_batch_duration_seconds",
                                     "Duration of one batch transaction.",
                                     buckets=DURATION_BUCKETS, registry=registry),
            # batches that failed and were re-run one message at a time
            batch_failures=Counter("smsgw_processor_batch_failures_total",
                                   "Batch transactions rolled back and re-run per message.",
                                   registry=registry),
            # MT replies written to outbound, by category (transactional|marketing)
            replies=Counter("smsgw_processor_replies_total", "Replies queued to outbound.",
                            ["category"], registry=registry),
            # 1 while claiming is paused because outbound is above its high watermark
            paused=Gauge("smsgw_processor_paused", "1 while paused by the outbound watermark.",
                         registry=registry),
            # enabled rules currently loaded
            rules_loaded=Gauge("smsgw_processor_rules", "Enabled rules loaded.",
                               registry=registry),
            # rule set reloads (NOTIFY, SIGHUP or a version change seen in a batch)
            rules_reloads=Counter("smsgw_processor_rules_reloads_total",
                                  "Rule set reloads by outcome.", ["outcome"],
                                  registry=registry),
            # callback deliveries to applications by kind (mo|status) and outcome
            callbacks=Counter("smsgw_callbacks_total", "Callback delivery attempts by outcome.",
                              ["kind", "outcome"], registry=registry),
            # HTTP round trip of one callback attempt
            callback_duration=Histogram("smsgw_callback_duration_seconds",
                                        "Duration of one callback HTTP attempt.",
                                        buckets=DURATION_BUCKETS, registry=registry),
            # callbacks leased and not yet written back
            callbacks_in_flight=Gauge("smsgw_callbacks_in_flight",
                                      "Callbacks being delivered now.", registry=registry),
        )
        for outcome in MESSAGE_OUTCOMES:
            m.messages.labels(outcome=outcome)
        for kind in CALLBACK_KINDS:
            for outcome in CALLBACK_OUTCOMES:
                m.callbacks.labels(kind=kind, outcome=outcome)
        for category in ("transactional", "marketing"):
            m.replies.labels(category=category)
        for outcome in ("ok", "failed"):
            m.rules_reloads.labels(outcome=outcome)
        return m
