"""Signals for DTMF tests: a G.711 µ-law round trip, synthetic speech (espeak-ng + sox) and
music-like signals (numpy), all deterministic. Helpers only; no tests here.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np

RATE = 8000
FRAME = 160


# --- G.711 µ-law (ITU-T G.191 ulaw_compress / ulaw_expand), as lookup tables -----------------

def _ulaw_tables() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(-32768, 32768, dtype=np.int32)
    absno = np.where(x < 0, (~x) >> 2, x >> 2) + 33
    absno = np.minimum(absno, 0x1FFF)
    segno = np.ones_like(absno)
    i = absno >> 6
    while np.any(i):
        segno += i > 0
        i >>= 1
    code = ((8 - segno) << 4) | (0x0F - ((absno >> segno) & 0x0F))
    code = np.where(x >= 0, code | 0x80, code).astype(np.uint8)
    c = np.arange(256, dtype=np.int32)
    mant = (~c) & 0xFF
    exponent = (mant >> 4) & 0x07
    step = 4 << (exponent + 1)
    mag = (0x80 << exponent) + step * (mant & 0x0F) + step // 2 - 4 * 33
    dec = np.where(c < 0x80, -mag, mag).astype(np.int16)
    return code, dec


_ENC, _DEC = _ulaw_tables()


def ulaw_encode(pcm: np.ndarray) -> np.ndarray:
    return _ENC[pcm.astype(np.int32) + 32768]


def ulaw_round_trip(pcm) -> np.ndarray:
    """int16 samples (array or bytes) -> µ-law -> int16, as a G.711 leg delivers them."""
    x = np.frombuffer(pcm, dtype=np.int16) if isinstance(pcm, (bytes, bytearray)) else np.asarray(pcm)
    return _DEC[ulaw_encode(np.clip(np.round(x), -32768, 32767))]


def to_int16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def scale_to_dbm0(x: np.ndarray, rms_dbm0: float) -> np.ndarray:
    """Scale x so its RMS is rms_dbm0 (a full-scale sine, RMS 32767/sqrt 2, is +3.14 dBm0)."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    target = 32767 / np.sqrt(2) * 10 ** ((rms_dbm0 - 3.14) / 20)
    return x * (target / rms)


# --- speech: espeak-ng, resampled to 8 kHz by sox ------------------------------------------------

SENTENCES = [
    "Thank you for calling the customer service centre. All of our agents are busy at the moment, "
    "so please stay on the line and your call will be answered in the order it was received.",
    "I would like to check the status of my order, the one I placed on the twenty third of last "
    "month, because the tracking number you sent me does not seem to work on your website.",
    "Could you please read me the account number again, slowly, digit by digit? Seven, three, "
    "nine, one, zero, four, eight, eight, six, two, five, and then the letter B.",
    "Whistling, singing and shouting are all quite different from ordinary talking, and a good "
    "tone detector must ignore every one of them while still hearing the keypad immediately.",
    "The quick brown fox jumps over the lazy dog, while the five boxing wizards jump quickly, "
    "and a sphinx of black quartz judges my vow, again and again and again.",
    "Hello? Hello? Can you hear me now? The line is very noisy, I think the signal is breaking "
    "up. Let me call you back from the office phone in about ten minutes, all right?",
]
#: (voice, words per minute, pitch 0-99): male and female variants, slow to fast
VOICES = [("en-us", 150, 50), ("en-gb", 170, 35), ("en-us+f3", 160, 70), ("en-us+m3", 140, 20),
          ("en-gb+f4", 185, 85), ("de", 160, 55)]


