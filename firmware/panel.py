"""The front panel: buttons become digits on the spy's channel, switch state becomes LED patterns.

Plain logic over ``firmware.aio`` only (no asyncio, threading, dataclasses, enum, typing), so it runs
unchanged under MicroPython. Its collaborators are duck-typed:

- ``switch``: ``get(uuid)``, ``channels()``, ``events.subscribe(names, cb)`` / ``unsubscribe(token)``;
  channels have ``uuid``, ``name``, ``up``, ``get_variable``, ``set_variable``, ``queue_dtmf(d, source=)``,
  ``async hangup()``.
- ``leds``: ``set(name, on)`` (hw.gpio.Leds, or anything that records).
- ``clock``: ``now_ms()`` and ``async sleep_ms(ms)``; LED patterns are timed by it.

Inputs: ``button(name, kind)`` with kind ``short``/``long``/``down``/``up`` (hw.gpio.ButtonInput
reports these), ``set_error``/``clear_error``, ``set_sip_up``, ``gateway_state(name, state)``
(SipService.on_gateway_state), and the provisioning report file, polled.

Buttons: LISTEN ``0``, WHISPER AGENT ``2``, WHISPER CALLER ``1``, BARGE ``3``, NEXT ``*`` (short or
long press alike, except: long NEXT hangs up the spy's call). The whisper buttons speak in roles:
``2`` whispers to the eavesdrop target and ``1`` to its peer, so when a session's target is not
the agent's leg but its peer is (an eavesdrop started on a uuid by hand), the two are swapped for
that session: WHISPER AGENT always reaches the agent (``agent_id``), WHISPER CALLER the far party; VOL+/VOL- step the listen volume by
3 dB (long press: back to 0 dB), written to the spy channel's ``eavesdrop_listen_gain_db``; the hook
input calls ``on_hook(off_hook)``.

LEDs: STATUS heartbeat (fast blink while any error is set); REGISTERED when every gateway is
registered (SIP up when there are none; slow blink while trying); LISTEN / WHISPER / BARGE show the
spy's mode (WHISPER steady = to the agent; blinking = to the caller, by role as above); ACTIVE while a
target is spied on; the provisioning patterns take over all LEDs for a while.
"""

from firmware import aio
from firmware.clock import SystemClock
from firmware.switch.eavesdrop import roles

try:
    import logging
    _log = logging.getLogger("earshot.panel")
except ImportError:  # MicroPython without the logging package
    _log = None

try:
    import json
except ImportError:  # pragma: no cover - very small ports
    import ujson as json  # type: ignore[no-redef]

import time as _time


def _warn(msg):
    if _log is not None:
        _log.warning(msg)
    else:
        print("panel:", msg)


DIGITS = {"listen": "0", "whisper_agent": "2", "whisper_caller": "1", "barge": "3", "next": "*"}
SWAPPED_WHISPER = {"2": "1", "1": "2"}     # when the target is the far party's leg
DIGITS_KEPT = 64                           # Panel.digits_sent keeps at least the latest 64
LISTEN_GAIN_VAR = "eavesdrop_listen_gain_db"
VOLUME_STEP_DB = 3
VOLUME_MIN_DB = -24
VOLUME_MAX_DB = 12
HANDSET_CHANNEL = "handset/local"
LEDS = ("status", "registered", "listen", "whisper", "barge", "active")
MODE_LEDS = ("listen", "whisper", "barge")

# A pattern is a tuple of (level, ms) steps; a last step of 0 ms holds forever, otherwise it repeats.
OFF = ((0, 0),)
ON = ((1, 0),)
HEARTBEAT = ((1, 80), (0, 120), (1, 80), (0, 720))      # a double blink every second
ERROR_BLINK = ((1, 100), (0, 100))                      # 5 Hz
SLOW_BLINK = ((1, 500), (0, 500))
WHISPER_CALLER_BLINK = ((1, 250), (0, 250))

# Provisioning overlays (firmware.provision.LED_PATTERNS names): per-LED pattern, how long to show.
_CHASE = {"listen": ((1, 150), (0, 300)), "whisper": ((0, 150), (1, 150), (0, 150)),
          "barge": ((0, 300), (1, 150))}
