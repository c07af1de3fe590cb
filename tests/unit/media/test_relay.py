"""firmware.media.relay: a bridged call's media over real loopback UDP sockets.

Phone A and phone B are the test's own sockets; legs A and B are RtpStreams; the relay joins them.
"""
from __future__ import annotations

import asyncio

import pytest

from cython_mixer import g711
from firmware.media.clock import ManualTime, MediaClock
from firmware.media.ports import PortAllocator
from firmware.media.relay import CrossTap, Relay
from firmware.media.rfc4733 import DtmfReceiver
from firmware.media.rtp import RtpPacket
from firmware.media.stream import RtpStream
from tests.unit.media import DTMF_1, Phone, until

LO, HI = 31100, 31119


def payload(k: int) -> bytes:
    return bytes((k * 13 + i) % 256 for i in range(160))


def audio(k: int, ssrc: int = 0x5EED, pt: int = 0, seq0: int = 65530, ts0: int = 4_000_000_000,
          **kw) -> bytes:
    """The k-th packet of a phone's stream (sequence numbers wrap during the test)."""
    return RtpPacket(pt, (seq0 + k) & 0xFFFF, (ts0 + 160 * k) & 0xFFFFFFFF, ssrc, payload(k),
                     **kw).build()


class Call:
    """Two phones, two legs, one relay."""

    async def start(self, codec_a: str = "PCMU", codec_b: str = "PCMU", te_a: int | None = 101,
                    te_b: int | None = 101) -> Call:
        self.ports = PortAllocator(LO, HI)
        self.pa, self.pb = Phone(), Phone()
        self.digits: dict[str, list[str]] = {"a": [], "b": []}
        self.a = await RtpStream.open(self.ports, "127.0.0.1", codec=codec_a, telephone_event_pt=te_a,
                                      on_digit=self.digits["a"].append)
        self.b = await RtpStream.open(self.ports, "127.0.0.1", codec=codec_b, telephone_event_pt=te_b,
                                      on_digit=self.digits["b"].append)
        self.a.set_remote(*self.pa.addr)
        self.b.set_remote(*self.pb.addr)
        self.relay = Relay(self.a, self.b)
        return self

    async def end(self) -> None:
        self.relay.close()
        for s in (self.a, self.b):
            s.close()
            await asyncio.wait_for(s.wait_closed(), 2)
        self.pa.close()
        self.pb.close()


def run(test) -> None:
    asyncio.run(test())


def test_pass_through_payload_identical_headers_rewritten() -> None:
    async def main() -> None:
        call = await Call().start()
        ssrc_b, seq_b, ts_b = call.b.sender_state
        for k in range(10):
            call.pa.send(audio(k, csrc=(77,), extension=(1, b"abcd"), padding=3), call.a.local_port)
        got = [RtpPacket.parse(p) for p in await call.pb.recv_n(10)]
        assert [p.payload for p in got] == [payload(k) for k in range(10)]
        assert {p.ssrc for p in got} == {ssrc_b} and {p.pt for p in got} == {0}
        assert [p.seq for p in got] == [(seq_b + k) & 0xFFFF for k in range(10)]
        assert [p.ts for p in got] == [(ts_b + 160 * k) & 0xFFFFFFFF for k in range(10)]
        assert [p.marker for p in got] == [True] + [False] * 9
        assert all(p.csrc == () and p.extension is None and p.padding == 0 for p in got)
        # and the other way round, from B's socket to phone A
        call.pb.send(audio(0, ssrc=0xB0B), call.b.local_port)
        back = RtpPacket.parse(await call.pa.recv())
        assert back.ssrc == call.a.ssrc and back.payload == payload(0)
        await call.end()
    run(main)


@pytest.mark.parametrize("codec_a, codec_b, pt_b, convert", [
    ("PCMU", "PCMA", 8, lambda p: g711.alaw_encode(g711.ulaw_decode(p))),
    ("PCMA", "PCMU", 0, lambda p: g711.ulaw_encode(g711.alaw_decode(p)))])
