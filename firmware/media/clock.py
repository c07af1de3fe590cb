"""The 20 ms media clock: one task, deadline scheduling, subscribers called once per tick.

Tick n is due at ``start + n × period``; the task sleeps until the next deadline rather than for
a fixed period, so scheduling latency never accumulates into drift. A tick that is a little late
runs at once (its successors catch up); when the clock falls more than ``max_late`` periods behind
(a stalled loop, a suspended machine) the missed ticks are skipped and counted rather than run in
a burst. Subscribers get the tick number, which counts skipped ticks too.

The time source is injectable: ``ManualTime`` with ``MediaClock.poll()`` drives it in tests without
sleeping.
"""
from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable

from cython_mixer import FRAME_MS

log = logging.getLogger(__name__)

Subscriber = Callable[[int], object]


class ManualTime:
    """A time source for tests: ``now`` only moves when ``advance`` is called."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MediaClock:
    """Calls every subscriber once per ``period`` (seconds), on deadlines ``start + n × period``."""

    def __init__(self, period: float = FRAME_MS / 1000, *, max_late: int = 3,
                 time_source: Callable[[], float] | None = None) -> None:
        if not period > 0:
            raise ValueError(f"clock period must be positive, got {period!r}")
        if max_late < 1:
            raise ValueError(f"max_late must be at least 1 period, got {max_late}")
        self.period = period
        self.max_late = max_late
        self._time = time_source
        self._subscribers: list[Subscriber] = []
        self._start: float | None = None
        self._n = 0                     # the next tick's number
        self.ticks = 0                  # ticks run
        self.skipped = 0                # ticks skipped because the clock fell too far behind
        self.errors = 0                 # subscriber exceptions (logged, the clock goes on)
        self._task: asyncio.Task | None = None

    # --- subscribers --------------------------------------------------------------------------

    def add(self, callback: Subscriber) -> None:
        """Call ``callback(tick)`` on every tick from the next one on."""
        if not callable(callback):
            raise ValueError(f"clock subscriber must be callable, got {callback!r}")
        self._subscribers.append(callback)

    def remove(self, callback: Subscriber) -> None:
        """Stop calling ``callback`` (a no-op if it is not subscribed)."""
        try:
            self._subscribers.remove(callback)
        except ValueError:
            pass

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    # --- scheduling ---------------------------------------------------------------------------

    def now(self) -> float:
        return self._time() if self._time is not None else asyncio.get_running_loop().time()

    @property
    def next_deadline(self) -> float | None:
        return None if self._start is None else self._start + self._n * self.period

    def poll(self) -> float:
        """Run every tick due by now; return the next deadline. The first call starts the clock."""
        now = self.now()
        if self._start is None:
            self._start = now - self._n * self.period   # (re)start: tick numbers continue
        deadline = self._start + self._n * self.period
        if now - deadline >= self.max_late * self.period:
            # too far behind: jump to the newest due tick instead of bursting the backlog
            missed = math.floor((now - deadline) / self.period)
            self.skipped += missed
            self._n += missed
            deadline = self._start + self._n * self.period
        while deadline <= now:
            self._tick(self._n)
            self._n += 1
            deadline = self._start + self._n * self.period
        return deadline

    def _tick(self, n: int) -> None:
        self.ticks += 1
        for callback in tuple(self._subscribers):      # subscribers may add/remove themselves
            try:
                callback(n)
            except Exception:
                self.errors += 1
                log.exception("media clock subscriber %r failed on tick %d", callback, n)

    async def run(self) -> None:
        """Tick until cancelled."""
        loop = asyncio.get_running_loop()
        now = self.now if self._time is not None else loop.time
        while True:
            deadline = self.poll()
            await asyncio.sleep(max(0.0, deadline - now()))

    def start(self) -> asyncio.Task:
        """Run the clock as a task on the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="media-clock")
        return self._task

    async def stop(self) -> None:
        """Stop the task; a later ``start`` begins a new deadline grid, tick numbers continue."""
        task, self._task = self._task, None
        self._start = None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    @property
    def stats(self) -> dict:
        return {"ticks": self.ticks, "skipped": self.skipped, "errors": self.errors,
                "subscribers": len(self._subscribers)}
