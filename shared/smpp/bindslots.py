"""Global bind slots: a connector's bind limit shared by every daemon, instance and host.

A connector allows `binds` SMPP binds in total. Slot `i` of connector `c` is the session-level
advisory lock `pg_try_advisory_lock(classid(c), i)` (the two-int form, so it can never collide
with the bigint-keyed locks other modules take), held on a **dedicated** connection for as
long as the bind lives: whoever holds the lock may keep one bind open, nobody else may. A
process that crashes, or whose connection the server terminates, loses the lock at once, and
the slot becomes free for another holder.

Two rules keep "never more than `binds` binds" true across that hand-over:

1. A holder that loses its slot connection unbinds that session: the connection's termination
   listener fires as soon as the socket closes, and a periodic `SELECT 1` with a timeout
   (`check_s`) catches the silent cases (a partition with no FIN).
2. A holder that has just acquired a slot waits `grace_s` (> the previous holder's worst-case
   detection time, about 2 x `check_s`) before binding, so the previous holder has unbound.

The rate is split per slot, not per holder: each bound session sends at most
`connector TPS / connector binds` (docs/ARCHITECTURE.md "Where deliver_sm goes"), so N holders
together never exceed the TPS and no per-message coordination is needed. Receiver binds take slots
from the same key space, so they
count against the same limit.

`BindManager` does all of that for one connector: it acquires up to `binds` slots (retrying for
free ones every `retry_s`), keeps one SMPP session per held slot through `session_factory`,
unbinds a session whose slot connection died, applies rate changes in place (SIGHUP, no rebind),
and exposes the bound sessions and an `up` gauge per bind mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import asyncpg
import structlog

from smsgw.shared.core import db
from smsgw.shared.core.aio import race_stop, sleep_or_stop
from smsgw.shared.smpp.session import BindMode, Client

log = structlog.get_logger("smsgw.bindslots")

SLOT_NAMESPACE = "smsgw.bind:"

TRY_LOCK_SQL = "SELECT pg_try_advisory_lock($1::int, $2::int)"
UNLOCK_SQL = "SELECT pg_advisory_unlock($1::int, $2::int)"
PING_SQL = "SELECT 1"
# Who holds which slot (for `smsgw status` and tests): objsubid 2 = the two-int lock form.
HOLDERS_SQL = """
SELECT l.objid::int AS slot, l.pid
  FROM pg_locks l
 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
   AND l.classid = ($1::int)::oid::int::oid
   AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
 ORDER BY 1
