"""The eavesdrop mix step per 20 ms frame: cython_mixer against audioop and numpy, same input.

One step (DESIGN §2, mode 2 "speak with the uuid"): decode the two call legs A and B from
G.711, mix A+B for the spy, mix B + the spy's voice for A, encode both outputs to G.711.
A second table times the listen-only step (decode two legs, A+B, encode one), the operation
the reference (shared/reference/dsp-and-performance.md §4-5) measured, to compare with its
C floor. Input: 10 s of synthetic speech-like legs (harmonics under a syllable envelope plus
noise) scaled so that 0.74 % of the A+B samples saturate, as in the reference.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from cython_mixer import FRAME_SAMPLES, INTERNAL_RATE, g711
from cython_mixer.mix import MixMatrix, _bench_c_floor

try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop  # stdlib up to 3.12, the audioop-lts package on 3.13+
except ImportError:
    audioop = None

C_FLOOR_US = 0.17        # reference §5: one listen mix of 160 samples, timed inside C
SATURATED = 0.0074       # fraction of A+B samples beyond int16, as in the reference data
TARGET = 4.0             # the goal for audioop / cython_mixer
BATCH = 50               # frames per timed batch (1 s of audio)
WARM = 10                # untimed frames before each batch

Frames = list[tuple[bytes, bytes, bytes]]
Step = Callable[[bytes, bytes, bytes], Sequence]


# --- input -----------------------------------------------------------------------------------

def speech_like(seconds: float, f0: float, seed: int) -> np.ndarray:
    """A voiced, syllabic float signal: formant-weighted harmonics of a wandering pitch."""
    rng = np.random.default_rng(seed)
    n = int(seconds * INTERNAL_RATE)
    t = np.arange(n) / INTERNAL_RATE
    pitch = f0 * (1 + 0.12 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6.3))
                  + 0.04 * np.sin(2 * np.pi * 3.1 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / INTERNAL_RATE
    voice = np.zeros(n)
    for k in range(1, int(3400 // (f0 * 1.2)) + 1):
        fk = k * f0
        weight = (1 + 2.0 * np.exp(-((fk - 650) / 250) ** 2)
                  + 1.2 * np.exp(-((fk - 1250) / 350) ** 2)
                  + 0.5 * np.exp(-((fk - 2600) / 400) ** 2)) / k
        voice += weight * np.sin(k * phase + rng.uniform(0, 6.3))
    envelope = np.zeros(n)
    pos = 0
    while pos < n:   # syllables of 120-300 ms, short gaps, now and then a pause
        length = int(rng.uniform(0.12, 0.30) * INTERNAL_RATE)
        shape = np.sin(np.pi * np.arange(length) / length) ** 2 * rng.uniform(0.4, 1.0)
        envelope[pos:pos + length] = shape[:max(0, min(length, n - pos))]
        gap = rng.uniform(0.4, 1.0) if rng.random() < 0.15 else rng.uniform(0.03, 0.2)
        pos += length + int(gap * INTERNAL_RATE)
    noise = rng.normal(0, 0.02 * voice.std(), n)
    return voice * envelope + noise


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def saturated(a: np.ndarray, b: np.ndarray) -> float:
    """The fraction of A+B samples beyond int16."""
    return float(np.mean(np.abs(a.astype(np.int32) + b) > 32767))


def make_input(seconds: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Legs A and B and the spy as int16, scaled so SATURATED of A+B is beyond full scale."""
    a, b = speech_like(seconds, 120, 1), speech_like(seconds, 210, 2)
    spy = speech_like(seconds, 160, 3)
    low, high = 0.0, 4 * 32767 / np.abs(a + b).max()
    for _ in range(40):   # bisect the scale: each leg is clipped to int16 on its own first
        mid = (low + high) / 2
        if saturated(to_int16(a * mid), to_int16(b * mid)) < SATURATED:
            low = mid
        else:
            high = mid
    return to_int16(a * low), to_int16(b * low), to_int16(spy * (0.5 * 32767 / np.abs(spy).max()))


def frames_of(a: np.ndarray, b: np.ndarray, spy: np.ndarray, law: str) -> Frames:
    """(codes A, codes B, spy PCM) per 20 ms: the legs arrive as G.711, the spy as linear."""
    ca, cb = g711.encode(law, a), g711.encode(law, b)
    n = len(a) // FRAME_SAMPLES
    f = FRAME_SAMPLES
    return [(ca[i * f:(i + 1) * f], cb[i * f:(i + 1) * f], spy[i * f:(i + 1) * f].tobytes())
            for i in range(n)]


# --- the three implementations ------------------------------------------------------------------

def cython_step(law: str, whisper: bool) -> Step:
    outputs = (law, law) if whisper else (law,)
    tap = MixMatrix(3, len(outputs), FRAME_SAMPLES, input_codecs=(law, law, "linear"),
                    output_codecs=outputs)
    tap.set_gain(0, 0, 0.0)          # the spy hears A + B
    tap.set_gain(1, 0, 0.0)
    if whisper:
        tap.set_gain(1, 1, 0.0)      # A hears B + spy
        tap.set_gain(2, 1, 0.0)
    process = tap.process
    return lambda ca, cb, s: process((ca, cb, s))


