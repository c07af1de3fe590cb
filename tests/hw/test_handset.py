"""hw.handset: the handset channel at 8/16/48 kHz, on the SimAudio twin and on pyaudio through ALSA
``file`` PCMs (the same code drives both). Media ticks come from a MediaClock on ManualTime."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cython_mixer.tone import dtmf_generate
from firmware.media.clock import ManualTime, MediaClock
from firmware.switch import HangupCause, NullEndpoint, Switch
from firmware.switch.eavesdrop import Eavesdrop
from hw.audio import PyAudioDevice, SimAudio, frame_bytes
from hw.handset import CHANNEL_NAME, Handset, HandsetLeg
from tests.hw import FakeHub, aiotest, write_asoundrc

RATES = (8000, 16000, 48000)
KINDS = ("sim", "pyaudio")


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


class Bench:
    """One handset on one device, ticked by hand."""

    def __init__(self, kind: str, rate: int, capture: bytes, alsa_dir: Path | None, **handset_kw) -> None:
        self.kind, self.rate, self.alsa_dir = kind, rate, alsa_dir
        capture += bytes(frame_bytes(rate) * 100)       # then an idle microphone
        if kind == "sim":
            self.dev = SimAudio(rate, capture=capture)
        else:
            (alsa_dir / f"mic_{rate}.raw").write_bytes(capture)
            self.dev = PyAudioDevice(f"handset{rate}", rate, pace="consumer")
        self.dev.open()
        self.time = ManualTime()
        self.clock = MediaClock(time_source=self.time)
        self.sw = Switch()
        self.hub = FakeHub()
        self.engine = Eavesdrop(self.sw, self.hub)
        self.sw.eavesdrop = self.engine
        self.sw.register_app("eavesdrop", self.engine.app_eavesdrop)
        self.handset = Handset(self.sw, self.dev, self.clock, **handset_kw)
        self.handset.start()

    async def ticks(self, n: int) -> None:
        for _ in range(n):
            deadline = time.monotonic() + 10
            while self.dev.captured_frames == 0:   # PortAudio's thread: wait for the next frame
                assert time.monotonic() < deadline, "capture stalled"
                await asyncio.sleep(0.001)
            self.time.advance(0.02)
            self.clock.poll()
            for _ in range(5):
                await asyncio.sleep(0)

    async def close(self) -> bytes:
        """Stop, and return everything the earpiece got (device rate, int16)."""
        await self.handset.stop()
        if self.kind == "sim":
            self.dev.close()
            return bytes(self.dev.played)
        deadline = time.monotonic() + 10
        while self.dev.pending_playback and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        self.dev.close()
        return (self.alsa_dir / f"played_{self.rate}.raw").read_bytes()


def peak_hz(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype=np.int16).astype(float)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def silence_ms(rate: int, ms: int) -> bytes:
    return bytes(rate * ms // 1000 * 2)


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", KINDS)
@aiotest
async def test_a_keypad_tone_in_the_microphone_becomes_digit_5(kind: str, rate: int, alsa: Path) -> None:
    capture = silence_ms(rate, 400) + dtmf_generate("5", rate, on_ms=100, off_ms=400)
    b = Bench(kind, rate, capture, alsa, destination="9196")     # echo: the call stays up
    await b.handset.set_hook(True)
    await b.ticks(60)
    ch = b.handset.channel
    assert ch.up and ch.get_variable("destination_number") == "9196"
    item = await ch.next_dtmf(timeout_ms=0)
    assert (item.digit, item.source) == ("5", "inband")
    assert ch.dtmf_queued == 0                   # once, not once per frame
    await b.close()


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", KINDS)
@aiotest
async def test_off_hook_runs_the_dialplan_and_its_tone_reaches_the_earpiece(kind: str, rate: int,
                                                                            alsa: Path) -> None:
    b = Bench(kind, rate, b"", alsa, destination="9197")         # playback of a 1 kHz tone
    await b.ticks(5)
    assert b.handset.channel is None
    await b.handset.set_hook(True)
    await b.ticks(50)
    ch = b.handset.channel
    assert ch.name == CHANNEL_NAME and ch.is_answered and ch.up
    played = await b.close()
    assert not ch.up and ch.hangup_cause is HangupCause.NORMAL_CLEARING
    n = frame_bytes(rate)
    tone = played[-30 * n:]                      # the last 30 frames, at the device's rate
    assert peak_hz(tone, rate) == pytest.approx(1000, abs=rate / (15 * len(tone) / n))
    assert np.abs(np.frombuffer(tone, dtype=np.int16)).max() > 3000


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("kind", KINDS)
@aiotest
async def test_keypad_881001_then_off_hook_reaches_eavesdrop_on_1001s_call(kind: str, rate: int,
                                                                          alsa: Path) -> None:
    capture = dtmf_generate("881001", rate, on_ms=80, off_ms=80) + silence_ms(rate, 1200) \
        + dtmf_generate("3", rate, on_ms=100, off_ms=100)
    b = Bench(kind, rate, capture, alsa)
    target = b.sw.new_channel(NullEndpoint("sofia/internal/1001"), caller_id_number="1001")
    target.mark_answered()
    b.sw.db.app(f"insert/spymap/1001/{target.uuid}")
    await b.ticks(55)                            # the six digits, keyed on-hook
    assert b.handset.predial == "881001" and b.handset.channel is None
    await b.handset.set_hook(True)
    await b.ticks(5)
    spy = b.handset.channel
    assert spy.get_variable("destination_number") == "881001"
    assert b.engine.modes() == {spy.uuid: 0}
    assert b.hub.taps[0].target is target
    await b.ticks(60)                            # then "3" on the keypad: barge
    assert b.engine.modes() == {spy.uuid: 3} and b.hub.taps[0].mode == 3
    await b.handset.set_hook(False)              # on-hook: the spy leaves, the call stays
    await b.ticks(2)
    assert not spy.up and target.up and b.engine.modes() == {}
    await b.close()


@aiotest
async def test_a_headset_is_always_off_hook_and_hash_dials_again() -> None:
    capture = silence_ms(8000, 600) + dtmf_generate("9197#", 8000, on_ms=80, off_ms=80)
    b = Bench("sim", 8000, capture, None, hook="always", destination="9196")
    await b.ticks(1)
    first = b.handset.channel
    assert first.up and first.get_variable("destination_number") == "9196"
    await first.hangup()                         # the call ends; the headset stays on
    await b.ticks(80)
    second = b.handset.channel
    assert second is not first and second.up
    assert second.get_variable("destination_number") == "9197" and b.handset.calls == 2
    await b.close()


@aiotest
async def test_bad_input_is_refused_with_the_key() -> None:
    dev = SimAudio(8000)
    clock = MediaClock(time_source=ManualTime())
    with pytest.raises(ValueError, match=r"\[handset\] hook must be one of"):
        Handset(Switch(), dev, clock, hook="usb")
    with pytest.raises(ValueError, match="destination"):
        Handset(Switch(), dev, clock, destination="")
    leg = HandsetLeg(SimAudio(16000), clock)
    with pytest.raises(ValueError, match="320 bytes"):
        leg.send_frame(bytes(640))              # frames are 8 kHz whatever the card's rate
    assert leg.rate == 8000 and leg.device_rate == 16000
