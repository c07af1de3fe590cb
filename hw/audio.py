"""The handset's audio device: pyaudio streams at the device's rate, and a twin with the same interface.

Both give whole 20 ms frames of native int16 mono at the device rate:

- ``read() -> bytes | None``: the oldest captured frame not yet read (None: nothing captured);
- ``write(frame)``: queue one frame for playback (ValueError when its length is wrong);
- ``open()``, ``close()``, ``stats``, ``check_xruns()``, ``captured_frames``, ``pending_playback``.

``PyAudioDevice`` opens one capture and one playback stream on the device chosen by name, in
callback mode. The callbacks run on PortAudio's thread and only move frames through two bounded,
thread-safe queues. xruns (PortAudio's over/underflow flags, frames dropped because the capture
queue was full, playback starved of frames) are counted, logged by ``check_xruns``, never fatal.

Pacing: a real card runs at its clock, so by default a full capture queue drops its oldest frame
and an empty playback queue plays silence (``pace="device"``). ALSA ``file``/``null`` PCMs (tests,
a PC without a card) are not paced at all and call back hundreds of times faster than real time;
``pace="consumer"`` makes the callbacks wait, bounded, for the consumer instead, so every frame
read from the capture file is delivered and only frames written reach the playback file.

``SimAudio`` is the twin: capture comes from bytes you feed (or from what was played, with
``loopback=True``), and the last ``keep_ms`` of playback is kept in ``played`` (the appliance runs
on it for months when no handset is configured, so it never keeps more).
"""
from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

log = logging.getLogger("earshot.audio")

RATES = (8000, 16000, 48000)
FRAME_MS = 20
CONSUMER_WAIT_S = 1.0   # pace="consumer": how long a callback waits for the consumer at most
SIM_KEEP_MS = 60_000   # SimAudio keeps the last minute of playback (tests read a few seconds)

# PortAudio's status flags (portaudio.h), as pyaudio passes them to callbacks
PA_INPUT_UNDERFLOW, PA_INPUT_OVERFLOW, PA_OUTPUT_UNDERFLOW, PA_OUTPUT_OVERFLOW = 1, 2, 4, 8


class AudioDeviceError(RuntimeError):
    """The audio device is missing, lacks a direction, or refuses the rate; the message names it."""


def frame_bytes(rate: int, frame_ms: int = FRAME_MS) -> int:
    if rate not in RATES:
        raise ValueError(f"audio rate must be one of {RATES} (got {rate!r})")
    return rate * frame_ms // 1000 * 2


class _Frames:
    """A bounded FIFO of frames shared by the loop and PortAudio's thread."""

    def __init__(self, maxlen: int) -> None:
        self._q: deque[bytes] = deque()
        self._maxlen = maxlen
        self._cond = threading.Condition()
        self.closed = False

    def put(self, frame: bytes, wait: bool) -> bool:
        """Append; when full either wait for room (bounded) or drop the oldest. False: one was dropped."""
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: len(self._q) < self._maxlen or self.closed, CONSUMER_WAIT_S)
            dropped = len(self._q) >= self._maxlen
            if dropped:
                self._q.popleft()
            self._q.append(frame)
            self._cond.notify_all()
            return not dropped

    def get(self, wait: bool) -> bytes | None:
        with self._cond:
            if wait:
                self._cond.wait_for(lambda: self._q or self.closed, CONSUMER_WAIT_S)
            if not self._q:
                return None
            frame = self._q.popleft()
            self._cond.notify_all()
            return frame

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._q.clear()
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._q)


