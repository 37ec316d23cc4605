"""Who may bind to the SMPP server: credentials, the account's bind policy, failed-bind limits.

A bind is refused with ESME_RBINDFAIL — the same status for an unknown system_id, a wrong
password, a disabled account, a network or bind mode the account does not allow, or no server
secret — so a caller learns nothing about which part was wrong; the reason is logged and
audited (`audit_log` action `smpp_bind_failed`). Every failure is answered only after
`failed_bind_delay_s`, and after `failed_bind_limit` failures within `failed_bind_window_s`
from one source address or for one system_id, binds from there or for it are refused without
even a lookup (counted, not audited again: a flood cannot fill the audit log).

A bind beyond the account's maximum (the account's `smpp_max_binds`, else
`account_max_binds`) gets ESME_RALYBND. The maximum holds across receiver instances: bind
`i` of an account holds the advisory lock (`esme:<account id>`, i) on one connection per
receiver (`EsmeSlots`), so a crashed receiver's binds free their slots with its connection;
when that connection is lost, every bind of this receiver is closed (the ESMEs rebind), and a
bind that finds it dead before the loss was noticed takes its slot on a new connection (it was
answered ESME_RSYSERR: asyncpg fails a query on a connection the server has just ended).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from smsgw.shared.core.db import CONNECTION_ERRORS
from smsgw.shared.domain import esme as E
from smsgw.shared.domain.apikeys import Account, audit
from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.bindslots import slot_classid

log = structlog.get_logger("smsgw.receiver.esme")

MAX_TRACKED = 10_000  # addresses / system_ids the limiter remembers

# take_esme_slot: the first free bind slot of an account (session-level advisory locks on the
# slots connection), skipping the slots this connection already holds ($3: a session lock is
# re-entrant, so its own holder would get it again); NULL when all are taken.
TAKE_SLOT = """
SELECT i FROM generate_series(0, $2::int - 1) AS i
 WHERE i <> ALL($3::int[]) AND pg_try_advisory_lock($1::int, i) LIMIT 1
