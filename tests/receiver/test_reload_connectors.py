"""SIGHUP: what clients may force and set follows the reloaded `[[connectors]]` (issue 19): a
connector a reload added may be forced at once, a removed one no more."""

from __future__ import annotations

import asyncpg

from smsgw.services.receiver.context import build_context
from smsgw.services.receiver.options import ReceiverOptions
from smsgw.shared.runtime.config import WebhooksSettings
from smsgw.shared.smpp.connector import ConnectorSettings


async def test_reload_replaces_the_forceable_connectors(pool: asyncpg.Pool) -> None:
    a = ConnectorSettings(name="a", system_id="x")
    b = ConnectorSettings(name="b", system_id="x", schedule_mode="send",
                          tlvs=[{"name": "campaign", "tag": 0x1401, "length": 16}])
    ctx = build_context(pool, ReceiverOptions(), WebhooksSettings(), server_secret=None,
                        connectors=[a])
    try:
        assert ctx.connectors == {"a"} and ctx.schedule_send == frozenset()
        ctx.reload(ctx.options, ctx.webhooks, [b])
        assert ctx.connectors == {"b"} and ctx.schedule_send == {"b"}
        assert ctx.tlvs.lookup("campaign").tag == 0x1401
        ctx.reload(ctx.options, ctx.webhooks)  # no connectors given: unchanged
        assert ctx.connectors == {"b"}
    finally:
        await ctx.close(2.0)