def test_different_codecs_are_transcoded(codec_a, codec_b, pt_b, convert) -> None:
    async def main() -> None:
        call = await Call().start(codec_a, codec_b)
        assert call.relay.transcoding
        pt_a = 0 if codec_a == "PCMU" else 8
        for k in range(5):
            call.pa.send(audio(k, pt=pt_a), call.a.local_port)
        got = [RtpPacket.parse(p) for p in await call.pb.recv_n(5)]
        assert [p.payload for p in got] == [convert(payload(k)) for k in range(5)]
        assert {p.pt for p in got} == {pt_b}
        await call.end()
    run(main)


def test_dtmf_is_relayed_with_pt_mapping_and_reported_once() -> None:
    async def main() -> None:
        call = await Call().start(te_a=101, te_b=96)
        for raw in DTMF_1:
            call.pa.send(raw, call.a.local_port)
        got = [RtpPacket.parse(p) for p in await call.pb.recv_n(len(DTMF_1))]
        assert {p.pt for p in got} == {96}
        assert [p.payload for p in got] == [RtpPacket.parse(r).payload for r in DTMF_1]
        rx = DtmfReceiver()
        assert [d for p in got if (d := rx.feed(p.ts, p.payload, p.marker))] == ["1"]
        await until(lambda: call.digits["a"] == ["1"])
        assert call.digits == {"a": ["1"], "b": []}
        await call.end()
    run(main)


def test_dtmf_to_a_leg_without_telephone_event_is_still_reported() -> None:
    async def main() -> None:
        call = await Call().start(te_a=101, te_b=None)
        for raw in DTMF_1:
            call.pa.send(raw, call.a.local_port)
        call.pa.send(audio(0), call.a.local_port)
        assert RtpPacket.parse(await call.pb.recv()).pt == 0      # only the audio went through
        assert call.digits["a"] == ["1"]
        assert call.relay.stats["a_to_b"]["dropped_no_event_pt"] == len(DTMF_1)
        await call.end()
    run(main)


def test_unexpected_source_is_not_relayed() -> None:
    async def main() -> None:
        call = await Call().start()
        intruder = Phone()
        for k in range(5):
            intruder.send(audio(k, ssrc=0xBAD), call.a.local_port)
        call.pa.send(audio(7), call.a.local_port)
        got = [RtpPacket.parse(p) for p in await call.pb.drain()]
        assert [p.payload for p in got] == [payload(7)]
        assert call.a.stats["rx_dropped_source"] == 5
        intruder.close()
        await call.end()
    run(main)


def test_hostile_packets_are_dropped_by_the_relay() -> None:
    async def main() -> None:
        call = await Call().start()
        good = audio(0)
        for bad in (good[:8], bytes([0x40]) + good[1:], bytes([0x8F]) + good[1:30],
                    bytes([0xA0]) + good[1:12] + b"xy\x20", audio(1, pt=13)):
            call.pa.send(bad, call.a.local_port)
        call.pa.send(audio(2), call.a.local_port)
        got = [RtpPacket.parse(p) for p in await call.pb.drain()]
        assert [p.payload for p in got] == [payload(2)]
        st = call.relay.stats["a_to_b"]
        assert (st["dropped_truncated"], st["dropped_bad_version"], st["dropped_bad_csrc"],
                st["dropped_bad_padding"], st["dropped_unknown_pt"]) == (1, 1, 1, 1, 1)
        await call.end()
    run(main)


def test_a_silent_leg_stalls_nothing_and_a_restarted_source_continues_numbering() -> None:
    async def main() -> None:
        call = await Call().start()
        for k in range(3):                       # only A talks; B is on hold, sending nothing
            call.pa.send(audio(k), call.a.local_port)
        first = [RtpPacket.parse(p) for p in await call.pb.recv_n(3)]
        for k in range(3):                       # A's phone restarts its stream (new SSRC)
            call.pa.send(audio(k, ssrc=0xD1FF, seq0=10, ts0=0), call.a.local_port)
        after = [RtpPacket.parse(p) for p in await call.pb.recv_n(3)]
        assert [p.seq for p in first + after] == [(first[0].seq + k) & 0xFFFF for k in range(6)]
        assert after[0].marker and after[0].ssrc == first[0].ssrc
        await call.end()
    run(main)


