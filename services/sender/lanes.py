"""Connector lanes: one bounded backlog of parts per connector, pumped onto its sessions.

A part (`PartJob`) offered to a lane (`offer`) joins the lane's backlog, and the lane pumps
the backlog in order onto the least busy bound session of its connector: a part goes out at
once when that session can take it without waiting (`Session.try_submit`: a free window
slot and rate token, not throttled), and its answer comes back as a call (`_answered`), which
pumps again into the slot it freed. So while the window is what limits, no task is woken and
no future is made per part. A part that has to wait for something else (the rate, the end of
a throttling pause) or cannot go (paused, draining, no bound session) is handed to a task of
its own (`_wait_and_submit`, at most window x binds of them at once, as many as the workers
the lane used to run) that submits it the waiting way (`Client.submit`: window, per-slot TPS,
throttling and NOT_SENT rules in the session). Either way the answer goes to `on_result` (the
submitter's). The claim budget keeps the backlogs far below their bound.

A lane's `state` follows its connector's run-time state (`shared.domain.connector_state`) and
the config: `running`, `stopped` or `isolated` by an operator, `removed` by a SIGHUP. Any but
`running` is `paused`: no capacity for the claim, not chosen by routing, and parts still in
its backlog resolve at once as not sent (their messages are retried: re-routed or waiting);
submits already written finish on their sessions.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

from smsgw.services.sender.records import PartJob
from smsgw.shared.smpp.session import SubmitOutcome, SubmitResult

MAX_LANE_WORKERS = 4096  # parts waiting in tasks of their own per connector (see the docstring)
MAX_LANE_QUEUE = 100_000  # parts waiting in memory per connector (the budget stays below)


class Lane:
    """One connector's backlog and its pump (see the module docstring).

    `sessions()` returns the bound sessions (objects with `.client.submit`,
    `.client.session.try_submit` and `.client.session.outstanding`); each part goes to the
    least busy one. The backlog is bounded by the submitter's claim budget.
    """

    def __init__(self, connector: Any, sessions: Callable[[], Sequence[Any]],
                 on_result: Callable[[PartJob, SubmitResult, float], None]) -> None:
        self.connector = connector
        self.name: str = connector.name
        self.sessions = sessions
        self.on_result = on_result
        # Bounded as a safety net: the claim budget keeps it far below MAX_LANE_QUEUE.
        self.backlog: collections.deque[PartJob] = collections.deque()
        self._draining = False
        self.state = "running"  # running | stopped | isolated | removed (module docstring)
        self.paused = False  # state != running: read once per routed message
        self.in_flight = 0  # parts written (or being written) and not yet answered
        self.running = False
        self._waiting: set[asyncio.Task[None]] = set()  # `_wait_and_submit` tasks
        self._cached: Sequence[Any] = ()
        self._cached_at = -1.0

    @property
    def draining(self) -> bool:
        """Set by the submitter's drain: parts not yet written resolve as not sent."""
        return self._draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self._draining = value
        self.pump()

    def forget_sessions(self) -> None:
        """Drop the cached bound-session list (a bind just came up or went away) and pump:
        a new bind can take the backlog."""
        self._cached_at = float("-inf")
        self.pump()

    def set_state(self, state: str) -> None:
        """Follow the connector's run-time state (or `removed`)."""
        self.state = state
        self.paused = state != "running"
        self.pump()

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
        none is. Call once the lane is paused: its backlog then empties at once."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight or self.backlog:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def up(self) -> bool:
        """True when at least one session of this connector is bound."""
        return bool(self._bound())

    def start(self) -> None:
        """Start pumping (parts offered before wait in the backlog); a reload with a larger
        window or more binds takes effect at once (the limit is read when it applies)."""
        self.running = True
        self.pump()

    async def stop(self) -> None:
        """Stop pumping and cancel the parts still waiting in tasks (after the drain has
        emptied the backlog): each resolves as not sent."""
        self.running = False
        waiting = list(self._waiting)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)

    # -- the pump -------------------------------------------------------------------------

    def offer(self, job: PartJob) -> None:
        """Queue `job` behind the backlog and pump."""
        self.backlog.append(job)
        self.pump()

    def pump(self) -> None:
        """Write parts from the head of the backlog while a session takes them at once; stop
        when the window is full (an answer pumps again); hand a part that must wait for
        anything else to a task of its own (`_wait_and_submit`)."""
        backlog = self.backlog
        while backlog and self.running:
            job = backlog[0]
            session = None
            if not self._draining and not self.paused:
                best = self._pick_session()
                session = best.client.session if best is not None else None
            if session is not None:
                if session.outstanding >= session.config.window:
                    return  # the least busy session is full: an answer comes back and pumps
                job.started = time.monotonic()
                self.in_flight += 1
                if session.try_submit(job.pdu, self._answered, job):
                    backlog.popleft()
                    continue
                self.in_flight -= 1
            limit = int(self.connector.window) * int(self.connector.binds)
            if len(self._waiting) >= min(MAX_LANE_WORKERS, limit):
                return  # as many parts wait as the lane had workers: one ending pumps
            backlog.popleft()
            task = asyncio.get_running_loop().create_task(
                self._wait_and_submit(job), name=f"sender.lane.{self.name}")
            self._waiting.add(task)
            task.add_done_callback(self._waiting.discard)

    def _answered(self, job: PartJob, result: SubmitResult) -> None:
        """The outcome of a part the pump wrote (called from the session's read loop, its
        timeout timer or its close); then pump into the freed slot."""
        self.in_flight -= 1
        self.on_result(job, result, time.monotonic() - job.started)
        self.pump()

    async def _wait_and_submit(self, job: PartJob) -> None:
        self.in_flight += 1
        started = time.monotonic()
        try:
            result = await self._submit(job)
        except asyncio.CancelledError:
            self.in_flight -= 1
            self.on_result(job, SubmitResult(SubmitOutcome.NOT_SENT, reason="cancelled"), 0.0)
            raise
        self.in_flight -= 1
        self.on_result(job, result, time.monotonic() - started)
        task = asyncio.current_task()
        if task is not None:
            self._waiting.discard(task)  # no longer waiting: its place goes to the next part
        self.pump()

    async def _submit(self, job: PartJob) -> SubmitResult:
        if self._draining:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="draining")
        if self.paused:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason=f"connector {self.state}")
        session = self._pick_session()
        if session is None:
            return SubmitResult(SubmitOutcome.NOT_SENT, reason="no bound session")
        result: SubmitResult = await session.client.submit(job.pdu)
        return result

    def _bound(self) -> Sequence[Any]:
        # The bound-session list is rebuilt at most every 20 ms (it is read once per submit);
        # a session that died meanwhile answers NOT_SENT and the part is retried.
        now = time.monotonic()
        if now - self._cached_at > 0.02:
            self._cached, self._cached_at = self.sessions(), now
        return self._cached

    def _pick_session(self) -> Any | None:
        bound = self._bound()
        if len(bound) == 1:  # one bind (the usual case): nothing to compare
            return bound[0]
        best, best_load = None, None
        for s in bound:
            session = s.client.session
            load = session.outstanding if session is not None else 0
            if best_load is None or load < best_load:
                best, best_load = s, load
        return best
