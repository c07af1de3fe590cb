"""firmware.media.leg / player / engine: a leg's producers (tone, WAV, echo, digits), owners, bridging
and port release, over loopback UDP with the media clock driven by hand (ManualTime + poll)."""
from __future__ import annotations

import asyncio
import math
import struct
import wave
from pathlib import Path

import pytest

from cython_mixer import FRAME_BYTES, g711
from firmware.media.clock import ManualTime, MediaClock
from firmware.media.engine import MediaEngine
from firmware.media.leg import join, part
from firmware.media.player import TonePlayer, WavPlayer, load_wav
from firmware.media.rfc4733 import TelephoneEvent
from firmware.media.rtp import RtpPacket
from firmware.sip.sdp import Negotiated
from tests.unit.media import Phone, until

PORTS = "31200-31219"


def run(test) -> None:
    asyncio.run(asyncio.wait_for(test(), 20))


def negotiated(phone: Phone, codec: str = "PCMU", direction: str = "sendrecv", addr: str | None = None):
    return Negotiated(codec=codec, payload_type=0 if codec == "PCMU" else 8, clock_rate=8000,
                      telephone_event_pt=101, ptime=20, remote_addr=addr or phone.addr[0],
                      remote_port=phone.addr[1], direction=direction)


class Rig:
    """An engine on a hand-driven clock and helpers to tick it."""

    async def start(self) -> Rig:
        self.time = ManualTime()
        self.engine = MediaEngine(PORTS, "127.0.0.1", clock=MediaClock(time_source=self.time))
        self.phones: list[Phone] = []
        return self

    async def leg(self, codec: str = "PCMU", **kw):
        phone = Phone()
        self.phones.append(phone)
        leg = await self.engine.open_rtp_leg()
        leg.apply(negotiated(phone, codec, **kw))
        return leg, phone

    async def tick(self, n: int = 1) -> None:
        for _ in range(n):
            self.time.advance(0.02)
            self.engine.clock.poll()
            await asyncio.sleep(0)

    async def end(self) -> None:
        await self.engine.stop()
        assert self.engine.ports.available == self.engine.ports.capacity
        for p in self.phones:
            p.close()


