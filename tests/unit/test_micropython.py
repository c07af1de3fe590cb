"""The panel logic, firmware.aio and the eavesdrop state machine under a real MicroPython.

MicroPython 1.27 (the webassembly "pyscript" port, npm @micropython/micropython-webassembly-pyscript)
runs under node. The test installs it into tests/.cache with npm when it is missing and fails — it
does not skip — when it cannot. The firmware files are copied into the interpreter's in-memory
file system; fakes of the switch and channels are written in the scenario itself (in MicroPython).

That port lacks a few names the unix and bare-metal ports have (asyncio.run, TCP streams,
ThreadSafeFlag; the logging package, which micropython-lib provides): the prelude stands in for
them, and for firmware/switch/__init__.py, whose CPython-only imports are not under test here.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "tests" / ".cache"
PACKAGE = "@micropython/micropython-webassembly-pyscript@1.27.0"
MODULE_DIR = CACHE / "node_modules" / "@micropython" / "micropython-webassembly-pyscript"

RUNNER = r"""
import { readFileSync } from "node:fs";
import { loadMicroPython } from "@micropython/micropython-webassembly-pyscript";
const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const mp = await loadMicroPython({ heapsize: 8 * 1024 * 1024,
  stdout: (s) => process.stdout.write(s + "\n"), stderr: (s) => process.stderr.write(s + "\n") });
