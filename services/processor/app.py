"""The processor's composition root: wires the runtime to the processor's workers.

Workers (each returns when `stop` is set; the daemon base drains them within `drain_s`):
- `inbound_loop`: the rules engine's batch loop (`engine.Engine.run_batch`), woken by NOTIFY on
  'smsgw_inbound' (or the `poll_s` fallback, which also picks up retries that came due). While
  outbound is above its high watermark it re-checks the queue snapshot every `queue_stats_s`
  instead of claiming.
- `callbacks_loop`: lease-claimed delivery of the `callbacks` queue (`callbacks.py`), woken by
  NOTIFY on 'smsgw_callbacks'.
- `rules_watch`: NOTIFY on 'smsgw_rules' (sent by the `rules` trigger on every change, and by
  `smsgw rules import`) reloads the rule set at once; each batch also checks the stored rules
  version in its own transaction, so a change applies to the next batch even before the NOTIFY.

Periodic jobs (`jobs.py`), each under an advisory lock and once per period across instances:
the retention move, the MO-fragment timeout, receipt orphaning, flood-counter cleanup; and
re-keying legacy suppression hashes (`shared.domain.suppression.rekey_legacy`, also run at start).
The daemon refuses to start (exit 78) without `[security] server_secret`, which keys them.

SIGHUP reloads the log level, the `[processor]` keys (opt-out lists, flood control,
watermarks, callback limits) and the rules. At drain, the current batch transaction commits or
rolls back (nothing is lost), in-flight callbacks finish within the deadline, and leases still
held are released.
"""

from __future__ import annotations

from typing import Any, Final

import asyncpg

from smsgw.services.processor.callbacks import CallbackDelivery, SecretResolver
from smsgw.services.processor.engine import Engine
from smsgw.services.processor.jobs import processor_jobs
from smsgw.services.processor.metrics import ProcessorMetrics
from smsgw.services.processor.settings import ProcessorSettings
from smsgw.shared.core.aio import sleep_or_stop
from smsgw.shared.domain.suppression import MISSING_SECRET, NumberHasher, rekey_legacy
from smsgw.shared.queue.listener import CHANNELS, Pass
from smsgw.shared.runtime.config import AppConfig
from smsgw.shared.runtime.daemon import Daemon
from smsgw.shared.smpp.fields import TlvCatalog

REKEY_INTERVAL_S: Final = 60.0


def _secret_bytes(config: AppConfig[ProcessorSettings]) -> bytes | None:
    """The server secret, which derives the accounts' callback signing secrets."""
    secret = config.server_secret
    return secret.get_secret_value().encode() if secret is not None else None


def _tlv_catalog(config: AppConfig[ProcessorSettings]) -> TlvCatalog:
    """The TLVs a reply's X-Kannel-Meta-Data may set: SMPP 3.4's and the connectors' `tlvs`."""
    return TlvCatalog(t.definition() for c in config.connectors for t in c.tlvs)


