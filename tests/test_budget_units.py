"""The token budget's arithmetic on a clock the test moves: traffic counts and durations,
pauses as Unix time, cuts and recovery, the measured rate, and the waits it imposes."""

from __future__ import annotations

import asyncio
import time

import pytest

from exporter import budget as budget_module
from exporter.budget import Budget


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_fresh_budget_has_sent_and_waited_nothing() -> None:
    """No codes, no durations, no wait, not paused."""
    fresh = Budget(5.0, 2, 0.5, bounds=(0.1, 1.0), clock=Clock())
    assert fresh.codes == {}
    assert fresh.duration_sum == 0.0
    assert fresh.waited == 0.0
    assert fresh.cumulative() == (0, 0, 0)
    assert fresh.paused_until == 0.0
    assert fresh.paused_until_unix() == 0.0
    assert fresh.recent_rate() == 0.0
    assert (fresh.configured, fresh.limit, fresh.burst, fresh.floor) == (5.0, 5.0, 2, 0.5)


def test_answers_are_counted_by_code_and_bucketed_by_duration() -> None:
    """Each answer adds to its code, to the duration sum, and to the first bucket whose
    bound it does not exceed (a duration equal to a bound is in that bound's bucket)."""
    traffic = Budget(None, 1, 0.1, bounds=(0.1, 1.0), clock=Clock())
    for code, seconds in (("200", 0.05), ("200", 0.1), ("500", 0.5), ("error", 3.0),
                          ("200", 1.0)):
        traffic.answered(code, seconds)
    assert traffic.codes == {"200": 3, "500": 1, "error": 1}
    assert traffic.duration_sum == pytest.approx(4.65)
    assert traffic.cumulative() == (2, 4, 5)


def test_a_pause_is_shown_as_unix_time_until_it_ends() -> None:
    """A pause of 30 s reads as now + 30 s in Unix time; 0 once it has passed; a shorter
    pause never shortens a longer one."""
    clock = Clock()
    paused = Budget(1.0, 1, 0.1, clock=clock)
    paused.pause(30)
    assert paused.paused_until == 1030.0
    assert paused.paused_until_unix() == pytest.approx(time.time() + 30, abs=1)
    paused.pause(5)
    assert paused.paused_until == 1030.0
    clock.now = 1029.5
    assert paused.paused_until_unix() == pytest.approx(time.time() + 0.5, abs=0.2)
    clock.now = 1030.0
    assert paused.paused_until_unix() == 0.0
    clock.now = 1031.0
    assert paused.paused_until_unix() == 0.0


def test_reservations_are_spaced_at_the_rate_after_the_burst() -> None:
    """With rate 2/s and burst 3, three requests go at once, then one every half second."""
    clock = Clock()
    paced = Budget(2.0, 3, 0.1, clock=clock)
    moments = [paced.reserve() for _ in range(6)]
    assert moments == pytest.approx([1000.0, 1000.0, 1000.0, 1000.5, 1001.0, 1001.5])


def test_reservations_wait_for_a_pause() -> None:
    """While paused, the next reservation is the pause's end; unlimited budgets too."""
    clock = Clock()
    unlimited = Budget(None, 1, 0.1, clock=clock)
    assert unlimited.reserve() == 1000.0
    unlimited.pause(10)
    assert unlimited.reserve() == 1010.0


def test_a_cut_halves_the_rate_but_not_below_the_floor() -> None:
    """A 429 without Retry-After halves the limit, stopping at the floor, and allows no
    burst straight after."""
    clock = Clock()
    cut = Budget(8.0, 4, 3.0, clock=clock)
    cut.cut()
    assert cut.limit == 4.0
    cut.cut()
    assert cut.limit == 3.0  # floor
    cut.cut()
    assert cut.limit == 3.0
    # No burst right after a cut: the next free moment is not before now.
    after = Budget(8.0, 4, 0.1, clock=clock)
    after.cut()
    assert after.reserve() == pytest.approx(1000.0)
    assert after.reserve() == pytest.approx(1000.0 + 1 / 4.0)


