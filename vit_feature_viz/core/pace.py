"""Time left of a running job from its measured steps, and how it is said.

A render reports progress in feature-steps (features x steps done, out of features x steps): a batch optimizes
its features together, so counting finished features would stay at 0 until the batch ends. The first report
comes after the first steps, which pay one-time costs (allocations, lazy initialization, the model's first
forward), so the clock starts there: the pace is measured between later reports only and extrapolated over
every feature-step still to do, in this batch and the next ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable

ESTIMATING = "estimating time left"


class Pace:
    """Feed `update(done)` the cumulative units done (feature-steps); `seconds_left()` is None until two reports
    after the first measured one are in, then (time per unit since the first report) x units left."""

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic):
        self.total = max(0, int(total))
        self.clock = clock
        self.done = 0
        self._first: tuple[float, int] | None = None  # (time, units) at the first report: after the warm-up
        self._last: tuple[float, int] | None = None

    def update(self, done: int) -> None:
        self.done = min(max(int(done), 0), self.total)
        now = self.clock()
        if self._first is None:
            self._first = (now, self.done)
        elif self.done > self._first[1]:
            self._last = (now, self.done)

    def seconds_left(self) -> float | None:
        if self._first is None or self._last is None:
            return None
        (t0, d0), (t1, d1) = self._first, self._last
        return (t1 - t0) / (d1 - d0) * (self.total - self.done)

    def text(self) -> str:
        """'about 40 s left', 'about 3 min left', or 'estimating time left' before the pace is measured."""
        return time_left_text(self.seconds_left())


def time_left_text(seconds: float | None) -> str:
    if seconds is None:
        return ESTIMATING
    return f"about {seconds:.0f} s left" if seconds < 120 else f"about {seconds / 60:.0f} min left"
