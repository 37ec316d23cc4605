"""Connector lanes: one bounded submit queue per connector, drained by window x binds workers.

Each worker takes the next part (`PartJob`) and submits it on the least busy bound session of
its connector; the session enforces the window, the per-slot TPS and throttling pauses. The
answer goes to `on_result` (the submitter's). The claim budget keeps the queues far below
their bound.

A lane's `state` follows its connector's run-time state (`shared.domain.connector_state`) and
the config: `running`, `stopped` or `isolated` by an operator, `removed` by a SIGHUP. Any but
`running` is `paused`: no capacity for the claim, not chosen by routing, and parts still in
its queue resolve at once as not sent (their messages are retried: re-routed or waiting);
submits already written finish on their sessions.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from smsgw.services.sender.records import PartJob
from smsgw.shared.smpp.session import SubmitOutcome, SubmitResult

MAX_LANE_WORKERS = 4096  # submit coroutines per connector (each holds one window slot)
MAX_LANE_QUEUE = 100_000  # parts waiting in memory per connector (the budget stays below)


class Lane:
    """One connector's submit queue and its workers (window x binds of them).

    `sessions()` returns the bound sessions (objects with `.client.submit` and
    `.client.session.outstanding`); each worker takes the next part and submits it on the
    least busy one. The queue is bounded by the submitter's claim budget.
    """

    def __init__(self, connector: Any, sessions: Callable[[], Sequence[Any]],
                 on_result: Callable[[PartJob, SubmitResult, float], None]) -> None:
        self.connector = connector
        self.name: str = connector.name
        self.sessions = sessions
        self.on_result = on_result
        # Bounded as a safety net: the claim budget keeps it far below this.
        self.queue: asyncio.Queue[PartJob] = asyncio.Queue(maxsize=MAX_LANE_QUEUE)
        self.draining = False
        self.state = "running"  # running | stopped | isolated | removed (module docstring)
        self.paused = False  # state != running: read once per routed message
        self.in_flight = 0
        self._workers: list[asyncio.Task[None]] = []
        self._cached: Sequence[Any] = ()
        self._cached_at = -1.0

    def forget_sessions(self) -> None:
        """Drop the cached bound-session list (a bind just came up or went away)."""
        self._cached_at = float("-inf")

    def set_state(self, state: str) -> None:
        """Follow the connector's run-time state (or `removed`)."""
        self.state = state
        self.paused = state != "running"

    @property
    def capacity(self) -> int:
        """Parts this connector can have outstanding now: window x bound sessions (0 while
        paused)."""
        if self.paused:
            return 0
        return int(self.connector.window) * len(self._bound())

    def usable(self) -> bool:
        """True when routing may choose this lane: running and bound."""
        return not self.paused and bool(self._bound())

    async def quiesce(self, timeout_s: float) -> bool:
        """Wait (at most `timeout_s`) until no submit of this lane is outstanding; True when
        none is. Call once the lane is paused: its queue then empties at once."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight or not self.queue.empty():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def up(self) -> bool:
        """True when at least one session of this connector is bound."""
        return bool(self._bound())

    def start(self) -> None:
        """Start the workers: window x configured binds (capped at MAX_LANE_WORKERS); a
        reload with a larger window or more binds adds workers (`start` again)."""
        n = min(MAX_LANE_WORKERS, int(self.connector.window) * int(self.connector.binds))
        self._workers += [asyncio.create_task(self._work(), name=f"sender.lane.{self.name}.{i}")
                          for i in range(len(self._workers), n)]

    async def stop(self) -> None:
        """Cancel the workers (after the drain has emptied the queue)."""
        for w in self._workers:
            w.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []

    def _bound(self) -> Sequence[Any]:
        # The bound-session list is rebuilt at most every 20 ms (it is read once per submit);
        # a session that died meanwhile answers NOT_SENT and the part is retried.
        now = time.monotonic()
        if now - self._cached_at > 0.02:
            self._cached, self._cached_at = self.sessions(), now
        return self._cached

    def _pick_session(self) -> Any | None:
        best, best_load = None, None
        for s in self._bound():
            session = s.client.session
            load = session.outstanding if session is not None else 0
            if best_load is None or load < best_load:
                best, best_load = s, load
        return best

    async def _work(self) -> None:
        while True:
            job = await self.queue.get()
            self.in_flight += 1
            started = time.monotonic()
            try:
                # `_submit` inline when running (one coroutine less to resume per answer)
                session = None if self.draining or self.paused else self._pick_session()
                if session is not None:
                    result = await session.client.submit(job.pdu)
                else:
                    result = await self._submit(job)
            except asyncio.CancelledError:
                self.on_result(job, SubmitResult(SubmitOutcome.NOT_SENT, reason="cancelled"),
                               0.0)
                raise
            finally:
                self.in_flight -= 1
            self.on_result(job, result, time.monotonic() - started)

    async def _submit(self, job: PartJob) -> SubmitResult:
        if self.draining:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="draining")
        if self.paused:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason=f"connector {self.state}")
        session = self._pick_session()
        if session is None:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="no bound session")
        result: SubmitResult = await session.client.submit(job.pdu)
        return result
