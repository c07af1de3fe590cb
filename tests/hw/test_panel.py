"""firmware.panel on the simulated twin: buttons → digits on the spy's channel, state → LED patterns.

Time is a VirtualClock shared by the switch, the eavesdrop state machine, the buttons and the LED
tasks, so LED timestamps are exact and nothing sleeps.
"""
from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from firmware import panel as P
from firmware.switch import NullEndpoint, Switch
from firmware.switch.channel import VirtualClock
from firmware.switch.eavesdrop import Eavesdrop
from hw import board
from hw.gpio import ButtonInput, Leds, SimGpio
from tests.hw import FakeHub, aiotest

BTN = board.REFERENCE_BUTTONS
LED = board.REFERENCE_LEDS


class Rig:
    def __init__(self, spy: str = "handset", **panel_kw) -> None:
        self.clock = VirtualClock()
        self.sw = Switch(clock=self.clock)
        self.hub = FakeHub()
        self.engine = Eavesdrop(self.sw, self.hub)
        self.sw.eavesdrop = self.engine
        self.sw.register_app("eavesdrop", self.engine.app_eavesdrop)
        self.gpio = SimGpio(self.clock)
        self.leds = Leds(self.gpio, LED)
        self.panel = P.Panel(self.sw, self.leds, spy=spy, clock=self.clock, **panel_kw)
        self.buttons = ButtonInput(self.gpio, BTN, self.panel.button, clock=self.clock)

    def start(self) -> None:
        self.buttons.start()
        self.panel.start()

    def channel(self, name: str, **variables: str):
        ch = self.sw.new_channel(NullEndpoint(name), name=name, **variables)
        ch.mark_answered()
        return ch

    async def spy_on(self, spy, target) -> None:
        self.sw.spawn(self.sw.run_app(spy, "eavesdrop", target.uuid))
        await self.clock.advance(10)

    async def press(self, button: str, hold_ms: int = 120, bounces: int = 3) -> None:
        task = asyncio.ensure_future(self.gpio.press(BTN[button], hold_ms, bounces=bounces))
        await self.clock.advance(hold_ms + 100)
        assert task.done()

    def lit(self) -> dict[str, bool]:
        return dict(self.leds.state)

    def history(self, led: str) -> list[tuple[int, int]]:
        return self.gpio.led_history(LED[led])


@aiotest
async def test_barge_during_an_eavesdrop_sets_mode_3_and_lights_barge() -> None:
    r = Rig()
    r.start()
    target = r.channel("sofia/internal/1001", caller_id_number="1001")
    spy = r.channel("handset/local", may_eavesdrop="true")
    await r.spy_on(spy, target)
    assert r.engine.modes() == {spy.uuid: 0}
    lit = r.lit()
    assert lit["listen"] and lit["active"] and not lit["barge"] and not lit["whisper"]

    await r.press("barge", bounces=4)            # a bouncy press through the debouncer
    assert r.panel.digits_sent == [(spy.uuid, "3")]
    assert r.engine.modes() == {spy.uuid: 3} and r.hub.taps[0].mode == 3
    lit = r.lit()
    assert lit["barge"] and lit["active"] and not lit["listen"] and not lit["whisper"]

    await r.press("whisper_agent")               # mode 2: WHISPER steady
    assert r.engine.modes()[spy.uuid] == 2
    assert r.panel.patterns["whisper"] == P.ON and not r.lit()["barge"]
    await r.press("whisper_caller")              # mode 1: WHISPER blinks
    assert r.engine.modes()[spy.uuid] == 1
    assert r.panel.patterns["whisper"] == P.WHISPER_CALLER_BLINK
    await r.press("listen")
    assert [d for _, d in r.panel.digits_sent] == ["3", "2", "1", "0"]
    assert r.lit()["listen"]

    await r.press("next")                        # "*": the uuid session ends, mode LEDs go dark
    assert [d for _, d in r.panel.digits_sent][-1] == "*"
    assert r.engine.modes() == {}
    lit = r.lit()
    assert not any(lit[n] for n in ("listen", "whisper", "barge", "active"))


