"""The receiver's API application: every HTTP route, behind the JSON error middleware."""

from __future__ import annotations

from aiohttp import web

from smsgw.services.receiver import api, openapi, reports_api, sendsms, webhooks
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.responses import error_middleware, header_guard_middleware


def create_api_app(ctx: ReceiverContext) -> web.Application:
    """The aiohttp application for the API site (MT API, sendsms, webhooks, OpenAPI, reports).

    `client_max_size` makes aiohttp refuse larger bodies while reading them (413), so a
    client cannot make us buffer more than `max_body_bytes`.
    """
    app = web.Application(client_max_size=ctx.options.max_body_bytes,
                          middlewares=[error_middleware, header_guard_middleware])
    app[CONTEXT] = ctx
    api.add_routes(app)
    sendsms.add_routes(app)
    webhooks.add_routes(app)
    openapi.add_routes(app)
    reports_api.add_routes(app)
    return app