def espeak_speech(workdir: Path, min_seconds: float = 60.0) -> np.ndarray:
    """At least ``min_seconds`` of espeak-ng speech at 8 kHz int16 (RuntimeError without tools)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed (apt-get install espeak-ng sox)")
    parts: list[np.ndarray] = []
    total = 0
    k = 0
    while total < min_seconds * RATE:
        voice, wpm, pitch = VOICES[k % len(VOICES)]
        text = SENTENCES[k % len(SENTENCES)]
        wav = workdir / f"speech{k}.wav"
        raw = workdir / f"speech{k}.raw"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(wpm), "-p", str(pitch), "-w", str(wav), text],
                       check=True, capture_output=True)
        # -D: no dither, so the same text gives the same samples on every run
        subprocess.run(["sox", "-D", str(wav), "-r", str(RATE), "-c", "1", "-b", "16", "-e", "signed-integer",
                        "-t", "raw", str(raw)], check=True, capture_output=True)
        part = np.fromfile(raw, dtype="<i2").astype(np.int16)
        parts.append(part)
        total += len(part)
        k += 1
    return np.concatenate(parts)


# --- music-like signals ----------------------------------------------------------------------------

def _note(freq: float, n: int, rng: np.random.Generator, harmonics: int = 6) -> np.ndarray:
    """A plucked/bowed-like note: harmonics at 1/k amplitude, slight vibrato, attack and decay."""
    t = np.arange(n) / RATE
    vib = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    phase = 2 * np.pi * freq * np.cumsum(vib) / RATE
    x = np.zeros(n)
    for k in range(1, harmonics + 1):
        if k * freq < RATE / 2 - 200:
            x += np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k
    env = np.minimum(1.0, t / 0.01) * np.exp(-t * rng.uniform(1.0, 4.0))
    return x * env


def music(seconds: float, seed: int = 7) -> np.ndarray:
    """Chords and arpeggios of harmonic notes over two octaves around A4, as float samples."""
    rng = np.random.default_rng(seed)
    n_total = int(seconds * RATE)
    out = np.zeros(n_total + RATE)
    pos = 0
    while pos < n_total:
        root = 220.0 * 2 ** (rng.integers(0, 24) / 12)
        chord = [root * 2 ** (s / 12) for s in (0, 4, 7, 12)]
        if rng.random() < 0.5:      # chord
            n = int(rng.uniform(0.3, 1.2) * RATE)
            for f in chord:
                out[pos:pos + n] += _note(f, n, rng)
            pos += n
        else:                       # arpeggio
            step = int(rng.uniform(0.08, 0.2) * RATE)
            for f in chord * 2:
                out[pos:pos + 3 * step] += _note(f, 3 * step, rng)[:len(out) - pos]
                pos += step
    return out[:n_total]


def noise(seconds: float, seed: int = 11) -> np.ndarray:
    """White noise, then pink-ish (integrated) noise, with a slow level wobble."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    white = rng.standard_normal(n // 2)
    pink = np.cumsum(rng.standard_normal(n - n // 2))
    pink -= np.convolve(pink, np.ones(64) / 64, mode="same")     # keep it zero-mean
    pink /= np.std(pink)
    x = np.concatenate([white, pink])
    return x * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * np.arange(n) / RATE))


def sweeps(seconds: float) -> np.ndarray:
    """Single-tone sweeps 200-3600 Hz, slow and fast, up and down (a single tone is no digit)."""
    parts = []
    for dur in (4.0, 1.0, 0.25):
        n = int(dur * RATE)
        f = np.geomspace(200, 3600, n)
        parts += [np.sin(2 * np.pi * np.cumsum(f) / RATE), np.sin(2 * np.pi * np.cumsum(f[::-1]) / RATE)]
    x = np.concatenate(parts)
    reps = int(np.ceil(seconds * RATE / len(x)))
    return np.tile(x, reps)[:int(seconds * RATE)]


def frames(x: np.ndarray, frame: int = FRAME):
    """Yield consecutive int16 frames (bytes) of x; a last partial frame is zero-padded."""
    x = to_int16(x) if x.dtype != np.int16 else x
    pad = (-len(x)) % frame
    if pad:
        x = np.concatenate([x, np.zeros(pad, np.int16)])
    data = x.tobytes()
    step = frame * 2
    for i in range(0, len(data), step):
        yield data[i:i + step]
