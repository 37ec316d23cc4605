"""The receiver's composition root: wires the runtime to the receiver's HTTP API.

SKELETON (issue 2): the API site is up (on `http_host:http_port`, started before READY=1 and
closed first at the drain) with no endpoints yet beyond `GET /v1/ping`; the MT API and the
webhooks plug into `_api_app`.
"""

from __future__ import annotations

from aiohttp import web

from services.receiver.settings import ReceiverSettings
from shared.daemon import Daemon


class ReceiverDaemon(Daemon[ReceiverSettings]):
    """`smsgw receiver`: the HTTP intake (see the module docstring)."""

    name = "receiver"
    settings_model = ReceiverSettings
    restart_only_keys = (*Daemon.restart_only_keys, "daemon.http_host", "daemon.http_port")
    extra_sites = 1  # the API site

    async def setup(self) -> None:
        """Start the API site; its real port is in `self.api_port`."""
        self.api_port = await self.add_site("api", self._api_app(), self.settings.http_host,
                                            self.settings.http_port or 0)

    def _api_app(self) -> web.Application:
        async def ping(_request: web.Request) -> web.StreamResponse:
            return web.json_response({"ok": True, "daemon": self.name,
                                      "instance": self.instance})

        app = web.Application()
        app.router.add_get("/v1/ping", ping)
        return app
