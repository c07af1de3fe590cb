"""Active eavesdrop taps per 20 ms tick: what 100 concurrent barge sessions cost one core.

Each session is a bridged call (legs a and b on a relay) with one spy in mode 3 (three-way, the
most work: every party's output is a mix), driven exactly as the media clock drives it — the spy
leg's producer, then the call's tap. Baselines in the same run, on the same frames: the same three
mixes per call done with audioop (saturating add, the stdlib's mixer) and with numpy. Issue 5's
target: 100 taps under 5 % of one core.
"""
from __future__ import annotations

import statistics
import time
import warnings

import numpy as np

from firmware.media.tap import TapHub
from tests.unit.media.test_tap import Call, FakeChannel, FakeLeg, Sine

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
except ImportError:
    audioop = None

TAPS = 100
TICK_US = 20_000.0
TARGET_PCT = 5.0


def frames(n: int) -> list[tuple[bytes, bytes, bytes]]:
    a, b, s = Sine(440.0), Sine(1000.0), Sine(2000.0)
    return [(a.frame(), b.frame(), s.frame()) for _ in range(n)]


def tap_tick_us(taps: int, ticks: int, data) -> float:
    hub = TapHub(clock=None)
    sessions = []
    for _ in range(taps):
        call = Call()
        spy = hub.attach(call.a, FakeChannel(FakeLeg()), mode=3, hear_target=True, hear_peer=True)
        sessions.append((call.relay, spy))
    for tick in range(20):  # settle: whisper hold-off, confirmation tone
        fa, fb, fs = data[tick % len(data)]
        for relay, spy in sessions:
            spy.produce(fs)
            relay.tap.frames(tick, fa, fb)
    t0 = time.perf_counter_ns()
    for tick in range(ticks):
        fa, fb, fs = data[tick % len(data)]
        for relay, spy in sessions:
            spy.produce(fs)
            relay.tap.frames(tick, fa, fb)
    return (time.perf_counter_ns() - t0) / 1000 / ticks


def audioop_tick_us(taps: int, ticks: int, data) -> float:
    add = audioop.add
    t0 = time.perf_counter_ns()
    for tick in range(ticks):
        fa, fb, fs = data[tick % len(data)]
        for _ in range(taps):
            add(fa, fb, 2)                       # the spy hears both parties
            add(fb, fs, 2)                       # the target hears the peer and the spy
            add(fa, fs, 2)                       # the peer hears the target and the spy
    return (time.perf_counter_ns() - t0) / 1000 / ticks


def numpy_tick_us(taps: int, ticks: int, data) -> float:
    arrays = [tuple(np.frombuffer(x, np.int16).astype(np.int32) for x in f) for f in data]
    t0 = time.perf_counter_ns()
    for tick in range(ticks):
        a, b, s = arrays[tick % len(arrays)]
        for _ in range(taps):
            np.clip(a + b, -32768, 32767).astype(np.int16).tobytes()
            np.clip(b + s, -32768, 32767).astype(np.int16).tobytes()
            np.clip(a + s, -32768, 32767).astype(np.int16).tobytes()
    return (time.perf_counter_ns() - t0) / 1000 / ticks


def median(fn, runs: int, *args) -> float:
    return statistics.median(fn(*args) for _ in range(runs))


def main(quick: bool = False) -> None:
    ticks, runs = (50, 3) if quick else (250, 7)
    data = frames(50)
    tap = median(tap_tick_us, runs, TAPS, ticks, data)
    rows = [("earshot taps (MixMatrix + spy producer)", tap)]
    if audioop is not None:
        rows.append(("audioop: the 3 mixes only", median(audioop_tick_us, runs, TAPS, ticks, data)))
    rows.append(("numpy: the 3 mixes only", median(numpy_tick_us, runs, TAPS, ticks, data)))
    print(f"{TAPS} calls, each with one spy in three-way mode (every output a mix); median of {runs} runs "
          f"of {ticks} ticks")
    print(f"  {'implementation':<42}{'µs/tick':>10}{'µs/tap':>9}{'% core':>9}{'× earshot':>11}")
    for name, us in rows:
        print(f"  {name:<42}{us:>10.1f}{us / TAPS:>9.2f}{100 * us / TICK_US:>8.2f}%{us / tap:>11.2f}")
    pct = 100 * tap / TICK_US
    verdict = "meets" if pct < TARGET_PCT else "misses"
    print(f"{TAPS} taps cost {pct:.2f} % of one core ({verdict} the < {TARGET_PCT:.0f} % target); "
          f"one core sustains ≈ {int(TICK_US / (tap / TAPS)):,} taps at 100 %")
