"""The receiver's composition root: wires the runtime to the API, webhooks and SMPP intake.

`shared.runtime.daemon.Daemon` opens the pool, the health/metrics site and the periodic queue_stats
refresh; `setup()` adds the receiver's parts in dependency order:

1. the metrics and the `ReceiverContext` (group committers started on the open pool);
2. periodic jobs: re-read the queue snapshot for admission control, sync the account rate
   counts across instances (neither needs a lock: every instance does both);
3. the API site on `http_host:http_port` (8080 + instance - 1 by default), before READY=1;
4. the SMPP rx binds of connectors with `bind_mode = "receiver"` (a worker; an SMSC that is
   down does not delay READY=1); they follow SIGHUP (connectors added, removed, rebound) and
   `smsgw connectors stop|start` (the LISTEN channel `smsgw_connectors`) without a restart.

Drain (SIGTERM): the runtime closes the API site first (in-flight requests finish: each waits
for its commit), the rx binds unbind after their deliver_sm handlers have committed and
answered, then `release()` flushes and stops the committers while the pool is still open.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from smsgw.services.receiver.context import ReceiverContext, build_context
from smsgw.services.receiver.esme_app import CHANNEL as ESME_CHANNEL
from smsgw.services.receiver.esme_app import EsmeService, start_esme
from smsgw.services.receiver.metrics import ReceiverMetrics
from smsgw.services.receiver.settings import ReceiverSettings
from smsgw.services.receiver.smpp_intake import SmppIntake
from smsgw.services.receiver.web import create_api_app, fast_front
from smsgw.services.receiver.webhooks import routes_off
from smsgw.shared.domain.reports import configured_range_days
from smsgw.shared.queue.listener import CHANNELS
from smsgw.shared.runtime.config import AppConfig, WebhooksSettings, peer_setting
from smsgw.shared.runtime.daemon import Daemon

COMMITTER_CLOSE_S = 4.0  # inside the runtime's RELEASE_TIMEOUT_S (5 s) for release()


class ReceiverDaemon(Daemon[ReceiverSettings]):
    """`smsgw receiver`: HTTP submit API, provider webhooks, SMPP MO and receipts."""

    name = "receiver"
    settings_model = ReceiverSettings
    # the rx binds follow the connectors' run-time state (smsgw connectors stop|start)
    listen_channels = (CHANNELS["connectors"],)
    reload_help = ("watermarks, limits, webhook secrets, connector rates, and rx connectors "
                   "added, removed or rebound")
    restart_only_keys = (*Daemon.restart_only_keys, "daemon.http_host", "daemon.http_port",
                         "daemon.smpp_binds", "daemon.smpp_server", "daemon.http_header_timeout_s",
                         "daemon.http_body_timeout_s", "daemon.http_keepalive_s",
                         "daemon.http_max_connections", "daemon.http_fast_path")
    extra_sites = 1  # the API site (for the stop budget)

    ctx: ReceiverContext
    smpp: SmppIntake | None = None
    esme: EsmeService | None = None
    api_port: int = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.settings.smpp_server.enabled:  # receipts/MO for ESMEs wake the delivery worker
            self.listen_channels = (*self.listen_channels, ESME_CHANNEL)

    async def setup(self) -> None:
        """Build the context, add the periodic jobs, start the API site and the rx binds."""
        secret = self.config.server_secret
        if secret is None:
            # Webhooks and SMPP intake work without it; the submit API refuses every key.
            self.log.warning("server_secret_missing",
                             hint="set [security] server_secret_env or server_secret_file; "
                                  "until then every API key is refused")
        self._log_routes_off(self.config.webhooks)
        self.receiver_metrics = ReceiverMetrics.create(self.registry)
        self.ctx = build_context(
            self.pool, self.settings, self.config.webhooks,
            server_secret=secret,  # the SecretStr itself: unwrapped only at the HMAC
            metrics=self.receiver_metrics, connectors=self.config.connectors,
            adaptive_linger_s=self.settings.adaptive_linger_s)
        self._read_report_range()
        self.add_periodic("admission_read", lambda: self.settings.stats_read_s,
                          self.ctx.admission.read, locked=False)
        self.add_periodic("ratelimit_sync", lambda: self.settings.ratelimit_sync_s,
                          self.ctx.ratelimit.sync, locked=False)
        front = fast_front(self.ctx) if self.settings.http_fast_path else None
        self.api_port = await self.add_site("api", self._api_app(), self.settings.http_host,
                                            self.settings.resolved_http_port(self.instance),
                                            access_log=False, limits=self.settings.http_limits(),
                                            front=front)
        if self.settings.smpp_binds:  # also without rx connectors: a SIGHUP may add one
            assert self.config.database.url is not None
            self.smpp = SmppIntake(self.config.connectors, self.config.database.url,
                                   self.ctx.intake, pool=self.pool, on_up=self._bind_gauge,
                                   on_state=self.receiver_metrics.show_state,
                                   **self.config.database.connect_kwargs())
            smpp = self.smpp
            self.add_worker("smpp_rx", lambda: smpp.run(
                self.stop, lambda t: self.wait_for_work(CHANNELS["connectors"], t)))
        if self.settings.smpp_server.enabled:
            self.esme = await start_esme(
                self, None if secret is None else secret.get_secret_value().encode())

    def _log_routes_off(self, webhooks: WebhooksSettings) -> None:
        # One line: the provider routes that answer 404 because no secret is configured.
        off = routes_off(webhooks)
        if off != getattr(self, "_routes_off", None):
            self._routes_off = off
            if off:
                self.log.warning("webhook_routes_off", routes=off,
                                 hint="a provider route is on only with its secret configured "
                                      "([webhooks.twilio] auth_token_env, [webhooks.vonage] "
                                      "signature_secret_env, [webhooks.generic.NAME] secret_env)")

    def _api_app(self) -> web.Application:
        return create_api_app(self.ctx)

    def _bind_gauge(self, connector: str, mode: str, n: int) -> None:
        self.receiver_metrics.smpp_session_up.labels(connector=connector, bind=mode).set(n)
        if self.smpp is not None:
            self.set_status(f"ready; {self.smpp.bound()} rx binds up")

    def _read_report_range(self) -> None:
        # the reporter's `max_range_days`, so a report request over it is refused at once (422)
        self.ctx.report_max_range_days = configured_range_days(
            peer_setting(self.config_path, "reporter", "max_range_days"))

    async def on_reload(self, new: AppConfig[ReceiverSettings]) -> None:
        """SIGHUP: new watermarks/limits and webhook secrets at once; rx connectors; the
        reporter's range maximum."""
        self.ctx.reload(new.daemon, new.webhooks, new.connectors)
        self._read_report_range()
        self._log_routes_off(new.webhooks)
        if self.smpp is not None:
            self.smpp.update_connectors(new.connectors)

    async def release(self) -> None:
        """After the drain: flush whatever the committers still hold, then stop them."""
        if self.esme is not None:
            await self.esme.close(COMMITTER_CLOSE_S / 2)
        if hasattr(self, "ctx"):
            await self.ctx.close(COMMITTER_CLOSE_S)
