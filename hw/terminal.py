"""The front panel on a PC: a terminal twin of the appliance's buttons, LEDs and handset.

``TerminalPanel`` draws the panel with plain ANSI over the controlling terminal (cbreak mode set
with ``termios``; stdlib only) and reads keys with ``loop.add_reader`` on stdin:

    l LISTEN   a WHISPER AGENT   c WHISPER CALLER   b BARGE   n NEXT   N long NEXT (hang up)
    + / - volume (= is +)   h hook (off-hook / on-hook)   0-9 * # the handset keypad   q quit

A button key is a press of its pin through ``SimGpio.press()``, so the same debounce → ButtonInput
→ Panel path runs as on a Pi. ``h`` drives the hook pin the same way when the pin map has one,
else calls ``Handset.set_hook``. Keypad digits are DTMF tones fed into the handset's microphone
when it is the silent twin (``SimAudio``): detection, digits keyed on-hook as the destination
and digits queued on the call behave exactly as with a real keypad. On a real sound card the
microphone cannot be fed, so the digit goes to the handset's digit input (``leg.on_digit``), the
point just after in-band detection.

Drawn: each LED as ● / ○ (a blink shorter than a frame is still shown for one frame), the handset
(hook, keyed digits, the application its call runs), the agent supervised and the far party,
mode and listen volume from the switch's ``eavesdrop::*`` events, SIP registrations and gateway
states from ``status()``, the latest log lines, a help line. At most 10 frames a second, and only
rows that changed are written. While the panel is up, log handlers writing to this terminal are
set aside and their lines shown in the panel instead (and the tail printed after it closes).

The terminal is restored by ``stop()``; when the caller never gets there, by a ``sys.excepthook``
wrapper (before the traceback is printed, so it stays readable) or an ``atexit`` hook. With no
SIGTERM handler installed, the panel adds one that calls the ``stop`` callable (as ``q`` does).
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import signal
import sys
import termios
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from firmware import aio
from hw.board import PinMap
from hw.gpio import LONG_PRESS_MS, Leds, SimGpio

log = logging.getLogger("earshot.terminal")

FRAME_S = 0.1                 # at most 10 redraws a second
AGENTS_SHOWN = 6              # agents on the Agents row (the rest counted)
PRESS_MS = 120                # a short press (debounce is 20 ms, a long press 800 ms)
LONG_HOLD_MS = LONG_PRESS_MS + 200
KEYPAD_ON_MS, KEYPAD_OFF_MS = 80, 80
LOG_LINES = 50                # kept; as many as fit are drawn

KEY_BUTTONS = {"l": "listen", "a": "whisper_agent", "c": "whisper_caller", "b": "barge", "n": "next",
               "+": "vol_up", "=": "vol_up", "-": "vol_down"}
KEYPAD = frozenset("0123456789*#")
LED_ORDER = ("status", "registered", "listen", "whisper", "barge", "active")
HELP = ("keys: l listen  a whisper agent  c whisper caller  b barge  n next (N: long = hang up)",
        "      +/- volume  h hook  g next agent  0-9 * # keypad (#<id># agent)  q quit")

_CSI = "\x1b["
ENTER = _CSI + "?1049h" + _CSI + "?25l" + _CSI + "2J"     # alternate screen, hide cursor, clear
LEAVE = _CSI + "?25h" + _CSI + "?1049l"                   # show cursor, back to the normal screen
_ESC_SEQ = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)?")


def _named(number: str, name: str) -> str:
    return f'{number} "{name}"' if name and name != number else number or "?"


class TerminalPanel:
    """The panel on this process's terminal. ``start``/``stop`` on the running loop."""

    def __init__(self, gpio: SimGpio, pins: PinMap, leds: Leds, switch: Any, *, handset: Any = None,
                 stop: Callable[[], object], status: Callable[[], Mapping[str, Any]] | None = None,
                 pick_agent: Callable[[], object] | None = None) -> None:
        """``pick_agent``: what the AGENT button does, for ``g`` when the pin map has no such pin."""
        self.gpio = gpio
        self._pick_agent = pick_agent
        self.pins = pins
        self.leds = leds
        self.switch = switch
        self.handset = handset
        self._stop_appliance = stop
        self._status = status
        self.fd_in = self.fd_out = -1
        self._saved: list | None = None
        self._running = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._token: int | None = None
        self._refresher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._press_locks: dict[int, asyncio.Lock] = {}
        self._drawn: list[str] = []
        self._size: tuple[int, int] = (0, 0)
        self._hist_seen = 0
        self._glyphs = ("●", "○")
        # what the events told: spy uuid -> session facts; the handset call's running application
        self.sessions: dict[str, dict[str, str]] = {}
        self.handset_app = ""
        self._log_tail: deque[str] = deque(maxlen=LOG_LINES)
        self._log_handler: _TailHandler | None = None
        self._set_aside: list[logging.Handler] = []
        self._sigterm = False
        self._excepthook = sys.excepthook
        self.keys = 0

    @staticmethod
    def available() -> bool:
        """True when stdin and stdout are terminals and TERM can position the cursor."""
        try:
            ttys = sys.stdin is not None and sys.stdout is not None and sys.stdin.isatty() and sys.stdout.isatty()
        except (ValueError, OSError):   # closed streams
            return False
        return ttys and os.environ.get("TERM", "") not in ("", "dumb", "unknown")

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Take the terminal (cbreak, alternate screen), subscribe to the switch, start drawing."""
        if self._running:
            return
        self._loop = asyncio.get_running_loop()
        self.fd_in, self.fd_out = sys.stdin.fileno(), sys.stdout.fileno()
        encoding = (getattr(sys.stdout, "encoding", "") or "").lower().replace("-", "")
        if encoding != "utf8":
            self._glyphs = ("*", "o")
        self._saved = termios.tcgetattr(self.fd_in)
        atexit.register(self._restore_terminal)
        self._excepthook = sys.excepthook
        sys.excepthook = self._on_uncaught
        mode = termios.tcgetattr(self.fd_in)
        mode[3] &= ~(termios.ICANON | termios.ECHO)      # lflag: a key at a time, not echoed
        mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
        mode[6][termios.VSUSP] = b"\x00"                 # Ctrl-Z would leave the panel in cbreak
        termios.tcsetattr(self.fd_in, termios.TCSADRAIN, mode)
        self._running = True
        try:
            self._capture_log()
            self._write(ENTER)
            self._hist_seen = self.gpio.history_total
            if self.switch is not None:
                self._token = self.switch.events.subscribe(
                    ["CUSTOM", "CHANNEL_HANGUP", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"], self._on_event)
            self._loop.add_reader(self.fd_in, self._on_input)
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:   # nobody stops cleanly on SIGTERM
                self._loop.add_signal_handler(signal.SIGTERM, self._quit)
                self._sigterm = True
            self._refresher = self._loop.create_task(self._refresh(), name="terminal-panel")
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Give the terminal back as it was (idempotent)."""
        if not self._running:
            return
        self._running = False
        loop = self._loop
        if loop is not None:
            loop.remove_reader(self.fd_in)
            if self._sigterm:
                loop.remove_signal_handler(signal.SIGTERM)
                self._sigterm = False
        if self._token is not None:
            self.switch.events.unsubscribe(self._token)
            self._token = None
        tasks = [t for t in [self._refresher, *self._tasks] if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._refresher = None
        self._restore_terminal()
        self._release_log()

    def _restore_terminal(self) -> None:
        saved, self._saved = self._saved, None
        if saved is None:
            return
        try:
            self._write(LEAVE)
            termios.tcsetattr(self.fd_in, termios.TCSADRAIN, saved)
        except (OSError, termios.error):    # the terminal is gone: nothing to give back
            pass
        atexit.unregister(self._restore_terminal)
        if sys.excepthook == self._on_uncaught:
            sys.excepthook = self._excepthook

    def _on_uncaught(self, kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        """An exception ends the process with the panel up: give the terminal back first, so the
        traceback lands on the normal screen rather than in the vanishing alternate one."""
        hook = self._excepthook
        self._restore_terminal()
        self._release_log()
        hook(kind, exc, tb)

    def _quit(self) -> None:
        try:
            self._stop_appliance()
        except Exception:
            log.exception("terminal panel: stopping the appliance failed")

    # --- keys -----------------------------------------------------------------------------------

    def _on_input(self) -> None:
        try:
            data = os.read(self.fd_in, 256)
        except OSError as exc:
            data = b""
            log.warning("terminal panel: reading keys failed: %s", exc)
        if not data:   # the terminal hung up: the run ends as with q
            self._loop.remove_reader(self.fd_in)
            log.warning("terminal panel: the terminal closed; stopping")
            self._quit()
            return
        for key in _ESC_SEQ.sub("", data.decode("utf-8", "replace")):   # arrows etc. do nothing
            self.key(key)

    def key(self, key: str) -> None:
        """Act on one key (what typing it in the terminal does)."""
        self.keys += 1
        if key in ("q", "Q"):
            log.info("terminal panel: q, stopping")
            self._quit()
        elif key in KEY_BUTTONS:
            self._press(KEY_BUTTONS[key], PRESS_MS)
        elif key == "N":
            self._press("next", LONG_HOLD_MS)
        elif key in ("h", "H"):
            self._toggle_hook()
        elif key in ("g", "G"):
            if "agent" in self.pins.buttons:
                self._press("agent", PRESS_MS)
            elif self._pick_agent is not None:
                self._pick_agent()
        elif key in KEYPAD:
            self._keypad(key)

    def _press(self, button: str, hold_ms: int) -> None:
        pin = self.pins.buttons.get(button)
        if pin is None:
            log.warning("terminal panel: this panel has no %s button", button.upper())
            return
        lock = self._press_locks.setdefault(pin, asyncio.Lock())

        async def press() -> None:
            async with lock:   # presses of one button follow each other, as fingers do
                await self.gpio.press(pin, hold_ms, active_low=self.pins.buttons_active_low)

        self._spawn(press())

    def _toggle_hook(self) -> None:
        pin = self.pins.buttons.get("hook")
        if pin is not None and pin in self.gpio.inputs:
            # the hook switch: closed (active) = off-hook; the panel's hook input does the rest
            active = 0 if self.pins.buttons_active_low else 1
            off_hook = self.gpio.read(pin) == active
            self.gpio.set_input(pin, 1 - active if off_hook else active)
        elif self.handset is not None:
            self.handset.set_hook(not self.handset.off_hook_now)
        else:
            log.warning("terminal panel: no handset and no hook input")

    def _keypad(self, digit: str) -> None:
        hs = self.handset
        if hs is None:
            log.warning("terminal panel: keypad %s: no handset", digit)
            return
        device = hs.leg.device
        if callable(getattr(device, "feed", None)):
            from cython_mixer.tone import dtmf_generate   # the media core, only when a key needs it
            device.feed(dtmf_generate(digit, device.rate, on_ms=KEYPAD_ON_MS, off_ms=KEYPAD_OFF_MS))
        elif hs.leg.on_digit is not None:
            hs.leg.on_digit(digit)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- switch events --------------------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        name, sub = event.name, event.subclass
        if name == "CHANNEL_HANGUP":
            self.sessions.pop(event.uuid or "", None)
        elif name in ("CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE"):
            ch = getattr(self.handset, "channel", None)
            if ch is not None and event.uuid == ch.uuid:
                self.handset_app = ("" if name == "CHANNEL_EXECUTE_COMPLETE" else
                                    f"{event.get('Application', '')} {event.get('Application-Data', '')}".strip())
        elif sub and sub.startswith("eavesdrop::"):
            spy = event.get("Eavesdrop-Spy-UUID") or event.uuid or ""
            if sub == "eavesdrop::stop":
                self.sessions.pop(spy, None)
            else:
                old = self.sessions.pop(spy, None)  # re-insert: the newest session is last
                self.sessions[spy] = s = {k: event.get(h) or "" for k, h in (
                    ("target", "Eavesdrop-Target-UUID"), ("agent", "Eavesdrop-Agent-ID"),
                    ("agent_name", "Eavesdrop-Agent-Name"), ("far", "Eavesdrop-Far-Party-Number"),
                    ("far_name", "Eavesdrop-Far-Party-Name"), ("number", "Eavesdrop-Target-Caller-ID-Number"),
                    ("name", "Eavesdrop-Target-Caller-ID-Name"), ("role", "Eavesdrop-Mode-Role"),
                    ("user", "Eavesdrop-User"))}
                same_call = old is not None and old["target"] == s["target"]
                s["since"] = old["since"] if same_call else aio.ticks_ms()

    # --- drawing --------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        while True:
            try:
                self.draw()
            except OSError as exc:   # EIO: the terminal went away
                log.warning("terminal panel: drawing failed (%s); stopping", exc)
                self._quit()
                return
            except Exception:        # a bug in a row: say so, keep the keys and the rest working
                log.exception("terminal panel: drawing failed")
                await asyncio.sleep(1.0)
            await asyncio.sleep(FRAME_S)

    def lit(self) -> dict[str, bool]:
        """Each LED as drawn now: its state, or on when it lit at all since the last frame."""
        shown = {name: bool(on) for name, on in self.leds.state.items()}
        history = self.gpio.history
        names = {pin: name for name, pin in self.leds.pins.items()}
        new = min(self.gpio.history_total - self._hist_seen, len(history))
        for _, pin, level in (list(history)[-new:] if new > 0 else ()):
            name = names.get(pin)
            if name is not None and (level == 1) != self.leds.active_low:
                shown[name] = True
        self._hist_seen = self.gpio.history_total
        return shown

    def rows(self, height: int = 24) -> list[str]:
        """The panel's text, one string per row; the newest log lines that fit in ``height``."""
        on, off = self._glyphs
        lit = self.lit()
        names = [n for n in LED_ORDER if n in lit] + [n for n in lit if n not in LED_ORDER]
        rows = ["Earshot front panel (simulated)", "",
                "LEDs     " + "  ".join(f"{on if lit[n] else off} {n.upper()}" for n in names)]
        rows.append("Handset  " + self._handset_text())
        rows += self._session_rows()
        rows.append("Agents   " + self._agents_text())
        rows.append("SIP      " + self._status_text())
        rows += ["", *HELP, "", "log:"]
        room = max(0, height - len(rows))
        rows += list(self._log_tail)[-room:] if room else []
        return rows

    def _handset_text(self) -> str:
        hs = self.handset
        if hs is None:
            return "none"
        ch = hs.channel
        parts = ["OFF-HOOK" if hs.off_hook_now else "on-hook"]
        if ch is not None and ch.up:
            parts.append(f"call {ch.get_variable('destination_number') or '?'}")
            if self.handset_app:
                parts.append(f"running {self.handset_app}")
        if hs.predial:
            parts.append(f"keyed {hs.predial}")
        return "  ".join(parts)

    def _session_rows(self) -> list[str]:
        if not self.sessions:
            return ["Target   none", "Mode     -"]
        ours = getattr(getattr(self.handset, "channel", None), "uuid", None)
        spy = ours if ours in self.sessions else next(reversed(self.sessions))
        s = self.sessions[spy]
        if s["agent"]:                       # in roles: the agent supervised, and whom it talks to
            who = _named(s["agent"], s["agent_name"])
            far = f"  with {_named(s['far'], s['far_name'])}" if s["far"] else ""
            label = "Agent   "
        else:                                # a call with no agent on it: its target leg's caller
            who, far, label = _named(s["number"], s["name"]), "", "Target  "
        more = f"  (+{len(self.sessions) - 1} more)" if len(self.sessions) > 1 else ""
        mode = (s["role"] or "?").replace("-", " ").replace("three way", "barge")
        elapsed = aio.ticks_diff(aio.ticks_ms(), s["since"]) // 1000
        ch = self.switch.get(spy) if self.switch is not None else None
        gain = ch.get_variable("eavesdrop_listen_gain_db") if ch is not None else None
        volume = f"  volume {gain} dB" if gain not in (None, "") else ""
        spy_name = ch.name if ch is not None else s["user"] or spy
        return [f"{label} {who}{far}{more}",
                f"Mode     {mode}  {elapsed // 60}:{elapsed % 60:02d}  (spy {spy_name}){volume}"]

    def _agents_text(self) -> str:
        """Each agent (a configured user who is no supervisor) and whether it talks, rings or is
        idle: what a supervisor's BLF keys show, on the panel."""
        config = getattr(self.switch, "config", None)
        agents = [u.id for u in getattr(config, "users", ()) if not u.may_eavesdrop]
        if not agents:
            return "none configured"
        state: dict[str, str] = {}
        for ch in self.switch.agent_legs():
            agent = ch.get_variable("agent_id")
            if state.get(agent) != "talking":
                state[agent] = "talking" if ch.is_answered else "ringing"
        shown = [f"{a} {state.get(a, 'idle')}" for a in agents[:AGENTS_SHOWN]]
        more = f"  (+{len(agents) - AGENTS_SHOWN} more)" if len(agents) > AGENTS_SHOWN else ""
        return "  ".join(shown) + more

    def _status_text(self) -> str:
        if self._status is None:
            return "-"
        try:
            st = dict(self._status())
        except Exception as exc:   # the panel keeps drawing whatever the status source does
            return f"status unavailable ({exc})"
        parts = []
        if "registrations" in st:
            parts.append(f"registrations {st.pop('registrations')}")
        gateways = st.pop("gateways", None)
        if gateways:
            parts.append("gateways " + ", ".join(f"{g} {state}" for g, state in dict(gateways).items()))
        parts += [f"{k} {v}" for k, v in st.items()]
        return "  ".join(parts) or "-"

    def draw(self) -> None:
        """Write the rows that changed since the last frame (all of them after a resize)."""
        if not self._running:
            return
        try:
            cols, lines = os.get_terminal_size(self.fd_out)
        except OSError:
            cols, lines = 80, 24
        rows = [r[:cols] for r in self.rows(lines)][:lines]
        out = []
        if (cols, lines) != self._size:
            self._size, self._drawn = (cols, lines), []
            out.append(_CSI + "2J")
        for i, row in enumerate(rows):
            if i >= len(self._drawn) or self._drawn[i] != row:
                out.append(f"{_CSI}{i + 1};1H{row}{_CSI}K")
        if len(self._drawn) > len(rows):
            out.append(f"{_CSI}{len(rows) + 1};1H{_CSI}J")
        self._drawn = rows
        if out:
            self._write("".join(out))

    def _write(self, text: str) -> None:
        data = text.encode("utf-8", "replace")
        while data:
            n = os.write(self.fd_out, data)
            data = data[n:]

    # --- the log, while the panel owns the terminal ---------------------------------------------

    def _capture_log(self) -> None:
        root = logging.getLogger()
        fmt = None
        for h in list(root.handlers):
            stream = getattr(h, "stream", None)
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler) \
                    and _is_tty(stream):
                fmt = fmt or h.formatter
                root.removeHandler(h)
                self._set_aside.append(h)
        self._log_handler = _TailHandler(self._log_tail)
        self._log_handler.setFormatter(fmt or logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(self._log_handler)

    def _release_log(self) -> None:
        root = logging.getLogger()
        if self._log_handler is not None:
            root.removeHandler(self._log_handler)
            self._log_handler = None
        for h in self._set_aside:
            root.addHandler(h)
        if self._set_aside and self._log_tail:   # what the panel showed last stays on screen
            stream = self._set_aside[0].stream
            try:
                stream.write("".join(line + "\n" for line in self._log_tail))
                stream.flush()
            except (OSError, ValueError):
                pass
        self._set_aside = []


class _TailHandler(logging.Handler):
    """Keeps the last formatted log lines for the panel to draw."""

    def __init__(self, tail: deque[str]) -> None:
        super().__init__()
        self.tail = tail

    def emit(self, record: logging.LogRecord) -> None:
        try:
            lines = self.format(record).splitlines() or [""]
            shown = lines[:1] + (lines[-1:] if record.exc_info and len(lines) > 1 else [])
            for line in shown:   # one row a record (a traceback: its message and its exception)
                self.tail.append(line.replace("\x1b", "^["))
        except Exception:
            self.handleError(record)


def _is_tty(stream: Any) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (ValueError, OSError):
        return False
