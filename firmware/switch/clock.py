"""The control plane's sense of time: the one wrap-safe clock of ``firmware.clock`` — the event
loop's (``SystemClock``) or one that moves only when a test says so (``VirtualClock``) — and the
``Clock`` protocol the switch is typed against."""
from __future__ import annotations

from typing import Any, Protocol

from firmware.clock import SystemClock, VirtualClock

__all__ = ["Clock", "SystemClock", "VirtualClock"]


class Clock(Protocol):
    def now_ms(self) -> int: ...

    async def sleep_ms(self, ms: int) -> None: ...

    async def wait_for_ms(self, aw: Any, ms: int) -> Any: ...

    def deadline(self, ms: int) -> int: ...

    def remaining(self, deadline: int) -> int: ...

    def elapsed(self, since: int) -> int: ...


