"""Each token's API budget: a rate with a burst, a pause where a 429 names its end, and AIMD
where it names none; and the traffic it let through."""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence

# A 429 without Retry-After halves the rate; each good answer then adds back this share of
# the rate it was cut from, so recovery takes this many good answers: slow, and additive.
RECOVERY_STEPS = 50
# Without a configured budget, a cut starts from the rate measured over this window.
MEASURE_WINDOW = 60.0  # seconds


class Budget:
    """The requests one token may send: at most ``rate`` a second on average, ``burst`` at
    once, none while paused. ``floor`` is the rate a cut never goes below.

    Each request reserves the next free moment (the generic cell rate algorithm's virtual
    schedule), so waiting polls go in the order they asked, evenly spaced at the rate,
    instead of waking together and racing.
    """

    def __init__(self, rate: float | None, burst: int, floor: float, *,
                 bounds: Sequence[float] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.configured = rate
        self.limit = rate  # in force now: the configured rate, or less after a cut
        self.burst = burst
        self.floor = floor
        self._clock = clock
        self._ceiling = rate  # what recovery climbs back to
        self._next = clock()  # when the next request would go at the steady rate
        self.paused_until = 0.0  # on the clock above
        self.waited = 0.0  # seconds requests spent waiting for this budget, in all
        self._sent: deque[float] = deque(maxlen=100_000)
        # The traffic itself, for /metrics: answers by code, and how long they took, in
        # buckets with the upper ``bounds`` (and +Inf).
        self.codes: Counter[str] = Counter()
        self.duration_sum = 0.0
        self._bounds = bounds
        self._durations = [0] * (len(bounds) + 1)

    def answered(self, code: str, seconds: float) -> None:
        """One request's outcome: its HTTP status code (or "error") and its duration."""
        self.codes[code] += 1
        self.duration_sum += seconds
        self._durations[bisect.bisect_left(self._bounds, seconds)] += 1

    def cumulative(self) -> tuple[int, ...]:
        """Durations at or under each bound, then all of them."""
        return tuple(itertools.accumulate(self._durations))

    def paused_until_unix(self) -> float:
        """When the current pause ends as Unix time; 0 when not paused."""
        left = self.paused_until - self._clock()
        return time.time() + left if left > 0 else 0.0

    def reserve(self) -> float:
        """Book the next moment a request may go, on the clock above, and count it as sent
        then; the moment is now when the budget allows it at once."""
        now = self._clock()
        base = max(now, self.paused_until)
        if self.limit is None:
            go = base
        else:
            due = max(self._next, base)
            go = max(base, due - (self.burst - 1) / self.limit)  # up to ``burst`` early
            self._next = due + 1 / self.limit
        self._sent.append(go)
        return go

    async def acquire(self) -> None:
        """Wait for a booked moment; a pause that began meanwhile books a later one."""
        started = self._clock()
        while True:
            go = self.reserve()
            if go > self._clock():
                await asyncio.sleep(go - self._clock())
            if self._clock() >= self.paused_until:
                break
        self.waited += self._clock() - started

    def pause(self, seconds: float) -> None:
        """No request before ``seconds`` from now (a 429's Retry-After)."""
        self.paused_until = max(self.paused_until, self._clock() + seconds)

    def cut(self) -> None:
        """Halve the rate (a 429 without Retry-After), never below the floor."""
        current = self.limit if self.limit is not None else self._measured()
        self._ceiling = self.configured if self.configured is not None else current
        # The floor never lifts a limit above the rate it was cut from.
        self.limit = max(min(self.floor, current), current / 2)
        # No burst straight after being told to slow down.
        self._next = max(self._next, self._clock() + (self.burst - 1) / self.limit)

    def recover(self) -> None:
        """A good answer: climb back towards the rate before the cut; a limit that was never
        configured is lifted once it is reached."""
        if self.limit is None or self._ceiling is None or self.limit >= self._ceiling:
            return
        self.limit = min(self._ceiling, self.limit + self._ceiling / RECOVERY_STEPS)
        if self.configured is None and self.limit >= self._ceiling:
            self.limit = self._ceiling = None

    def recent_rate(self) -> float:
        """Requests per second sent over the last MEASURE_WINDOW."""
        now = self._clock()
        while self._sent and self._sent[0] < now - MEASURE_WINDOW:
            self._sent.popleft()
        return sum(1 for moment in self._sent if moment <= now) / MEASURE_WINDOW

    def _measured(self) -> float:
        return max(self.floor, self.recent_rate())