class ProcessorDaemon(Daemon[ProcessorSettings]):
    """`smsgw processor`: rules, replies, campaign entries, opt-outs and callbacks."""

    name = "processor"
    settings_model = ProcessorSettings
    listen_channels = (CHANNELS["inbound"], CHANNELS["callbacks"], CHANNELS["rules"])
    reload_help = "the [processor] keys and the rules (rules also on every `smsgw rules` change)"

    engine: Engine
    callbacks: CallbackDelivery

    @classmethod
    def required_config(cls, config: AppConfig[Any]) -> list[str]:
        """The server secret: it keys the suppression hashes (STOP, replies' recipients)."""
        return [] if config.server_secret else [MISSING_SECRET.format(daemon="processor")]

    async def setup(self) -> None:
        """Build the engine and callback delivery, load the rules, add workers and jobs."""
        pmetrics = ProcessorMetrics.create(self.registry)
        hasher = NumberHasher.from_config(self.config)
        assert hasher is not None  # required_config
        self.engine = Engine(self.pool, self.settings, metrics=pmetrics, hasher=hasher,
                             mo_accounts={c.name: c.system_id for c in self.config.connectors})
        async with self.pool.acquire() as conn:
            await self.engine.ensure_rules(conn)  # rules loaded before READY=1
            await self._rekey(conn)
        self.callbacks = CallbackDelivery(
            self.pool, self.settings.callbacks, owner=self.worker_id,
            allowed_networks=self.config.webhooks.allowed_networks, metrics=pmetrics,
            secrets=SecretResolver(server_secret=_secret_bytes(self.config)),
            poll_s=self.settings.poll_s, hasher=hasher,
            connectors=[c.name for c in self.config.connectors],
            tlvs=_tlv_catalog(self.config))
        await self.callbacks.start()
        # forwarded MO go straight to this process's delivery, leased at insert (no claim),
        # and the inbound batches acknowledge what it delivered (callbacks.ACK_RIDE_S)
        self.engine.forward_lease = self.callbacks
        self.callbacks.acks_ride = True
        self.add_worker("inbound_loop", lambda: self.consume(CHANNELS["inbound"], self._claim_pass))
        self.add_worker("callbacks_loop", self._callbacks_loop)
        self.add_worker("rules_watch", self._rules_watch)
        for spec in processor_jobs(lambda: self.settings, lambda: self.config.retention,
                                   owner=self.worker_id):
            self.add_periodic(spec.name, spec.interval_s, spec.job, mode="session")
        # entries an earlier release wrote during an upgrade: re-keyed within a minute
        self.add_periodic("suppression_rekey", REKEY_INTERVAL_S, self._rekey, mode="session",
                          locked=False)

    async def _rekey(self, conn: asyncpg.Connection) -> None:
        n = await rekey_legacy(conn, self.engine.hasher)
        if n:
            self.log.info("suppressions_rekeyed", entries=n)

    async def _claim_pass(self) -> int | Pass:
        claimed = await self.engine.run_batch()
        if claimed == 0 and self.engine.gate.paused:
            # Paused by the outbound watermark: look at the snapshot again at its own refresh
            # rate (returning 1 keeps the consume loop from waiting for an inbound NOTIFY).
            await sleep_or_stop(self.stop, self.engine.gate.refresh_s)
            return 0 if self.stop.is_set() else 1
        # a short batch with nothing waiting behind it: wait for the next NOTIFY rather than
        # claim again (an empty claim was five round trips per batch at moderate rates)
        return Pass(claimed, self.engine.more)

    async def _callbacks_loop(self) -> None:
        assert self.listener is not None
        await self.callbacks.run(self.stop, self.listener.event(CHANNELS["callbacks"]))

    async def _rules_watch(self) -> None:
        while not self.stop.is_set():
            if not await self.wait_for_work(CHANNELS["rules"], timeout_s=3600.0):
                continue
            try:
                async with self.pool.acquire() as conn:
                    await self.engine.ensure_rules(conn)
            except (TimeoutError, OSError) as exc:  # the next batch reloads anyway
                self.log.warning("rules_reload_failed", error=str(exc)[:200])
            except Exception:  # loop boundary: log and go on (the next batch checks again)
                self.log.exception("rules_reload_failed")

    async def on_reload(self, new: AppConfig[ProcessorSettings]) -> None:
        """SIGHUP: new [processor] keys, a fresh rule set, the callback limits."""
        self.engine.update_settings(new.daemon)
        self.engine.mo_accounts = {c.name: c.system_id for c in new.connectors}
        async with self.pool.acquire() as conn:
            await self.engine.ensure_rules(conn)
        self.callbacks.settings = new.daemon.callbacks
        self.callbacks.set_allowed_networks(new.webhooks.allowed_networks)
        self.callbacks.connectors = frozenset(c.name for c in new.connectors)
        self.callbacks.tlvs = _tlv_catalog(new)

    async def release(self) -> None:
        """After the drain: hand back callback leases still held, close the HTTP session."""
        if hasattr(self, "callbacks"):
            released = await self.callbacks.release()
            if released:
                self.log.info("callbacks_released", count=released)
            await self.callbacks.close()