_ALT_A = ((1, 250), (0, 250))
_ALT_B = ((0, 250), (1, 250))
PROVISION_PATTERNS = {
    "provision-applying": ({"status": HEARTBEAT, "registered": OFF, "active": OFF, "listen": _CHASE["listen"],
                            "whisper": _CHASE["whisper"], "barge": _CHASE["barge"]}, 120000),
    "provision-applied": ({name: ON for name in LEDS}, 5000),
    "provision-rejected": ({name: _ALT_A for name in LEDS}, 30000),
    "provision-rolled-back": ({name: (_ALT_A if i % 2 == 0 else _ALT_B) for i, name in enumerate(LEDS)}, 30000),
}
PROVISION_POLL_MS = 1000

EAVESDROP_START = "eavesdrop::start"
EAVESDROP_MODE = "eavesdrop::mode"
EAVESDROP_STOP = "eavesdrop::stop"


def _header(event, *names):
    for n in names:
        v = event.get(n)
        if v:
            return v
    return None


def session_of(event):
    """(spy uuid, target uuid or None, mode or None) from an ``eavesdrop::*`` CUSTOM event."""
    spy = _header(event, "Eavesdrop-Spy-UUID", "Spy-UUID", "Unique-ID")
    target = _header(event, "Eavesdrop-Target-UUID", "Target-UUID", "Eavesdrop-Target")
    mode = _header(event, "Eavesdrop-Mode", "Mode")
    try:
        mode = int(mode) if mode is not None else None
    except ValueError:
        mode = None
    return spy, target, mode


