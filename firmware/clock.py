"""The one clock: milliseconds that wrap, and only wrap-safe arithmetic on them.

``aio.ticks_ms()`` wraps (MicroPython's ticks; 2^29 ms ≈ 6.2 days on a PC too, so wrap bugs show
up in tests), and an appliance runs for months: ``a - b`` on two tick values is wrong once in every
period. Every deadline, wait and duration goes through ``deadline(ms)``, ``remaining(deadline)``
and ``elapsed(since)``, which use ``ticks_add``/``ticks_diff`` (tests/unit/test_clock_wrap.py
rejects raw arithmetic on tick values anywhere else).

``SystemClock`` is the event loop's; ``VirtualClock`` moves only when a test says so and can start
just before the wrap. Plain Python over ``firmware.aio``: it also runs under MicroPython.
"""

from firmware import aio


class WrapSafe:
    """Deadline arithmetic for any clock with ``now_ms()``."""

    def deadline(self, ms):
        """The tick value ``ms`` from now."""
        return aio.ticks_add(self.now_ms(), int(ms))

    def remaining(self, deadline):
        """Milliseconds until ``deadline`` (0 once it has passed)."""
        return max(0, aio.ticks_diff(deadline, self.now_ms()))

    def elapsed(self, since):
        """Milliseconds since the tick value ``since`` (less than half a period ago)."""
        return aio.ticks_diff(self.now_ms(), since)


class SystemClock(WrapSafe):
    """The event loop's time (the default clock of the switch, the panel, buttons and LEDs)."""

    def now_ms(self):
        return aio.ticks_ms()

    async def sleep_ms(self, ms):
        await aio.sleep_ms(ms)

    async def wait_for_ms(self, aw, ms):
        return await aio.wait_for_ms(aw, ms)


class VirtualClock(WrapSafe):
    """A clock that moves only when told (``await advance(ms)``): timing tests without sleeping.
    ``start`` is its first tick value (``aio.TICKS_PERIOD - 1000``: a test across the wrap)."""

    def __init__(self, start=0):
        self._start = start % aio.TICKS_PERIOD
        self._t = 0                # ms since start, never wraps: orders the timers
        self._seq = 0
        self._timers = []          # [due (in _t), seq, callback]

    def now_ms(self):
        return aio.ticks_add(self._start, self._t)

    @property
    def pending(self):
        return len(self._timers)

    def _add(self, ms, callback):
        self._seq += 1
        timer = [self._t + max(0, int(ms)), self._seq, callback]
        self._timers.append(timer)
        return timer

    def _remove(self, timer):
        if timer in self._timers:
            self._timers.remove(timer)

    async def sleep_ms(self, ms):
        woken = aio.Event()
        timer = self._add(ms, woken.set)
        try:
            await woken.wait()
        finally:
            self._remove(timer)

    async def wait_for_ms(self, aw, ms):
        task = aio.create_task(aw)
        expired = []

        def expire():
            expired.append(True)
            task.cancel()

        timer = self._add(ms, expire)
        try:
            return await task
        except aio.CancelledError:
            if expired:
                raise aio.TimeoutError() from None
            raise
        finally:
            self._remove(timer)
            if not task.done():
                task.cancel()

    @staticmethod
    async def settle(rounds=20):
        """Let every ready task run (a few loop turns); no time passes."""
        for _ in range(rounds):
            await aio.sleep(0)

    async def advance(self, ms):
        """Move time forward by ``ms``, firing due timers in deadline order."""
        target = self._t + ms
        await self.settle()
        while True:
            due = [t for t in self._timers if t[0] <= target]
            if not due:
                break
            timer = min(due, key=lambda t: (t[0], t[1]))
            self._timers.remove(timer)
            self._t = max(self._t, timer[0])
            timer[2]()
            await self.settle()
        self._t = target
        await self.settle()
