"""`Session.try_submit`, the submit that never waits: against the SMSC simulator over real
sockets, it keeps the window, the rate, throttling and the outcome rules of `submit`, and
calls back exactly once per PDU it wrote."""

import asyncio
import time
from typing import Any

import pytest

from smsgw.shared.smpp import pdu as P
from smsgw.shared.smpp.session import SessionState, SubmitOutcome, SubmitResult

from . import test_session as base

SM = base.SM
wait_until = base.wait_until
sim = base.sim  # the fixtures of the session tests: the simulator and bound sessions
session_factory = base.session_factory

pytestmark = pytest.mark.timeout(30)


class Outcomes:
    """Collects `on_done(token, result)` calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, SubmitResult]] = []
        self.event = asyncio.Event()

    def __call__(self, token: Any, result: SubmitResult) -> None:
        self.calls.append((token, result))
        self.event.set()

    async def wait_for(self, n: int, wait_s: float = 5.0) -> None:
        await wait_until(lambda: len(self.calls) >= n, wait_s)

    def by_token(self) -> dict[Any, SubmitResult]:
        tokens = [t for t, _ in self.calls]
        assert len(tokens) == len(set(tokens)), "a PDU was called back twice"
        return dict(self.calls)


async def test_writes_at_once_and_calls_back_with_the_id(sim, session_factory):
    """1. window 5; 2. five try_submits are written at once (True) and a sixth is refused
    (False: nothing written, no call back); 3. each of the five is called back once, OK, with
    the id the SMSC gave; 4. once answered the slots are free again."""
    session = await session_factory(window=5)
    sim.inject(response_delay_s=0.1)
    done = Outcomes()
    assert all(session.try_submit(SM, done, i) for i in range(5))
    assert session.outstanding == 5
    assert session.try_submit(SM, done, 99) is False
    await done.wait_for(5)
    results = done.by_token()
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert all(r.outcome is SubmitOutcome.OK for r in results.values())
    accepted = {r.message_id for r in sim.submits if r.message_id}
    assert {r.message_id for r in results.values()} == accepted and len(accepted) == 5
    assert sim.counters.submits == 5 and session.counters.submit_ok == 5
    assert session.outstanding == 0
    assert session.try_submit(SM, done, 5)
    await done.wait_for(6)


async def test_never_overtakes_a_waiting_submit(sim, session_factory):
    """1. window 1, slow answers; 2. one try_submit holds the slot, an awaited submit waits
    for it; 3. try_submit is refused while that submit waits (the slot goes to the waiter);
    4. the window is never exceeded."""
    sim.inject(response_delay_s=0.1)
    session = await session_factory(window=1)
    done = Outcomes()
    assert session.try_submit(SM, done, "first")
    waiting = asyncio.create_task(session.submit(SM))
    await asyncio.sleep(0.02)
    assert session.try_submit(SM, done, "second") is False
    assert (await waiting).outcome is SubmitOutcome.OK
    await done.wait_for(1)
    assert sim.counters.max_unanswered == 1 and session.counters.max_outstanding == 1


async def test_rate_limited_bucket_refuses_instead_of_waiting(sim, session_factory):
    """tps 10, burst 2: two go at once, the third is refused (it would have to wait) and
    leaves the bucket as it was: an awaited submit then waits ~1/10 s, not 2/10."""
    session = await session_factory(tps=10, burst=2, window=10)
    done = Outcomes()
    assert session.try_submit(SM, done, 1) and session.try_submit(SM, done, 2)
    assert session.try_submit(SM, done, 3) is False
    started = time.monotonic()
    assert (await session.submit(SM)).outcome is SubmitOutcome.OK
    assert 0.05 <= time.monotonic() - started < 0.18
    await done.wait_for(2)


async def test_throttled_is_retried_after_the_pause(sim, session_factory):
    """1. the SMSC throttles the next 2 submits; 2. a try_submit is throttled, the session
    pauses 0.2 s and retries the same PDU; 3. it is called back once, OK, after both pauses;
    4. with the retries used up the call back says REJECTED (transient), as `submit` does."""
    session = await session_factory(throttle_pause_s=0.2, throttle_retries=3)
    sim.inject(throttle_next=2)
    done = Outcomes()
    started = time.monotonic()
    assert session.try_submit(SM, done, "a")
    await done.wait_for(1)
    assert time.monotonic() - started >= 0.4
    assert done.calls == [("a", done.calls[0][1])]
    assert done.calls[0][1].outcome is SubmitOutcome.OK
    assert session.counters.throttled == 2
    sim.inject(throttle_next=5)
    assert session.try_submit(SM, done, "b")
    await done.wait_for(2)
    last = done.by_token()["b"]
    assert last.outcome is SubmitOutcome.REJECTED and last.status_class == "transient"
    assert last.command_status == P.SMPP_ESME_RTHROTTLED


async def test_refused_while_throttled(sim, session_factory):
    """During a throttling pause try_submit writes nothing."""
    session = await session_factory(throttle_pause_s=0.3, throttle_retries=0)
    sim.inject(throttle_next=1)
    assert (await session.submit(SM)).outcome is SubmitOutcome.REJECTED
    assert session.try_submit(SM, Outcomes(), 1) is False
    await asyncio.sleep(0.35)
    done = Outcomes()
    assert session.try_submit(SM, done, 2)
    await done.wait_for(1)


async def test_no_answer_is_unknown_at_the_timeout(sim, session_factory):
    session = await session_factory(response_timeout_s=0.2)
    sim.inject(no_response_next=1)
    done = Outcomes()
    assert session.try_submit(SM, done, 1)
    await asyncio.sleep(0.1)
    assert done.calls == []
    await done.wait_for(1)
    result = done.by_token()[1]
    assert result.outcome is SubmitOutcome.UNKNOWN and result.reason == "response timeout"
    assert session.counters.timeouts == 1 and session.outstanding == 0


async def test_connection_lost_is_unknown_for_every_written_pdu(sim, session_factory):
    """1. window 10, slow answers, the SMSC drops the connection on its 6th submit; 2. ten
    try_submits; 3. every one is called back once: OK or UNKNOWN, never NOT_SENT (all were
    written), and whatever the SMSC accepted is among the OK ones or UNKNOWN; 4. afterwards
    try_submit is refused."""
    sim.inject(response_delay_s=0.05, drop_after=6)
    session = await session_factory(window=10)
    done = Outcomes()
    assert all(session.try_submit(SM, done, i) for i in range(10))
    await done.wait_for(10)
    results = done.by_token()
    assert {r.outcome for r in results.values()} <= {SubmitOutcome.OK, SubmitOutcome.UNKNOWN}
    assert any(r.outcome is SubmitOutcome.UNKNOWN for r in results.values())
    accepted = {r.message_id for r in sim.submits if r.message_id}
    assert {r.message_id for r in results.values() if r.outcome is SubmitOutcome.OK} <= accepted
    assert session.state is SessionState.CLOSED
    assert session.try_submit(SM, done, 11) is False


async def test_close_drains_written_submits(sim, session_factory):
    """close() waits for the answers of what try_submit wrote, then unbinds."""
    sim.inject(response_delay_s=0.2)
    session = await session_factory(window=10)
    done = Outcomes()
    assert all(session.try_submit(SM, done, i) for i in range(4))
    assert await session.close(deadline_s=3.0) is True
    assert len(done.by_token()) == 4
    assert all(r.outcome is SubmitOutcome.OK for _, r in done.calls)
    assert session.try_submit(SM, done, 5) is False


async def test_a_failing_callback_does_not_take_the_bind_down(sim, session_factory):
    session = await session_factory()
    calls = []

    def broken(token: Any, result: SubmitResult) -> None:
        calls.append(token)
        raise RuntimeError("caller bug")

    assert session.try_submit(SM, broken, 1)
    await wait_until(lambda: calls == [1])
    assert session.state is SessionState.BOUND_TRX
    assert (await session.submit(SM)).outcome is SubmitOutcome.OK


async def test_a_resubmit_from_a_timeout_call_back_loses_no_deadline(sim, session_factory):
    """The lane pumps its next part from inside a call back, so a call back fired by the
    timeout timer may submit again: 1. A and B unanswered, B sent 0.1 s after A; 2. A's call
    back submits A2 at once; 3. A and B each end UNKNOWN at their own deadline, A2 OK, and
    nothing stays outstanding (a deadline dropped by the re-entry would leave B waiting
    forever)."""
    session = await session_factory(response_timeout_s=0.2)
    sim.inject(no_response_next=2)
    done = Outcomes()

    def resubmit(token: Any, result: SubmitResult) -> None:
        done(token, result)
        if token == "A":
            assert session.try_submit(SM, done, "A2")

    assert session.try_submit(SM, resubmit, "A")
    await asyncio.sleep(0.1)
    assert session.try_submit(SM, done, "B")
    await done.wait_for(3, wait_s=2.0)
    results = done.by_token()
    assert results["A"].outcome is SubmitOutcome.UNKNOWN
    assert results["B"].outcome is SubmitOutcome.UNKNOWN
    assert results["A2"].outcome is SubmitOutcome.OK
    assert session.outstanding == 0 and session.counters.timeouts == 2
