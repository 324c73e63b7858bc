"""Client-side rate limiting: a rolling request budget plus a cap on requests in flight."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import requests

WINDOW_SECONDS = 60.0


class Throttle:
    """Blocks callers of `slot()` until one more request fits both limits (0 = unlimited):
    at most `requests_per_minute` starts in any rolling minute, and at most `max_concurrency`
    requests running at once. Thread-safe.

    The server counts a request when it arrives, a little after we start it, and that delay
    varies. So starts are spread over 60 s plus `margin_seconds`: as long as the delay varies
    by less than the margin, no 60 s window on the server holds more than the budget. With the
    default 1 s margin (several times the jitter of a 250 ms round trip) a saturated run uses
    60/61 ≈ 98.4 % of the budget.
    """

    def __init__(
        self,
        requests_per_minute: int,
        max_concurrency: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        *,
        margin_seconds: float = 1.0,
    ) -> None:
        if requests_per_minute < 0 or max_concurrency < 0 or margin_seconds < 0:
            raise ValueError("throttle limits and margin must be >= 0 (0 = unlimited)")
        self.requests_per_minute = requests_per_minute
        self.max_concurrency = max_concurrency
        self.window_seconds = WINDOW_SECONDS + margin_seconds
        self._clock = clock
        self._sleep = sleep
        self._starts: deque[float] = deque()  # start times inside the current window
        self._running = 0
        self._paused_until = float("-inf")
        self._changed = threading.Condition()
        self.requests_started = 0
        self.seconds_waited = 0.0  # summed over all callers

    def __repr__(self) -> str:
        return (
            f"Throttle(requests_per_minute={self.requests_per_minute}, "
            f"max_concurrency={self.max_concurrency})"
        )

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for room for one request, then hold it until the block ends."""
        self._acquire()
        try:
            yield
        finally:
            with self._changed:
                self._running -= 1
                self._changed.notify()

    def pause(self, seconds: float) -> None:
        """Hold back every new request for `seconds` (the server asked us to, e.g. a 429)."""
        with self._changed:
            self._paused_until = max(self._paused_until, self._clock() + seconds)

    def stats(self) -> dict[str, float]:
        with self._changed:
            return {
                "requests_started": self.requests_started,
                "seconds_waited": round(self.seconds_waited, 3),
            }

    def _acquire(self) -> None:
        with self._changed:
            while True:
                now = self._clock()
                if self.max_concurrency and self._running >= self.max_concurrency:
                    self._changed.wait()  # a finishing request notifies
                elif (delay := self._delay(now)) > 0:
                    # Sleep without the lock so finishing requests and pause() are not blocked.
                    self._changed.release()
                    try:
                        self._sleep(delay)
                    finally:
                        self._changed.acquire()
                else:
                    break
                self.seconds_waited += self._clock() - now
            if self.requests_per_minute:
                self._starts.append(now)
            self._running += 1
            self.requests_started += 1

    def _delay(self, now: float) -> float:
        """Seconds until a start at `now` would respect the pause and the rolling window."""
        # The same sum as the delay below: with `now - window` instead, rounding could keep a
        # start in the window while the delay says it has left, letting a burst through.
        while self._starts and self._starts[0] + self.window_seconds <= now:
            self._starts.popleft()
        delay = self._paused_until - now
        if self.requests_per_minute and len(self._starts) >= self.requests_per_minute:
            delay = max(delay, self._starts[0] + self.window_seconds - now)
        return delay


class ThrottledSession(requests.Session):
    """A requests session whose every request waits for room in `throttle`: singer-sdk
    streams send through a session, so this puts them under the same limits."""

    def __init__(self, throttle: Throttle) -> None:
        super().__init__()
        self.throttle = throttle

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        with self.throttle.slot():
            return super().send(request, **kwargs)
