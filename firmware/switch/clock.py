"""The control plane's sense of time: the event loop's (``SystemClock``) or one that moves only
when a test says so (``VirtualClock``)."""
from __future__ import annotations

from typing import Any, Protocol

from firmware import aio

class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_ms(self, ms: int) -> None: ...

    async def wait_for_ms(self, aw: Any, ms: int) -> Any: ...


class SystemClock:
    """The event loop's time."""

    def now_ms(self) -> int:
        return aio.ticks_ms()

    async def sleep_ms(self, ms: int) -> None:
        await aio.sleep_ms(ms)

    async def wait_for_ms(self, aw: Any, ms: int) -> Any:
        return await aio.wait_for_ms(aw, ms)


class VirtualClock:
    """A clock that moves only when told (``await advance(ms)``): timing tests without sleeping."""

    def __init__(self) -> None:
        self._now = 0
        self._seq = 0
        self._timers: list[list] = []  # [deadline, seq, callback]

    def now_ms(self) -> int:
        return self._now

    @property
    def pending(self) -> int:
        return len(self._timers)

    def _add(self, ms: int, callback) -> list:
        self._seq += 1
        timer = [self._now + max(0, int(ms)), self._seq, callback]
        self._timers.append(timer)
        return timer

    def _remove(self, timer: list) -> None:
        if timer in self._timers:
            self._timers.remove(timer)

    async def sleep_ms(self, ms: int) -> None:
        woken = aio.Event()
        timer = self._add(ms, woken.set)
        try:
            await woken.wait()
        finally:
            self._remove(timer)

    async def wait_for_ms(self, aw: Any, ms: int) -> Any:
        task = aio.create_task(aw)
        expired = []

        def expire() -> None:
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
    async def settle(rounds: int = 20) -> None:
        """Let every ready task run (a few loop turns); no time passes."""
        for _ in range(rounds):
            await aio.sleep(0)

    async def advance(self, ms: int) -> None:
        """Move time forward by ``ms``, firing due timers in deadline order."""
        target = self._now + ms
        await self.settle()
        while True:
            due = [t for t in self._timers if t[0] <= target]
            if not due:
                break
            timer = min(due, key=lambda t: (t[0], t[1]))
            self._timers.remove(timer)
            self._now = max(self._now, timer[0])
            timer[2]()
            await self.settle()
        self._now = target
        await self.settle()
