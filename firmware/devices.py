"""The appliance's own hardware, built from the config: the front panel over GPIO (or its
simulated twin), the USB handset as a channel, and on a PC the terminal front panel.

Each part is optional at run time: a missing audio device or a GPIO chip that cannot be opened is
logged with the key to fix, the STATUS LED blinks the error, and the SIP side keeps working.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from firmware.config import Config, runtime_dir
from firmware.panel import Panel
from hw import board
from hw.audio import AudioDeviceError, open_device
from hw.gpio import ButtonInput, GpioUnavailable, Leds, SimGpio, make_backend
from hw.handset import Handset

log = logging.getLogger("earshot.devices")


class Devices:
    def __init__(self, cfg: Config, switch: Any, clock: Any, *, stop: Callable[[], None],
                 status: Callable[[], dict] | None = None) -> None:
        self.cfg = cfg
        self.switch = switch
        self.clock = clock
        self._stop = stop
        self._status = status
        self.gpio: Any = None
        self.pins: board.PinMap | None = None
        self.leds: Leds | None = None
        self.buttons: ButtonInput | None = None
        self.panel: Panel | None = None
        self.handset: Handset | None = None
        self.terminal: Any = None

    async def start(self) -> None:
        cfg = self.cfg
        self.pins = board.from_config(cfg.panel)
        try:
            self.gpio = make_backend(cfg.panel.backend)
        except GpioUnavailable as exc:
            log.error("[panel] backend = \"gpio\": %s; using the simulated panel", exc)
            self.gpio = SimGpio()
        self.leds = Leds(self.gpio, self.pins.leds, active_low=self.pins.leds_active_low)
        self.handset = self._open_handset()
        on_hook = self.handset.set_hook if self.handset else None
        self.panel = Panel(self.switch, self.leds, spy=cfg.panel.spy, on_hook=on_hook,
                           gateways=[g.name for g in cfg.gateways if g.register],
                           provision_file=str(runtime_dir() / "provision.json"))
        self.buttons = ButtonInput(self.gpio, self.pins.buttons, self.panel.button,
                                   active_low=self.pins.buttons_active_low)
        self.buttons.start()
        self.panel.start()
        if self.handset is None:
            self.panel.set_error("handset", "no handset")
        else:
            self.handset.start()
        await self._start_terminal()

    def _open_handset(self) -> Handset | None:
        hs = self.cfg.handset
        try:
            device = open_device(hs.device, hs.rate)
        except AudioDeviceError as exc:
            log.error("%s; running without a handset (the SIP side works as before)", exc)
            return None
        return Handset(self.switch, device, self.clock, destination=hs.destination, hook=hs.hook)

    async def _start_terminal(self) -> None:
        from hw.terminal import TerminalPanel  # termios: only where a terminal panel can run
        if isinstance(self.gpio, SimGpio) and TerminalPanel.available():
            self.terminal = TerminalPanel(self.gpio, self.pins, self.leds, self.switch, handset=self.handset,
                                          stop=self._stop, status=self._status,
                                          pick_agent=self.panel.pick_next_agent if self.panel else None)
            await self.terminal.start()

    def sip_up(self, up: bool) -> None:
        if self.panel:
            self.panel.set_sip_up(up)

    def gateway_state(self, name: str, state: str) -> None:
        if self.panel:
            self.panel.gateway_state(name, state)

    async def stop(self) -> None:
        if self.terminal is not None:
            await self.terminal.stop()  # first, so the shutdown log lands on the normal screen
        if self.handset is not None:
            await self.handset.stop()
        if self.panel is not None:
            self.panel.stop()
        if self.buttons is not None:
            self.buttons.close()
        if self.gpio is not None:
            self.gpio.close()
