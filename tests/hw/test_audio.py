"""hw.audio: pyaudio through ALSA ``file``/``null`` PCMs (no sound card), and the SimAudio twin."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest

from hw.audio import (PA_INPUT_OVERFLOW, PA_OUTPUT_UNDERFLOW, AudioDeviceError, PyAudioDevice, SimAudio,
                      frame_bytes, open_device)
from tests.hw import write_asoundrc

RATES = (8000, 16000, 48000)


@pytest.fixture(scope="module")
def alsa(tmp_path_factory: pytest.TempPathFactory):
    d = tmp_path_factory.mktemp("alsa")
    old = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = write_asoundrc(d)
    yield d
    if old is None:
        os.environ.pop("ALSA_CONFIG_PATH", None)
    else:
        os.environ["ALSA_CONFIG_PATH"] = old


def wait(cond, seconds: float = 10.0) -> bool:
    """Poll ``cond`` (PortAudio's thread fills the queues); a deadline, not a timing check."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.mark.parametrize("rate", RATES)
def test_capture_and_playback_through_alsa_file_pcms(alsa: Path, rate: int) -> None:
    n = frame_bytes(rate)
    mic = np.random.default_rng(rate).integers(-20000, 20000, 25 * n // 2, dtype=np.int16).tobytes()
    (alsa / f"mic_{rate}.raw").write_bytes(mic + bytes(10 * n))   # the infile is opened with the PCM
    dev = PyAudioDevice(f"handset{rate}", rate, pace="consumer")
    dev.open()
    try:
        got = bytearray()
        while len(got) < len(mic):
            assert wait(lambda: dev.captured_frames > 0), "capture stalled"
            frame = dev.read()
            assert len(frame) == n
            got += frame
            dev.write(frame)               # play back what was heard
        assert bytes(got) == mic          # every frame, in order: nothing dropped or repeated
        assert wait(lambda: dev.pending_playback == 0)
        with pytest.raises(ValueError, match=f"{n} bytes at {rate} Hz"):
            dev.write(bytes(n - 2))
    finally:
        dev.close()
    played = (alsa / f"played_{rate}.raw").read_bytes()
    start = played.find(mic[:n])
    assert start >= 0 and set(played[:start]) <= {0}              # only PortAudio's priming before it
    assert played[start:start + len(mic)] == mic
    stats = dev.stats
    assert stats["captured"] >= 25 and stats["played"] >= 25 and stats["capture_dropped"] == 0


def test_an_unpaced_device_drops_and_counts_instead_of_blocking(alsa: Path, caplog) -> None:
    (alsa / "mic_8000.raw").write_bytes(bytes(320 * 200))
    dev = PyAudioDevice("handset8000", 8000, queue_frames=4)   # pace="device": a real card's rules
    dev.open()
    try:
        assert wait(lambda: dev.stats["capture_dropped"] > 0)
        assert dev.captured_frames == 4
        with caplog.at_level(logging.WARNING, "earshot.audio"):
            assert dev.check_xruns() > 0
            assert dev.check_xruns() == 0 or dev.stats["capture_dropped"] > 0
        assert "capture dropped" in caplog.text
        # PortAudio's own over/underflow flags are counted too
        before = dev.stats
        dev._on_capture(bytes(320), 160, None, PA_INPUT_OVERFLOW)
        dev._on_playback(None, 160, None, PA_OUTPUT_UNDERFLOW)
        after = dev.stats
        assert after["capture_xruns"] == before["capture_xruns"] + 1
        assert after["playback_xruns"] == before["playback_xruns"] + 1
    finally:
        dev.close()


def test_missing_device_names_the_device(alsa: Path) -> None:
    with pytest.raises(AudioDeviceError, match=r"\[handset\] device 'USB Phone': no such audio device \(found: .*'handset8000'"):
        open_device("USB Phone", 8000)
    with pytest.raises(AudioDeviceError, match=r"'handset' is ambiguous"):
        open_device("handset", 8000)
    with pytest.raises(ValueError, match="rate must be one of"):
        PyAudioDevice("handset8000", 44100)


class RefusingPyAudio:
    """A pyaudio stand-in: a card that only does 48 kHz (PortAudio's -9997), and a speaker without a
    microphone (made here because PortAudio 19.6 aborts enumerating an ALSA PCM without capture)."""

    paInt16, paContinue, paComplete = 8, 0, 1

    class PyAudio:
        def get_device_count(self) -> int:
            return 2

        def get_device_info_by_index(self, i: int) -> dict:
            return [{"index": 0, "name": "USB Phone: Audio (hw:1,0)", "maxInputChannels": 1, "maxOutputChannels": 1},
                    {"index": 1, "name": "Speaker (hw:2,0)", "maxInputChannels": 0, "maxOutputChannels": 2}][i]

        def is_format_supported(self, rate, **kw) -> bool:
            if rate != 48000:
                raise ValueError("Invalid sample rate", -9997)
            return True

        def terminate(self) -> None:
            pass


def test_a_device_refusing_the_rate_or_lacking_a_microphone_says_which() -> None:
    dev = PyAudioDevice("USB Phone", 16000, pyaudio_module=RefusingPyAudio)
    with pytest.raises(AudioDeviceError, match=r"'USB Phone: Audio \(hw:1,0\)' refuses 16000 Hz capture.*\[handset\] rate"):
        dev.open()
    with pytest.raises(AudioDeviceError, match=r"device 'Speaker \(hw:2,0\)' has no capture channels"):
        PyAudioDevice("Speaker", 8000, pyaudio_module=RefusingPyAudio).open()


def test_the_twin_has_the_same_interface() -> None:
    sim = SimAudio(16000, capture=b"\x01\x00" * 400)   # 1.25 frames: the part frame is padded
    assert sim.read() is None                           # not open yet
    sim.open()
    first = sim.read()
    assert len(first) == 640 and first[:2] == b"\x01\x00"
    assert sim.captured_frames == 1
    assert sim.read() == b"\x01\x00" * 80 + bytes(480)
    assert sim.read() == bytes(640)                     # then silence, like an idle mic
    sim.write(bytes(640))
    assert len(sim.played) == 640
    with pytest.raises(ValueError, match="640 bytes at 16000 Hz"):
        sim.write(bytes(320))
    with pytest.raises(ValueError, match="whole int16 samples"):
        sim.feed(b"\x00")
    loop = SimAudio(8000, loopback=True)
    loop.open()
    loop.write(b"\x07\x00" * 160)
    assert loop.read() == b"\x07\x00" * 160
    assert open_device("", 8000).read() == bytes(320)   # no device name: the silent twin
