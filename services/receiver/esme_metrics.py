"""The SMPP server's metrics (on the receiver's registry).

`account` is a label only on the bind gauge, where the number of accounts with SMPP binds is
small; every other series is a total.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge

from smsgw.shared.smpp import pdu as P

_COMMANDS = {c.value: c.name.lower() for c in P.CommandId}


@dataclass(slots=True)
class EsmeMetrics:
    """Every series of the SMPP server."""

    binds: Gauge
    pdus: Counter
    window_in_use: Gauge
    window_full: Counter
    bind_failures: Counter
    refused_connections: Counter
    idle_closed: Counter
    protocol_errors: Counter
    deliveries: Counter
    deliveries_queued: Gauge
    deliveries_oldest: Gauge
    _pdu_children: dict[tuple[int, int], Counter] = field(default_factory=dict)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EsmeMetrics:
        """Register the series on `registry`."""
        return cls(
            binds=Gauge("smsgw_esme_binds", "ESME binds on this receiver, by account and bind "
                        "mode.", ["account", "bind"], registry=registry),
            pdus=Counter("smsgw_esme_pdus_total", "PDUs answered to or received from ESMEs, "
                         "by command and status.", ["command", "status"], registry=registry),
            window_in_use=Gauge("smsgw_esme_window_in_use", "ESME requests waiting for their "
                                "commit (over all binds).", registry=registry),
            window_full=Counter("smsgw_esme_window_full_total", "Requests beyond a bind's "
                                "window, answered ESME_RTHROTTLED.", registry=registry),
            bind_failures=Counter("smsgw_esme_bind_failures_total", "Refused binds, by "
                                  "reason.", ["reason"], registry=registry),
            refused_connections=Counter("smsgw_esme_connections_refused_total",
                                        "Connections closed at once: max_binds reached.",
                                        registry=registry),
            idle_closed=Counter("smsgw_esme_idle_closed_total", "Connections closed for "
                                "silence or for not reading.", registry=registry),
            protocol_errors=Counter("smsgw_esme_protocol_errors_total", "Connections closed "
                                    "for a broken PDU stream.", registry=registry),
            deliveries=Counter("smsgw_esme_deliveries_total", "Receipts and MO for ESMEs, by "
                               "source (receipt, mo) and outcome (delivered, retried, dead, "
                               "expired).", ["source", "outcome"], registry=registry),
            deliveries_queued=Gauge("smsgw_esme_deliveries_queued", "Receipts and MO waiting "
                                    "for an ESME, by source (receipt, mo).", ["source"],
                                    registry=registry),
            deliveries_oldest=Gauge("smsgw_esme_deliveries_oldest_age_seconds", "Age of the "
                                    "oldest receipt or MO waiting for an ESME.", ["source"],
                                    registry=registry),
        )

    def pdu(self, command_id: int, status: int) -> None:
        """Count one PDU by command and status."""
        child = self._pdu_children.get((command_id, status))
        if child is None:
            name = _COMMANDS.get(command_id, "unknown")
            status_label = P.status_name(status).lower()
            if status_label.startswith("0x"):
                status_label = "other"  # any 32-bit value may come back: keep the set small
            child = self.pdus.labels(command=name, status=status_label)
            if len(self._pdu_children) < 1000:
                self._pdu_children[(command_id, status)] = child
        child.inc()

    def bind_failed(self, reason: str) -> None:
        """Count one refused bind."""
        self.bind_failures.labels(reason=reason).inc()
