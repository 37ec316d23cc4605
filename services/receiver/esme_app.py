"""Wires the SMPP server for customer ESMEs into the receiver daemon (`ReceiverDaemon.setup`).

`start_esme(daemon)` builds the ESMEs' MT committer (the API's `flush_mt`, its key window
`dedupe_window_s`), the bind gate with its slots connection, the listener (TLS when configured)
and the delivery worker, and registers with the daemon: the worker (the daemon's `consume`
loop on the queue's NOTIFY channel; a new receiver bind sets that channel's event), the drain
(unbind every ESME after its in-flight requests are answered) and the periodic jobs (delivery
housekeeping under an advisory lock, the queue gauges on every instance). Nothing here runs when
`[receiver.smpp_server] enabled` is false.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from smsgw.services.receiver.esme_binds import BindGate, EsmeSlots
from smsgw.services.receiver.esme_deliver import EsmeDeliverer
from smsgw.services.receiver.esme_metrics import EsmeMetrics
from smsgw.services.receiver.esme_server import EsmeServer
from smsgw.services.receiver.esme_submit import EsmeIntake
from smsgw.services.receiver.options import SmppServerOptions
from smsgw.services.receiver.store import MtItem, MtResult, flush_mt
from smsgw.shared.domain.suppression import NumberHasher
from smsgw.shared.queue.groupcommit import GroupCommitter
from smsgw.shared.queue.listener import CHANNELS

CHANNEL = CHANNELS["esme_deliveries"]
HOUSEKEEPING_LOCK_KEY = 0x736D7367_0016  # 'smsg' + 0x16: esme_deliveries housekeeping
UNBIND_TIMEOUT_S = 2.0


def tls_context(opts: SmppServerOptions) -> ssl.SSLContext | None:
    """The server TLS context of `tls_cert_file`/`tls_key_file` (None without them)."""
    if not opts.tls_cert_file:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(opts.tls_cert_file, opts.tls_key_file)
    return ctx


@dataclass(slots=True)
class EsmeService:
    """What the receiver holds of the SMPP server (for its drain, release and status)."""

    server: EsmeServer
    deliverer: EsmeDeliverer
    committer: GroupCommitter[MtItem, MtResult]
    slots: EsmeSlots
    port: int

    async def close(self, timeout_s: float) -> None:
        """After the drain: flush the committer, free the slots."""
        await self.committer.close(timeout_s)
        await self.slots.close()


async def build_esme(pool: asyncpg.Pool, ctx: Any, opts: SmppServerOptions, *,
                     secret: bytes | None, connect: Callable[[], Awaitable[asyncpg.Connection]],
                     registry: CollectorRegistry, actor: str, owner: str) -> EsmeService:
    """Build the SMPP server's parts over the receiver context `ctx` and start listening on
    `opts.host`:`opts.port` (the caller resolves the default port)."""
    metrics = EsmeMetrics.create(registry)
    options = ctx.options
    hasher = NumberHasher.from_secret(secret) if secret is not None else None
    committer: GroupCommitter[MtItem, MtResult] = GroupCommitter(
        pool, lambda c, items: flush_mt(c, items, ttl_s=opts.dedupe_window_s, hasher=hasher),
        name="outbound_esme", max_batch=options.commit_max_batch,
        max_inflight=options.commit_max_inflight, max_pending=options.intake_max_pending,
        linger_s=options.commit_linger_s, on_commit=ctx.metrics.commit_observer("outbound"),
        transactional=False)
    committer.start()
    server_ref: list[EsmeServer] = []
    slots = EsmeSlots(connect, on_lost=lambda: server_ref[0].close_all() if server_ref else None)
    gate = BindGate(pool, slots, server_secret=secret, options=opts, actor=actor,
                    metrics=metrics)
    intake = EsmeIntake(ctx, opts, committer)
    server = EsmeServer(opts, gate=gate, intake=intake, metrics=metrics,
                        ssl_context=tls_context(opts))
    server_ref.append(server)
    deliverer = EsmeDeliverer(pool, server, opts, owner=owner, metrics=metrics,
                              disabled=intake.disabled)
    server.on_bind = deliverer.wake
    port = await server.start(opts.host, opts.port or 0)
    return EsmeService(server, deliverer, committer, slots, port)


async def start_esme(daemon: Any, secret: bytes | None) -> EsmeService:
    """Start the listener and register the worker and jobs with `daemon` (a ReceiverDaemon
    after its context is built)."""
    opts: SmppServerOptions = daemon.settings.smpp_server
    opts = opts.model_copy(update={"port": opts.resolved_port(daemon.instance)})
    url = daemon.config.database.url
    kwargs = daemon.config.database.connect_kwargs()
    esme = await build_esme(daemon.pool, daemon.ctx, opts, secret=secret,
                            connect=lambda: asyncpg.connect(url, **kwargs),
                            registry=daemon.registry, actor=f"receiver@{daemon.instance}",
                            owner=daemon.worker_id)
    daemon.log.info("esme_server_started", host=opts.host, port=esme.port,
                    tls=opts.tls_cert_file is not None)
    deliverer, server = esme.deliverer, esme.server

    listener = daemon.listener  # started before setup(); the channel is in listen_channels
    assert listener is not None
    deliverer.wake_hook = lambda: listener.event(CHANNEL).set()

    async def run() -> None:
        worker = asyncio.ensure_future(daemon.consume(CHANNEL, deliverer.claim_pass))
        await daemon.stop.wait()
        await server.close(UNBIND_TIMEOUT_S)
        await worker

    daemon.add_worker("esme_server", run)
    daemon.add_periodic("esme_housekeeping", 30.0, deliverer.housekeeping,
                        lock_key=HOUSEKEEPING_LOCK_KEY)
    daemon.add_periodic("esme_gauges", 5.0, deliverer.gauges, locked=False)
    return esme