def test_close_frees_all_ports_and_stops_relaying() -> None:
    async def main() -> None:
        call = await Call().start()
        assert call.ports.in_use == 2
        call.relay.close()
        call.pa.send(audio(0), call.a.local_port)
        assert await call.pb.drain() == []       # detached: into A's jitter buffer, not to B
        await call.end()
        assert call.ports.available == call.ports.capacity
    run(main)


def test_tap_mode_carries_decoded_frames_on_the_clock_and_back() -> None:
    async def main() -> None:
        call = await Call().start("PCMU", "PCMA")
        t = ManualTime()
        clock = MediaClock(time_source=t)
        call.pa.send(audio(0), call.a.local_port)            # pass-through first
        before = RtpPacket.parse(await call.pb.recv())
        call.relay.set_tap(CrossTap(), clock)
        assert call.relay.stats["mode"] == "tap"
        for k in range(1, 4):
            call.pa.send(audio(k), call.a.local_port)
        await until(lambda: call.a.jitter.stats["received"] == 3)
        for _ in range(3):
            clock.poll()
            t.advance(0.020)
        got = [RtpPacket.parse(p) for p in await call.pb.recv_n(3)]
        assert [p.payload for p in got] == [g711.alaw_encode(g711.ulaw_decode(payload(k)))
                                            for k in (1, 2, 3)]
        assert [p.seq for p in got] == [(before.seq + k) & 0xFFFF for k in (1, 2, 3)]
        assert got[0].ssrc == before.ssrc
        call.relay.clear_tap()
        assert clock.subscribers == 0 and call.relay.stats["mode"] == "pass"
        call.pa.send(audio(9), call.a.local_port)
        again = RtpPacket.parse(await call.pb.recv())
        assert again.seq == (got[-1].seq + 1) & 0xFFFF and again.marker
        await call.end()
    run(main)


def test_tap_mode_sends_nothing_to_a_leg_whose_relay_path_is_shut() -> None:
    # a prompt playing to a tapped leg owns that leg's audio: the tap's frames must not go too
    async def main() -> None:
        call = await Call().start()
        t = ManualTime()
        clock = MediaClock(time_source=t)
        call.relay.set_tap(CrossTap(), clock)
        for k in range(3):
            call.pa.send(audio(k), call.a.local_port)
            call.pb.send(audio(k), call.b.local_port)
        await until(lambda: call.a.jitter.stats["received"] == 3 and call.b.jitter.stats["received"] == 3)
        call.b.relay_open = False
        sent_a, sent_b = call.a.stats["tx_packets"], call.b.stats["tx_packets"]
        for _ in range(4):
            clock.poll()
            t.advance(0.020)
        assert call.b.stats["tx_packets"] == sent_b
        assert call.a.stats["tx_packets"] > sent_a
        await call.end()
    run(main)


def test_tap_mode_relays_digits_to_the_other_leg() -> None:
    async def main() -> None:
        call = await Call().start(te_a=101, te_b=96)
        t = ManualTime()
        clock = MediaClock(time_source=t)
        call.relay.set_tap(CrossTap(), clock)
        for raw in DTMF_1:
            call.pa.send(raw, call.a.local_port)
        await until(lambda: call.digits["a"] == ["1"])
        for _ in range(8):
            clock.poll()
            t.advance(0.020)
        got = [RtpPacket.parse(p) for p in await call.pb.drain()]
        rx = DtmfReceiver()
        assert [d for p in got if p.pt == 96 and (d := rx.feed(p.ts, p.payload, p.marker))] == ["1"]
        await call.end()
    run(main)


def test_a_relay_needs_two_streams() -> None:
    async def main() -> None:
        ports = PortAllocator(LO, HI)
        s = await RtpStream.open(ports, "127.0.0.1")
        with pytest.raises(ValueError, match="two different"):
            Relay(s, s)
        s.close()
    run(main)
