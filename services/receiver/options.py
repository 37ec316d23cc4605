"""The receiver's own `[receiver]` keys (the runtime's `DaemonSection` keys come on top).

Kept apart from `settings.py` so the API, intake and admission modules (and their tests) can
take exactly these options as an argument; `ReceiverSettings` inherits them.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from smsgw.shared.runtime.config import ESME_PORT_BASE, RECEIVER_HTTP_PORT_BASE
from smsgw.shared.runtime.http import HttpLimits


class SmppServerOptions(BaseModel):
    """`[receiver.smpp_server]`: the SMPP 3.4 server customer ESMEs bind to (README "SMPP
    server for your customers"; services/receiver/esme_server.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)  # None: 2776 + (instance - 1)
    # SMPP over TLS: both files (PEM) or neither
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    max_binds: int = Field(default=200, ge=1)  # connections on this listener
    account_max_binds: int = Field(default=10, ge=1)  # per account, unless the account says
    window: int = Field(default=100, ge=1, le=10_000)  # outstanding requests per bind
    bind_timeout_s: float = Field(default=10.0, gt=0)  # connect → bind
    idle_timeout_s: float = Field(default=120.0, gt=0)  # nothing received (enquire_link)
    response_timeout_s: float = Field(default=10.0, gt=0)  # deliver_sm → deliver_sm_resp
    pdu_timeout_s: float = Field(default=10.0, gt=0)  # a PDU's first byte → its last
    max_pdu_length: int = Field(default=8192, ge=512, le=70_000)
    # failed binds: after `failed_bind_limit` failures within `failed_bind_window_s` from one
    # address or for one system_id, binds are refused without a lookup; every failure is
    # answered after `failed_bind_delay_s`
    failed_bind_limit: int = Field(default=5, ge=1)
    failed_bind_window_s: float = Field(default=300.0, gt=0)
    failed_bind_delay_s: float = Field(default=1.0, ge=0)
    # a repeated submit with the same user_message_reference and content within this window
    # answers the first one's id
    dedupe_window_s: float = Field(default=3600.0, gt=0)
    data_coding_0: Literal["gsm7", "latin1", "ascii"] = "gsm7"
    # receipts and MO for ESMEs: kept this long while the account has no receiver bind
    delivery_retention_s: float = Field(default=3 * 86400.0, gt=0)
    delivery_window: int = Field(default=10, ge=1, le=1000)  # deliver_sm in flight per bind
    delivery_max_attempts: int = Field(default=10, ge=1)
    delivery_retry_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("TLS needs both tls_cert_file and tls_key_file (or neither)")
        return self

    def resolved_port(self, instance: int) -> int:
        """The listener's port: configured, else 2776 + (instance - 1)."""
        return self.port if self.port is not None else ESME_PORT_BASE + instance - 1


class ReceiverOptions(BaseModel):
    """`[receiver]` keys for the API, intake, group commit and admission control."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # HTTP API site; port None = 8080 + (instance - 1) (0 = any free port, for tests)
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(default=None, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)  # larger bodies → 413
    max_batch: int = Field(default=1000, ge=1)  # messages per POST /v1/messages
    max_parts: int = Field(default=10, ge=1, le=255)  # text longer than this many parts → 422
    max_recipients: int = Field(default=100, ge=1)  # /cgi-bin/sendsms `to` list
    default_country: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    # sendsms: bare digits without a trunk prefix ("4915112345678") are international, as
    # Kannel applications send them; the JSON API always reads them as national numbers
    sendsms_assume_international: bool = True
    client_ref_ttl_s: float = Field(default=86400 * 2, gt=0)  # idempotency keys remembered
    webhook_dedupe_ttl_s: float = Field(default=86400 * 2, gt=0)  # provider ids remembered
    # group commit (shared/queue/groupcommit.py)
    commit_max_batch: int = Field(default=1000, ge=1)
    commit_max_inflight: int = Field(default=2, ge=1)
    commit_linger_s: float = Field(default=0.0, ge=0)  # measured: lingering lost throughput
    intake_max_pending: int = Field(default=20000, ge=1)
    # admission control: each intake checks its own queue's snapshot (queue_stats). The
    # snapshot counts at most 100,000 rows per queue (shared.queue.store.refresh_queue_stats),
    # so a watermark must stay below that to ever trigger.
    outbound_high_watermark: int = Field(default=50_000, ge=1, lt=100_000)
    inbound_high_watermark: int = Field(default=50_000, ge=1, lt=100_000)
    receipts_high_watermark: int = Field(default=90_000, ge=1, lt=100_000)
    # fairness (services/receiver/admission.py): the MT watermark counts DUE rows only
    # (scheduled ones do not), and one account may hold at most its share of it:
    # `account_high_watermark` when set, else max(outbound_high_watermark // (n + 1),
    # account_watermark_floor) where n = accounts with due MTs (the +1 keeps room for one more)
    account_high_watermark: int | None = Field(default=None, ge=1, lt=100_000)
    account_watermark_floor: int = Field(default=1000, ge=1)
    # oldest queued row older than this → 503. Off for outbound by default: scheduled MTs
    # (send_at) and MTs waiting out a retry backoff sit in `queued` legitimately for long.
    inbound_max_queued_age_s: float | None = Field(default=900, gt=0)
    outbound_max_queued_age_s: float | None = Field(default=None, gt=0)
    stats_read_s: float = Field(default=0.25, gt=0)  # how often the snapshot is re-read
    retry_after_s: int = Field(default=2, ge=1)
    # accounts
    # a revoked key or a disabled account is refused within this (at most 5 s)
    auth_cache_s: float = Field(default=5.0, ge=0, le=5.0)
    # messages/s of an account without its own rate (`smsgw accounts update NAME --rate`);
    # 0 = no limit for such accounts
    default_account_rate: float = Field(default=50.0, ge=0)
    ratelimit_sync_s: float = Field(default=0.2, gt=0)
    # SMPP receiver (rx) binds and the per-connector transient error for deliver_sm_resp
    smpp_binds: bool = True
    # a fragment re-sent within this window after its message was reassembled (same content)
    # is a duplicate, not the start of a new message
    mo_fragment_replay_s: float = Field(default=120, gt=0)
    # the SMPP server for customer ESMEs
    smpp_server: SmppServerOptions = Field(default_factory=SmppServerOptions)

    # slow and idle clients on the API site (shared/runtime/http.py): a request's head must
    # arrive within http_header_timeout_s of the connection (or of its first byte), its body
    # within http_body_timeout_s of the head; an idle keep-alive connection is closed after
    # http_keepalive_s; connections beyond http_max_connections get 503 and are closed
    http_header_timeout_s: float = Field(default=10.0, gt=0)
    http_body_timeout_s: float = Field(default=30.0, gt=0)
    http_keepalive_s: float = Field(default=15.0, gt=0)
    http_max_connections: int = Field(default=1000, ge=1)
    # POST /v1/messages and /cgi-bin/sendsms served by a lean HTTP/1.1 front under the same
    # limits (shared/runtime/fasthttp.py), every other request by aiohttp; false: all aiohttp
    http_fast_path: bool = True

    def http_limits(self) -> HttpLimits:
        """The API site's `HttpLimits`."""
        return HttpLimits(header_timeout_s=self.http_header_timeout_s,
                          body_timeout_s=self.http_body_timeout_s,
                          keepalive_s=self.http_keepalive_s,
                          max_connections=self.http_max_connections)

    def resolved_http_port(self, instance: int) -> int:
        """The API port: configured, else 8080 + (instance - 1)."""
        if self.http_port is not None:
            return self.http_port
        return RECEIVER_HTTP_PORT_BASE + instance - 1
