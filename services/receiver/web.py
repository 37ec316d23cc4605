"""The receiver's API application: every HTTP route, behind the JSON error middleware; and the
fast front that serves the MT hot routes itself (shared/runtime/fasthttp.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from smsgw.services.receiver import api, openapi, reports_api, sendsms, webhooks
from smsgw.services.receiver.context import CONTEXT, ReceiverContext
from smsgw.services.receiver.responses import error_middleware, failure, header_guard_middleware
from smsgw.shared.runtime.fasthttp import FastAnswer, FastFront, FastRequest, FastRoute


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


def fast_front(ctx: ReceiverContext) -> FastFront:
    """`POST /v1/messages` and `GET|POST /cgi-bin/sendsms` served by the lean front, with the
    same request logic as the app's handlers (`api.submit`, `sendsms.answer`) and the error
    middleware's answers (`failure`); every other request goes to `create_api_app`'s app.
    The header guard needs no twin: the front hands a head with any non-ASCII octet to aiohttp.
    """
    def route(handler: Callable[[ReceiverContext, FastRequest],
                               Awaitable[web.Response | FastAnswer]]) -> FastRoute:
        async def serve(request: FastRequest) -> web.Response | FastAnswer:
            try:
                return await handler(ctx, request)
            except Exception as exc:  # noqa: BLE001 - request boundary, as error_middleware
                return failure(exc, request.method, request.path)
        return serve

    post = route(api.fast_post_messages)
    kannel = route(sendsms.fast_sendsms)

    def body_timeout() -> None:
        ctx.metrics.requests_rejected.labels(reason="timeout").inc()

    return FastFront(routes={(b"POST", b"/v1/messages"): post,
                             (b"GET", b"/cgi-bin/sendsms"): kannel,
                             (b"POST", b"/cgi-bin/sendsms"): kannel},
                     max_body=lambda: ctx.options.max_body_bytes, on_body_timeout=body_timeout)