@aiotest
async def test_volume_buttons_step_the_listen_gain_of_the_running_session() -> None:
    r = Rig()
    r.start()
    target = r.channel("sofia/internal/1001")
    spy = r.channel("handset/local", may_eavesdrop="true")
    await r.spy_on(spy, target)
    await r.press("vol_up")
    await r.press("vol_up")
    await r.press("vol_down")
    assert spy.get_variable(P.LISTEN_GAIN_VAR) == "3"
    assert r.hub.taps[0].gains == [0.0, 3, 6, 3]
    await r.press("vol_down", hold_ms=1000)      # long press: back to 0 dB
    assert r.panel.listen_gain_db == 0 and r.hub.taps[0].gains[-1] == 0
    for _ in range(20):
        r.panel.button("vol_up", "short")
    assert r.panel.listen_gain_db == P.VOLUME_MAX_DB


@aiotest
async def test_a_long_next_hangs_up_the_spy_and_a_press_without_spy_is_ignored() -> None:
    r = Rig()
    r.start()
    await r.press("barge")
    assert r.panel.ignored == 1 and r.panel.digits_sent == []
    spy = r.channel("handset/local")
    await r.press("next", hold_ms=1000)
    assert not spy.up
    assert r.panel.digits_sent == []             # a long NEXT is not a "*"


@aiotest
async def test_a_sip_spy_gets_the_digits_when_configured() -> None:
    r = Rig(spy="user/1003")
    r.start()
    r.channel("handset/local")
    other = r.channel("sofia/internal/1002", user_name="1002")
    supervisor = r.channel("sofia/internal/1003", user_name="1003")
    await r.press("whisper_agent")
    assert r.panel.digits_sent == [(supervisor.uuid, "2")]
    assert supervisor.dtmf_queued == 1 and other.dtmf_queued == 0


@aiotest
async def test_hook_input_reports_off_and_on_hook() -> None:
    hooks: list[bool] = []
    clock = VirtualClock()
    gpio = SimGpio(clock)
    panel = P.Panel(Switch(clock=clock), Leds(gpio, LED), clock=clock, on_hook=hooks.append)
    buttons = ButtonInput(gpio, {"hook": 16}, panel.button, clock=clock)
    buttons.start()
    panel.start()
    task = asyncio.ensure_future(gpio.press(16, 3000, bounces=5))
    await clock.advance(3200)
    assert task.done() and hooks == [True, False]


@aiotest
async def test_heartbeat_follows_its_pattern_and_errors_blink_fast() -> None:
    r = Rig()
    r.start()
    await r.clock.advance(2000)
    changes = r.history("status")
    # initial off at 0, then the double blink every second: on 0, off 80, on 200, off 280, on 1000 ...
    assert changes == [(0, 0), (0, 1), (80, 0), (200, 1), (280, 0), (1000, 1), (1080, 0), (1200, 1),
                       (1280, 0), (2000, 1)]
    r.panel.set_error("handset", "no audio device")
    start = len(r.history("status"))
    await r.clock.advance(1000)
    fast = r.history("status")[start:]
    # 5 Hz from the moment of the error (the LED was already on at 2000: no change recorded then)
    assert fast == [(2000 + 100 * k, (k + 1) % 2) for k in range(1, 11)]
    r.panel.clear_error("handset")
    assert r.panel.patterns["status"] == P.HEARTBEAT


@aiotest
async def test_registered_follows_gateways_or_sip() -> None:
    r = Rig(gateways=("pbx", "backup"))
    r.start()
    assert r.panel.patterns["registered"] == P.OFF
    r.panel.gateway_state("pbx", "trying")
    assert r.panel.patterns["registered"] == P.SLOW_BLINK
    r.panel.gateway_state("pbx", "registered")
    assert r.panel.patterns["registered"] == P.OFF     # "backup" is not registered yet
    r.panel.gateway_state("backup", "registered")
    assert r.lit()["registered"]
    r.panel.gateway_state("backup", "failed")
    assert not r.lit()["registered"]
    solo = Rig()
    solo.start()
    assert not solo.lit()["registered"]
    solo.panel.set_sip_up(True)
    assert solo.lit()["registered"]


