"""hw.terminal: the terminal front panel, driven through a pseudo-terminal.

tests/hw/terminal_driver.py (the panel side of the appliance on the twins) runs with a pty's slave
as its stdin/stdout/stderr; the test types keys into the master and reads the screen back through
a small screen model (cursor moves, erase, text). Every wait is for something on the screen, with
a deadline; nothing sleeps blindly.
"""
from __future__ import annotations

import codecs
import fcntl
import io
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from hw.terminal import LEAVE, TerminalPanel

ROOT = Path(__file__).resolve().parents[2]
ROWS, COLS = 30, 120
DEADLINE_S = 8.0
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")


class Screen:
    """Enough of a VT100 for the panel: CUP, ED, EL, CR/LF, text; modes and colours ignored."""

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.grid = [[" "] * cols for _ in range(rows)]
        self.r = self.c = 0
        self._pending = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.raw = ""

    def feed(self, data: bytes) -> None:
        text = self._pending + self._decoder.decode(data)
        self.raw += text
        self._pending = ""
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = _CSI.match(text, i)
                if m is None:
                    if len(text) - i < 16:        # a sequence cut by the read: finish it next time
                        self._pending = text[i:]
                        return
                    i += 1
                    continue
                self._csi(m.group(1), m.group(2))
                i = m.end()
                continue
            if ch == "\r":
                self.c = 0
            elif ch == "\n":
                self.r = min(self.r + 1, self.rows - 1)
            elif ch >= " ":
                if self.c < self.cols:
                    self.grid[self.r][self.c] = ch
                self.c += 1
            i += 1

    def _csi(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return
        nums = [int(p) if p else 0 for p in params.split(";")] if params else []
        if final == "H":
            self.r = min(max((nums[0] if nums else 1) - 1, 0), self.rows - 1)
            self.c = min(max((nums[1] if len(nums) > 1 else 1) - 1, 0), self.cols - 1)
        elif final == "K":
            for c in range(self.c, self.cols):
                self.grid[self.r][c] = " "
        elif final == "J":
            start = (0, 0) if (nums and nums[0] == 2) else (self.r, self.c)
            for r in range(start[0], self.rows):
                for c in range(start[1] if r == start[0] else 0, self.cols):
                    self.grid[r][c] = " "

    def text(self) -> str:
        return "\n".join("".join(row).rstrip() for row in self.grid)

    def row(self, label: str) -> str:
        for line in self.text().splitlines():
            if line.startswith(label):
                return line
        return ""

    def led(self, name: str) -> bool | None:
        m = re.search(r"([●○]) " + name.upper() + r"\b", self.row("LEDs"))
        return None if m is None else m.group(1) == "●"


class Term:
    """The driver in a pty, with its screen."""

    def __init__(self, *args: str) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        self.before = termios.tcgetattr(self.slave)
        env = dict(os.environ, TERM="xterm", LANG="C.UTF-8", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.hw.terminal_driver", *args], cwd=ROOT,
                                     stdin=self.slave, stdout=self.slave, stderr=self.slave, env=env,
                                     start_new_session=True)
        self.screen = Screen(ROWS, COLS)

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            self.screen.feed(os.read(self.master, 65536))

    def wait(self, what: str, predicate, timeout: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.screen):
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, \
                f"timed out waiting for {what} (exit {self.proc.poll()}); screen:\n{self.screen.text()}"
            self.pump(min(left, 0.2))

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def exit_code(self, timeout: float = DEADLINE_S) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            assert time.monotonic() < deadline, f"driver did not exit; screen:\n{self.screen.text()}"
            self.pump(0.05)
        self.pump(0.05)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def term_factory():
    made: list[Term] = []

    def make(*args: str) -> Term:
        made.append(Term(*args))
        return made[-1]

    yield make
    for t in made:
        t.close()


def cbreak(attrs: list) -> bool:
    return not attrs[3] & (termios.ICANON | termios.ECHO)


def test_the_terminal_panel_drives_the_appliance(term_factory) -> None:
    t = term_factory("--hook-pin", "16")
    t.wait("the panel", lambda s: s.led("status") is not None and "target call" in s.text())
    assert cbreak(termios.tcgetattr(t.slave)) and not cbreak(t.before)
    assert re.search(r"target call (" + UUID + ")", t.screen.text())
    assert all(t.screen.led(n) is not None for n in ("registered", "listen", "whisper", "barge", "active"))
    assert t.screen.led("registered") and "registrations 2" in t.screen.row("SIP")
    # the heartbeat: STATUS seen lit and seen dark
    t.wait("STATUS lit", lambda s: s.led("status") is True)
    t.wait("STATUS dark", lambda s: s.led("status") is False)

    # keypad on-hook: in-band tones into the handset twin, collected as the destination; then lift
    t.type("9197")
    t.wait("keyed 9197", lambda s: "keyed 9197" in s.row("Handset"))
    t.type("h")
    t.wait("the tone extension", lambda s: "OFF-HOOK" in s.row("Handset") and "call 9197" in s.row("Handset")
           and "running playback tone_stream://" in s.row("Handset"))
    t.type("h")
    t.wait("on-hook", lambda s: s.row("Handset").startswith("Handset  on-hook") and "call" not in s.row("Handset"))

    # 881001 + lift: eavesdrop on agent 1001's call (one it received: the switch put 1001's leg in
    # the spymap); the panel names the agent and the far party, not a uuid, and the mode by role
    assert t.screen.row("Target") == "Target   none"
    assert t.screen.row("Agents") == "Agents   1001 talking  1002 idle"   # supervisors are not listed
    t.type("881001")
    t.wait("keyed 881001", lambda s: "keyed 881001" in s.row("Handset"))
    t.type("h")
    t.wait("the agent", lambda s: s.row("Agent") == 'Agent    1001 "Agent 1001"  with 5551234 "Customer"'
           and s.row("Mode").startswith("Mode     listen  0:0"))
    t.wait("LISTEN and ACTIVE lit", lambda s: s.led("listen") and s.led("active") and not s.led("barge"))
    t.type("b")                                   # BARGE: a press of its pin, through the debouncer
    t.wait("barge", lambda s: s.row("Mode").startswith("Mode     barge") and s.led("barge")
           and not s.led("listen"))
    t.type("c")
    t.wait("whisper caller", lambda s: s.row("Mode").startswith("Mode     whisper caller"))
    t.type("+")
    t.wait("volume +3 dB", lambda s: "volume 3 dB" in s.row("Mode"))

    t.type("q")
    assert t.exit_code() == 0
    assert termios.tcgetattr(t.slave) == t.before
    assert t.screen.raw.rstrip("\r\n").find(LEAVE) > 0


def test_sigterm_restores_the_terminal_and_the_hook_key_works_without_a_hook_pin(term_factory) -> None:
    t = term_factory("--destination", "9196")
    t.wait("the panel", lambda s: s.row("Handset").startswith("Handset  on-hook"))
    t.type("h")                                   # no hook pin: the key works the handset directly
    t.wait("echo call", lambda s: "call 9196" in s.row("Handset") and "running echo" in s.row("Handset"))
    assert cbreak(termios.tcgetattr(t.slave))
    t.proc.send_signal(signal.SIGTERM)
    assert t.exit_code() == 0
    assert termios.tcgetattr(t.slave) == t.before
    assert LEAVE in t.screen.raw


def test_an_exception_that_escapes_still_restores_the_terminal_before_the_traceback(term_factory) -> None:
    t = term_factory("--crash")
    t.wait("the panel", lambda s: s.led("status") is not None)
    assert cbreak(termios.tcgetattr(t.slave))
    t.type("q")
    assert t.exit_code() == 1
    assert termios.tcgetattr(t.slave) == t.before
    leave = t.screen.raw.find(LEAVE)
    assert 0 < leave < t.screen.raw.find("RuntimeError: the driver crashed on purpose")


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize("stdin_tty,stdout_tty,term,expected", [
    (True, True, "xterm", True), (True, False, "xterm", False), (False, True, "xterm", False),
    (True, True, "dumb", False), (True, True, "", False)])
def test_available_only_on_a_real_terminal(monkeypatch, stdin_tty, stdout_tty, term, expected) -> None:
    monkeypatch.setattr(sys, "stdin", _Stream(stdin_tty))
    monkeypatch.setattr(sys, "stdout", _Stream(stdout_tty))
    monkeypatch.setenv("TERM", term)
    assert TerminalPanel.available() is expected


def test_not_started_when_stdout_is_a_pipe() -> None:
    out = subprocess.run([sys.executable, "-c", "from hw.terminal import TerminalPanel as T; print(T.available())"],
                         cwd=ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20,
                         env=dict(os.environ, TERM="xterm", PYTHONPATH=str(ROOT)))
    assert out.stdout.strip() == "False"
