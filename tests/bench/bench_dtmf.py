"""DTMF detection and tone generation per 20 ms frame.

Detection: cython_mixer.dtmf.DtmfDetector.feed called from Python once per frame (default
configuration, and with the high-pass and Q.24 checks off), beside libspandsp's dtmf_rx called
directly from C in a tight loop over the same frames (``_bench_raw_spandsp``, timed inside C):
the ratio is what the wrapper and its checks cost on top of spandsp. Input: speech-like audio
with a DTMF digit every second; the detected digits are checked before timing.

Generation: ToneGenerator.read_into (two-frequency tone) against numpy computing the same frame.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from cython_mixer import FRAME_BYTES, FRAME_SAMPLES, INTERNAL_RATE
from cython_mixer.dtmf import DtmfDetector, _bench_raw_spandsp
from cython_mixer.tone import ToneGenerator, dtmf_generate

DIGITS = "159#D0*7"


def make_input(seconds: int) -> tuple[bytes, str]:
    """Speech-like harmonics under a syllable envelope, a 60 ms digit at each second's start."""
    rng = np.random.default_rng(5)
    n = seconds * INTERNAL_RATE
    t = np.arange(n) / INTERNAL_RATE
    pitch = 140 * (1 + 0.1 * np.sin(2 * np.pi * 0.6 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / INTERNAL_RATE
    voice = sum(np.sin(k * phase + rng.uniform(0, 6.3)) / k for k in range(1, 20))
    envelope = np.clip(np.sin(2 * np.pi * 3.3 * t), 0, None) ** 2
    x = 3000 * voice * envelope + rng.normal(0, 30, n)
    digits = "".join(DIGITS[i % len(DIGITS)] for i in range(seconds))
    for i, d in enumerate(digits):
        burst = np.frombuffer(dtmf_generate(d, on_ms=60, off_ms=0, level_dbm0=-12), np.int16)
        x[i * INTERNAL_RATE:i * INTERNAL_RATE + len(burst)] = burst
    return np.clip(np.round(x), -32768, 32767).astype(np.int16).tobytes(), digits


def timed(run: Callable[[], object], frames: int, repeats: int) -> tuple[float, float]:
    """Median and minimum µs per frame over ``repeats`` runs of ``run`` (one run = all frames)."""
    run()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - t0) / frames / 1000)
    return statistics.median(samples), min(samples)


def bench_detection(seconds: int, repeats: int) -> None:
    data, digits = make_input(seconds)
    frames = [data[i:i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]
    n = len(frames)
    for kwargs in ({}, {"highpass": False, "q24_checks": False}):
        det = DtmfDetector(**kwargs)
        got = "".join(det.feed(f) for f in frames)
        assert got == digits, f"DtmfDetector({kwargs}) found {got!r}, expected {digits!r}"

    def feed(**kwargs) -> Callable[[], None]:
        det = DtmfDetector(**kwargs)

        def run() -> None:
            det.reset()
            for f in frames:
                det.feed(f)
        return run

    def empty() -> None:
        for f in frames:
            len(f)

    raw_runs = []
    for _ in range(repeats):
        raw_runs.append(_bench_raw_spandsp(data, n) / n / 1000)
    raw = statistics.median(raw_runs), min(raw_runs)
    rows = {
        "spandsp dtmf_rx, C loop": raw,
        "feed(), default (HP + Q.24)": timed(feed(), n, repeats),
        "feed(), highpass only": timed(feed(q24_checks=False), n, repeats),
        "feed(), plain spandsp": timed(feed(highpass=False, q24_checks=False), n, repeats),
        "Python loop, no call": timed(empty, n, repeats),
    }
    print(f"detection: {seconds} s input ({n} frames of {FRAME_SAMPLES} samples, {len(digits)} "
          f"digits, all found); median of {repeats} runs (min beside it)")
    print(f"  {'':30} {'µs/frame':>9} {'min':>7} {'× spandsp':>10}")
    for name, (med, low) in rows.items():
        print(f"  {name:30} {med:9.3f} {low:7.3f} {med / raw[0]:10.2f}")


def bench_generation(seconds: int, repeats: int) -> None:
    n = seconds * 50
    frame = bytearray(FRAME_BYTES)
    gen = ToneGenerator("%(1000,0,350,440);loops=-1", level_dbm0=-13)
    amp = 32767 * 10 ** ((-13 - 3.14) / 20)
    w = 2 * np.pi * np.array([350.0, 440.0])[:, None] / INTERNAL_RATE
    k = np.arange(FRAME_SAMPLES)
    state = {"start": 0}

    def cython() -> None:
        for _ in range(n):
            gen.read_into(frame)

    def numpy_frames() -> None:
        for _ in range(n):
            ph = w * (k + state["start"])
            out = np.round(amp * np.sin(ph).sum(axis=0)).astype(np.int16).tobytes()
            state["start"] += FRAME_SAMPLES
        del out

    rows = {"ToneGenerator.read_into": timed(cython, n, repeats),
            "numpy, same tone": timed(numpy_frames, n, repeats)}
    base = rows["ToneGenerator.read_into"][0]
    print(f"tone generation: 350+440 Hz, {n} frames per run; median of {repeats} runs")
    print(f"  {'':30} {'µs/frame':>9} {'min':>7} {'× cython':>10}")
    for name, (med, low) in rows.items():
        print(f"  {name:30} {med:9.3f} {low:7.3f} {med / base:10.2f}")


def main(quick: bool = False) -> None:
    seconds, repeats = (4, 5) if quick else (20, 15)
    bench_detection(seconds, repeats)
    print()
    bench_generation(seconds, repeats)


if __name__ == "__main__":
    main()