@aiotest
async def test_provisioning_report_shows_its_pattern_then_the_panel_returns(tmp_path: Path) -> None:
    report = tmp_path / "provision.json"
    report.write_text(json.dumps({"outcome": "applied", "led": "provision-applied", "time": int(time.time())}))
    r = Rig(provision_file=str(report))
    r.start()
    await r.clock.advance(1500)
    assert r.panel._overlay is None               # the report present at boot is not replayed
    report.write_text(json.dumps({"outcome": "rejected", "led": "provision-rejected", "time": int(time.time())}))
    await r.clock.advance(1000)
    assert r.panel._overlay is not None and r.panel._overlay[0] == "provision-rejected"
    t0 = r.clock.now_ms()
    await r.clock.advance(1000)
    for led in ("status", "barge", "active"):
        blinks = [(t - t0, lvl) for t, lvl in r.history(led) if t >= t0]
        assert blinks[:4] == [(0, 1), (250, 0), (500, 1), (750, 0)], led
    await r.clock.advance(30000)
    assert r.panel._overlay is None and r.panel.patterns["status"] == P.HEARTBEAT
    report.write_text(json.dumps({"led": "provision-applied", "time": int(time.time()) - 3600}))
    await r.clock.advance(1000)
    assert r.panel._overlay is None               # an hour-old result is not shown


def test_panel_rejects_a_bad_spy() -> None:
    import pytest
    with pytest.raises(ValueError, match="user/<id>"):
        P.Panel(None, None, spy="sofia/1003")


@aiotest
async def test_whisper_buttons_speak_in_roles_whichever_leg_is_the_target() -> None:
    """On a received call spied on by the customer's uuid (by hand, e.g. from the control socket),
    digit 2 would whisper to the customer: WHISPER AGENT sends 1 for that session instead, and the
    WHISPER LED still shows the role (steady = to the agent). On the agent's own leg, 2 as usual."""
    r = Rig()
    r.start()
    customer = r.channel("sofia/gateway/pbx/5551234", caller_id_number="5551234")
    agent = r.channel("sofia/internal/1002", agent_id="1002", caller_id_number="5551234")
    customer.other_leg, agent.other_leg = agent, customer
    spy = r.channel("handset/local", may_eavesdrop="true")
    await r.spy_on(spy, customer)
    assert r.panel.agent_is_peer()
    await r.press("whisper_agent")
    assert r.panel.digits_sent[-1] == (spy.uuid, "1") and r.engine.modes()[spy.uuid] == 1   # to the peer: the agent
    assert r.panel.patterns["whisper"] == P.ON
    await r.press("whisper_caller")
    assert r.panel.digits_sent[-1] == (spy.uuid, "2") and r.engine.modes()[spy.uuid] == 2   # to the target: the customer
    assert r.panel.patterns["whisper"] == P.WHISPER_CALLER_BLINK
    await r.press("next")                        # this session ends; now the agent's own leg
    await r.spy_on(spy, agent)
    assert not r.panel.agent_is_peer()
    await r.press("whisper_agent")
    assert r.panel.digits_sent[-1] == (spy.uuid, "2") and r.engine.modes()[spy.uuid] == 2
    assert r.panel.patterns["whisper"] == P.ON


@aiotest
async def test_the_agent_button_steps_the_spy_over_the_agents_on_a_call() -> None:
    """AGENT (an optional button; ``g`` on the terminal): on to the next agent by id who is on an
    answered call, wrapping round; the target is each agent's leg. Without a running eavesdrop it
    is ignored with a warning."""
    r = Rig()
    r.start()
    legs = {}
    for agent in ("1003", "1001"):
        far = r.channel(f"sofia/gateway/pbx/555{agent}", caller_id_number=f"555{agent}")
        leg = r.channel(f"sofia/internal/{agent}", agent_id=agent)
        far.other_leg, leg.other_leg = leg, far
        legs[agent] = leg
    spy = r.channel("handset/local", may_eavesdrop="true")
    assert r.panel.pick_next_agent() is None and r.panel.ignored == 1       # no eavesdrop yet
    await r.spy_on(spy, legs["1001"])
    chosen = []
    for _ in range(3):
        r.panel.button("agent", "short")
        await r.clock.advance(10)
        chosen.append(r.hub.taps[-1].target.get_variable("agent_id"))
    assert chosen == ["1003", "1001", "1003"]
    assert [t.target for t in r.hub.taps] == [legs["1001"], legs["1003"], legs["1001"], legs["1003"]]
