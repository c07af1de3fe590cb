"""The asyncio subset that MicroPython also has (DESIGN §3).

Control-plane modules (switch, panel, control, provision) import asyncio only through here, so the
eavesdrop state machine and the panel logic run unchanged under MicroPython's ``asyncio``.
What is exported is exactly the portable subset: tasks, ``sleep``/``sleep_ms``, ``Event``, ``Lock``,
``gather``, ``wait_for``/``wait_for_ms``, TCP streams, and a ``ThreadSafeFlag`` for handing events
from library threads to the loop. ``Queue``, ``call_later``, executors, datagram endpoints and
``TaskGroup`` are deliberately absent.
"""

try:
    import asyncio
except ImportError:  # MicroPython < 1.21
    import uasyncio as asyncio  # type: ignore[no-redef]

IS_MICROPYTHON = hasattr(asyncio, "sleep_ms")

run = asyncio.run
create_task = asyncio.create_task
sleep = asyncio.sleep
gather = asyncio.gather
wait_for = asyncio.wait_for
Event = asyncio.Event
Lock = asyncio.Lock
CancelledError = asyncio.CancelledError
TimeoutError = asyncio.TimeoutError  # noqa: A001 - MicroPython's own class; CPython's builtin
# Ports without sockets (MicroPython's webassembly build) lack streams; the modules that serve
# TCP fail when they start, the plain-logic modules still import.
open_connection = getattr(asyncio, "open_connection", None)
start_server = getattr(asyncio, "start_server", None)

if IS_MICROPYTHON:  # pragma: no cover - exercised under MicroPython only
    import time as _time

    sleep_ms = asyncio.sleep_ms
    wait_for_ms = asyncio.wait_for_ms
    ThreadSafeFlag = getattr(asyncio, "ThreadSafeFlag", None)
    ticks_ms = _time.ticks_ms
    ticks_add = _time.ticks_add
    ticks_diff = _time.ticks_diff
    TICKS_PERIOD = 1 << 30  # MICROPY_PY_TIME_TICKS_PERIOD of the common ports
else:
    import time as _time

    TICKS_PERIOD = _PERIOD = 1 << 29  # a wrap as MicroPython's ticks have, so wrap bugs show up on a PC too

    def ticks_ms() -> int:
        return (_time.monotonic_ns() // 1_000_000) & (_PERIOD - 1)

    def ticks_add(t: int, delta: int) -> int:
        return (t + delta) % _PERIOD

    def ticks_diff(a: int, b: int) -> int:
        d = (a - b) & (_PERIOD - 1)
        return ((d + _PERIOD // 2) & (_PERIOD - 1)) - _PERIOD // 2

    def sleep_ms(ms: int):
        return asyncio.sleep(ms / 1000)

    def wait_for_ms(aw, ms: int):
        return asyncio.wait_for(aw, ms / 1000)

    class ThreadSafeFlag:
        """Set from any thread, awaited by one task, self-clearing (MicroPython's contract).

        Construct it inside a coroutine: it binds the running loop.
        """

        def __init__(self) -> None:
            self._loop = asyncio.get_running_loop()
            self._event = asyncio.Event()

        def set(self) -> None:
            self._loop.call_soon_threadsafe(self._event.set)

        def clear(self) -> None:
            self._event.clear()

        async def wait(self) -> None:
            await self._event.wait()
            self._event.clear()


class TaskSet:
    """Background tasks kept referenced until they end (CPython may otherwise collect a running
    task), their failures logged instead of lost, and cancelled together at shutdown. Portable:
    no ``add_done_callback``; each task removes itself when it finishes.

    ``quiet`` exceptions end a task silently (e.g. a channel hanging up); ``on_error(exc)``
    replaces the default log line.
    """

    def __init__(self, what: str, quiet: tuple = (), on_error=None) -> None:
        self.what = what
        self.quiet = quiet
        self.on_error = on_error
        self._tasks: set = set()

    def spawn(self, coro):
        holder: list = []

        async def run() -> None:
            try:
                await coro
            except CancelledError:
                pass
            except self.quiet:
                pass
            except Exception as exc:
                if self.on_error is not None:
                    self.on_error(exc)
                else:
                    import logging
                    logging.getLogger("earshot").exception("%s: background task failed", self.what)
            finally:
                if holder:
                    self._tasks.discard(holder[0])

        task = create_task(run())
        holder.append(task)
        self._tasks.add(task)
        return task

    def cancel_all(self) -> list:
        """Cancel every task still running; returns them (to await, where the caller can)."""
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        return tasks

    def __iter__(self):
        return iter(list(self._tasks))

    def __len__(self) -> int:
        return len(self._tasks)


class Mailbox:
    """A small FIFO for one consumer task: MicroPython has no ``asyncio.Queue``.

    ``put`` never blocks (producers are callbacks on the loop); the bound drops the oldest item,
    which is the right failure for events such as button presses and digits.
    """

    def __init__(self, maxlen: int = 64) -> None:
        self._items: list = []
        self._maxlen = maxlen
        self._ready = Event()
        self.dropped = 0

    def put(self, item) -> None:
        if len(self._items) >= self._maxlen:
            self._items.pop(0)
            self.dropped += 1
        self._items.append(item)
        self._ready.set()

    async def get(self):
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.pop(0)

    def get_nowait(self):
        """The oldest item, or None when empty."""
        return self._items.pop(0) if self._items else None

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