class _Counters:
    def __init__(self) -> None:
        self.captured = self.played = 0
        self.capture_xruns = self.playback_xruns = 0   # PortAudio's flags
        self.capture_dropped = 0                       # capture queue full: oldest frame lost
        self.playback_starved = 0                      # nothing queued: silence played
        self._logged: dict[str, int] = {}

    def as_dict(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


class PyAudioDevice:
    """Capture and playback on the pyaudio device called ``name`` (exact, else a unique substring)."""

    def __init__(self, name: str, rate: int, *, frame_ms: int = FRAME_MS, queue_frames: int = 8,
                 pace: str = "device", pyaudio_module: Any = None) -> None:
        if not name:
            raise ValueError("[handset] device: an audio device name is needed")
        if pace not in ("device", "consumer"):
            raise ValueError(f"pace must be \"device\" or \"consumer\" (got {pace!r})")
        self.name = name
        self.rate = rate
        self.frame_bytes = frame_bytes(rate, frame_ms)
        self.frame_samples = self.frame_bytes // 2
        self.pace = pace
        self._wait = pace == "consumer"
        self._module = pyaudio_module
        self._capture = _Frames(queue_frames)
        self._playback = _Frames(queue_frames)
        self._in_carry = bytearray()
        self._out_carry = bytearray()
        self._counters = _Counters()
        self._pa: Any = None
        self._streams: list[Any] = []
        self.device_name = ""

    # --- opening ----------------------------------------------------------------------------------

    def open(self) -> None:
        """Find the device, check the rate both ways, start both streams (AudioDeviceError if not)."""
        pyaudio = self._module
        if pyaudio is None:
            try:
                import pyaudio  # noqa: PLC0415 - only when a real device is wanted
            except ImportError as exc:
                raise AudioDeviceError(f"[handset] device {self.name!r}: pyaudio is not installed ({exc})") from None
        self._module = pyaudio
        self._pa = pyaudio.PyAudio()
        try:
            index, info = self._find(pyaudio)
            self.device_name = info["name"]
            self._check_rate(pyaudio, index)
            fmt = pyaudio.paInt16
            self._streams = [
                self._pa.open(rate=self.rate, channels=1, format=fmt, input=True, input_device_index=index,
                              frames_per_buffer=self.frame_samples, stream_callback=self._on_capture),
                self._pa.open(rate=self.rate, channels=1, format=fmt, output=True, output_device_index=index,
                              frames_per_buffer=self.frame_samples, stream_callback=self._on_playback),
            ]
        except AudioDeviceError:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise AudioDeviceError(f"[handset] device {self.name!r} cannot be opened at {self.rate} Hz: {exc}") from None
        log.info("handset audio: %r at %d Hz (%s paced)", self.device_name, self.rate, self.pace)

    def _find(self, pyaudio: Any) -> tuple[int, dict]:
        devices = [self._pa.get_device_info_by_index(i) for i in range(self._pa.get_device_count())]
        exact = [d for d in devices if d["name"] == self.name]
        matches = exact or [d for d in devices if self.name in d["name"]]
        if not matches:
            names = ", ".join(repr(d["name"]) for d in devices) or "none"
            raise AudioDeviceError(f"[handset] device {self.name!r}: no such audio device (found: {names})")
        if len(matches) > 1:
            raise AudioDeviceError(f"[handset] device {self.name!r} is ambiguous: "
                                   + ", ".join(repr(d["name"]) for d in matches))
        d = matches[0]
        for key, what in (("maxInputChannels", "capture"), ("maxOutputChannels", "playback")):
            if d[key] < 1:
                raise AudioDeviceError(f"[handset] device {d['name']!r} has no {what} channels")
        return int(d["index"]), d

    def _check_rate(self, pyaudio: Any, index: int) -> None:
        for kwargs, what in (({"input_device": index, "input_channels": 1, "input_format": pyaudio.paInt16}, "capture"),
                             ({"output_device": index, "output_channels": 1, "output_format": pyaudio.paInt16},
                              "playback")):
            try:
                self._pa.is_format_supported(self.rate, **kwargs)
            except ValueError as exc:
                raise AudioDeviceError(f"[handset] device {self.device_name!r} refuses {self.rate} Hz {what} "
                                       f"({exc}); set [handset] rate to one it supports") from None

    # --- PortAudio's thread -----------------------------------------------------------------------

    def _on_capture(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> tuple:
        c = self._counters
        if status & (PA_INPUT_OVERFLOW | PA_INPUT_UNDERFLOW):
            c.capture_xruns += 1
        if in_data:
            carry = self._in_carry
            carry += in_data
            n = self.frame_bytes
            while len(carry) >= n:   # PortAudio may hand over other sizes: cut whole frames
                if not self._capture.put(bytes(carry[:n]), self._wait):
                    c.capture_dropped += 1
                del carry[:n]
                c.captured += 1
        return (None, self._module.paComplete if self._capture.closed else self._module.paContinue)

    def _on_playback(self, in_data: Any, frame_count: int, time_info: Any, status: int) -> tuple:
        c = self._counters
        if status & (PA_OUTPUT_UNDERFLOW | PA_OUTPUT_OVERFLOW):
            c.playback_xruns += 1
        need = frame_count * 2
        if self._playback.closed:  # closing: stop rather than pad the output with silence
            return (bytes(need), self._module.paComplete)
        out = self._out_carry
        while len(out) < need:
            frame = self._playback.get(self._wait)
            if frame is None:
                c.playback_starved += 1
                out += bytes(need - len(out))
                break
            out += frame
            c.played += 1
        data = bytes(out[:need])
        del out[:need]
        return (data, self._module.paContinue)

    # --- the loop's side --------------------------------------------------------------------------

    def read(self) -> bytes | None:
        return self._capture.get(False)

    def write(self, frame: bytes) -> None:
        if len(frame) != self.frame_bytes:
            raise ValueError(f"playback frame must be {self.frame_bytes} bytes at {self.rate} Hz (got {len(frame)})")
        self._playback.put(bytes(frame), self._wait)

    @property
    def captured_frames(self) -> int:
        """Captured frames waiting to be read."""
        return len(self._capture)

    @property
    def pending_playback(self) -> int:
        """Frames written and not yet taken by the device."""
        return len(self._playback)

    @property
    def stats(self) -> dict[str, int]:
        return self._counters.as_dict()

    def check_xruns(self) -> int:
        """Log xruns since the last call (a warning, never fatal); returns how many were new."""
        return _log_new(self._counters, self.device_name or self.name)

    def close(self) -> None:
        self._capture.close()
        self._playback.close()
        for s in self._streams:
            try:
                s.stop_stream()
                s.close()
            except Exception:  # closing a stream PortAudio already aborted
                log.debug("closing a stream of %s failed", self.name, exc_info=True)
        self._streams = []
        if self._pa is not None:
            self._pa.terminate()
            self._pa = None


def _log_new(c: _Counters, name: str) -> int:
    new = 0
    for key in ("capture_xruns", "playback_xruns", "capture_dropped"):
        value = getattr(c, key)
        delta = value - c._logged.get(key, 0)
        if delta > 0:
            log.warning("handset audio %s: %d new %s (%d in all)", name, delta, key.replace("_", " "), value)
            c._logged[key] = value
            new += delta
    return new


class SimAudio:
    """The twin of PyAudioDevice: capture from ``feed``/``capture``, playback into ``played``.

    When the fed capture runs out ``read`` returns silence, as an idle microphone does.
    ``loopback=True`` turns every played frame into a captured one (an echo path).
    ``played`` holds the most recent ``keep_ms`` of playback (whole frames; ``played_bytes``
    counts all of it): a recording twin must not grow while the appliance idles on it.
    """

    def __init__(self, rate: int = 8000, *, capture: bytes = b"", loopback: bool = False,
                 frame_ms: int = FRAME_MS, keep_ms: int = SIM_KEEP_MS) -> None:
        if keep_ms < frame_ms:
            raise ValueError(f"keep_ms must hold at least one frame ({frame_ms} ms), got {keep_ms}")
        self.rate = rate
        self.frame_bytes = frame_bytes(rate, frame_ms)
        self.name = self.device_name = "sim"
        self.loopback = loopback
        self.played = bytearray()
        self.played_bytes = 0
        self._keep = keep_ms // frame_ms * self.frame_bytes
        self._pending = bytearray()
        self._counters = _Counters()
        self.opened = False
        self.feed(capture)

    def feed(self, pcm: bytes) -> None:
        """Add capture audio (native int16 at ``rate``); a part frame is padded with silence."""
        if len(pcm) % 2:
            raise ValueError(f"capture audio must be whole int16 samples (got {len(pcm)} bytes)")
        self._pending += pcm
        if len(self._pending) % self.frame_bytes:
            self._pending += bytes(self.frame_bytes - len(self._pending) % self.frame_bytes)

    @property
    def captured_frames(self) -> int:
        """Frames fed but not yet read."""
        return len(self._pending) // self.frame_bytes

    pending_playback = 0   # playback is collected at once

    def open(self) -> None:
        self.opened = True

    def read(self) -> bytes | None:
        if not self.opened:
            return None
        self._counters.captured += 1
        if not self._pending:
            return bytes(self.frame_bytes)
        frame = bytes(self._pending[:self.frame_bytes])
        del self._pending[:self.frame_bytes]
        return frame

    def write(self, frame: bytes) -> None:
        if len(frame) != self.frame_bytes:
            raise ValueError(f"playback frame must be {self.frame_bytes} bytes at {self.rate} Hz (got {len(frame)})")
        self.played += frame
        self.played_bytes += len(frame)
        if len(self.played) >= 2 * self._keep:   # trimmed in halves: amortised O(1) per frame
            del self.played[:len(self.played) - self._keep]
        self._counters.played += 1
        if self.loopback:
            self._pending += frame

    @property
    def stats(self) -> dict[str, int]:
        return self._counters.as_dict()

    def check_xruns(self) -> int:
        return _log_new(self._counters, "sim")

    def close(self) -> None:
        self.opened = False


def open_device(name: str, rate: int, **kwargs: Any) -> PyAudioDevice | SimAudio:
    """``[handset] device``: "" is the twin (silent), anything else a pyaudio device by name."""
    if not name:
        dev: PyAudioDevice | SimAudio = SimAudio(rate)
    else:
        dev = PyAudioDevice(name, rate, **kwargs)
    dev.open()
    return dev