def tone_power(pcm: bytes, freq: float) -> float:
    """Goertzel-style correlation of int16 PCM with a frequency, relative to its energy."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    w = 2 * math.pi * freq / 8000
    re = sum(s * math.cos(w * i) for i, s in enumerate(samples))
    im = sum(s * math.sin(w * i) for i, s in enumerate(samples))
    energy = sum(s * s for s in samples) or 1
    return (re * re + im * im) / (energy * len(samples) / 2)


def write_wav(path: Path, rate: int, samples: int, width: int = 2, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(width * channels * samples))
    return path


# --- player ---------------------------------------------------------------------------------------

def test_load_wav_resamples_pads_and_rejects_bad_files(tmp_path: Path) -> None:
    assert len(load_wav(str(write_wav(tmp_path / "a.wav", 8000, 400)))) == 3 * FRAME_BYTES   # padded
    pcm16k = load_wav(str(write_wav(tmp_path / "b.wav", 16000, 16000)))
    assert abs(len(pcm16k) // 2 - 8000) <= 160 and len(pcm16k) % FRAME_BYTES == 0
    assert len(load_wav(str(write_wav(tmp_path / "c.wav", 8000, 320, channels=2)))) == 2 * FRAME_BYTES
    with pytest.raises(FileNotFoundError):
        load_wav(str(tmp_path / "missing.wav"))
    with pytest.raises(ValueError, match="8-bit"):
        load_wav(str(write_wav(tmp_path / "d.wav", 8000, 160, width=1)))
    (tmp_path / "e.wav").write_bytes(b"RIFF....not a wav")
    with pytest.raises(ValueError, match="not a PCM WAV"):
        load_wav(str(tmp_path / "e.wav"))


def test_players_produce_whole_frames_and_end() -> None:
    wav = WavPlayer(bytes(2 * FRAME_BYTES))
    assert len(wav.produce(None)) == FRAME_BYTES and not wav.done
    assert len(wav.produce(None)) == FRAME_BYTES and wav.done and wav.produce(None) is None
    with pytest.raises(ValueError):
        WavPlayer(bytes(FRAME_BYTES + 2))
    tone = TonePlayer("tone_stream://%(40,0,1000)")      # 40 ms: two frames
    frames = [tone.produce(None) for _ in range(2)]
    assert tone.done and all(len(f) == FRAME_BYTES for f in frames)
    with pytest.raises(ValueError):
        TonePlayer("tone_stream://%(bogus)")


# --- the leg ----------------------------------------------------------------------------------------

def test_tone_playback_sends_the_tone_and_returns_when_done() -> None:
    async def main() -> None:
        rig = await Rig().start()
        leg, phone = await rig.leg()
        play = asyncio.ensure_future(leg.play("tone_stream://%(100,0,1000)"))   # five frames
        await asyncio.sleep(0)
        assert rig.engine.clock.subscribers == 1
        await rig.tick(6)
        await asyncio.wait_for(play, 1)
        packets = [RtpPacket.parse(p) for p in await phone.drain()]
        assert len(packets) == 5 and {p.pt for p in packets} == {0}
        pcm = g711.decode("PCMU", b"".join(p.payload for p in packets))
        assert tone_power(pcm, 1000) > 0.8 and tone_power(pcm, 440) < 0.05
        assert leg.owner is None and rig.engine.clock.subscribers == 0
        await rig.end()
    run(main)


def test_stop_playback_and_a_second_play_replace_the_first() -> None:
    async def main() -> None:
        rig = await Rig().start()
        leg, _ = await rig.leg()
        first = asyncio.ensure_future(leg.play("tone_stream://%(1000,0,440);loops=-1"))
        await rig.tick(2)
        second = asyncio.ensure_future(leg.play("tone_stream://%(1000,0,1000);loops=-1"))
        await rig.tick(2)
        await asyncio.wait_for(first, 1)               # replaced: returns
        assert not second.done() and isinstance(leg.owner, TonePlayer)
        leg.stop_playback()
        await asyncio.wait_for(second, 1)
        assert leg.owner is None
        with pytest.raises(FileNotFoundError):
            await leg.play("/nonexistent/sound.wav")
        await rig.end()
    run(main)


def test_echo_returns_what_the_far_end_sends() -> None:
    async def main() -> None:
        rig = await Rig().start()
        leg, phone = await rig.leg()
        leg.echo(True)
        payload = bytes((i * 7) % 256 for i in range(160))
        for k in range(4):
            phone.send(RtpPacket(0, 100 + k, 160 * k, 0xABC, payload).build(), leg.local_port)
        await until(lambda: leg.stats["rx_packets"] == 4)
        await rig.tick(6)
        back = [RtpPacket.parse(p) for p in await phone.drain()]
        assert back and all(p.payload == g711.encode("PCMU", g711.decode("PCMU", payload)) for p in back)
        leg.echo(False)
        assert leg.owner is None
        await rig.end()
    run(main)


def test_owners_stack_and_a_player_silences_the_relay_into_its_leg() -> None:
    async def main() -> None:
        rig = await Rig().start()
        a, pa = await rig.leg()
        b, pb = await rig.leg("PCMA")
        relay = join(a, b)
        assert a.relay is relay is b.relay and a.owner is relay and a.peer is b and relay.transcoding
        assert join(a, b) is relay                         # idempotent
        pb.send(RtpPacket(8, 1, 0, 0xB, bytes(160)).build(), b.local_port)
        assert len(await pa.recv_n(1)) == 1                 # relayed b -> a
        play = asyncio.ensure_future(a.play("tone_stream://%(1000,0,1000);loops=-1"))
        await asyncio.sleep(0)
        assert isinstance(a.owner, TonePlayer)
        await rig.tick(3)
        pb.send(RtpPacket(8, 2, 160, 0xB, bytes(160)).build(), b.local_port)
        await asyncio.sleep(0.05)
        got = [RtpPacket.parse(p) for p in await pa.drain()]
        assert len(got) == 3                               # only the tone: the relayed packet was dropped
        a.stop_playback()
        await play
        assert a.owner is relay                            # the relay is back on top
        part(b)
        assert a.relay is None and b.relay is None and a.owner is None and b.owner is None
        await rig.end()
    run(main)


def test_digits_go_out_on_an_idle_leg_and_through_a_bridge() -> None:
    async def main() -> None:
        rig = await Rig().start()
        a, pa = await rig.leg()
        assert a.send_digit("5", 100)
        await rig.tick(15)
        events = [RtpPacket.parse(p) for p in await pa.drain()]
        assert events and {p.pt for p in events} == {101}
        assert {TelephoneEvent.parse(p.payload).event for p in events} == {5}
        assert a.owner is None                             # the flush ended by itself
        b, pb = await rig.leg()
        relay = join(a, b)
        assert b.send_digit("#", 100)
        assert relay.tap is not None                       # carried through the clock meanwhile
        await rig.tick(15)
        assert relay.tap is None                           # and back to pass-through
        events = [RtpPacket.parse(p) for p in await pb.drain()]
        assert {TelephoneEvent.parse(p.payload).event for p in events if p.pt == 101} == {11}
        await rig.end()
    run(main)


def test_hold_with_an_unspecified_address_stops_sending_and_closing_frees_ports() -> None:
    async def main() -> None:
        rig = await Rig().start()
        leg, phone = await rig.leg()
        leg.apply(negotiated(phone, addr="0.0.0.0", direction="recvonly"))
        assert leg.stream.remote == phone.addr and not leg.sending
        leg.echo(True)
        phone.send(RtpPacket(0, 1, 0, 0xC, bytes(160)).build(), leg.local_port)
        await rig.tick(4)
        assert await phone.drain() == []
        leg.apply(negotiated(phone))
        assert leg.sending
        assert rig.engine.legs == 1 and rig.engine.ports.in_use == 1
        leg.close()
        leg.close()
        assert rig.engine.legs == 0
        await rig.engine.wait_idle()
        assert rig.engine.ports.in_use == 0
        await rig.end()
    run(main)


def test_engine_rejects_bad_setup() -> None:
    with pytest.raises(ValueError):
        MediaEngine("1000-900", "127.0.0.1")
    with pytest.raises(ValueError):
        MediaEngine(PORTS, "not-an-ip")
    with pytest.raises(ValueError, match="advertised"):
        MediaEngine(PORTS, "0.0.0.0")


def test_an_eavesdrop_can_attach_while_a_digit_is_going_out() -> None:
    """send_digit on a bridged leg carries the call through a CrossTap for ~18 ticks; an eavesdrop
    attaching meanwhile took "the call already carries another tap". Now the spy's tap takes the
    relay over at once and the digit's remaining packets still go out on its ticks."""
    from types import SimpleNamespace

    from firmware.media.relay import CrossTap
    from firmware.media.tap import TapHub

    async def main() -> None:
        rig = await Rig().start()
        a, pa = await rig.leg()
        b, pb = await rig.leg()
        spy, _ = await rig.leg()
        relay = join(a, b)
        assert b.send_digit("#", 100)
        await rig.tick(2)
        assert isinstance(relay.tap, CrossTap)
        hub = TapHub(rig.engine.clock)
        tap = hub.attach(SimpleNamespace(endpoint=SimpleNamespace(media=a)),
                         SimpleNamespace(endpoint=SimpleNamespace(media=spy)))
        assert relay.tap is not None and not isinstance(relay.tap, CrossTap)
        await rig.tick(20)
        events = [RtpPacket.parse(p) for p in await pb.drain()]
        ends = [TelephoneEvent.parse(p.payload) for p in events if p.pt == 101]
        assert {e.event for e in ends} == {11} and any(e.end for e in ends)   # the digit finished
        tap.detach()
        assert relay.tap is None                           # back to pass-through
        await rig.end()
    run(main)