"""


def slot_classid(connector: str) -> int:
    """The advisory-lock class id of `connector`: a stable 32-bit hash of its name.

    Python's `hash()` is salted per process, so a cryptographic digest is used: every process
    on every host computes the same key.
    """
    digest = hashlib.blake2b((SLOT_NAMESPACE + connector).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big", signed=True)


def slot_key(connector: str, index: int) -> tuple[int, int]:
    """The (classid, objid) advisory-lock key of slot `index` of `connector`."""
    return slot_classid(connector), index


async def slot_holders(conn: asyncpg.Connection, connector: str) -> dict[int, int]:
    """Map slot index -> backend pid holding it, for `connector`, in the current database."""
    rows = await conn.fetch(HOLDERS_SQL, slot_classid(connector))
    return {int(r["slot"]): int(r["pid"]) for r in rows}


# --- one held slot ------------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class HeldSlot:
    """A slot this process holds: the index, its dedicated connection and a `lost` event.

    `lost` is set when the connection holding the lock dies (the lock is gone with it).
    """

    connector: str
    index: int
    conn: asyncpg.Connection
    pid: int
    acquired_at: float
    lost: asyncio.Event = field(default_factory=asyncio.Event)

    def mark_lost(self, reason: str) -> None:
        """Record that the lock is gone (idempotent)."""
        if not self.lost.is_set():
            log.warning("bind_slot_lost", connector=self.connector, slot=self.index,
                        pid=self.pid, reason=reason)
            self.lost.set()

    async def check(self, timeout_s: float) -> bool:
        """Ping the slot connection; mark the slot lost and return False when it is dead."""
        if self.lost.is_set():
            return False
        if self.conn.is_closed():
            self.mark_lost("connection_closed")
            return False
        try:
            async with asyncio.timeout(timeout_s):
                await self.conn.fetchval(PING_SQL)
        except db.DATABASE_ERRORS as exc:
            self.mark_lost(type(exc).__name__)
            with contextlib.suppress(Exception):
                self.conn.terminate()
            return False
        return True

    async def release(self) -> None:
        """Unlock and close the dedicated connection (closing alone would also free it)."""
        if self.conn.is_closed():
            return
        try:
            async with asyncio.timeout(2.0):
                await self.conn.fetchval(UNLOCK_SQL, *slot_key(self.connector, self.index))
                await self.conn.close()
        except db.DATABASE_ERRORS:
            self.conn.terminate()


class SlotLocker:
    """Acquires free slots of one connector on dedicated connections.

    One spare connection is kept for probing, so that scanning for a free slot does not open
    and close a connection per try; when a probe wins, that connection becomes the slot's and
    a new spare is opened on the next probe.
    """

    def __init__(self, dsn: str, connector: str, *, connect_timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 password: str | Callable[[], str] | None = None) -> None:
        self.dsn = dsn
        self._password = password  # never in the DSN (DatabaseSettings.connect_kwargs)
        self.connector = connector
        self.classid = slot_classid(connector)
        self.connect_timeout_s = connect_timeout_s
        self.clock = clock
        self._spare: asyncpg.Connection | None = None

    async def _spare_conn(self) -> asyncpg.Connection:
        if self._spare is None or self._spare.is_closed():
            self._spare = await db.connect(self.dsn, timeout=self.connect_timeout_s,
                                           password=self._password,
                                           server_settings={"application_name":
                                                            f"smsgw-bindslot:{self.connector}"})
        return self._spare

    async def try_acquire(self, total: int, held: set[int]) -> HeldSlot | None:
        """Lock the lowest free slot index in [0, total) not in `held`; None when all taken."""
        for index in range(total):
            if index in held:
                continue
            conn = await self._spare_conn()
            if await conn.fetchval(TRY_LOCK_SQL, self.classid, index):
                self._spare = None
                slot = HeldSlot(self.connector, index, conn, conn.get_server_pid(), self.clock())
                conn.add_termination_listener(
                    lambda _c, s=slot: s.mark_lost("connection_terminated"))
                return slot
        return None

    async def close(self) -> None:
        """Close the spare connection."""
        if self._spare is not None and not self._spare.is_closed():
            try:
                async with asyncio.timeout(2.0):
                    await self._spare.close()
            except db.DATABASE_ERRORS:
                self._spare.terminate()
        self._spare = None


# --- sessions per slot --------------------------------------------------------------------


class BoundSession(Protocol):
    """What `BindManager` needs from an SMPP session (the SMPP engineer's client fits)."""

    async def run(self) -> None:
        """Connect, bind, and keep the bind up (reconnecting) until closed."""

    async def close(self) -> None:
        """Unbind (when bound) and close the socket."""

    def set_rate(self, rate_per_s: float) -> None:
        """Change the send rate in place, without rebinding."""

    @property
    def bound(self) -> bool:
        """True while the bind is up."""


SessionFactory = Callable[[Any, int, float], BoundSession]
UpGauge = Callable[[str, int], None]  # (bind mode, number of bound sessions)


@dataclass(slots=True, eq=False)
class _SlotRun:
    slot: HeldSlot
    session: BoundSession | None = None
    task: asyncio.Task[None] | None = None


# Each slot sends slightly below its exact share. Sends are spaced by a token bucket on the
# event loop; a loop stall of a few ms lets two due sends leave together, and the SMSC, which
# counts arrivals per second, would then see one more than its limit. 2% keeps a short stall
# within the budget at any TPS.
RATE_MARGIN = 0.02


def rate_per_slot(tps: float | None, binds: int, margin: float = RATE_MARGIN) -> float:
    """The rate of one bound session: connector TPS / connector binds, less `margin`
    (0 = unlimited)."""
    if not tps:
        return 0.0
    return float(tps) / max(1, binds) * (1.0 - margin)


class BindManager:
    """Holds up to `connector.binds` global slots and one SMPP session per held slot.

    `connector` is the `[[connectors]]` model (needs `.name`, `.binds`, `.tps`); `mode` is the
    bind mode (`trx`, `tx` or `rx`) used in gauges; `session_factory(connector, slot_index,
    rate_per_s)` builds a session that binds when run. `handler` is passed to the default
    factory (deliver_sm intake). `on_up(mode, n)` is called whenever the number of bound
    sessions may have changed (wire it to `smsgw_smpp_session_up`).
    """

    def __init__(self, connector: Any, mode: str | BindMode, dsn: str, *,
                 handler: Callable[..., Awaitable[int]] | None = None,
                 session_factory: SessionFactory | None = None,
                 on_up: UpGauge | None = None,
                 retry_s: float = 2.0, check_s: float = 1.0, grace_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 password: str | Callable[[], str] | None = None) -> None:
        self.connector = connector
        self.bind_mode = bind_mode_of(mode)
        self.mode = bind_label(mode)
        self.dsn = dsn
        self.handler = handler
        self.session_factory = session_factory or self._default_factory
        self.on_up = on_up
        self.retry_s = retry_s
        self.check_s = check_s
        # The previous holder notices a dead slot connection within ~2 x check_s (ping +
        # timeout); waiting longer before binding keeps the global count at `binds`.
        self.grace_s = 2.0 * check_s + 0.5 if grace_s is None else grace_s
        self.clock = clock
        self.locker = SlotLocker(dsn, connector.name, clock=clock, password=password)
        self._runs: dict[int, _SlotRun] = {}
        self._wake = asyncio.Event()
        self._closed = False
        self._next_try = 0.0  # clock time of the next scan for free slots
        self._next_check = 0.0  # clock time of the next slot-connection ping

    # -- public view -----------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The connector name."""
        return str(self.connector.name)

    @property
    def rate_per_s(self) -> float:
        """The current per-session rate (TPS / binds)."""
        return rate_per_slot(getattr(self.connector, "tps", None), int(self.connector.binds))

    def held_slots(self) -> list[int]:
        """Indexes of the slots held now (bound or binding)."""
        return sorted(i for i, r in self._runs.items() if not r.slot.lost.is_set())

    def sessions(self) -> list[BoundSession]:
        """The sessions whose bind is up and whose slot is still held, by slot index."""
        return [r.session for _, r in sorted(self._runs.items())
                if r.session is not None and r.session.bound and not r.slot.lost.is_set()]

    def up(self) -> int:
        """How many sessions are bound now."""
        return len(self.sessions())

    def update_connector(self, connector: Any) -> None:
        """Apply a reloaded connector (SIGHUP): new rate on every session, binds kept.

        A changed `binds` count applies to slot acquisition from now on; sessions on slots
        beyond the new count are closed.
        """
        self.connector = connector
        rate = self.rate_per_s
        for index, run in list(self._runs.items()):
            if index >= int(connector.binds):
                run.slot.mark_lost("binds_reduced")
            elif run.session is not None:
                run.session.set_rate(rate)
        log.info("bind_rate_updated", connector=self.name, rate_per_s=rate,
                 binds=int(connector.binds))
        self._wake.set()

    # -- running -----------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire and keep slots until `stop` is set, then unbind everything and release."""
        try:
            while not stop.is_set():
                await self._reap()
                await self._acquire_free()
                await self._check_slots()
                self._publish()
                await self._sleep(stop, min(self.retry_s, self.check_s))
        finally:
            await self.close()

    async def _sleep(self, stop: asyncio.Event, timeout_s: float) -> None:
        self._wake.clear()
        await race_stop(self._wake.wait(), stop, timeout_s)

    async def _acquire_free(self) -> None:
        total = int(self.connector.binds)
        now = self.clock()
        if len(self._runs) >= total or now < self._next_try:
            return
        self._next_try = now + self.retry_s
        try:
            while len(self._runs) < total:
                slot = await self.locker.try_acquire(total, set(self._runs))
                if slot is None:
                    return
                log.info("bind_slot_acquired", connector=self.name, slot=slot.index,
                         pid=slot.pid)
                run = _SlotRun(slot)
                self._runs[slot.index] = run
                run.task = asyncio.create_task(self._run_slot(run),
                                               name=f"bindslot.{self.name}.{slot.index}")
        except db.DATABASE_ERRORS as exc:
            # Database unreachable: keep the binds we have (their own checks decide) and retry.
            log.warning("bind_slot_acquire_failed", connector=self.name, error=str(exc))

    async def _run_slot(self, run: _SlotRun) -> None:
        """Wait out the grace period, then run one session until the slot is lost or closed."""
        slot = run.slot
        if await sleep_or_stop(slot.lost, self.grace_s):
            return
        try:
            session = self.session_factory(self.connector, slot.index, self.rate_per_s)
        except ValueError as exc:  # e.g. the password's variable or file is missing
            log.error("bind_session_config_error", connector=self.name, error=str(exc))
            slot.mark_lost("config_error")
            return
        run.session = session
        runner = asyncio.create_task(session.run(), name=f"smpp.{self.name}.{slot.index}")
        lost = asyncio.create_task(slot.lost.wait())
        try:
            await asyncio.wait([runner, lost], return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            # Unbind first, then let the runner finish: the slot may already be someone else's.
            await self._close_session(session)
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await runner
            self._publish()

    async def _close_session(self, session: BoundSession) -> None:
        try:
            await asyncio.wait_for(session.close(), timeout=8.0)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bind_session_close_failed", connector=self.name)

    async def _check_slots(self) -> None:
        now = self.clock()
        if now < self._next_check:
            return
        self._next_check = now + self.check_s
        runs = [r for r in self._runs.values() if not r.slot.lost.is_set()]
        await asyncio.gather(*(r.slot.check(self.check_s) for r in runs))

    async def _reap(self) -> None:
        """Forget slots whose lock is gone and whose session task has finished."""
        for index, run in list(self._runs.items()):
            done = run.task is None or run.task.done()
            if run.slot.lost.is_set() and done:
                del self._runs[index]
                await run.slot.release()
            elif done and not run.slot.lost.is_set():
                # The session task ended by itself (it should reconnect inside): give the slot
                # back so it can be taken again after the grace period.
                run.slot.mark_lost("session_ended")

    def _publish(self) -> None:
        if self.on_up is not None:
            self.on_up(self.mode, self.up())

    async def close(self) -> None:
        """Unbind every session, release every slot and the spare connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        runs = list(self._runs.values())
        for run in runs:
            run.slot.lost.set()  # stops each slot task, which unbinds its session
        tasks = [r.task for r in runs if r.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for run in runs:
            await run.slot.release()
        self._runs.clear()
        await self.locker.close()
        self._publish()
        log.info("bind_manager_closed", connector=self.name, mode=self.mode)

    # -- default session ------------------------------------------------------------------

    def _default_factory(self, connector: Any, index: int, rate_per_s: float) -> BoundSession:
        # A bind or a loss is published at once (gauge, and the sender's claim loop, which
        # waits for a bound session before it claims), not at the next check_s tick.
        return ClientSession.for_connector(connector, self.bind_mode, rate_per_s, self.handler,
                                           slot=index, on_change=lambda _up: self._publish())


_MODE_LABELS = {BindMode.TRANSCEIVER: "trx", BindMode.TRANSMITTER: "tx", BindMode.RECEIVER: "rx"}
_MODE_ALIASES = {"trx": BindMode.TRANSCEIVER, "tx": BindMode.TRANSMITTER,
                 "rx": BindMode.RECEIVER}


def bind_mode_of(mode: str | BindMode) -> BindMode:
    """Accept a BindMode, its value (`transceiver`…) or the gauge label (`trx`, `tx`, `rx`)."""
    if isinstance(mode, BindMode):
        return mode
    return _MODE_ALIASES.get(mode) or BindMode(mode)


def bind_label(mode: str | BindMode) -> str:
    """The `bind` metric label of a mode: trx, tx or rx."""
    return _MODE_LABELS[bind_mode_of(mode)]


class ClientSession:
    """Adapts the SMPP engineer's reconnecting `Client` to `BoundSession`.

    `run()` starts the client (it binds and re-binds on its own) and returns only when
    `close()` is called; `close()` drains and unbinds within `close_deadline_s`.
    """

    def __init__(self, client: Client, *, slot: int = 0, close_deadline_s: float = 5.0) -> None:
        self.client = client
        self.slot = slot
        self.close_deadline_s = close_deadline_s
        self._closed = asyncio.Event()

    @classmethod
    def for_connector(cls, connector: Any, mode: BindMode, rate_per_s: float,
                      handler: Callable[..., Awaitable[int]] | None, *,
                      slot: int = 0,
                      on_change: Callable[[bool], None] | None = None) -> ClientSession:
        """Build the client of one bind slot: the connector's settings at the slot's rate.
        `on_change(up)` hears each bind and each loss at once."""
        config = connector.session_config(bind_mode=mode, tps=rate_per_s or None)
        client = Client(config, handler, backoff_min_s=connector.reconnect_min_s,
                        backoff_max_s=connector.reconnect_max_s, on_change=on_change)
        return cls(client, slot=slot)

    @property
    def bound(self) -> bool:
        """True while the client's session is bound."""
        return self.client.up

    def set_rate(self, rate_per_s: float) -> None:
        """New rate for this bind, in place (the token bucket keeps its schedule)."""
        self.client.bucket.set_rate(rate_per_s or None)

    async def run(self) -> None:
        """Start binding (and re-binding) until `close()`."""
        self.client.start()
        await self._closed.wait()

    async def close(self) -> None:
        """Drain outstanding submits, unbind and stop reconnecting."""
        try:
            await self.client.close(self.close_deadline_s)
        finally:
            self._closed.set()
