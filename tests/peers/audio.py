"""Audio helpers for peer tests: write test tones, read recordings, find which tones they hold.

Samples are 1-D numpy arrays. int16 arrays are full scale at 32768; float arrays at 1.0.
Spectra are Welch averages of Hann-windowed 2048-sample segments (3.9 Hz bins at 8 kHz), so a
short gap or a phase jump in a recording does not smear the peaks.
"""
from __future__ import annotations

import wave
from pathlib import Path
from typing import Sequence

import numpy as np

SEGMENT = 2048          # Welch segment length (samples)
MIN_SEGMENT = 256       # shorter signals are too short to hold a tone
SILENCE_DBFS = -60.0    # a segment quieter than this is silence
ACTIVE_RANGE_DB = 40.0  # ... and so is one this far below the loudest segment
# G.711 quantisation of a pure tone leaves deterministic spurs some 55-60 dB below it, far above
# the median of a clean spectrum. The floor is therefore never taken lower than this below the
# strongest bin, so those spurs never count as tones.
FLOOR_RANGE_DB = 50.0


def write_tone_wav(path: str | Path, freq: float | Sequence[float], seconds: float,
                   rate: int = 8000, *, amplitude: float = 0.5) -> Path:
    """Write a mono S16LE WAV of a sine (or the sum of several, e.g. a DTMF pair).

    `amplitude` is the peak of the sum relative to full scale. 8 kHz mono is what baresip's
    aufile source needs for G.711.
    """
    freqs = [float(freq)] if isinstance(freq, (int, float)) else [float(f) for f in freq]
    if rate <= 0 or seconds <= 0:
        raise ValueError(f"need rate > 0 and seconds > 0, got rate={rate} seconds={seconds}")
    if not freqs or any(not 0 <= f < rate / 2 for f in freqs):
        raise ValueError(f"frequencies {freqs} must lie in [0, {rate / 2}) Hz")
    if not 0 < amplitude <= 1:
        raise ValueError(f"amplitude must be in (0, 1], got {amplitude}")
    t = np.arange(int(round(seconds * rate))) / rate
    wave_sum = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    pcm = np.round(wave_sum * (amplitude / len(freqs)) * 32767).astype("<i2")
    path = Path(path)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


def read_wav(path: str | Path) -> tuple[int, np.ndarray]:
    """(rate, samples) of a 16-bit PCM WAV; several channels are averaged to mono."""
    try:
        with wave.open(str(path), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except wave.Error as e:
        raise ValueError(f"{path}: not a PCM WAV ({e})") from None
    if width != 2:
        raise ValueError(f"{path}: {8 * width}-bit samples, need 16-bit")
    pcm = np.frombuffer(raw, dtype="<i2")
    if channels > 1:
        pcm = pcm[: len(pcm) - len(pcm) % channels].reshape(-1, channels)
        pcm = np.round(pcm.astype(np.float64).mean(axis=1))
    return rate, pcm.astype(np.int16)


def _as_float(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples)
    if a.ndim != 1:
        raise ValueError(f"samples must be 1-D, got shape {a.shape}")
    if a.dtype.kind in "iu":
        return a.astype(np.float64) / 32768.0
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    raise ValueError(f"samples must be integer or float, got dtype {a.dtype}")


def level_dbfs(samples: np.ndarray) -> float:
    """RMS level in dBFS (full-scale square wave = 0 dB, so a full-scale sine reads -3.0).

    Empty or all-zero input gives -inf.
    """
    x = _as_float(samples)
    if x.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(x * x)))
    return 20 * np.log10(rms) if rms > 0 else float("-inf")