class Panel:
    """One front panel over one switch. ``spy`` is ``"handset"`` or ``"user/<id>"``."""

    def __init__(self, switch, leds, spy="handset", clock=None, gateways=(), provision_file=None,
                 on_hook=None, on_volume=None, wallclock=None):
        if spy != "handset" and not (spy.startswith("user/") and len(spy) > 5):
            raise ValueError("panel spy must be \"handset\" or \"user/<id>\" (got %r)" % (spy,))
        self.switch = switch
        self.leds = leds
        self.spy = spy
        self.clock = clock if clock is not None else SystemClock()
        self.on_hook = on_hook
        self.on_volume = on_volume
        self.provision_file = provision_file
        self._wallclock = wallclock if wallclock is not None else _time.time
        self.listen_gain_db = 0
        self.errors = {}
        self.sip_up = False
        self.gateways = {}
        for name in gateways:
            self.gateways[name] = "unregistered"
        self.sessions = {}          # spy uuid -> [target uuid or None, mode]
        self.patterns = {}          # led -> the pattern it shows
        self._led_tasks = {}
        self._overlay = None        # (name, {led: pattern}) while a provisioning pattern shows
        self._overlay_task = None
        self._provision_seen = None
        self._poller = None
        self._token = None
        self.digits_sent = []       # (channel uuid, digit): the latest the panel queued (bounded)
        self.ignored = 0            # presses with no spy channel to act on
        self._running = False

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self):
        """Subscribe to the switch and light the LEDs (call on the running loop)."""
        self._running = True
        if self.switch is not None:
            self._token = self.switch.events.subscribe(["CUSTOM", "CHANNEL_HANGUP"], self._on_event)
        if self.provision_file:
            self._provision_seen = self._read_provision()   # an old report is not replayed at boot
            self._poller = aio.create_task(self._poll_provision())
        self.refresh()

    def stop(self):
        self._running = False
        if self._token is not None:
            self.switch.events.unsubscribe(self._token)
            self._token = None
        for t in [self._poller, self._overlay_task] + list(self._led_tasks.values()):
            if t is not None:
                t.cancel()
        self._poller = self._overlay_task = None
        self._led_tasks = {}
        self.patterns = {}
        for name in LEDS:
            self.leds.set(name, False)

    # --- buttons ----------------------------------------------------------------------------------

    def button(self, name, kind):
        """A debounced button event: ``short``/``long`` presses, ``down``/``up`` levels."""
        if name == "hook":
            if kind in ("down", "up") and self.on_hook is not None:
                self.on_hook(kind == "down")
            return
        if kind not in ("short", "long"):
            return
        if name in ("vol_up", "vol_down"):
            if kind == "long":
                self.set_volume(0)
            else:
                step = VOLUME_STEP_DB if name == "vol_up" else -VOLUME_STEP_DB
                self.set_volume(self.listen_gain_db + step)
            return
        if name == "next" and kind == "long":
            self.hangup_spy()
            return
        if name == "agent":
            self.pick_next_agent()
            return
        digit = DIGITS.get(name)
        if digit is None:
            _warn("unknown button %r" % (name,))
            return
        if name in ("whisper_agent", "whisper_caller") and self.agent_is_peer():
            digit = SWAPPED_WHISPER[digit]
        self.send_digit(digit)

    def pick_next_agent(self):
        """The AGENT button: the spy moves on to the next agent (by id) on an answered call,
        after the one it listens to now; returns that agent's id, or None (and a warning)."""
        engine = getattr(self.switch, "eavesdrop", None)
        ch = self.spy_channel()
        legs = getattr(self.switch, "agent_legs", None)
        if engine is None or ch is None or legs is None or not engine.is_spy(ch.uuid):
            self.ignored += 1
            _warn("AGENT button: no eavesdrop running on the %s channel" % self.spy)
            return None
        agents = sorted(set(leg.get_variable("agent_id") for leg in legs() if leg.is_answered))
        if not agents:
            _warn("AGENT button: no agent is on a call")
            return None
        roles = self._session_roles()
        current = roles[0].get_variable("agent_id") if roles is not None else None
        chosen = agents[(agents.index(current) + 1) % len(agents)] if current in agents else agents[0]
        engine.jump(ch.uuid, chosen)
        return chosen

    def _session_roles(self):
        """(agent leg, far leg, swapped) of the running session (eavesdrop.roles), or None."""
        session = self.active_session()
        if session is None or session[0] is None or self.switch is None:
            return None
        target = self.switch.get(session[0])
        return roles(target, getattr(target, "other_leg", None)) if target is not None else None

    def agent_is_peer(self):
        """True when the running session's target is not an agent's leg but the leg bridged to it
        is: digit 2 (whisper to the target) would reach the far party, so the roles swap."""
        found = self._session_roles()
        return found is not None and found[2]

    def send_digit(self, digit):
        """Queue ``digit`` on the active spy channel; False when there is none."""
        ch = self.spy_channel()
        if ch is None:
            self.ignored += 1
            _warn("button digit %s: no %s channel to send it to" % (digit, self.spy))
            return False
        ch.queue_dtmf(digit, source="panel")
        self.digits_sent.append((ch.uuid, digit))
        if len(self.digits_sent) > 2 * DIGITS_KEPT:    # trimmed in halves: months of presses stay small
            del self.digits_sent[:DIGITS_KEPT]
        return True

    def set_volume(self, db):
        """The listen volume in dB (clamped), applied to the spy channel now and at each new session."""
        db = max(VOLUME_MIN_DB, min(VOLUME_MAX_DB, int(db)))
        self.listen_gain_db = db
        ch = self.spy_channel()
        if ch is not None:
            self._apply_gain(ch)
        if self.on_volume is not None:
            self.on_volume(db)
        return db

    def _apply_gain(self, ch):
        """The variable (read when a session starts) and the running session's tap, if any."""
        ch.set_variable(LISTEN_GAIN_VAR, str(self.listen_gain_db))
        engine = getattr(self.switch, "eavesdrop", None)
        session = engine.session(ch.uuid) if engine is not None else None
        tap = getattr(session, "tap", None)
        if tap is not None:
            tap.set_gains(self.listen_gain_db, None)

    def hangup_spy(self):
        ch = self.spy_channel()
        if ch is None:
            self.ignored += 1
            return None
        return aio.create_task(ch.hangup())

    # --- whose channel ------------------------------------------------------------------------------

    def _is_ours(self, ch):
        if ch is None or not ch.up:
            return False
        if self.spy == "handset":
            return ch.name == HANDSET_CHANNEL
        user = self.spy[5:]
        return user in (ch.get_variable("user_name"), ch.get_variable("caller_id_number"))

    def spy_channel(self):
        """The channel the buttons act on: ours in a running eavesdrop, else our newest live one."""
        if self.switch is None:
            return None
        for uuid in self.sessions:
            ch = self.switch.get(uuid)
            if self._is_ours(ch):
                return ch
        found = None
        for ch in self.switch.channels():
            if self._is_ours(ch):
                found = ch
        return found

    def active_session(self):
        """[target uuid, mode] of our running eavesdrop, or None."""
        for uuid in self.sessions:
            if self.switch is not None and self._is_ours(self.switch.get(uuid)):
                return self.sessions[uuid]
        return None

    # --- switch events ------------------------------------------------------------------------------

    def _on_event(self, event):
        if event.name == "CHANNEL_HANGUP":
            if self.sessions.pop(event.uuid, None) is not None:
                self.refresh()
            return
        sub = event.subclass
        if sub not in (EAVESDROP_START, EAVESDROP_MODE, EAVESDROP_STOP):
            return
        spy, target, mode = session_of(event)
        if spy is None:
            return
        if sub == EAVESDROP_STOP:
            self.sessions.pop(spy, None)
        else:
            s = self.sessions.get(spy)
            if s is None:
                s = self.sessions[spy] = [None, 0]
                ch = self.switch.get(spy)
                if self._is_ours(ch) and self.listen_gain_db:   # a new session at the panel's volume
                    self._apply_gain(ch)
            if target is not None:
                s[0] = target
            if mode is not None:
                s[1] = mode
        self.refresh()

    # --- health and SIP -----------------------------------------------------------------------------

    def set_error(self, key, message=""):
        self.errors[key] = message
        self.refresh()

    def clear_error(self, key):
        if self.errors.pop(key, None) is not None:
            self.refresh()

    def set_sip_up(self, up):
        self.sip_up = bool(up)
        self.refresh()

    def gateway_state(self, name, state):
        self.gateways[name] = state
        self.refresh()

    def registered(self):
        if self.gateways:
            return all(s == "registered" for s in self.gateways.values())
        return self.sip_up

    # --- LEDs ---------------------------------------------------------------------------------------

    def wanted(self):
        """The pattern each LED should show now."""
        if self._overlay is not None:
            return dict(self._overlay[1])
        out = {"status": ERROR_BLINK if self.errors else HEARTBEAT}
        if self.registered():
            out["registered"] = ON
        elif any(s == "trying" for s in self.gateways.values()):
            out["registered"] = SLOW_BLINK
        else:
            out["registered"] = OFF
        session = self.active_session()
        mode = session[1] if session is not None else None
        out["listen"] = ON if mode == 0 else OFF
        if mode in (1, 2) and self.agent_is_peer():
            mode = 3 - mode                  # by role: steady = to the agent, blinking = to the caller
        out["whisper"] = ON if mode == 2 else (WHISPER_CALLER_BLINK if mode == 1 else OFF)
        out["barge"] = ON if mode == 3 else OFF
        out["active"] = ON if session is not None and session[0] is not None else OFF
        return out

    def refresh(self):
        """Bring every LED to its wanted pattern; an unchanged pattern keeps its phase."""
        if not self._running:
            return
        for name, pattern in self.wanted().items():
            self._show(name, pattern)

    def _show(self, name, pattern):
        if self.patterns.get(name) == pattern:
            return
        self.patterns[name] = pattern
        task = self._led_tasks.pop(name, None)
        if task is not None:
            task.cancel()
        if len(pattern) == 1 and pattern[0][1] == 0:   # steady: no task needed
            self.leds.set(name, pattern[0][0])
        else:
            self._led_tasks[name] = aio.create_task(self._blink(name, pattern))

    async def _blink(self, name, pattern):
        while True:
            for level, ms in pattern:
                self.leds.set(name, level)
                if ms == 0:
                    return
                await self.clock.sleep_ms(ms)

    # --- provisioning -------------------------------------------------------------------------------

    def show_provisioning(self, led):
        """Show a provisioning pattern (``provision-applied`` …) for its time; "" clears it."""
        spec = PROVISION_PATTERNS.get(led)
        if self._overlay_task is not None:
            self._overlay_task.cancel()
            self._overlay_task = None
        if spec is None:
            if led:
                _warn("unknown provisioning pattern %r" % (led,))
            self._overlay = None
        else:
            self._overlay = (led, spec[0])
            self._overlay_task = aio.create_task(self._end_overlay(spec[1]))
        self.refresh()

    async def _end_overlay(self, ms):
        await self.clock.sleep_ms(ms)
        self._overlay = None
        self._overlay_task = None
        self.refresh()

    def _read_provision(self):
        try:
            with open(self.provision_file) as f:
                doc = json.loads(f.read())
            return (doc.get("led") or "", doc.get("time") or 0)
        except (OSError, ValueError, AttributeError):
            return None

    def check_provisioning(self):
        """Read the report once; a new one starts its pattern (unless it is older than its time)."""
        seen = self._read_provision()
        if seen is None or seen == self._provision_seen:
            return
        self._provision_seen = seen
        led, when = seen
        spec = PROVISION_PATTERNS.get(led)
        if spec is not None and self._wallclock() - when > spec[1] / 1000:
            return
        self.show_provisioning(led)

    async def _poll_provision(self):
        while True:
            await self.clock.sleep_ms(PROVISION_POLL_MS)
            self.check_provisioning()