for (const [dest, text] of Object.entries(spec.files)) {
  let d = "";
  for (const part of dest.split("/").slice(1, -1)) { d += "/" + part; try { mp.FS.mkdir(d); } catch (e) {} }
  mp.FS.writeFile(dest, text);
}
let rc = 0;
try { await mp.runPythonAsync(spec.code); }   // top-level await: this port has no asyncio.run
catch (e) { if (e.name === "PythonError") { console.error(e.message); rc = 1; } else throw e; }
process.exit(rc);
"""

PRELUDE = r'''
import sys
sys.path.insert(0, "/")
import asyncio
print("implementation:", sys.implementation.name, sys.version)
# names the unix / bare-metal ports have and the webassembly port does not
for _name in ("run", "open_connection", "start_server"):
    if not hasattr(asyncio, _name):
        setattr(asyncio, _name, None)
if not hasattr(asyncio, "ThreadSafeFlag"):
    class ThreadSafeFlag:
        def __init__(self):
            self._e = asyncio.Event()
        def set(self):
            self._e.set()
        def clear(self):
            self._e.clear()
        async def wait(self):
            await self._e.wait()
            self._e.clear()
    asyncio.ThreadSafeFlag = ThreadSafeFlag
'''

LOGGING_STANDIN = '''
class _Logger:
    def __init__(self, name): self.name = name
    def _log(self, *a, **k): pass
    debug = info = warning = error = exception = critical = log = _log
def getLogger(name=None): return _Logger(name)
'''

SCENARIO = r'''
from firmware import aio
from firmware import panel as P
from firmware.switch import eavesdrop as E

assert aio.IS_MICROPYTHON


from firmware.clock import VirtualClock as VClock   # the real one: timers fire only in advance()


class Ev:
    def __init__(self, name, headers, subclass=None):
        self.name = name
        self.headers = headers
        self.subclass = subclass
        self.uuid = headers.get("Unique-ID")
    def get(self, k, d=None):
        return self.headers.get(k, d)


class Bus:
    def __init__(self):
        self.subs = {}
        self.n = 0
    def subscribe(self, names, cb):
        self.n += 1
        self.subs[self.n] = (names, cb)
        return self.n
    def unsubscribe(self, token):
        self.subs.pop(token, None)
    def fire(self, name, headers, subclass=None):
        e = Ev(name, headers, subclass)
        for names, cb in list(self.subs.values()):
            if names == "all" or name in names:
                cb(e)


class State:
    def __init__(self, value):
        self.value = value


class Chan:
    def __init__(self, sw, uuid, name, **variables):
        self.sw, self.uuid, self.name, self.vars = sw, uuid, name, variables
        self.up = True
        self.is_answered = True
        self.state = State("ANSWERED")
        self.other_leg = None
        self.clock = sw.clock
        self.digits = aio.Mailbox()
        self.queued = []
    def get_variable(self, k):
        return self.vars.get(k)
    def set_variable(self, k, v):
        self.vars[k] = v
    def queue_dtmf(self, d, source="app"):
        self.queued.append((d, source))
        self.digits.put(d)
    async def next_digit(self, timeout_ms=None):
        if timeout_ms is None:
            return await self.digits.get()
        return self.digits.get_nowait()
    async def guard(self, aw):
        return await aw
    def spawn(self, coro):
        return aio.create_task(coro)
    async def pre_answer(self):
        pass
    def flush_dtmf(self):
        self.digits.clear()
    async def hangup(self, cause=None):
        self.up = False
        self.sw.events.fire("CHANNEL_HANGUP", {"Unique-ID": self.uuid})
    def fire(self, name, extra=None, subclass=None):
        h = {"Unique-ID": self.uuid}
        h.update(extra or {})
        self.sw.events.fire(name, h, subclass)


class Switch:
    def __init__(self, clock):
        self.clock = clock
        self.events = Bus()
        self.chans = {}
        self.globals = {}
    def add(self, ch):
        self.chans[ch.uuid] = ch
        return ch
    def get(self, uuid):
        return self.chans.get(uuid)
    def channels(self):
        return list(self.chans.values())
    def variable(self, ch, name):
        v = ch.get_variable(name) if ch is not None else None
        return v if v is not None else self.globals.get(name)
    async def run_app(self, ch, app, data):
        pass


class Tap:
    def __init__(self, mode):
        self.mode = mode
        self.gains = []
    def set_mode(self, m):
        self.mode = m
    def drop_whisper(self):
        pass
    def play_confirm(self, m):
        pass
    def set_gains(self, l, w):
        self.gains.append(l)
    def detach(self):
        pass


class Hub:
    def __init__(self):
        self.taps = []
    def ready(self, target):
        return True
    def attach(self, target, spy, mode=0, **kw):
        self.taps.append(Tap(mode))
        return self.taps[-1]


class Leds:
    def __init__(self, clock):
        self.clock = clock
        self.state = {}
        self.history = []
    def set(self, name, on):
        on = 1 if on else 0
        if self.state.get(name) != on:
            self.state[name] = on
            self.history.append((self.clock.now_ms(), name, on))


async def main():
    clock = VClock()
    sw = Switch(clock)
    leds = Leds(clock)
    panel = P.Panel(sw, leds, clock=clock)
    panel.start()
    await clock.advance(2000)
    beats = [(t, v) for t, n, v in leds.history if n == "status"]
    assert beats == [(0, 1), (80, 0), (200, 1), (280, 0), (1000, 1), (1080, 0), (1200, 1), (1280, 0),
                     (2000, 1)], beats
    print("heartbeat:", beats)

    engine = E.Eavesdrop(sw, Hub())
    sw.eavesdrop = engine
    target = sw.add(Chan(sw, "t-1001", "sofia/internal/1001", caller_id_number="1001"))
    spy = sw.add(Chan(sw, "s-handset", "handset/local", may_eavesdrop="true"))
    app = aio.create_task(engine.app_eavesdrop(sw, spy, target.uuid))
    await clock.advance(100)
    assert engine.modes() == {spy.uuid: 0}, engine.modes()
    assert leds.state["listen"] == 1 and leds.state["active"] == 1 and leds.state["barge"] == 0

    panel.button("barge", "short")          # a button press is digit 3 on the spy's channel
    await clock.advance(100)
    assert spy.queued == [("3", "panel")], spy.queued
    assert engine.modes() == {spy.uuid: 3}, engine.modes()
    assert leds.state["barge"] == 1 and leds.state["listen"] == 0
    print("barge:", engine.modes(), {k: v for k, v in leds.state.items() if v})

    panel.button("vol_up", "short")
    assert spy.vars[P.LISTEN_GAIN_VAR] == "3" and engine.session(spy.uuid).tap.gains == [3]
    panel.button("next", "short")           # "*": the session ends
    await clock.advance(100)
    assert engine.modes() == {} and leds.state["active"] == 0 and leds.state["barge"] == 0
    await clock.advance(100)
    assert app.done()
    panel.stop()
    print("ALL OK")


await main()
'''


def ensure_micropython() -> Path:
    """Install the interpreter into tests/.cache once; an AssertionError (not a skip) if npm fails."""
    if not (MODULE_DIR / "micropython.mjs").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install MicroPython for this test (apt install nodejs npm)"
        CACHE.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), PACKAGE],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"npm install {PACKAGE} failed:\n{r.stdout}\n{r.stderr}"
    runner = CACHE / "run_mpy.mjs"
    if not runner.exists() or runner.read_text() != RUNNER:
        runner.write_text(RUNNER)
    return runner


def run_micropython(code: str, files: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    runner = ensure_micropython()
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"files": files, "code": code}))
    return subprocess.run(["node", str(runner), str(spec)], capture_output=True, text=True, timeout=120,
                          cwd=CACHE)


def firmware_files() -> dict[str, str]:
    files = {f"/{rel}": (ROOT / rel).read_text() for rel in
             ("firmware/__init__.py", "firmware/aio.py", "firmware/clock.py", "firmware/panel.py",
              "firmware/switch/eavesdrop.py")}
    files["/firmware/switch/__init__.py"] = ""   # the real one imports the CPython-only channel module
    return files


def test_panel_and_eavesdrop_run_under_micropython(tmp_path: Path) -> None:
    files = firmware_files()
    files["/logging.py"] = LOGGING_STANDIN
    r = run_micropython(PRELUDE + SCENARIO, files, tmp_path)
    assert r.returncode == 0, f"MicroPython failed:\n{r.stdout}\n{r.stderr}"
    assert "implementation: micropython" in r.stdout
    assert r.stdout.rstrip().endswith("ALL OK"), r.stdout


def test_the_runner_reports_a_python_failure(tmp_path: Path) -> None:
    r = run_micropython(PRELUDE + "import dataclasses\n", {}, tmp_path)   # CPython-only: must fail
    assert r.returncode == 1 and "dataclasses" in r.stderr
