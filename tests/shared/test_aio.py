"""`race_stop` and `sleep_or_stop` (shared/core/aio.py): who wins, what is returned, and that
no task outlives the call. Event-driven: every wait here ends by an event, never by the clock,
except the timeout cases, whose only claim is "the timeout, not stop, ended it"."""

from __future__ import annotations

import asyncio

import pytest

from smsgw.shared.core.aio import race_stop, sleep_or_stop


def _tasks_besides_me() -> set[asyncio.Task[object]]:
    return asyncio.all_tasks() - {asyncio.current_task()}  # type: ignore[operator]


async def test_the_awaitable_wins_and_its_result_comes_back() -> None:
    stop = asyncio.Event()

    async def answer() -> int:
        return 42

    assert await race_stop(answer(), stop) == (True, 42)
    assert not stop.is_set()
    assert _tasks_besides_me() == set()


async def test_a_none_result_is_still_a_finish() -> None:
    stop = asyncio.Event()
    assert await race_stop(asyncio.sleep(0), stop) == (True, None)


async def test_stop_wins_and_the_awaitable_is_cancelled_and_awaited() -> None:
    stop = asyncio.Event()
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    async def stop_when_started() -> None:
        await started.wait()
        stop.set()

    setter = asyncio.create_task(stop_when_started())
    assert await race_stop(forever(), stop) == (False, None)
    await setter
    assert cleaned_up.is_set()  # cancelled *and* awaited before race_stop returned
    assert _tasks_besides_me() == set()


async def test_stop_already_set_wins_over_a_pending_awaitable() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await race_stop(asyncio.Event().wait(), stop) == (False, None)


async def test_both_done_at_once_reports_the_awaitable() -> None:
    stop = asyncio.Event()
    stop.set()
    ready = asyncio.Event()
    ready.set()
    assert await race_stop(ready.wait(), stop) == (True, True)


async def test_the_timeout_ends_the_race() -> None:
    stop = asyncio.Event()
    assert await race_stop(asyncio.Event().wait(), stop, timeout_s=0.01) == (False, None)
    assert not stop.is_set()
    assert _tasks_besides_me() == set()


async def test_an_exception_of_the_awaitable_propagates() -> None:
    async def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await race_stop(boom(), asyncio.Event())


async def test_an_exception_raised_while_the_loser_is_cancelled_is_not_reported() -> None:
    stop = asyncio.Event()
    stop.set()

    async def bad_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    assert await race_stop(bad_cleanup(), stop) == (False, None)


async def test_cancelling_the_caller_cancels_the_awaitable() -> None:
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    outer = asyncio.create_task(race_stop(forever(), asyncio.Event()))
    await started.wait()
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert cleaned_up.is_set()
    assert _tasks_besides_me() == set()


async def test_sleep_or_stop_ends_when_stop_is_set() -> None:
    stop = asyncio.Event()
    sleeper = asyncio.create_task(sleep_or_stop(stop, 3600))
    await asyncio.sleep(0)
    assert not sleeper.done()
    stop.set()
    assert await sleeper is True


async def test_sleep_or_stop_returns_false_when_the_time_ran_out() -> None:
    assert await sleep_or_stop(asyncio.Event(), 0.01) is False


async def test_sleep_or_stop_with_stop_already_set_returns_at_once() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await sleep_or_stop(stop, 3600) is True
    assert await sleep_or_stop(stop, None) is True
