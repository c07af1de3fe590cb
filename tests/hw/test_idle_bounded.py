"""An idle appliance on its simulated twins stays the same size: minutes of media ticks through the
handset (every tick plays 20 ms of silence to the twin's earpiece) and hours of LED writes keep
every recording buffer within its window and the heap flat. Before, SimAudio kept every frame it
was given (56 MB an hour at 8 kHz) — the embedded default, and what a Pi falls back to."""
from __future__ import annotations

import tracemalloc

import pytest

from firmware.config import PanelConfig
from firmware.media.clock import ManualTime, MediaClock
from firmware.switch import Switch
from hw import board
from hw.audio import SIM_KEEP_MS, SimAudio, frame_bytes, open_device
from hw.gpio import HISTORY_LEN, Leds, SimGpio
from hw.handset import Handset
from tests.hw import aiotest

TICKS_PER_MIN = 60_000 // 20


def growth_outside(measure, warm_up, run) -> int:
    """Heap growth across ``run()`` after ``warm_up()``, less the change of what ``measure()``
    reports (a window's allocation, which may legitimately fill and trim). Traced from before the
    warm-up, so buffers reallocated later are counted on both sides."""
    tracemalloc.start()
    try:
        warm_up()
        before = tracemalloc.get_traced_memory()[0] - measure()
        run()
        return tracemalloc.get_traced_memory()[0] - measure() - before
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("rate", [8000, 48000])
@aiotest
async def test_five_idle_minutes_of_handset_ticks_keep_the_heap_flat(rate: int) -> None:
    device = open_device("", rate)                 # what [handset] device = "" gives the appliance
    assert isinstance(device, SimAudio)
    device.open()
    time = ManualTime()
    clock = MediaClock(time_source=time)
    handset = Handset(Switch(), device, clock)      # on hook: the idle appliance
    handset.start()
    window = SIM_KEEP_MS // 20 * frame_bytes(rate)
    longest = 0

    def tick(n: int) -> None:
        nonlocal longest
        for _ in range(n):
            time.advance(0.02)
            clock.poll()
            longest = max(longest, len(device.played))

    # two minutes to pass the window and reach the steady state, then three more measured
    grown = growth_outside(device.played.__alloc__, lambda: tick(2 * TICKS_PER_MIN),
                           lambda: tick(3 * TICKS_PER_MIN))
    await handset.stop()
    assert handset.leg.stats["ticks"] == 5 * TICKS_PER_MIN
    assert device.played_bytes == 5 * TICKS_PER_MIN * frame_bytes(rate)   # every frame was played…
    assert window <= len(device.played) < 2 * window and longest < 2 * window   # …a minute or two kept
    assert grown < 64 * 1024, f"{grown} bytes more after 3 idle minutes"


def test_the_played_window_is_the_latest_audio() -> None:
    sim = SimAudio(8000, keep_ms=100)               # 5 frames
    sim.open()
    for i in range(23):
        sim.write(bytes([i]) * 320)
    assert sim.played_bytes == 23 * 320
    assert 5 * 320 <= len(sim.played) < 10 * 320
    assert sim.played[-320:] == bytes([22]) * 320 and sim.played[-len(sim.played)] == 23 - len(sim.played) // 320
    with pytest.raises(ValueError, match="at least one frame"):
        SimAudio(8000, keep_ms=10)


def test_a_day_of_led_writes_keeps_the_twin_history_bounded() -> None:
    gpio = SimGpio(clock=FixedClock())
    pins = board.from_config(PanelConfig())
    leds = Leds(gpio, pins.leds, active_low=pins.leds_active_low)
    name = next(iter(pins.leds))

    def blink(n: int) -> None:
        for i in range(n):
            leds.set(name, i % 2 == 0)

    # full, then about a day of heartbeat
    grown = growth_outside(lambda: 0, lambda: blink(HISTORY_LEN), lambda: blink(4 * HISTORY_LEN))
    assert len(gpio.history) == HISTORY_LEN and gpio.history_total >= 5 * HISTORY_LEN
    assert grown < 64 * 1024, f"{grown} bytes more after {4 * HISTORY_LEN} LED writes"


class FixedClock:
    def now_ms(self) -> int:
        return 1


@aiotest
async def test_a_year_of_button_presses_keeps_the_panel_and_button_records_bounded() -> None:
    """Panel.digits_sent and ButtonInput.events grew by one entry per press for the life of the
    process; both keep only their latest entries now."""
    from firmware import panel as P
    from firmware.switch import NullEndpoint, Switch
    from hw.gpio import EVENTS_KEPT, ButtonInput

    sw = Switch()
    gpio = SimGpio(clock=FixedClock())
    leds = Leds(gpio, board.from_config(PanelConfig()).leds)
    panel = P.Panel(sw, leds, spy="handset")
    spy = sw.new_channel(NullEndpoint("handset/local"), name="handset/local")
    buttons = ButtonInput(gpio, {"listen": 5}, panel.button, clock=FixedClock())
    for _ in range(10 * P.DIGITS_KEPT):
        panel.button("listen", "short")
        buttons._emit("listen", "short")            # what a debounced press reports
    assert P.DIGITS_KEPT <= len(panel.digits_sent) <= 2 * P.DIGITS_KEPT
    assert panel.digits_sent[-1] == (spy.uuid, "0") and len(buttons.events) == EVENTS_KEPT