def audioop_step(law: str, whisper: bool) -> Step:
    dec, enc = ((audioop.ulaw2lin, audioop.lin2ulaw) if law == "PCMU"
                else (audioop.alaw2lin, audioop.lin2alaw))
    add = audioop.add
    if not whisper:
        return lambda ca, cb, s: (enc(add(dec(ca, 2), dec(cb, 2), 2), 2),)

    def step(ca: bytes, cb: bytes, s: bytes) -> tuple[bytes, bytes]:
        la, lb = dec(ca, 2), dec(cb, 2)
        return enc(add(la, lb, 2), 2), enc(add(lb, s, 2), 2)
    return step


def numpy_tables(law: str) -> tuple[np.ndarray, np.ndarray]:
    """G.191 tables as arrays: decode by code (int32), encode by x + 32768."""
    dec = np.frombuffer(g711.decode(law, bytes(range(256))), np.int16).astype(np.int32)
    enc = np.frombuffer(g711.encode(law, np.arange(-32768, 32768, dtype=np.int16)), np.uint8)
    return dec, enc


def numpy_step(law: str, whisper: bool) -> Step:
    dec, enc = numpy_tables(law)
    u8, i16 = np.uint8, np.int16

    def encode(x: np.ndarray) -> bytes:
        np.clip(x, -32768, 32767, out=x)
        x += 32768
        return enc[x].tobytes()

    def step(ca: bytes, cb: bytes, s: bytes) -> tuple[bytes, ...]:
        la, lb = dec[np.frombuffer(ca, u8)], dec[np.frombuffer(cb, u8)]
        if not whisper:
            return (encode(la + lb),)
        return encode(la + lb), encode(lb + np.frombuffer(s, i16))
    return step


# --- checking and timing ------------------------------------------------------------------------

def outputs(step: Step, frames: Frames) -> list[bytes]:
    """Each output stream of a step over all frames, concatenated."""
    # copy at once: cython_mixer's views are overwritten by the next call
    results = [[bytes(out) for out in step(*f)] for f in frames]
    return [b"".join(r[j] for r in results) for j in range(len(results[0]))]


def linear_sums(frames: Frames, law: str, whisper: bool) -> list[np.ndarray]:
    """The clamped linear value behind every output sample (what gets encoded)."""
    dec, _ = numpy_tables(law)
    ca = dec[np.frombuffer(b"".join(f[0] for f in frames), np.uint8)]
    cb = dec[np.frombuffer(b"".join(f[1] for f in frames), np.uint8)]
    s = np.frombuffer(b"".join(f[2] for f in frames), np.int16).astype(np.int32)
    sums = [ca + cb, cb + s] if whisper else [ca + cb]
    return [np.clip(x, -32768, 32767) for x in sums]


def require(ok: bool, what: str) -> None:
    """Stop the benchmark when implementations disagree (not an assert: -O must not skip it)."""
    if not ok:
        raise SystemExit(f"bench_mix: outputs disagree: {what}")


def check(frames: Frames, law: str, whisper: bool, steps: dict[str, Step]) -> str:
    """Assert every implementation gives the same codes, up to audioop's known µ-law deviation
    from G.191 (negative decision boundaries); return a note on that deviation."""
    ref = outputs(steps["cython_mixer"], frames)
    require(outputs(steps["numpy"], frames) == ref, f"numpy and cython_mixer differ ({law})")
    if "audioop" not in steps:
        return ""
    got = outputs(steps["audioop"], frames)
    if law == "PCMA":
        require(got == ref, "audioop and cython_mixer on A-law")
        return "A-law: all three byte-identical"
    # audioop's µ-law encoder departs from G.191 at some negative inputs: the outputs may
    # differ exactly where audioop's own table differs from G.191 for the linear sum
    every = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    table_aud = np.frombuffer(audioop.lin2ulaw(every, 2), np.uint8)
    table_191 = np.frombuffer(g711.ulaw_encode(every), np.uint8)
    differ = total = 0
    for out_ref, out_aud, x in zip(ref, got, linear_sums(frames, law, whisper)):
        a, r = np.frombuffer(out_aud, np.uint8), np.frombuffer(out_ref, np.uint8)
        require(np.array_equal(r, table_191[x + 32768]), "cython_mixer is not G.191 µ-law")
        require(np.array_equal(a, table_aud[x + 32768]), "audioop beyond its known µ-law table")
        differ += int(np.count_nonzero(a != r))
        total += a.size
    return (f"µ-law: audioop differs from G.191 on {differ} of {total} output samples, all at "
            f"its known negative decision-boundary inputs; numpy is byte-identical")