def _spectrum(samples: np.ndarray, rate: int,
              skip_silence: bool) -> tuple[np.ndarray, float] | None:
    """(power spectrum in dB, bin width Hz), or None when there is nothing to analyse."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0, got {rate}")
    x = _as_float(samples)
    if x.size < MIN_SEGMENT:
        return None
    n = SEGMENT if x.size >= SEGMENT else 1 << (x.size.bit_length() - 1)
    hop = n // 2
    starts = range(0, x.size - n + 1, hop)
    segs = np.stack([x[s:s + n] for s in starts])
    if skip_silence:
        rms_db = 10 * np.log10(np.mean(segs * segs, axis=1) + 1e-20)
        keep = (rms_db >= SILENCE_DBFS) & (rms_db >= rms_db.max() - ACTIVE_RANGE_DB)
        segs = segs[keep]
        if len(segs) == 0:
            return None
    segs = segs - segs.mean(axis=1, keepdims=True)  # DC would mask low tones
    power = np.mean(np.abs(np.fft.rfft(segs * np.hanning(n), axis=1)) ** 2, axis=0)
    return 10 * np.log10(power + 1e-20), rate / n


def _floor_db(p_db: np.ndarray) -> float:
    return max(float(np.median(p_db)), float(p_db.max()) - FLOOR_RANGE_DB)


def _peak_hz(p_db: np.ndarray, k: int, bin_hz: float) -> float:
    # Parabolic interpolation on the log spectrum: sub-bin accuracy for a windowed sine.
    if 0 < k < len(p_db) - 1:
        a, b, c = p_db[k - 1], p_db[k], p_db[k + 1]
        d = a - 2 * b + c
        if d < 0:
            return float((k + 0.5 * (a - c) / d) * bin_hz)
    return k * bin_hz


def dominant_frequencies(samples: np.ndarray, rate: int, n: int = 3, skip_silence: bool = True,
                         *, min_db_above_floor: float = 20.0) -> list[float]:
    """Up to `n` strongest spectral peaks (Hz, strongest first) that stand at least
    `min_db_above_floor` above the noise floor. Silence gives []."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    spec = _spectrum(samples, rate, skip_silence)
    if spec is None:
        return []
    p_db, bin_hz = spec
    floor = _floor_db(p_db)
    first = max(1, int(np.ceil(20.0 / bin_hz)))  # nothing below 20 Hz is a tone
    inner = p_db[first:-1]
    is_max = (inner > p_db[first - 1:-2]) & (inner >= p_db[first + 1:])
    cands = [int(k) for k in np.nonzero(is_max)[0] + first
             if p_db[k] - floor >= min_db_above_floor]
    cands.sort(key=lambda k: -p_db[k])
    picked: list[int] = []
    for k in cands:
        # A Hann main lobe is 4 bins wide: closer maxima belong to an already picked peak.
        if all(abs(k - j) > 3 for j in picked):
            picked.append(k)
            if len(picked) == n:
                break
    return [float(round(_peak_hz(p_db, k, bin_hz), 1)) for k in picked]


def has_tone(samples: np.ndarray, rate: int, freq: float, tol_hz: float = 15.0,
             min_db_above_floor: float = 20.0, *, skip_silence: bool = True) -> bool:
    """True if the spectrum peaks within `freq` ± `tol_hz` at least `min_db_above_floor` dB
    above the noise floor. The floor is the median bin, but never lower than 50 dB below the
    strongest bin, so a tone must also be within 30 dB (at the default) of the loudest one."""
    if tol_hz <= 0:
        raise ValueError(f"tol_hz must be > 0, got {tol_hz}")
    spec = _spectrum(samples, rate, skip_silence)
    if spec is None:
        return False
    p_db, bin_hz = spec
    lo = max(0, int(np.floor((freq - tol_hz) / bin_hz)))
    hi = min(len(p_db) - 1, int(np.ceil((freq + tol_hz) / bin_hz)))
    if lo > hi:
        return False
    k = lo + int(np.argmax(p_db[lo:hi + 1]))
    if 0 < k < len(p_db) - 1 and not (p_db[k] >= p_db[k - 1] and p_db[k] >= p_db[k + 1]):
        return False  # the band's maximum is the skirt of a tone outside it
    if abs(_peak_hz(p_db, k, bin_hz) - freq) > tol_hz:
        return False
    return float(p_db[k]) - _floor_db(p_db) >= min_db_above_floor
