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
import asyncio
import sys
import wave
from typing import Any

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


class Producers:
    """The producer rules every MediaLeg shares (RtpLeg, the handset's leg): a stack of owners of
    the outgoing audio, the top one producing each tick; ``play()`` and ``echo()`` push a player
    and pop it when done. Subclasses call ``_init_producers()`` and may override
    ``_owners_changed()`` (react to a new top owner) and ``_usable()`` (refuse when closed)."""

    def _init_producers(self) -> None:
        self._owners: list[Any] = []
        self._player: Any = None
        self._player_done: asyncio.Future | None = None
        self._echo: Echo | None = None

    def _owners_changed(self) -> None:
        pass

    def _usable(self) -> bool:
        return True

    @property
    def owner(self) -> Any:
        return self._owners[-1] if self._owners else None

    def claim(self, owner: Any) -> None:
        """Make ``owner`` the producer of this leg's audio (the previous owner waits underneath)."""
        if owner is None:
            raise ValueError("claim needs an owner")
        if owner in self._owners:
            self._owners.remove(owner)
        self._owners.append(owner)
        self._owners_changed()

    def release(self, owner: Any) -> None:
        """Take ``owner`` off this leg (a no-op when it is not on it)."""
        if owner in self._owners:
            self._owners.remove(owner)
            self._owners_changed()

    def _produced(self, producer: Any) -> None:
        """After a tick: a finished producer leaves the stack (and ends its ``play()``)."""
        if producer.done:
            self.release(producer)
            if producer is self._player:
                self._end_player()

    async def play(self, source: str) -> None:
        """Play a WAV file or a ``tone_stream://`` spec until it ends or ``stop_playback()``;
        FileNotFoundError / ValueError for a bad source."""
        if not self._usable():
            raise ValueError("the leg is closed")
        if source.startswith(TONE_STREAM):
            player: Any = TonePlayer(source)
        else:
            player = WavPlayer(await asyncio.to_thread(load_wav, source))
        self.stop_playback()
        if player.done:
            return
        done = asyncio.get_running_loop().create_future()
        self._player, self._player_done = player, done
        self.claim(player)
        try:
            await done
        finally:
            if self._player is player:
                self._end_player()
            self.release(player)

    def _end_player(self) -> None:
        done, self._player, self._player_done = self._player_done, None, None
        if done is not None and not done.done():
            done.set_result(None)

    def stop_playback(self) -> None:
        player = self._player
        if player is not None:
            player.stop()
            self.release(player)
            self._end_player()

    def echo(self, on: bool) -> None:
        """Send the far end its own audio back (on), or stop (off)."""
        if on and self._echo is None and self._usable():
            self._echo = Echo()
            self.claim(self._echo)
        elif not on and self._echo is not None:
            self.release(self._echo)
            self._echo = None
