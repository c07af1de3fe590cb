"""Months of uptime: the tick counter wraps (2^29 ms ≈ 6.2 days here, as MicroPython's does), and
nothing may notice. Each timing path runs on a clock started just before the wrap — before, a
button press straddling it slept 536,870,912 ms (dead for 6.2 days), a call placed near it never
got NO_ANSWER, and durations came out negative — and an AST scan keeps raw arithmetic on tick
values out of the tree (firmware/clock.py is the one place that does it, through ticks_diff)."""
from __future__ import annotations

import ast
import asyncio
from pathlib import Path

from firmware import aio
from firmware.clock import SystemClock, VirtualClock
from firmware.switch import ChannelState, HangupCause
from hw.gpio import ButtonInput, SimGpio
from tests.asynctest import run

ROOT = Path(__file__).resolve().parents[2]
NEAR_WRAP = aio.TICKS_PERIOD - 300          # 300 ms before the counter returns to 0


def test_the_virtual_clock_wraps_and_its_arithmetic_does_not_notice():
    async def main():
        clock = VirtualClock(start=NEAR_WRAP)
        t0 = clock.now_ms()
        due = clock.deadline(1000)
        await clock.advance(400)
        wrapped = clock.now_ms()
        return t0, due, wrapped, clock.elapsed(t0), clock.remaining(due)

    t0, due, wrapped, elapsed, remaining = run(main())
    assert t0 == NEAR_WRAP and due == 700 and wrapped == 100          # past the wrap
    assert (elapsed, remaining) == (400, 600)
    system = SystemClock()
    assert system.remaining(system.deadline(-5)) == 0 and system.elapsed(system.now_ms()) >= 0


def test_a_button_press_straddling_the_wrap_is_reported():
    async def main():
        clock = VirtualClock(start=aio.TICKS_PERIOD - 10)   # the press begins 10 ms before the wrap
        sim = SimGpio(clock)
        events: list[tuple[str, str]] = []
        buttons = ButtonInput(sim, {"barge": 24}, lambda n, k: events.append((n, k)), clock=clock)
        buttons.start()
        task = asyncio.ensure_future(sim.press(24, hold_ms=120, bounces=4, bounce_ms=1))
        await clock.advance(400)
        assert task.done()
        buttons.close()
        return events

    assert run(main()) == [("barge", "down"), ("barge", "up"), ("barge", "short")]


def test_no_answer_fires_for_a_call_placed_just_before_the_wrap():
    from tests.unit.switch.test_core import no_answer_after

    a, ringing = no_answer_after(VirtualClock(start=NEAR_WRAP))
    assert ringing is ChannelState.RINGING and a.hangup_cause is HangupCause.NO_ANSWER


def test_eavesdrop_durations_across_the_wrap():
    from tests.unit.switch.test_eavesdrop import Rig

    async def main():
        rig = Rig()
        rig.clock._start = NEAR_WRAP           # before anything is timed
        rig.start()
        await rig.settle()
        await rig.settle(200)
        rig.spy.queue_dtmf("2")
        await rig.settle(1000)                 # the mode change and the stop are past the wrap
        rig.spy.queue_dtmf("*")
        await rig.settle()
        return rig.audit.records

    records = run(main())
    mode = next(r for r in records if r["event"] == "mode")
    stop = next(r for r in records if r["event"] == "stop")
    assert mode["previous_mode_ms"] == 200
    assert (stop["mode_ms"], stop["duration_ms"]) == (1000, 1200)


# --- no raw arithmetic on tick values --------------------------------------------------------------

TICK_CALLS = {"now_ms", "ticks_ms"}
# attributes and names that hold tick values where ticks are read (elsewhere, e.g. the media
# clock and provisioning, "deadline" is a float of time.monotonic(), which does not wrap)
TICK_NAMES = {"started_ms", "mode_since_ms", "last_edge", "deadline", "since"}


def _is_tick_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    return (f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")) in TICK_CALLS


def _is_tick(node: ast.AST, reads_ticks: bool) -> bool:
    if _is_tick_call(node):
        return True
    if reads_ticks and isinstance(node, ast.Attribute):
        return node.attr in TICK_NAMES
    if reads_ticks and isinstance(node, ast.Name):
        return node.id in TICK_NAMES
    return False


def raw_tick_arithmetic(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    reads_ticks = any(_is_tick_call(n) for n in ast.walk(tree))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub)):
            operands = (node.left, node.right)
        elif isinstance(node, ast.Compare):
            operands = (node.left, *node.comparators)
        else:
            continue
        if any(_is_tick(o, reads_ticks) for o in operands):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_no_raw_arithmetic_on_tick_values_outside_the_clock():
    allowed = {ROOT / "firmware" / "clock.py", ROOT / "firmware" / "aio.py"}
    files = [p for d in ("firmware", "hw") for p in sorted((ROOT / d).rglob("*.py")) if p not in allowed]
    bad = [line for p in files for line in raw_tick_arithmetic(p)]
    assert bad == [], "use clock.deadline/remaining/elapsed (firmware/clock.py):\n" + "\n".join(bad)


def test_the_scan_finds_what_it_looks_for(tmp_path):
    sample = ROOT / "tests" / ".cache" / "tick_sample.py"
    sample.parent.mkdir(parents=True, exist_ok=True)
    sample.write_text("d = clock.now_ms() + 5\nw = b.last_edge - x\nok = clock.elapsed(since_ms)\n")
    try:
        assert [line.split(": ", 1)[1] for line in raw_tick_arithmetic(sample)] == [
            "clock.now_ms() + 5", "b.last_edge - x"]
    finally:
        sample.unlink()
