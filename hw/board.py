"""Pin maps: the reference front panel's wiring and the checks a ``[panel]`` config must pass.

Reference panel (BCM numbers; header pins in brackets). Buttons are momentary switches to GND with
the SoC's pull-ups (pressed = low); LEDs are driven from the pin through 330 ohm to GND (on = high).

    button          BCM  pin    LED          BCM  pin
    listen  (0)       5  [29]   status        17  [11]
    whisper_agent(2)  6  [31]   registered    27  [13]
    whisper_caller(1) 13 [33]   listen        22  [15]
    barge   (3)      19  [35]   whisper       23  [16]
    next    (*)      26  [37]   barge         24  [18]
    vol_up           20  [38]   active        25  [22]
    vol_down         21  [40]
    hook (optional, handset hook switch: closed = off-hook) — any free pin, e.g. 16 [36]

GPIO 2/3 (I2C, fixed 1.8 k pull-ups) and 14/15 (UART console) are avoided on purpose.
"""
from __future__ import annotations

from dataclasses import dataclass, field

BCM_MIN, BCM_MAX = 0, 27
#: pins the reference wiring keeps free: fixed pull-ups (2, 3) and the serial console (14, 15)
AVOID = frozenset({2, 3, 14, 15})

BUTTONS = ("listen", "whisper_agent", "whisper_caller", "barge", "next", "vol_up", "vol_down", "hook")
LEDS = ("status", "registered", "listen", "whisper", "barge", "active")

REFERENCE_BUTTONS = {"listen": 5, "whisper_agent": 6, "whisper_caller": 13, "barge": 19, "next": 26,
                     "vol_up": 20, "vol_down": 21}
REFERENCE_LEDS = {"status": 17, "registered": 27, "listen": 22, "whisper": 23, "barge": 24, "active": 25}
BCM_TO_HEADER = {5: 29, 6: 31, 13: 33, 19: 35, 26: 37, 20: 38, 21: 40, 16: 36,
                 17: 11, 27: 13, 22: 15, 23: 16, 24: 18, 25: 22}


@dataclass(frozen=True)
class PinMap:
    """Validated name -> BCM pin maps; ``buttons_active_low`` also chooses the pull-ups."""

    buttons: dict[str, int] = field(default_factory=lambda: dict(REFERENCE_BUTTONS))
    leds: dict[str, int] = field(default_factory=lambda: dict(REFERENCE_LEDS))
    buttons_active_low: bool = True
    leds_active_low: bool = False

    def __post_init__(self) -> None:
        check_pins(self.buttons, self.leds)


def check_pins(buttons: dict[str, int], leds: dict[str, int]) -> None:
    """ValueError naming the key for an unknown name, a pin out of range or a pin used twice."""
    seen: dict[int, str] = {}
    for table, names, pins in (("buttons", BUTTONS, buttons), ("leds", LEDS, leds)):
        for name, pin in pins.items():
            key = f"panel.{table}.{name}"
            if name not in names:
                raise ValueError(f"{key}: unknown {table[:-1]} (expected one of: {', '.join(names)})")
            if isinstance(pin, bool) or not isinstance(pin, int) or not BCM_MIN <= pin <= BCM_MAX:
                raise ValueError(f"{key}: BCM pin must be {BCM_MIN}-{BCM_MAX} (got {pin!r})")
            if pin in seen:
                raise ValueError(f"{key}: BCM pin {pin} is already used by {seen[pin]}")
            seen[pin] = key


def from_config(panel) -> PinMap:
    """The pin map of a ``PanelConfig`` (``active_low`` applies to the buttons)."""
    return PinMap(dict(panel.buttons), dict(panel.leds), buttons_active_low=panel.active_low)
