"""Token bucket with an injected clock: no sleeping, exact arithmetic."""

import pytest

from smsgw.shared.smpp.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def send_times(bucket: TokenBucket, clock: FakeClock, n: int) -> list[float]:
    """Each caller reserves, 'sleeps' its delay, and sends; returns the send times."""
    times = []
    for _ in range(n):
        delay = bucket.reserve()
        times.append(clock.now + delay)
    return times


def test_burst_then_spaced():
    clock = FakeClock()
    bucket = TokenBucket(10, burst=3, clock=clock)
    times = send_times(bucket, clock, 6)
    assert times[:3] == [1000.0] * 3
    assert times[3:] == pytest.approx([1000.1, 1000.2, 1000.3])


def test_burst_zero_is_strictly_spaced():
    clock = FakeClock()
    bucket = TokenBucket(4, burst=0, clock=clock)
    assert send_times(bucket, clock, 3) == pytest.approx([1000.0, 1000.25, 1000.5])


@pytest.mark.parametrize(("rate", "burst"), [(50, 1), (50, 5), (7, 0), (1000, 20)])
def test_never_above_rate_t_plus_burst(rate, burst):
    """In every window [a, a+t]: sends ≤ rate·t + max(burst, 1)."""
    clock = FakeClock()
    bucket = TokenBucket(rate, burst=burst, clock=clock)
    times = []
    for step in range(400):
        clock.now = 1000.0 + step * 0.37 / rate  # callers arrive faster than the rate
        times.append(clock.now + bucket.reserve())
    times.sort()
    cap = max(burst, 1)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            window = times[j] - start
            assert j - i + 1 <= rate * window + cap + 1e-6


def test_idle_refills_only_to_burst():
    clock = FakeClock()
    bucket = TokenBucket(10, burst=2, clock=clock)
    send_times(bucket, clock, 2)
    clock.now += 100.0
    assert send_times(bucket, clock, 3) == pytest.approx([1100.0, 1100.0, 1100.1])


def test_set_rate_and_pause_and_unlimited():
    clock = FakeClock()
    bucket = TokenBucket(None, clock=clock)
    assert bucket.reserve() == 0.0
    bucket.set_rate(2, burst=0)
    assert send_times(bucket, clock, 2) == pytest.approx([1000.0, 1000.5])
    bucket.set_rate(10)
    clock.now = 1001.0
    bucket.pause(3.0)
    assert bucket.reserve() == pytest.approx(3.0)
    bucket.refund()
    assert bucket.reserve() == pytest.approx(3.0)


def test_try_acquire_takes_only_a_free_token():
    """burst 2 at 10/s: two at once, the third is refused and changes nothing (a reserve
    right after still waits 0.1 s, not 0.2); 0.1 s later one is free again; unlimited always
    gives one."""
    clock = FakeClock()
    bucket = TokenBucket(10, burst=2, clock=clock)
    assert bucket.try_acquire() and bucket.try_acquire()
    assert bucket.try_acquire() is False
    assert bucket.reserve() == pytest.approx(0.1)
    clock.now += 0.2
    assert bucket.try_acquire()
    assert bucket.try_acquire() is False
    assert all(TokenBucket(None, clock=clock).try_acquire() for _ in range(1000))


async def test_try_acquire_never_overtakes_a_waiting_acquire():
    """While an `acquire` waits for its token, try_acquire is refused even once one is due."""
    import asyncio

    bucket = TokenBucket(20, burst=1)
    assert await bucket.acquire()
    waiter = asyncio.create_task(bucket.acquire())
    await asyncio.sleep(0)
    assert bucket.try_acquire() is False
    assert await waiter
