"""Receipts and MO to customer ESMEs: the `esme_deliveries` queue over receiver binds.

The worker claims (leases) due rows of the accounts that have a receiver or transceiver bind on
this receiver, spreads them over those binds (round robin, at most `delivery_window` deliver_sm
in flight per bind) and writes a batch's outcomes back in one statement: ESME_ROK → the row
is deleted with an `esme_delivered` event (for `smsgw trace`); any other status, a
generic_nack, no answer within `response_timeout_s` or a bind that went away → queued again
after `delivery_retry_s` (deleted with an `esme_delivery_dead` event after
`delivery_max_attempts`). The claim keeps one message's rows in order (an intermediate receipt
before the final one) and takes a row whose lease ran out (its receiver died) again. Rows wait
while the account has no bind; after `delivery_retention_s` they are deleted with an
`esme_delivery_expired` event and the expired metric — the periodic `housekeeping` job.

A receipt is a deliver_sm with esm_class 0x04 (SMSC delivery receipt), source_addr the
recipient, destination_addr the sender, the SMPP 3.4 Appendix B text
`id:<our id> sub:001 dlvrd:001|000 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD
err:000 text:<first 20 characters>`, and the TLVs receipted_message_id (the id from the
submit_sm_resp) and message_state. An MO is a deliver_sm with the message's data_coding and
user data as received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import structlog

from smsgw.services.receiver.esme_metrics import EsmeMetrics
from smsgw.services.receiver.esme_server import EsmeServer
from smsgw.services.receiver.options import SmppServerOptions
from smsgw.shared.domain.apikeys import DisabledAccounts
from smsgw.shared.queue import esme_deliveries as Q
from smsgw.shared.queue.listener import Pass
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.receipts import format_receipt_text
from smsgw.shared.smpp.text import encode_text, is_gsm

log = structlog.get_logger("smsgw.receiver.esme")

BATCH = 200
PURGE_AFTER_S = 86400.0  # finished rows an older release left stay a day (events stay longer)


def receipt_pdu(row: Q.EsmeDelivery) -> P.DeliverSm:
    """The deliver_sm receipt of one row (see the module docstring)."""
    assert row.submitted_at is not None and row.done_at is not None
    text = format_receipt_text(row.message_ref or "", row.stat or "UNKNOWN", row.submitted_at,
                               row.done_at, err=f"{(row.err or 0) % 1000:03d}",
                               text=(row.body or "").encode("ascii", "replace").decode())
    return P.DeliverSm(
        source_addr_ton=1 if row.from_addr.startswith("+") else 0, source_addr_npi=1,
        source_addr=row.from_addr.lstrip("+")[:20],
        dest_addr_ton=_ton(row.to_addr), dest_addr_npi=0 if _alnum(row.to_addr) else 1,
        destination_addr=row.to_addr.lstrip("+")[:20], esm_class=0x04,
        short_message=text.encode("ascii", "replace")[:254],
        tlvs=((P.Tag.RECEIPTED_MESSAGE_ID, (row.message_ref or "").encode() + b"\0"),
              (P.Tag.MESSAGE_STATE, bytes((row.message_state or 7,)))))


def mo_pdu(row: Q.EsmeDelivery) -> P.DeliverSm:
    """The deliver_sm of one MO row: its user data as received when there is any, else its
    text (GSM 03.38 when it fits, else UCS-2), in message_payload when longer than 254."""
    data, dc = row.raw, row.data_coding
    if data is None:
        text = row.body or ""
        if is_gsm(text):
            data, dc = encode_text(text, "gsm7"), 0
        else:
            data, dc = encode_text(text, "ucs2"), 8
    short, tlvs = (data, ()) if len(data) <= 254 else (b"", ((P.Tag.MESSAGE_PAYLOAD, data),))
    return P.DeliverSm(
        source_addr_ton=1 if row.from_addr.startswith("+") else 0, source_addr_npi=1,
        source_addr=row.from_addr.lstrip("+")[:20], dest_addr_ton=_ton(row.to_addr),
        dest_addr_npi=0 if _alnum(row.to_addr) else 1,
        destination_addr=row.to_addr.lstrip("+")[:20], esm_class=row.esm_class or 0,
        data_coding=dc or 0, short_message=short, tlvs=tlvs)


def _alnum(addr: str) -> bool:
    return not addr.lstrip("+").isdigit()


def _ton(addr: str) -> int:
    if _alnum(addr):
        return 5
    return 1 if addr.startswith("+") else 0


class EsmeDeliverer:
    """The delivery worker (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, server: EsmeServer, opts: SmppServerOptions, *,
                 owner: str, metrics: EsmeMetrics, daemon: str = "receiver",
                 disabled: DisabledAccounts | None = None) -> None:
        self.pool = pool
        self.disabled = disabled or DisabledAccounts(pool)
        self.server = server
        self.opts = opts
        self.owner = owner
        self.metrics = metrics
        self.daemon = daemon
        self.wake_hook: Callable[[], None] | None = None
        for source in ("receipt", "mo"):
            for outcome in ("delivered", "retried", "dead", "expired"):
                metrics.deliveries.labels(source=source, outcome=outcome)

    def wake(self, *_args: Any) -> None:
        """A new receiver bind: look for work now (`wake_hook`: the daemon sets the queue's
        NOTIFY event, as a new row would)."""
        if self.wake_hook is not None:
            self.wake_hook()

    async def claim_pass(self) -> Pass:
        """One pass for the daemon's `consume` loop (NOTIFY, adaptive linger while busy,
        `poll_s` fallback for retries coming due, back-off on errors): a short batch means
        nothing more is due now, so no empty claim follows it."""
        rows = await self.deliver_pass()
        return Pass(rows, rows >= BATCH)

    async def deliver_pass(self) -> int:
        """Claim one batch, deliver it, write the outcomes back; return how many rows."""
        accounts = await self._enabled(self.server.accounts_with_receivers())
        if not accounts:
            return 0
        lease_s = self.opts.response_timeout_s * 3 + 30
        rows = await Q.claim(self.pool, accounts, limit=BATCH, owner=self.owner,
                             lease_s=lease_s)
        if not rows:
            return 0
        outcomes = await asyncio.gather(*(self._deliver(r) for r in rows))
        counts = await Q.finish(
            self.pool, owner=self.owner,
            delivered=[r.id for r, o in zip(rows, outcomes, strict=True) if o is None],
            failed=[(r.id, o) for r, o in zip(rows, outcomes, strict=True) if o is not None],
            delay_s=self.opts.delivery_retry_s, max_attempts=self.opts.delivery_max_attempts,
            daemon=self.daemon)
        for (outcome, kind), n in counts.items():
            self.metrics.deliveries.labels(source=kind, outcome=outcome).inc(n)
        return len(rows)

    async def _enabled(self, accounts: list[int]) -> list[int]:
        """The accounts still enabled; a disabled one's receiver binds are closed (its
        transmitter binds close at their next request)."""
        out = []
        for account_id in accounts:
            if await self.disabled.is_disabled(account_id):
                log.warning("esme_account_disabled", account_id=account_id)
                for conn in list(self.server.receivers.get(account_id, ())):
                    conn.close()
            else:
                out.append(account_id)
        return out

    async def _deliver(self, row: Q.EsmeDelivery) -> str | None:
        """Send one row; None when the ESME took it, else why not."""
        conn = self.server.receiver_for(row.account_id)
        if conn is None:
            return "no receiver bind"
        pdu = receipt_pdu(row) if row.kind == "receipt" else mo_pdu(row)
        try:
            resp = await conn.deliver(pdu, self.opts.response_timeout_s)
        except TimeoutError:
            return "no deliver_sm_resp in time"
        except ConnectionError:
            return "the bind closed"
        if type(resp) is P.GenericNack:
            return f"generic_nack {P.status_name(resp.command_status)}"
        if resp.command_status != P.SMPP_ESME_ROK:
            return f"deliver_sm_resp {P.status_name(resp.command_status)}"
        return None

    async def housekeeping(self, conn: asyncpg.Connection) -> None:
        """Periodic: delete rows past the retention (event + metric each); tidy what an
        older release left (leases of `sending` rows, finished rows)."""
        expired = await Q.expire(conn, older_than_s=self.opts.delivery_retention_s,
                                 daemon=self.daemon)
        if expired:
            log.warning("esme_deliveries_expired", rows=len(expired),
                        retention_s=self.opts.delivery_retention_s)
            for kind in expired:
                self.metrics.deliveries.labels(source=kind, outcome="expired").inc()
        await Q.reclaim(conn)
        await Q.purge(conn, older_than_s=PURGE_AFTER_S)

    async def gauges(self, conn: asyncpg.Connection) -> None:
        """Periodic: the queued depth and oldest age per kind."""
        found = await Q.stats(conn)
        for kind in ("receipt", "mo"):
            depth, age = found.get(kind, (0, 0.0))
            self.metrics.deliveries_queued.labels(source=kind).set(depth)
            self.metrics.deliveries_oldest.labels(source=kind).set(age)