def time_steps(steps: dict[str, Step], frames: Frames,
               batches: int) -> dict[str, tuple[float, float]]:
    """Median and minimum µs per frame over short batches (1 s of audio each, so a batch
    rarely straddles a preemption on a shared machine), implementations interleaved. Each
    batch starts with a few untimed frames, so one implementation's tables are not timed
    cold after another's evicted them."""
    chunks = [frames[i:i + BATCH] for i in range(0, len(frames), BATCH)]
    runs: dict[str, list[float]] = {name: [] for name in steps}
    for b in range(batches):
        chunk = chunks[b % len(chunks)]
        for name, step in steps.items():
            for ca, cb, s in chunk[:WARM]:
                step(ca, cb, s)
            t0 = time.perf_counter_ns()
            for ca, cb, s in chunk:
                step(ca, cb, s)
            runs[name].append((time.perf_counter_ns() - t0) / len(chunk) / 1000)
    return {name: (statistics.median(v), min(v)) for name, v in runs.items()}


def loop_overhead(frames: Frames, batches: int) -> float:
    """µs per frame of the timing loop with an empty step (included in every figure)."""
    empty = lambda ca, cb, s: None  # noqa: E731
    return time_steps({"empty": empty}, frames, batches)["empty"][0]


# --- report -------------------------------------------------------------------------------------

def environment() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    aud = "unavailable" if audioop is None else (
        "stdlib" if sys.version_info < (3, 13) else "audioop-lts")
    return (f"Python {platform.python_version()}, numpy {np.__version__}, audioop {aud}; "
            f"{cpu}, {os.cpu_count()} CPUs")


def run_table(title: str, legs: tuple[np.ndarray, ...], whisper: bool,
              batches: int) -> dict[str, dict]:
    print(title)
    print(f"  {'law':5} {'implementation':15} {'µs/frame':>9} {'min':>7} {'× cython':>9}")
    results = {}
    for law in ("PCMU", "PCMA"):
        lf = frames_of(*legs, law)
        steps = {"cython_mixer": cython_step(law, whisper), "numpy": numpy_step(law, whisper)}
        if audioop is not None:
            steps["audioop"] = audioop_step(law, whisper)
        note = check(lf, law, whisper, steps)
        times = time_steps(steps, lf, batches)
        base = times["cython_mixer"][0]
        for name in ("cython_mixer", "audioop", "numpy"):
            if name in times:
                med, low = times[name]
                print(f"  {law:5} {name:15} {med:9.3f} {low:7.3f} {med / base:9.2f}")
        if note:
            print(f"    check: {note}")
        results[law] = times
    return results


def main(quick: bool = False) -> None:
    seconds, batches = (4.0, 30) if quick else (10.0, 150)
    legs = make_input(seconds)
    print(environment())
    print(f"input: {seconds:g} s of speech-like legs ({int(seconds * 50)} frames of "
          f"{FRAME_SAMPLES} samples), {saturated(legs[0], legs[1]) * 100:.2f} % of A+B "
          f"saturated; median of {batches} batches of {BATCH} frames (min beside it)")
    if audioop is None:
        print("audioop is not installed (on Python 3.13+: pip install audioop-lts): "
              "its baseline is unavailable")
    overhead = loop_overhead(frames_of(*legs, "PCMU"), batches)
    print(f"timing loop with an empty step: {overhead:.3f} µs/frame (included in every figure)")
    print()
    tap = run_table("eavesdrop step (decode A, B; spy hears A+B; A hears B+spy; encode both):",
                    legs, True, batches)
    print()
    listen = run_table("listen only (decode A, B; A+B; encode), the reference's operation:",
                       legs, False, batches)
    print()
    for law in ("PCMU", "PCMA"):
        t = tap[law]
        c = t["cython_mixer"][0]
        parts = [f"numpy/cython {t['numpy'][0] / c:.1f}×"]
        if "audioop" in t:
            r = t["audioop"][0] / c
            r_min = t["audioop"][1] / t["cython_mixer"][1]
            verdict = "meets" if r >= TARGET else "MISSES"
            parts.insert(0, f"audioop/cython {r:.2f}× ({verdict} the ≥{TARGET:g}× target; "
                            f"{r_min:.2f}× on the minimums)")
        print(f"eavesdrop step {law}: " + ", ".join(parts))
    c = listen["PCMU"]["cython_mixer"][0]
    codes_a = b"".join(f[0] for f in frames_of(*legs, "PCMU"))
    codes_b = b"".join(f[1] for f in frames_of(*legs, "PCMU"))
    floor = statistics.median(_bench_c_floor(codes_a, codes_b, "PCMU", 2000 if batches < 50 else 20000)
                              for _ in range(7))
    call = max(c - overhead, 0.0)  # the C floor has no Python timing loop around it
    verdict = "within" if call / floor <= 2.0 else "NOT within"
    print(f"C floor measured here (the listen step as a plain C loop, timed inside C): {floor:.3f} µs/frame; "
          f"cython_mixer's listen-only call is {call:.3f} µs without the timing loop = {call / floor:.2f}× it "
          f"({verdict} the 2× target; {c / floor:.2f}× with the loop); the reference's Xeon figure was "
          f"≈{C_FLOOR_US} µs")
