"""What a leg can play by itself, one 20 ms frame per clock tick: sounds, tones and echo.

A *producer* has ``produce(incoming) -> frame | None`` (``incoming`` is the leg's decoded frame of
this tick, or None) and ``done``. The frame returned may be the producer's own buffer, reused on
the next tick: the leg encodes it at once and keeps no reference.

- ``TonePlayer(spec)``: a ``tone_stream://`` spec through ``cython_mixer.tone.ToneGenerator``.
- ``WavPlayer(pcm)``: 8 kHz int16 PCM (``load_wav`` reads a WAV file of any rate and resamples it).
- ``Echo``: sends back what the leg hears.
"""
from __future__ import annotations

import array
import sys
import wave

from cython_mixer import FRAME_BYTES, INTERNAL_RATE
from cython_mixer.resample import Resampler
from cython_mixer.tone import ToneGenerator

TONE_STREAM = "tone_stream://"
MAX_WAV_SECONDS = 600          # a prompt, not an album: keeps a bad file from eating the memory


def load_wav(path: str) -> bytes:
    """A 16-bit PCM WAV as 8 kHz mono native int16 bytes, padded to whole 20 ms frames.

    Stereo keeps the first channel; other rates are resampled (libsoxr, "phone" quality).
    FileNotFoundError for a missing file, ValueError for anything that is not 16-bit PCM WAV.
    """
    try:
        with wave.open(path, "rb") as w:
            width, channels, rate, frames = w.getsampwidth(), w.getnchannels(), w.getframerate(), w.getnframes()
            if width != 2:
                raise ValueError(f"{path}: {8 * width}-bit samples; only 16-bit PCM WAV is played")
            if not 1 <= channels <= 2:
                raise ValueError(f"{path}: {channels} channels; only mono or stereo is played")
            if frames > MAX_WAV_SECONDS * rate:
                raise ValueError(f"{path}: longer than {MAX_WAV_SECONDS} s")
            raw = w.readframes(frames)
    except wave.Error as exc:
        raise ValueError(f"{path}: not a PCM WAV ({exc})") from None
    except EOFError:
        raise ValueError(f"{path}: truncated WAV") from None
    pcm = memoryview(raw).cast("h")            # WAV is little-endian
    if channels == 2:
        pcm = pcm[0::2]
    data = bytearray(pcm.tobytes())
    if sys.byteorder == "big":
        samples = array.array("h", data)
        samples.byteswap()
        data = bytearray(samples.tobytes())
    if rate != INTERNAL_RATE:
        if len(data) == 0:
            return b""
        rs = Resampler(rate, INTERNAL_RATE, "phone")
        data = bytearray(rs.process(data) + rs.flush())
    tail = len(data) % FRAME_BYTES
    if tail:
        data += bytes(FRAME_BYTES - tail)
    return bytes(data)


class WavPlayer:
    """Plays 8 kHz PCM (whole frames) once."""

    def __init__(self, pcm: bytes) -> None:
        if len(pcm) % FRAME_BYTES:
            raise ValueError(f"PCM of {len(pcm)} bytes is not whole 20 ms frames")
        self._pcm = memoryview(pcm)
        self._pos = 0
        self.done = len(pcm) == 0

    def produce(self, incoming: bytes | None) -> memoryview | None:
        if self.done:
            return None
        frame = self._pcm[self._pos:self._pos + FRAME_BYTES]
        self._pos += FRAME_BYTES
        self.done = self._pos >= len(self._pcm)
        return frame

    def stop(self) -> None:
        self.done = True


class TonePlayer:
    """Plays a ``tone_stream://`` spec (ValueError names a bad token) until it ends or is stopped."""

    def __init__(self, spec: str) -> None:
        self._gen = ToneGenerator(spec, INTERNAL_RATE)
        self._buf = bytearray(FRAME_BYTES)
        self.done = bool(self._gen.done)

    def produce(self, incoming: bytes | None) -> bytearray | None:
        if self.done:
            return None
        if self._gen.read_into(self._buf) == 0:
            self.done = True
            return None
        self.done = bool(self._gen.done)
        return self._buf

    def stop(self) -> None:
        self.done = True


class Echo:
    """Sends back what the leg hears (its own jitter-buffered audio), until released."""

    done = False

    def produce(self, incoming: bytes | None) -> bytes | None:
        return incoming

    def stop(self) -> None:
        pass


class DigitFlush:
    """Sends no audio for ``ticks`` ticks, so that queued RFC 4733 digits go out on an idle leg."""

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks
        self.done = ticks <= 0

    def produce(self, incoming: bytes | None) -> None:
        self.ticks -= 1
        self.done = self.ticks <= 0
        return None

    def stop(self) -> None:
        self.done = True
