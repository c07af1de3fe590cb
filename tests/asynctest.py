"""Running a test's coroutine with a bound, and awaiting a condition the event loop will make
true — shared by the asyncio tests so that every wait has a deadline and none is a bare sleep."""
from __future__ import annotations

import asyncio
from collections.abc import Callable


def run(coro, timeout: float = 20.0):
    """``asyncio.run`` with a deadline: a hung test fails with TimeoutError instead of hanging CI."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0, poll: float = 0.005) -> None:
    """Poll ``cond`` on the loop until it holds; AssertionError at the deadline."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(poll)
