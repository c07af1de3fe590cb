"""Front-panel buttons and LEDs over the RPi.GPIO API, with a simulated twin.

Backends share one small interface (``setup_input``, ``setup_output``, ``read``, ``write``,
``watch``, ``close``):

- ``RpiGpio``: the ``RPi.GPIO`` module — RPi.GPIO itself on older Pis, or rpi-lgpio (same module
  name) on a Pi 5 / kernel >= 6.6, where RPi.GPIO's edge detection fails. Imported when the
  backend is made, never at ``import hw``; on a non-Pi it raises ``GpioUnavailable`` saying why.
- ``SimGpio``: the twin. Records every output change with its time, and injects (bouncy) presses.

Debounce and press timing are ours (``ButtonInput``), because the libraries' ``bouncetime``
means different things (RPi.GPIO: first edge then a dead time; lgpio: stable for N). A level
counts once it has been stable for ``debounce_ms``; a press held ``long_ms`` is a long press
(reported while still held), anything shorter is a short press on release. Library callbacks
run on the library's thread and only hand ``(pin, level)`` to the loop with
``call_soon_threadsafe``; all the logic runs on the event loop.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from firmware.clock import SystemClock

if TYPE_CHECKING:
    from firmware.switch.clock import Clock

EVENTS_KEPT = 256       # ButtonInput.events: the latest reports (tests and the terminal read a few)
HISTORY_LEN = 10_000  # the twin's recorded pin changes (tests read a few hundred)

log = logging.getLogger("earshot.gpio")

EdgeCallback = Callable[[int, int], None]       # (pin, level); may be called on any thread
ButtonCallback = Callable[[str, str], None]     # (name, "down" | "up" | "short" | "long")

DEBOUNCE_MS = 20
LONG_PRESS_MS = 800


class GpioUnavailable(RuntimeError):
    """The real GPIO backend cannot run here (not a Pi, library missing, no gpiochip)."""


class Backend(Protocol):
    name: str

    def setup_input(self, pin: int, pull_up: bool) -> None: ...

    def setup_output(self, pin: int, level: int) -> None: ...

    def read(self, pin: int) -> int: ...

    def write(self, pin: int, level: int) -> None: ...

    def watch(self, pin: int, callback: EdgeCallback) -> None: ...

    def close(self) -> None: ...


# --- the real backend ---------------------------------------------------------------------------

_NOT_A_PI = ("[panel] backend = \"gpio\" needs a Raspberry Pi with the RPi.GPIO API "
             "(rpi-lgpio on a Pi 5 or kernel >= 6.6: apt install python3-rpi-lgpio; RPi.GPIO on older "
             "Pis); on a PC use backend = \"sim\"")


class RpiGpio:
    """BCM numbering over ``RPi.GPIO`` / rpi-lgpio. ``module`` injects a stand-in (tests)."""

    name = "gpio"

    def __init__(self, module: Any = None) -> None:
        if module is None:
            try:
                import RPi.GPIO as module  # noqa: N813 - imported here only, never at import hw
            except ImportError as exc:
                raise GpioUnavailable(f"{_NOT_A_PI} ({exc})") from None
            except RuntimeError as exc:  # RPi.GPIO / rpi-lgpio: "This module can only be run on a Raspberry Pi!"
                raise GpioUnavailable(f"{_NOT_A_PI} (RPi.GPIO: {exc})") from None
        self.gpio = module
        try:
            module.setwarnings(False)
            module.setmode(module.BCM)
        except Exception as exc:  # rpi-lgpio without a gpiochip raises lgpio.error here
            raise GpioUnavailable(f"{_NOT_A_PI} (setmode failed: {exc})") from None
        self._pins: list[int] = []

    def setup_input(self, pin: int, pull_up: bool) -> None:
        g = self.gpio
        g.setup(pin, g.IN, pull_up_down=g.PUD_UP if pull_up else g.PUD_DOWN)
        self._pins.append(pin)

    def setup_output(self, pin: int, level: int) -> None:
        g = self.gpio
        g.setup(pin, g.OUT, initial=g.HIGH if level else g.LOW)
        self._pins.append(pin)

    def read(self, pin: int) -> int:
        return 1 if self.gpio.input(pin) else 0

    def write(self, pin: int, level: int) -> None:
        g = self.gpio
        g.output(pin, g.HIGH if level else g.LOW)

    def watch(self, pin: int, callback: EdgeCallback) -> None:
        g = self.gpio

        def on_edge(channel: int) -> None:  # the library's thread: read the level, hand it on
            callback(channel, 1 if g.input(channel) else 0)

        try:
            g.add_event_detect(pin, g.BOTH, callback=on_edge)  # no bouncetime: we debounce
        except RuntimeError as exc:
            raise GpioUnavailable(
                f"edge detection on BCM {pin} failed ({exc}); RPi.GPIO cannot detect edges on a Pi 5 or "
                "kernel >= 6.6 — install rpi-lgpio (python3-rpi-lgpio) instead") from None

    def close(self) -> None:
        if self._pins:
            try:
                self.gpio.cleanup(self._pins)
            finally:
                self._pins = []


# --- the simulated twin -------------------------------------------------------------------------

class SimGpio:
    """In-memory pins: inputs driven by the test (``set_input``, ``press``), outputs recorded
    with their time in ``history`` as ``(t_ms, pin, level)``."""

    name = "sim"

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.levels: dict[int, int] = {}
        self.inputs: dict[int, bool] = {}     # pin -> pull-up
        self.outputs: set[int] = set()
        # bounded: a day of heartbeat would otherwise keep ~350,000 entries
        self.history: collections.deque[tuple[int, int, int]] = collections.deque(maxlen=HISTORY_LEN)
        self.history_total = 0  # changes ever recorded (readers track what they have seen by it)
        self._watchers: dict[int, list[EdgeCallback]] = {}
        self._preset: dict[int, int] = {}
        self.closed = False

    def preset_input(self, pin: int, level: int) -> None:
        """The level an input will have when it is set up (a button held, a hook off, at boot)."""
        self._preset[pin] = 1 if level else 0

    def setup_input(self, pin: int, pull_up: bool) -> None:
        self._check(pin)
        self.inputs[pin] = pull_up
        self.levels[pin] = self._preset.pop(pin, 1 if pull_up else 0)   # else the pull decides

    def setup_output(self, pin: int, level: int) -> None:
        self._check(pin)
        self.outputs.add(pin)
        self.levels[pin] = 1 if level else 0
        self._record(pin, self.levels[pin])

    def _check(self, pin: int) -> None:
        if pin in self.inputs or pin in self.outputs:
            raise ValueError(f"BCM pin {pin} is set up twice")

    def read(self, pin: int) -> int:
        return self.levels[pin]

    def write(self, pin: int, level: int) -> None:
        if pin not in self.outputs:
            raise ValueError(f"BCM pin {pin} is not an output")
        level = 1 if level else 0
        if self.levels[pin] != level:
            self.levels[pin] = level
            self._record(pin, level)

    def watch(self, pin: int, callback: EdgeCallback) -> None:
        if pin not in self.inputs:
            raise ValueError(f"BCM pin {pin} is not an input")
        self._watchers.setdefault(pin, []).append(callback)

    def close(self) -> None:
        self.closed = True
        self._watchers.clear()

    # driving inputs ------------------------------------------------------------------------------

    def set_input(self, pin: int, level: int) -> None:
        """Drive an input pin; watchers see an edge when the level changes."""
        if pin not in self.inputs:
            raise ValueError(f"BCM pin {pin} is not an input")
        level = 1 if level else 0
        if self.levels[pin] != level:
            self.levels[pin] = level
            for cb in list(self._watchers.get(pin, ())):
                cb(pin, level)

    async def press(self, pin: int, hold_ms: int = 100, *, bounces: int = 0, bounce_ms: int = 1,
                    active_low: bool = True) -> None:
        """Press, hold and release a button; ``bounces`` extra contact chatters (``bounce_ms``
        apart) at each of press and release, as a real switch makes."""
        on, off = (0, 1) if active_low else (1, 0)
        await self._chatter(pin, on, off, bounces, bounce_ms)
        await self.clock.sleep_ms(hold_ms)
        await self._chatter(pin, off, on, bounces, bounce_ms)

    async def _chatter(self, pin: int, to: int, frm: int, bounces: int, bounce_ms: int) -> None:
        self.set_input(pin, to)
        for _ in range(bounces):
            await self.clock.sleep_ms(bounce_ms)
            self.set_input(pin, frm)
            await self.clock.sleep_ms(bounce_ms)
            self.set_input(pin, to)

    def _record(self, pin: int, level: int) -> None:
        self.history.append((self.clock.now_ms(), pin, level))
        self.history_total += 1

    def led_history(self, pin: int) -> list[tuple[int, int]]:
        """``(t_ms, level)`` of every change of one output, the initial level first."""
        return [(t, lvl) for t, p, lvl in self.history if p == pin]


def make_backend(name: str, clock: Clock | None = None) -> Backend:
    """``"sim"`` or ``"gpio"`` (``GpioUnavailable`` when this is not a Pi)."""
    if name == "sim":
        return SimGpio(clock)
    if name == "gpio":
        return RpiGpio()
    raise ValueError(f"[panel] backend must be \"sim\" or \"gpio\" (got {name!r})")


# --- buttons ------------------------------------------------------------------------------------

class _Button:
    __slots__ = ("name", "pin", "raw", "last_edge", "pressed", "settler", "long_task", "long_fired", "edges")

    def __init__(self, name: str, pin: int) -> None:
        self.name, self.pin = name, pin
        self.raw = 0
        self.last_edge = 0
        self.pressed = False
        self.settler: asyncio.Task | None = None
        self.long_task: asyncio.Task | None = None
        self.long_fired = False
        self.edges = 0


class ButtonInput:
    """Named buttons on a backend → ``on_event(name, kind)`` on the loop.

    Kinds: ``down``/``up`` (debounced level, e.g. the hook switch), then ``short`` (released before
    ``long_ms``) or ``long`` (held ``long_ms``; reported while held, no ``short`` follows).
    ``start()`` must run on the event loop: edges from library threads are handed to it.
    """

    def __init__(self, backend: Backend, pins: dict[str, int], on_event: ButtonCallback, *,
                 active_low: bool = True, debounce_ms: int = DEBOUNCE_MS, long_ms: int = LONG_PRESS_MS,
                 clock: Clock | None = None) -> None:
        if debounce_ms < 1 or long_ms <= debounce_ms:
            raise ValueError(f"need 1 <= debounce_ms < long_ms (got {debounce_ms}, {long_ms})")
        self.backend = backend
        self.on_event = on_event
        self.active_low = active_low
        self.debounce_ms = debounce_ms
        self.long_ms = long_ms
        self.clock = clock or getattr(backend, "clock", None) or SystemClock()
        self._by_pin = {pin: _Button(name, pin) for name, pin in pins.items()}
        self._loop: asyncio.AbstractEventLoop | None = None
        # (t_ms, name, kind): the latest reports (bounded: buttons are pressed for months)
        self.events: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=EVENTS_KEPT)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for pin, b in self._by_pin.items():
            self.backend.setup_input(pin, pull_up=self.active_low)
            b.raw = self.backend.read(pin)
            self.backend.watch(pin, self._from_library)
        for b in self._by_pin.values():   # a button (or the hook) already held at start counts
            if self._is_active(b.raw):
                self._transition(b, True)

    def _from_library(self, pin: int, level: int) -> None:
        """Runs on the library's thread (or the loop, for the twin): hand over, nothing else."""
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(self._edge, pin, level)
        except RuntimeError:  # the loop is closed: shutting down
            pass

    def _is_active(self, level: int) -> bool:
        return level == (0 if self.active_low else 1)

    def _edge(self, pin: int, level: int) -> None:
        b = self._by_pin.get(pin)
        if b is None:
            return
        b.raw, b.last_edge = level, self.clock.now_ms()
        b.edges += 1
        if b.settler is None:
            b.settler = asyncio.ensure_future(self._settle(b))

    async def _settle(self, b: _Button) -> None:
        try:
            while True:  # wait until no edge for debounce_ms
                # wrap-safe: a press straddling the tick wrap must not sleep for 6 days
                wait = self.debounce_ms - self.clock.elapsed(b.last_edge)
                if wait <= 0:
                    break
                await self.clock.sleep_ms(wait)
        finally:
            b.settler = None
        active = self._is_active(b.raw)
        if active != b.pressed:
            self._transition(b, active)

    def _transition(self, b: _Button, active: bool) -> None:
        b.pressed = active
        if active:
            b.long_fired = False
            self._emit(b.name, "down")
            b.long_task = asyncio.ensure_future(self._long(b))
        else:
            if b.long_task is not None:
                b.long_task.cancel()
                b.long_task = None
            self._emit(b.name, "up")
            if not b.long_fired:
                self._emit(b.name, "short")

    async def _long(self, b: _Button) -> None:
        await self.clock.sleep_ms(self.long_ms)
        if b.pressed:
            b.long_fired = True
            self._emit(b.name, "long")

    def _emit(self, name: str, kind: str) -> None:
        self.events.append((self.clock.now_ms(), name, kind))
        try:
            self.on_event(name, kind)
        except Exception:
            log.exception("button %s %s: handler failed", name, kind)

    def is_pressed(self, name: str) -> bool:
        return any(b.pressed for b in self._by_pin.values() if b.name == name)

    def close(self) -> None:
        for b in self._by_pin.values():
            for t in (b.settler, b.long_task):
                if t is not None:
                    t.cancel()
        self._loop = None


# --- LEDs ---------------------------------------------------------------------------------------

class Leds:
    """Named LEDs: ``set(name, on)``; unknown names are ignored (a panel may lack an LED)."""

    def __init__(self, backend: Backend, pins: dict[str, int], *, active_low: bool = False) -> None:
        self.backend = backend
        self.pins = dict(pins)
        self.active_low = active_low
        self.state: dict[str, bool] = {name: False for name in pins}
        for pin in self.pins.values():
            backend.setup_output(pin, 1 if active_low else 0)

    def set(self, name: str, on: bool) -> None:
        pin = self.pins.get(name)
        if pin is None:
            return
        on = bool(on)
        self.state[name] = on
        self.backend.write(pin, (not on) if self.active_low else on)

    def all_off(self) -> None:
        for name in self.pins:
            self.set(name, False)