"""
FREE_SLOT = "SELECT pg_advisory_unlock($1::int, $2::int)"


@dataclass(frozen=True, slots=True)
class BindOutcome:
    """The answer to one bind: status, and on success the account and its slot."""

    status: int
    account: Account | None
    slot: int | None
    reason: str


class FailureLimiter:
    """Failed binds per key (source address, system_id) in a sliding window."""

    def __init__(self, limit: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def limited(self, key: str) -> bool:
        """True when `key` had `limit` failures within the window."""
        times = self._seen.get(key)
        if not times:
            return False
        cutoff = self.clock() - self.window_s
        while times and times[0] < cutoff:
            times.popleft()
        return len(times) >= self.limit

    def failed(self, key: str) -> None:
        """Record one failure of `key`."""
        if key not in self._seen and len(self._seen) >= MAX_TRACKED:
            cutoff = self.clock() - self.window_s
            self._seen = {k: v for k, v in self._seen.items() if v and v[-1] >= cutoff}
            if len(self._seen) >= MAX_TRACKED:
                self._seen.clear()
        times = self._seen.setdefault(key, deque(maxlen=self.limit))
        times.append(self.clock())


class EsmeSlots:
    """Global bind slots per account on one dedicated connection (see the module docstring)."""

    def __init__(self, connect: Callable[[], Any], on_lost: Callable[[], None]) -> None:
        self._connect = connect
        self._on_lost = on_lost
        self._conn: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._held: dict[int, set[int]] = {}  # account → slots this connection holds
        self._closing = False

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await self._connect()
            conn.add_termination_listener(self._terminated)
            self._conn = conn
        return self._conn

    def _terminated(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:  # not one `_lost` already replaced
            self._lost()

    def _lost(self) -> None:
        """The connection is gone, and its locks with it: forget them and close every bind
        here (another receiver may take their slots now)."""
        if self._closing:
            return  # our own close() at shutdown
        log.warning("esme_slots_connection_lost", hint="every ESME bind here is closed; the "
                                                        "ESMEs bind again")
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # its locks must not outlive what we believe of them
        self._held.clear()
        self._on_lost()

    async def take(self, account_id: int, limit: int) -> int | None:
        """A free slot of the account (held until `free`), or None when all are taken. A
        connection that turns out dead (the server ended it a moment ago, before its end was
        read) is replaced and the slot taken on the new one: once, then the error stands."""
        async with self._lock:
            conn = await self._connection()
            try:
                slot = await self._try_slot(conn, account_id, limit)
            except CONNECTION_ERRORS:
                if conn is self._conn:  # the termination listener may have been first
                    self._lost()
                slot = await self._try_slot(await self._connection(), account_id, limit)
            if slot is not None:
                self._held.setdefault(account_id, set()).add(slot)
            return slot

    async def _try_slot(self, conn: asyncpg.Connection, account_id: int,
                        limit: int) -> int | None:
        held = sorted(self._held.get(account_id, ()))
        slot = await conn.fetchval(TAKE_SLOT, _classid(account_id), limit, held)
        return None if slot is None else int(slot)

    async def free(self, account_id: int, slot: int) -> None:
        """Give a slot back (nothing to do when its connection is gone)."""
        async with self._lock:
            held = self._held.get(account_id)
            if held is None or slot not in held:
                return
            held.discard(slot)
            if not held:
                del self._held[account_id]
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.execute(FREE_SLOT, _classid(account_id), slot)
            except CONNECTION_ERRORS:
                if conn is self._conn:  # its locks are gone: so are this receiver's binds
                    self._lost()

    async def close(self) -> None:
        """Close the connection (every slot it holds is freed)."""
        self._closing = True
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
        self._conn = None


def _classid(account_id: int) -> int:
    return slot_classid(f"esme:{account_id}")


class BindGate:
    """Decides binds (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, slots: EsmeSlots, *, server_secret: bytes | None,
                 options: Any, actor: str, metrics: Any,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.pool = pool
        self.slots = slots
        self.secret = server_secret
        self.opts = options
        self.actor = actor
        self.metrics = metrics
        self.by_address = FailureLimiter(options.failed_bind_limit,
                                         options.failed_bind_window_s, clock)
        self.by_system_id = FailureLimiter(options.failed_bind_limit,
                                           options.failed_bind_window_s, clock)

    async def bind(self, system_id: str, password: str, mode: str, peer: str) -> BindOutcome:
        """Check one bind; on success the account's slot is held until `unbound`."""
        if self.by_address.limited(peer) or self.by_system_id.limited(system_id):
            self.metrics.bind_failed("rate_limited")
            await asyncio.sleep(self.opts.failed_bind_delay_s)
            return BindOutcome(P.SMPP_ESME_RBINDFAIL, None, None, "rate_limited")
        try:
            esme = await E.lookup(self.pool, system_id) if system_id else None
        except CONNECTION_ERRORS:
            return BindOutcome(P.SMPP_ESME_RSYSERR, None, None, "database_unavailable")
        reason = self._refusal(esme, password, mode, peer)
        if reason is not None:
            return await self._failed(system_id, peer, mode, reason, esme)
        assert esme is not None
        limit = esme.max_binds or self.opts.account_max_binds
        try:
            slot = await self.slots.take(esme.account.id, limit)
        except CONNECTION_ERRORS:
            return BindOutcome(P.SMPP_ESME_RSYSERR, None, None, "database_unavailable")
        if slot is None:
            self.metrics.bind_failed("max_binds")
            log.info("esme_bind_refused", account=system_id, bind=mode, peer=peer,
                     reason="max_binds", max_binds=limit)
            return BindOutcome(P.SMPP_ESME_RALYBND, None, None, "max_binds")
        return BindOutcome(P.SMPP_ESME_ROK, esme.account, slot, "ok")

    def _refusal(self, esme: E.EsmeAccount | None, password: str, mode: str,
                 peer: str) -> str | None:
        if self.secret is None:
            return "no_server_secret"
        if esme is None:
            return "unknown_system_id"
        if not E.check_password(self.secret, esme, password):
            return "bad_password"
        if esme.disabled:
            return "account_disabled"
        if not esme.network_allowed(peer):
            return "network_not_allowed"
        if not esme.mode_allowed(mode):
            return "bind_mode_not_allowed"
        return None

    async def _failed(self, system_id: str, peer: str, mode: str, reason: str,
                      esme: E.EsmeAccount | None) -> BindOutcome:
        self.by_address.failed(peer)
        self.by_system_id.failed(system_id)
        self.metrics.bind_failed(reason)
        log.warning("esme_bind_failed", account=system_id[:16], bind=mode, peer=peer,
                    reason=reason)
        try:
            async with self.pool.acquire() as conn:
                await audit(conn, actor=self.actor, action="smpp_bind_failed",
                            object_type="account",
                            object_id=str(esme.account.id) if esme is not None else None,
                            detail={"system_id": system_id[:16], "address": peer,
                                    "bind": mode, "reason": reason})
        except CONNECTION_ERRORS:
            log.warning("esme_bind_audit_failed", peer=peer)
        await asyncio.sleep(self.opts.failed_bind_delay_s)
        return BindOutcome(P.SMPP_ESME_RBINDFAIL, None, None, reason)

    async def unbound(self, account_id: int, slot: int) -> None:
        """A bind ended: free its slot."""
        await self.slots.free(account_id, slot)
