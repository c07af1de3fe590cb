"""hw.gpio and hw.board: debounce, short/long press, the thread hand-over, the backends' errors."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from firmware.switch.channel import VirtualClock
from hw import board
from tests.hw import aiotest
from hw.gpio import ButtonInput, GpioUnavailable, Leds, RpiGpio, SimGpio, make_backend

ROOT = Path(__file__).resolve().parents[2]
PIN = 19


def test_importing_hw_imports_no_hardware_library() -> None:
    code = ("import sys, hw, hw.gpio, hw.board, hw.audio, hw.handset, firmware.panel; "
            "bad = [m for m in ('RPi', 'RPi.GPIO', 'pyaudio', 'lgpio') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_real_backend_on_a_pc_fails_clearly() -> None:
    with pytest.raises(GpioUnavailable, match=r"Raspberry Pi.*backend = \"sim\""):
        make_backend("gpio")
    with pytest.raises(ValueError, match="must be \"sim\" or \"gpio\""):
        make_backend("pigpio")


def rig(clock: VirtualClock, **kw) -> tuple[SimGpio, ButtonInput, list[tuple[str, str]]]:
    sim = SimGpio(clock)
    events: list[tuple[str, str]] = []
    buttons = ButtonInput(sim, {"barge": PIN}, lambda n, k: events.append((n, k)), clock=clock, **kw)
    buttons.start()
    return sim, buttons, events


async def drive(clock: VirtualClock, coro, ms: int) -> None:
    task = asyncio.ensure_future(coro)
    await clock.advance(ms)
    assert task.done()
    task.result()


@aiotest
async def test_a_bouncy_press_counts_once() -> None:
    clock = VirtualClock()
    sim, buttons, events = rig(clock)
    await drive(clock, sim.press(PIN, hold_ms=120, bounces=4, bounce_ms=1), 400)
    assert events == [("barge", "down"), ("barge", "up"), ("barge", "short")]
    assert buttons._by_pin[PIN].edges == 2 * (1 + 2 * 4)   # every chatter reached the debouncer
    # reported after the level held for the debounce time, not at the first edge
    t_down = next(t for t, n, k in buttons.events if k == "down")
    assert t_down == 8 + 20


@aiotest
async def test_a_glitch_shorter_than_the_debounce_is_ignored() -> None:
    clock = VirtualClock()
    sim, _, events = rig(clock)
    await drive(clock, sim.press(PIN, hold_ms=5), 200)
    assert events == []


@aiotest
async def test_a_long_press_is_told_apart() -> None:
    clock = VirtualClock()
    sim, buttons, events = rig(clock, long_ms=800)
    task = asyncio.ensure_future(sim.press(PIN, hold_ms=1500, bounces=2))
    await clock.advance(700)
    assert events == [("barge", "down")]
    await clock.advance(200)
    assert events == [("barge", "down"), ("barge", "long")]   # while still held
    await clock.advance(1000)
    assert task.done()
    assert events == [("barge", "down"), ("barge", "long"), ("barge", "up")]   # no short after a long
    await drive(clock, sim.press(PIN, hold_ms=300), 500)
    assert events[-1] == ("barge", "short")


@aiotest
async def test_active_high_buttons_and_a_button_held_at_start() -> None:
    clock = VirtualClock()
    sim = SimGpio(clock)
    events: list[tuple[str, str]] = []
    sim.preset_input(5, 1)               # the hook is already off when the firmware starts
    buttons = ButtonInput(sim, {"hook": 5}, lambda n, k: events.append((n, k)), active_low=False,
                          clock=clock, long_ms=10_000)
    buttons.start()
    assert sim.inputs[5] is False        # active-high: pull-down
    assert events == [("hook", "down")]
    sim.set_input(5, 0)
    await clock.advance(50)
    assert events == [("hook", "down"), ("hook", "up"), ("hook", "short")]
    assert not buttons.is_pressed("hook")


class FakeRPiGPIO:
    """The RPi.GPIO API; edges are delivered on a separate thread, as the library does."""

    BCM, IN, OUT, PUD_UP, PUD_DOWN, HIGH, LOW, BOTH = 11, 1, 0, 22, 21, 1, 0, 33

    def __init__(self, edge_fails: bool = False) -> None:
        self.mode = None
        self.setups: dict[int, tuple] = {}
        self.levels: dict[int, int] = {}
        self.callbacks: dict[int, object] = {}
        self.detect_kwargs: dict[int, dict] = {}
        self.edge_fails = edge_fails
        self.cleaned: list = []

    def setwarnings(self, flag: bool) -> None:
        pass

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def setup(self, pin: int, direction: int, pull_up_down: int | None = None, initial: int | None = None) -> None:
        self.setups[pin] = (direction, pull_up_down, initial)
        self.levels[pin] = 1 if pull_up_down == self.PUD_UP else (initial or 0)

    def input(self, pin: int) -> int:
        return self.levels[pin]

    def output(self, pin: int, level: int) -> None:
        self.levels[pin] = level

    def add_event_detect(self, pin: int, edge: int, callback=None, **kwargs) -> None:
        if self.edge_fails:
            raise RuntimeError("Failed to add edge detection")
        self.callbacks[pin] = callback
        self.detect_kwargs[pin] = kwargs

    def cleanup(self, pins=None) -> None:
        self.cleaned.append(pins)

    def drive(self, pin: int, levels: list[int]) -> None:
        def run() -> None:
            for lvl in levels:
                self.levels[pin] = lvl
                self.callbacks[pin](pin)
        t = threading.Thread(target=run)
        t.start()
        t.join()


@aiotest
async def test_rpi_gpio_backend_hands_library_thread_edges_to_the_loop() -> None:
    fake = FakeRPiGPIO()
    backend = RpiGpio(fake)
    assert fake.mode == fake.BCM
    seen_threads: set[int] = set()
    done = asyncio.Event()

    def on_event(name: str, kind: str) -> None:
        seen_threads.add(threading.get_ident())
        if kind == "short":
            done.set()

    buttons = ButtonInput(backend, {"barge": PIN}, on_event, debounce_ms=5, long_ms=500)
    buttons.start()
    assert fake.setups[PIN] == (fake.IN, fake.PUD_UP, None)
    assert fake.detect_kwargs[PIN] == {}          # no library bouncetime: the debounce is ours
    fake.drive(PIN, [0, 1, 0])                   # press with one chatter, on the library's thread
    await asyncio.sleep(0.05)
    fake.drive(PIN, [1])
    await asyncio.wait_for(done.wait(), 2)
    assert seen_threads == {threading.get_ident()}
    assert [k for _, _, k in buttons.events] == ["down", "up", "short"]
    leds = Leds(backend, {"barge": 24})
    leds.set("barge", True)
    assert fake.setups[24] == (fake.OUT, None, fake.LOW) and fake.levels[24] == fake.HIGH
    buttons.close()
    backend.close()
    assert fake.cleaned == [[PIN, 24]]


@aiotest
async def test_rpi_gpio_without_edge_detection_points_at_rpi_lgpio() -> None:
    backend = RpiGpio(FakeRPiGPIO(edge_fails=True))
    buttons = ButtonInput(backend, {"barge": PIN}, lambda n, k: None)
    with pytest.raises(GpioUnavailable, match="rpi-lgpio"):
        buttons.start()


def test_sim_leds_record_levels_with_times() -> None:
    clock = VirtualClock()
    sim = SimGpio(clock)
    leds = Leds(sim, {"status": 17, "barge": 24}, active_low=True)
    clock._t = 40
    leds.set("barge", True)
    leds.set("barge", True)          # no change, no record
    clock._t = 90
    leds.set("barge", False)
    leds.set("nonexistent", True)    # a panel without that LED
    assert sim.led_history(24) == [(0, 1), (40, 0), (90, 1)]   # active-low: on = 0
    assert leds.state == {"status": False, "barge": False}


def test_pin_maps_reject_duplicates_range_and_names() -> None:
    board.PinMap()   # the reference wiring is valid
    with pytest.raises(ValueError, match=r"panel.leds.barge: BCM pin 19 is already used by panel.buttons.barge"):
        board.PinMap(leds=dict(board.REFERENCE_LEDS, barge=19))
    with pytest.raises(ValueError, match=r"panel.buttons.next: BCM pin must be 0-27 \(got 40\)"):
        board.PinMap(buttons=dict(board.REFERENCE_BUTTONS, next=40))
    with pytest.raises(ValueError, match=r"panel.buttons.mute: unknown button"):
        board.PinMap(buttons={"mute": 4})
    with pytest.raises(ValueError, match="set up twice"):
        sim = SimGpio(VirtualClock())
        sim.setup_input(5, True)
        sim.setup_output(5, 0)


def test_debounce_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="debounce_ms"):
        ButtonInput(SimGpio(VirtualClock()), {}, lambda n, k: None, debounce_ms=50, long_ms=40)
