"""What the receiver's handlers need, built once by the composition root and passed down.

`ReceiverContext` holds the pool, the options, the group committers, admission control, the
authenticator, the rate limiter and the metrics. Handlers read it through `CONTEXT`
(`web.AppKey`). `options` and `webhooks` are swapped together on SIGHUP (`reload`); everything
else lives as long as the daemon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import SecretBytes, SecretStr

from smsgw.services.receiver.admission import Admission
from smsgw.services.receiver.auth import Authenticator
from smsgw.services.receiver.metrics import ReceiverMetrics
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.services.receiver.ratelimit import AccountRateLimiter
from smsgw.services.receiver.store import MtItem, MtResult, flush_mt
from smsgw.shared.domain.intake import (
    DeliverIntake,
    FragmentWrite,
    InboundResult,
    InboundWrite,
    ReceiptWrite,
    flush_inbound,
    flush_receipts,
)
from smsgw.shared.domain.reports import MAX_RANGE_DAYS
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.runtime.config import WebhooksSettings
from smsgw.shared.smpp.connector import ConnectorSettings
from smsgw.shared.smpp.fields import TlvCatalog


@dataclass(slots=True, eq=False)
class ReceiverContext:
    """The receiver's runtime objects (see the module docstring)."""

    pool: asyncpg.Pool
    options: ReceiverOptions
    webhooks: WebhooksSettings
    auth: Authenticator
    ratelimit: AccountRateLimiter
    admission: Admission
    metrics: ReceiverMetrics
    mt: GroupCommitter[MtItem, MtResult]
    inbound: GroupCommitter[InboundWrite | FragmentWrite, InboundResult]
    receipts: GroupCommitter[ReceiptWrite, int]
    intake: DeliverIntake
    clock: Callable[[], float] = time.time
    extra: dict[str, Any] = field(default_factory=dict)
    connectors: frozenset[str] = frozenset()  # `[[connectors]]` names a client may force
    # the TLVs clients may set (SMPP 3.4's, the connectors' `tlvs`), and the connectors that
    # pass a schedule to the SMSC (`schedule_mode = "send"`): their scheduled MTs are due now
    tlvs: TlvCatalog = field(default_factory=TlvCatalog)
    schedule_send: frozenset[str] = frozenset()
    # the longest range a report request may span: `[reporter] max_range_days` as the config
    # file and environment give it (the receiver's API checks it at request time)
    report_max_range_days: int = MAX_RANGE_DAYS

    def reload(self, options: ReceiverOptions, webhooks: WebhooksSettings,
               connectors: Iterable[str | ConnectorSettings] | None = None) -> None:
        """Apply reloaded options (watermarks, limits) and webhook settings as a unit; with
        `connectors`, what clients may force and set follows the reloaded `[[connectors]]`
        (a connector a SIGHUP added may be forced at once, a removed one no more)."""
        self.options = options
        self.webhooks = webhooks
        self.admission.update_options(options)
        if connectors is not None:
            self.connectors, self.tlvs, self.schedule_send = connector_views(connectors)

    async def close(self, timeout_s: float = 10.0) -> None:
        """Flush what the committers hold (callers get their answers), then stop them."""
        for committer in (self.mt, self.inbound, self.receipts):
            await committer.close(timeout_s)


CONTEXT = web.AppKey("receiver_context", ReceiverContext)


def build_context(pool: asyncpg.Pool, options: ReceiverOptions, webhooks: WebhooksSettings, *,
                  server_secret: SecretBytes | SecretStr | bytes | None,
                  registry: CollectorRegistry | None = None,
                  metrics: ReceiverMetrics | None = None,
                  clock: Callable[[], float] = time.time,
                  connectors: Iterable[str | ConnectorSettings] = (),
                  adaptive_linger_s: float = 0.0) -> ReceiverContext:
    """Create the context and start its group committers (call inside the running loop).

    `server_secret` is kept as `SecretBytes` (printed as `**********`) and unwrapped only for
    the HMAC. None (not configured) leaves the API keys uncheckable: every bearer key
    and sendsms password is refused with 401/403; webhooks and SMPP intake still work.
    """
    metrics = metrics or ReceiverMetrics.create(registry or CollectorRegistry())
    names, tlvs, schedule_send = connector_views(connectors)
    admission = Admission(options)

    def committer(name: str, flush: Any, transactional: bool) -> GroupCommitter[Any, Any]:
        return GroupCommitter(pool, flush, name=name, max_batch=options.commit_max_batch,
                              max_inflight=options.commit_max_inflight,
                              max_pending=options.intake_max_pending,
                              linger_s=options.commit_linger_s,
                              on_commit=metrics.commit_observer(name),
                              transactional=transactional,
                              adaptive_linger_s=adaptive_linger_s)

    # flush_mt, flush_inbound and flush_receipts open a transaction only when a batch needs
    # several statements (one autocommitted statement saves the BEGIN/COMMIT round trips).
    # every MT row carries its recipient's keyed hash, which the sender's suppression check
    # compares (shared/domain/suppression.py); without a server secret the sender computes it
    hasher = None if server_secret is None else NumberHasher.from_secret(
        server_secret if isinstance(server_secret, bytes) else server_secret.get_secret_value())
    mt = committer("outbound", lambda c, items: flush_mt(c, items,
                                                         ttl_s=options.client_ref_ttl_s,
                                                         hasher=hasher),
                   transactional=False)
    inbound = committer("inbound", lambda c, items: flush_inbound(
        c, items, ttl_s=options.webhook_dedupe_ttl_s,
        replay_window_s=options.mo_fragment_replay_s), transactional=False)
    receipts = committer("receipts", flush_receipts, transactional=False)
    for c in (mt, inbound, receipts):
        c.start()
    intake = DeliverIntake(inbound=inbound, receipts=receipts, admit=admission.check,
                           observer=metrics)
    return ReceiverContext(
        pool=pool, options=options, webhooks=webhooks,
        auth=Authenticator(pool, server_secret, cache_s=options.auth_cache_s),
        ratelimit=AccountRateLimiter(pool, clock=clock), admission=admission, metrics=metrics,
        mt=mt, inbound=inbound, receipts=receipts, intake=intake, clock=clock,
        connectors=names, tlvs=tlvs, schedule_send=schedule_send)


def connector_views(connectors: Iterable[str | ConnectorSettings],
                    ) -> tuple[frozenset[str], TlvCatalog, frozenset[str]]:
    """What the intake needs of `[[connectors]]`: the names a client may force, the TLV
    catalogue, the connectors that pass schedules to the SMSC."""
    given = list(connectors)
    settings = [c for c in given if isinstance(c, ConnectorSettings)]
    return (frozenset(c.name if isinstance(c, ConnectorSettings) else c for c in given),
            TlvCatalog(t.definition() for c in settings for t in c.tlvs),
            frozenset(c.name for c in settings if c.schedule_mode == "send"))
