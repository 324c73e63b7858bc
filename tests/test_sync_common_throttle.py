"""The throttle, driven by an injected clock (and real threads for the concurrency cap)."""

from __future__ import annotations

import random
import threading
import time
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_common.throttle import Throttle


class FakeClock:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def start_times(throttle: Throttle, clock: FakeClock, count: int) -> list[float]:
    starts = []
    for _ in range(count):
        with throttle.slot():
            starts.append(clock())
    return starts


def most_in_any_minute(times: list[float]) -> int:
    """The largest number of `times` inside one 60 s window [t, t + 60)."""
    times = sorted(times)
    return max(bisect_left(times, t + 60.0) - i for i, t in enumerate(times))


def test_no_rolling_window_holds_more_than_the_budget():
    clock = FakeClock()
    throttle = Throttle(10, 0, clock=clock, sleep=clock.sleep)

    starts = start_times(throttle, clock, 45)

    assert starts[:10] == [0.0] * 10  # a fresh budget may be used at once
    assert all(later - first >= 61.0 for first, later in zip(starts, starts[10:], strict=False))
    assert most_in_any_minute(starts) == 10
    assert throttle.requests_started == 45
    assert throttle.seconds_waited == pytest.approx(starts[-1])


def test_server_side_count_stays_under_the_limit_despite_latency_and_uses_98_percent():
    """The server counts arrivals; each arrives 0-0.95 s after its start, at random."""
    clock = FakeClock()
    throttle = Throttle(150, 0, clock=clock, sleep=clock.sleep)
    latency = random.Random(7)

    starts = start_times(throttle, clock, 1500)
    arrivals = [start + latency.uniform(0.0, 0.95) for start in starts]

    assert most_in_any_minute(arrivals) <= 150
    minutes = starts[-1] / 60.0
    assert 0.98 <= (len(starts) - 150) / minutes / 150 <= 1.0  # the burst at t=0 aside


@settings(max_examples=60, deadline=None)
@given(
    budget=st.integers(1, 200),
    margin=st.floats(0.1, 3.0),
    seed=st.integers(0, 2**32 - 1),
    minutes=st.integers(2, 5),
)
def test_any_delay_that_varies_less_than_the_margin_keeps_every_server_minute_in_budget(
    budget: int, margin: float, seed: int, minutes: int
) -> None:
    """For any budget and margin, arrivals delayed by anything in [d, d + margin) never put
    more than the budget into a server-side minute, and a saturated run uses the budget up
    to 60 / (60 + margin)."""
    clock = FakeClock()
    throttle = Throttle(budget, 0, clock=clock, sleep=clock.sleep, margin_seconds=margin)
    delays = random.Random(seed)
    base = delays.uniform(0.0, 5.0)

    starts = start_times(throttle, clock, budget * (minutes + 1))
    arrivals = [start + base + delays.uniform(0.0, margin * 0.999) for start in starts]

    assert most_in_any_minute(arrivals) <= budget
    rate = (len(starts) - budget) / (starts[-1] / 60.0)  # per minute, the burst at t=0 aside
    assert rate == pytest.approx(budget * 60.0 / (60.0 + margin), rel=1e-6)


def test_concurrency_cap_holds_with_real_threads():
    throttle = Throttle(0, 3)
    running, most = 0, 0
    lock = threading.Lock()

    def request() -> None:
        nonlocal running, most
        with throttle.slot():
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.02)
            with lock:
                running -= 1

    threads = [threading.Thread(target=request) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=5)

    assert most == 3
    assert throttle.requests_started == 12
    assert throttle.seconds_waited > 0


def test_pause_holds_back_the_next_requests():
    clock = FakeClock()
    throttle = Throttle(0, 0, clock=clock, sleep=clock.sleep)
    with throttle.slot():
        pass

    throttle.pause(5.0)
    throttle.pause(2.0)  # a shorter pause does not cut the longer one
    starts = start_times(throttle, clock, 2)

    assert starts == [5.0, 5.0]
    assert throttle.stats() == {"requests_started": 3, "seconds_waited": 5.0}


def test_pause_and_window_combine():
    clock = FakeClock()
    throttle = Throttle(2, 0, clock=clock, sleep=clock.sleep, margin_seconds=0)
    start_times(throttle, clock, 2)  # budget used at t=0, frees at t=60

    throttle.pause(10.0)
    assert start_times(throttle, clock, 1) == [60.0]
    throttle.pause(100.0)
    assert start_times(throttle, clock, 1) == [160.0]


def test_zero_means_unlimited():
    def never(seconds: float) -> None:
        raise AssertionError(f"an unlimited throttle slept {seconds} s")

    throttle = Throttle(0, 0, clock=FakeClock(), sleep=never)
    for _ in range(1000):
        with throttle.slot():
            pass
    assert throttle.requests_started == 1000


def test_slot_is_released_when_the_request_fails():
    throttle = Throttle(0, 1)
    with pytest.raises(RuntimeError), throttle.slot():
        raise RuntimeError("request failed")
    done = threading.Event()
    threading.Thread(target=lambda: (throttle.slot().__enter__(), done.set())).start()
    assert done.wait(timeout=2)


def test_negative_limits_are_refused():
    with pytest.raises(ValueError):
        Throttle(-1, 0)
