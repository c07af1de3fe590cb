"""firmware.media.clock: the 20 ms media clock (deadline scheduling, skip-ahead, subscribers)."""
from __future__ import annotations

import asyncio
import random

import pytest

from firmware.media.clock import ManualTime, MediaClock

P = 0.020


def manual(**kwargs) -> tuple[MediaClock, ManualTime, list[int]]:
    t = ManualTime(100.0)
    clock = MediaClock(time_source=t, **kwargs)
    seen: list[int] = []
    clock.add(seen.append)
    return clock, t, seen


def test_ticks_fire_on_deadlines_start_plus_n_periods() -> None:
    clock, t, seen = manual()
    assert clock.poll() == pytest.approx(100.0 + P)      # tick 0 at start
    t.advance(0.019)
    assert clock.poll() == pytest.approx(100.0 + P) and seen == [0]
    t.advance(0.001)
    clock.poll()
    assert seen == [0, 1]


def test_late_wakeups_do_not_accumulate_into_drift() -> None:
    # each wake-up is up to 0.9 period late; a sleep(period) loop would lose a tick every ~2
    clock, t, seen = manual()
    rng = random.Random(1)
    deadline = clock.poll()
    for _ in range(5000):
        t.now = deadline + rng.uniform(0, 0.9 * P)
        deadline = clock.poll()
    elapsed = t.now - 100.0
    assert len(seen) == int(elapsed / P) + 1 and seen == list(range(len(seen)))
    assert clock.skipped == 0


def test_a_little_late_catches_up_with_the_missed_ticks() -> None:
    clock, t, seen = manual(max_late=3)
    clock.poll()
    t.advance(2.5 * P)                 # ticks 1 and 2 are due
    clock.poll()
    assert seen == [0, 1, 2] and clock.skipped == 0


def test_far_behind_skips_ahead_and_counts_instead_of_bursting() -> None:
    clock, t, seen = manual(max_late=3)
    clock.poll()
    t.advance(50.5 * P)                # a stalled loop: ticks 1..50 are due
    nxt = clock.poll()
    assert seen == [0, 50] and clock.skipped == 49 and clock.ticks == 2
    assert nxt == pytest.approx(100.0 + 51 * P)          # still on the original grid


def test_subscribers_added_and_removed_while_ticking() -> None:
    clock, t, seen = manual()
    late: list[int] = []

    def once(n: int) -> None:
        late.append(n)
        clock.remove(once)
        clock.add(seen.append)          # a second subscription from the next tick on

    clock.add(once)
    clock.poll()
    t.advance(P)
    clock.poll()
    assert late == [0] and seen == [0, 1, 1] and clock.subscribers == 2
    clock.remove(once)                  # no-op when absent


def test_failing_subscriber_is_counted_and_others_still_run() -> None:
    clock, t, seen = manual()

    def broken(n: int) -> None:
        raise RuntimeError("boom")

    clock.add(broken)
    clock.add(seen.append)
    clock.poll()
    assert seen == [0, 0] and clock.errors == 1


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        MediaClock(0)
    with pytest.raises(ValueError):
        MediaClock(max_late=0)
    with pytest.raises(ValueError):
        MediaClock().add(3)             # type: ignore[arg-type]


def test_real_loop_has_no_drift_over_100_ticks() -> None:
    """Deadline scheduling on the real event loop: the mean period equals 20 ms (within 1 %).

    The slope of tick time over tick number is used, so a few late ticks on a loaded machine do
    not matter; a sleep(0.02) loop would show its per-tick overhead in the slope."""
    async def main() -> tuple[list[int], list[float], MediaClock]:
        loop = asyncio.get_running_loop()
        clock = MediaClock()
        numbers: list[int] = []
        times: list[float] = []
        done = asyncio.Event()

        def tick(n: int) -> None:
            numbers.append(n)
            times.append(loop.time())
            if len(numbers) >= 101:
                done.set()

        clock.add(tick)
        clock.start()
        await asyncio.wait_for(done.wait(), 30)
        await clock.stop()
        return numbers, times, clock

    numbers, times, clock = asyncio.run(main())
    n = len(numbers)
    mx, my = sum(numbers) / n, sum(times) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(numbers, times)) / \
        sum((x - mx) ** 2 for x in numbers)
    assert abs(slope - P) < 0.01 * P, slope
    assert numbers[-1] - numbers[0] == n - 1 + clock.skipped


def test_stop_and_start_again_continues_tick_numbers() -> None:
    async def main() -> list[int]:
        t = ManualTime()
        clock = MediaClock(time_source=t)
        seen: list[int] = []
        clock.add(seen.append)
        clock.poll()
        t.advance(P)
        clock.poll()
        await clock.stop()
        t.advance(10.0)                 # stopped for a while: nothing is "missed"
        clock.poll()
        assert clock.skipped == 0
        return seen

    assert asyncio.run(main()) == [0, 1, 2]
