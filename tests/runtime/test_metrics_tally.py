"""`Tally`: per-message metric updates buffered and applied at each scrape, with the same
result as updating the metrics directly."""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from smsgw.shared.runtime.metrics import Tally, observe_many

BUCKETS = (0.01, 0.025, 0.05, 0.1, 1.0)


def _exposition(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines()
            if "_created" not in line and not line.startswith("#")]


def _pair() -> tuple[CollectorRegistry, Tally, Counter, Histogram]:
    registry = CollectorRegistry()
    tally = Tally(registry, max_pending=100)
    counter = Counter("t_total", "t", ["a"], registry=registry)
    hist = Histogram("t_seconds", "t", ["a"], buckets=BUCKETS, registry=registry)
    return registry, tally, counter, hist


def test_a_scrape_sees_every_buffered_update_as_direct_updates_give_it():
    """The same updates through a tally and straight to the metrics: identical expositions at
    every scrape, bucket bounds included (a value equal to a bound counts in that bucket)."""
    rng = random.Random(7)
    direct, _, dc, dh = _pair()
    buffered, tally, bc, bh = _pair()
    for _scrape in range(3):
        for _ in range(57):
            label = rng.choice("xy")
            value = rng.choice([*BUCKETS, 0.0, 5.0, rng.random() * 0.2])
            dc.labels(a=label).inc()
            dh.labels(a=label).observe(value)
            tally.inc(bc.labels(a=label))
            tally.observe(bh.labels(a=label), value)
        direct_lines, buffered_lines = _exposition(direct), _exposition(buffered)
        assert [ln for ln in direct_lines if "_sum" not in ln] == \
            [ln for ln in buffered_lines if "_sum" not in ln]
        sums = [(ln.rsplit(" ", 1)[0], float(ln.rsplit(" ", 1)[1]))
                for ln in direct_lines if "_sum" in ln]
        assert sums == [(k, pytest.approx(v)) for k, v in
                        [(ln.rsplit(" ", 1)[0], float(ln.rsplit(" ", 1)[1]))
                         for ln in buffered_lines if "_sum" in ln]]
    assert buffered.get_sample_value("t_total", {"a": "x"}) == \
        direct.get_sample_value("t_total", {"a": "x"})


def test_observations_are_applied_once_max_pending_wait_without_a_scrape():
    registry, tally, _, hist = _pair()
    child = hist.labels(a="x")
    for _ in range(99):
        tally.observe(child, 0.02)
    assert child._sum.get() == 0  # still buffered
    tally.observe(child, 0.02)
    assert child._sum.get() == pytest.approx(2.0)
    assert registry.get_sample_value("t_seconds_count", {"a": "x"}) == 100


def test_observe_many_falls_back_for_a_histogram_it_does_not_know():
    class Plain:
        def __init__(self) -> None:
            self.seen: list[float] = []

        def observe(self, v: float) -> None:
            self.seen.append(v)

    plain = Plain()
    observe_many(plain, [0.5, 0.1])
    assert plain.seen == [0.5, 0.1]