def test_the_floor_never_lifts_a_limit_above_the_rate_it_was_cut_from() -> None:
    """A floor above the current limit keeps the limit where it was, not higher."""
    low = Budget(1.0, 1, 5.0, clock=Clock())
    low.cut()
    assert low.limit == 1.0


def test_recovery_climbs_back_in_steps_to_the_configured_rate() -> None:
    """Each good answer adds 1/RECOVERY_STEPS of the rate before the cut, up to it."""
    climbing = Budget(10.0, 1, 0.1, clock=Clock())
    climbing.cut()
    assert climbing.limit == 5.0
    climbing.recover()
    assert climbing.limit == pytest.approx(5.0 + 10.0 / budget_module.RECOVERY_STEPS)
    for _ in range(200):
        climbing.recover()
    assert climbing.limit == 10.0
    climbing.recover()
    assert climbing.limit == 10.0
    untouched = Budget(10.0, 1, 0.1, clock=Clock())
    untouched.recover()
    assert untouched.limit == 10.0


def test_a_cut_without_a_configured_rate_starts_from_the_measured_one_and_lifts() -> None:
    """No api.requests_per_second: the cut halves the rate measured over the last minute,
    and once recovery reaches it the limit is lifted again."""
    clock = Clock()
    free = Budget(None, 1, 0.01, clock=clock)
    for _ in range(120):
        free.reserve()  # 120 requests in this minute: 2/s measured
    assert free.recent_rate() == pytest.approx(2.0)
    free.cut()
    assert free.limit == pytest.approx(1.0)
    for _ in range(budget_module.RECOVERY_STEPS):
        free.recover()
    assert free.limit is None


def test_the_measured_rate_forgets_requests_older_than_a_minute() -> None:
    """recent_rate counts the requests booked in the last 60 s, booked moments still to
    come excluded, per second."""
    clock = Clock()
    measured = Budget(None, 1, 0.1, clock=clock)
    for _ in range(30):
        measured.reserve()
    clock.now += 30
    for _ in range(30):
        measured.reserve()
    assert measured.recent_rate() == pytest.approx(1.0)
    clock.now += 30  # the first 30 are exactly a minute old: still counted
    assert measured.recent_rate() == pytest.approx(1.0)
    clock.now += 0.001
    assert measured.recent_rate() == pytest.approx(0.5)
    paced = Budget(1.0, 1, 0.1, clock=clock)
    paced.reserve()
    paced.reserve()  # booked a second from now: not sent yet
    assert paced.recent_rate() == pytest.approx(1 / 60)


def test_acquire_waits_for_the_booked_moment_and_counts_the_wait() -> None:
    """On the real clock: the second of two requests at 4/s waits about a quarter second,
    and waited adds every wait up."""
    paced = Budget(4.0, 1, 0.1)

    async def two() -> float:
        await paced.acquire()
        started = time.monotonic()
        await paced.acquire()
        return time.monotonic() - started
    second = asyncio.run(two())
    assert 0.2 < second < 1.5
    assert paced.waited == pytest.approx(second, abs=0.05)
    asyncio.run(paced.acquire())
    assert paced.waited > second + 0.15


def test_acquire_during_a_pause_waits_for_its_end() -> None:
    """A request asked for during a 0.3 s pause goes once the pause is over."""
    paused = Budget(None, 1, 0.1)
    paused.pause(0.3)

    async def one() -> float:
        started = time.monotonic()
        await paused.acquire()
        return time.monotonic() - started
    waited = asyncio.run(one())
    assert 0.25 < waited < 1.5
    assert time.monotonic() >= paused.paused_until


def test_a_second_cut_still_recovers_to_the_configured_rate() -> None:
    """Cut, partly recovered, cut again: recovery still climbs to api.requests_per_second,
    not to the rate of the second cut."""
    twice = Budget(10.0, 1, 0.1, clock=Clock())
    twice.cut()
    twice.recover()
    twice.cut()
    assert twice.limit is not None
    assert twice.limit < 5.0
    for _ in range(500):
        twice.recover()
    assert twice.limit == 10.0


def test_the_record_of_sent_requests_is_bounded() -> None:
    """The measured rate keeps at most 100,000 send moments, so memory stays bounded."""
    assert Budget(None, 1, 0.1)._sent.maxlen == 100_000
