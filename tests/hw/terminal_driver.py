"""The appliance's panel side on the simulated twins, with the terminal panel on this terminal.

Run by tests/hw/test_terminal.py inside a pseudo-terminal (``python -m tests.hw.terminal_driver``);
it builds what firmware/app.py builds on a PC: a Switch with the built-in dialplan, SimGpio, Leds,
Panel, ButtonInput, the handset over the silent twin on a running media clock, and TerminalPanel.
Eavesdrop runs on the tests' FakeHub (no RTP), and one call from 1001 is up to be spied on (its
uuid is in the spymap, so keying 881001 on the handset reaches it). SIGTERM/SIGINT stop it as the
app does. Options: ``--hook-pin N`` wires the hook switch to GPIO; ``--destination D``; ``--crash``
raises after ``q`` without stopping the panel (the restore-on-exception path).
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from firmware.config import Config, PanelConfig, User
from firmware.media.clock import MediaClock
from firmware.panel import Panel
from firmware.switch import NullEndpoint, Switch
from firmware.switch.eavesdrop import Eavesdrop
from hw import board
from hw.audio import open_device
from hw.gpio import ButtonInput, Leds, SimGpio
from hw.handset import Handset
from hw.terminal import TerminalPanel
from tests.hw import FakeHub


async def run(hook_pin: int | None, destination: str, crash: bool = False) -> int:
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    sw = Switch(Config(users=(User("1001", "pw", "Agent 1001"), User("1002", "pw", "Agent 1002"),
                              User("1000", "pw", "Supervisor", may_eavesdrop=True))))
    engine = Eavesdrop(sw, FakeHub())
    sw.eavesdrop = engine
    sw.register_app("eavesdrop", engine.app_eavesdrop)
    clock = MediaClock()
    clock.start()
    handset = Handset(sw, open_device("", 8000), clock, destination=destination)
    handset.start()
    buttons_cfg = dict(PanelConfig().buttons)
    if hook_pin is not None:
        buttons_cfg["hook"] = hook_pin
    pins = board.from_config(PanelConfig(buttons=buttons_cfg))
    gpio = SimGpio()
    leds = Leds(gpio, pins.leds, active_low=pins.leds_active_low)
    panel = Panel(sw, leds, spy="handset", on_hook=handset.set_hook)
    buttons = ButtonInput(gpio, pins.buttons, panel.button, active_low=pins.buttons_active_low)
    buttons.start()
    panel.start()
    panel.set_sip_up(True)
    # a customer's call received by agent 1001: the agent's leg is in the spymap (the switch did it)
    customer = sw.new_channel(NullEndpoint("sofia/gateway/pbx/5551234"), name="sofia/gateway/pbx/5551234",
                              caller_id_number="5551234", caller_id_name="Customer")
    target = sw.new_channel(NullEndpoint("sofia/internal/1001"), name="sofia/internal/1001", user_name="1001",
                            caller_id_number="5551234", direction="outbound", destination_number="1001")
    for leg in (customer, target):
        leg.mark_answered()
    customer.other_leg, target.other_leg = target, customer
    term = TerminalPanel(gpio, pins, leds, sw, handset=handset, stop=stopping.set,
                         status=lambda: {"registrations": 2, "gateways": {"pbx": "registered"}})
    await term.start()
    logging.getLogger("driver").info("target call %s", target.uuid)
    if crash:   # a bug in the appliance: the exception escapes and nobody calls term.stop()
        await stopping.wait()
        raise RuntimeError("the driver crashed on purpose")
    try:
        await stopping.wait()
    finally:
        await term.stop()
        panel.stop()
        buttons.close()
        await handset.stop()
        await clock.stop()
    return 0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--hook-pin", type=int)
    p.add_argument("--destination", default="779")
    p.add_argument("--crash", action="store_true", help="after q, raise instead of stopping cleanly")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return asyncio.run(run(args.hook_pin, args.destination, args.crash))


if __name__ == "__main__":
    sys.exit(main())
