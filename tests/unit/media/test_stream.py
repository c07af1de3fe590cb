"""firmware.media.stream: one leg's RTP session over real loopback UDP sockets."""
from __future__ import annotations

import asyncio
import socket

import pytest

from cython_mixer import FRAME_BYTES, g711
from firmware.media.ports import PortAllocator, PortsExhausted
from firmware.media.rfc4733 import DtmfReceiver, TelephoneEvent
from firmware.media.rtp import RECV_SIZE, RtpPacket
from firmware.media.stream import RtpStream
from tests.unit.media import DTMF_1, Phone, until

LO, HI = 31000, 31019


def frame(k: int) -> bytes:
    """A 20 ms PCM frame that G.711 round-trips exactly (values are µ-law decode outputs)."""
    return g711.ulaw_decode(bytes((k * 7 + i) % 256 for i in range(160)))


def audio(seq: int, ts: int, payload: bytes, ssrc: int = 0x1234, pt: int = 0, marker=False) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, ts, ssrc, payload, marker).build()


async def open_stream(ports: PortAllocator, phone: Phone | None = None, **kw) -> RtpStream:
    s = await RtpStream.open(ports, "127.0.0.1", **kw)
    if phone is not None:
        s.set_remote(*phone.addr)
    return s


def test_open_binds_an_even_pair_and_close_frees_it() -> None:
    async def main() -> None:
        ports = PortAllocator(LO, HI)
        s = await open_stream(ports)
        assert s.local_port % 2 == 0 and s.rtcp_port == s.local_port + 1 and LO <= s.local_port < HI
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError):
            probe.bind(("127.0.0.1", s.rtcp_port))        # the RTCP port is held too
        probe.close()
        assert ports.in_use == 1
        assert s._transport.max_size == RECV_SIZE     # no 256 KiB read per datagram (§4.2)
        s.close()
        s.close()
        await asyncio.wait_for(s.wait_closed(), 2)
        assert ports.available == ports.capacity
        again = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        again.bind(("127.0.0.1", s.local_port))          # really released
        again.close()
    asyncio.run(main())


def test_exhaustion_and_a_port_held_by_someone_else() -> None:
    async def main() -> None:
        ports = PortAllocator(LO, LO + 5)                  # three pairs
        squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        squatter.bind(("127.0.0.1", LO + 1))               # RTCP port of the first pair
        try:
            a = await open_stream(ports)
            b = await open_stream(ports)
            assert {a.local_port, b.local_port} == {LO + 2, LO + 4}
            with pytest.raises(PortsExhausted, match="RTP port pair"):
                await open_stream(ports)
            a.close()
            await a.wait_closed()
            c = await open_stream(ports)
            assert c.local_port == LO + 2
            b.close()
            c.close()
            await b.wait_closed()
            await c.wait_closed()
            assert ports.in_use == 0
        finally:
            squatter.close()
    asyncio.run(main())


def test_audio_from_the_negotiated_address_reaches_read_frame() -> None:
    async def main() -> None:
        ports, phone = PortAllocator(LO, HI), Phone()
        s = await open_stream(ports, phone, codec="PCMU")
        for k in range(3):
            phone.send(audio(100 + k, 160 * k, g711.ulaw_encode(frame(k))), s.local_port)
        await until(lambda: s.stats["rx_packets"] == 3)
        got = [s.read_frame() for _ in range(3)]
        assert got[:2] == [frame(0), frame(1)]              # target depth 2: playout has begun
        s.close()
        phone.close()
    asyncio.run(main())


def test_unexpected_source_is_dropped_and_counted() -> None:
    async def main() -> None:
        ports, phone, stranger = PortAllocator(LO, HI), Phone(), Phone()
        s = await open_stream(ports, phone)
        for k in range(4):
            stranger.send(audio(k, 160 * k, bytes(160)), s.local_port)
        phone.send(audio(9, 0, bytes(160)), s.local_port)
        await until(lambda: s.stats["rx_packets"] == 1)
        assert s.stats["rx_dropped_source"] == 4 and s.jitter.stats["received"] == 1
        s.close()
        phone.close()
        stranger.close()
    asyncio.run(main())


def test_latch_takes_the_first_source_once_and_answers_there() -> None:
    async def main() -> None:
        ports, nat, other = PortAllocator(LO, HI), Phone(), Phone()
        s = await open_stream(ports, latch=True)
        s.set_remote("127.0.0.1", 9)                      # what SDP said; NAT changed it
        nat.send(audio(1, 0, bytes(160)), s.local_port)
        await until(lambda: s.stats["rx_packets"] == 1)
        other.send(audio(2, 160, bytes(160)), s.local_port)
        await until(lambda: s.stats["rx_dropped_source"] == 1)
        assert s.remote == nat.addr
        s.send_frame(frame(0))
        assert RtpPacket.parse(await nat.recv()).ssrc == s.ssrc
        s.close()
        nat.close()
        other.close()
    asyncio.run(main())


def test_without_remote_and_without_latch_everything_is_dropped() -> None:
    async def main() -> None:
        ports, phone = PortAllocator(LO, HI), Phone()
        s = await open_stream(ports)
        phone.send(audio(1, 0, bytes(160)), s.local_port)
        await until(lambda: s.stats["rx_dropped_source"] == 1)
        assert s.send_frame(frame(0)) is False and s.stats["tx_no_remote"] == 1
        s.close()
        phone.close()
    asyncio.run(main())


def test_oversized_truncated_and_malformed_are_dropped_and_counted() -> None:
    async def main() -> None:
        ports, phone = PortAllocator(LO, HI), Phone()
        s = await open_stream(ports, phone)
        phone.send(audio(1, 0, bytes(4000)), s.local_port)          # cut to 2048 by the read
        phone.send(b"\x80\x00\x00", s.local_port)
        phone.send(bytes([0x40]) + audio(2, 0, bytes(160))[1:], s.local_port)  # version 1
        phone.send(audio(3, 0, bytes(80)), s.local_port)             # not 20 ms
        phone.send(audio(4, 0, b"x", pt=13), s.local_port)           # comfort noise
        await until(lambda: s.stats["rx_packets"] == 5)
        st = s.stats
        assert (st["rx_oversized"], st["rx_truncated"], st["rx_malformed"], st["rx_bad_size"],
                st["rx_unknown_pt"]) == (1, 1, 1, 1, 1)
        assert st["jitter"]["received"] == 0
        s.close()
        phone.close()
    asyncio.run(main())


def test_rfc4733_packets_become_one_digit_and_not_audio() -> None:
    async def main() -> None:
        ports, phone = PortAllocator(LO, HI), Phone()
        digits: list[str] = []
        s = await open_stream(ports, phone, telephone_event_pt=101, on_digit=digits.append)
        for raw in DTMF_1:
            phone.send(raw, s.local_port)
        await until(lambda: s.stats["rx_packets"] == len(DTMF_1))
        assert digits == ["1"] and s.stats["rx_digits"] == 1 and s.jitter.stats["received"] == 0
        s.close()
        phone.close()
    asyncio.run(main())


def test_send_frame_uses_our_ssrc_sequence_and_timestamp() -> None:
    async def main() -> None:
        ports, phone = PortAllocator(LO, HI), Phone()
        s = await open_stream(ports, phone, codec="PCMA", ssrc=0xABCDEF01)
        ssrc, seq0, ts0 = s.sender_state
        for k in range(3):
            assert s.send_frame(frame(k))
        assert s.send_frame(None) is False                 # a silent tick: no packet, ts moves
        s.send_frame(frame(4))
        got = [RtpPacket.parse(p) for p in await phone.recv_n(4)]
        assert [p.ssrc for p in got] == [0xABCDEF01] * 4 and {p.pt for p in got} == {8}
        assert [p.seq for p in got] == [(seq0 + k) & 0xFFFF for k in range(4)]
        assert [p.ts for p in got] == [(ts0 + 160 * k) & 0xFFFFFFFF for k in (0, 1, 2, 4)]
        assert [p.marker for p in got] == [True, False, False, True]   # talkspurt starts
        assert [p.payload for p in got] == [g711.alaw_encode(frame(k)) for k in (0, 1, 2, 4)]
        with pytest.raises(ValueError, match=str(FRAME_BYTES)):
            s.send_frame(bytes(100))
        s.close()
        phone.close()
    asyncio.run(main())


def test_send_digit_goes_out_on_the_ticks_as_one_event() -> None:
    async def main() -> None:
        ports, phone = PortAllocator(LO, HI), Phone()
        s = await open_stream(ports, phone, telephone_event_pt=96)
        s.send_digit("5", duration_ms=60)
        s.send_digit("#", duration_ms=60)
        for k in range(14):
            s.send_frame(frame(k))
        got = [RtpPacket.parse(p) for p in await phone.recv_n(14)]
        kinds = ["e" if p.pt == 96 else "a" for p in got]
        assert "".join(kinds) == "eeeee" + "aa" + "eeeee" + "aa"   # 2 updates + 3 ends, a gap
        first, second = got[:5], got[7:12]
        assert len({p.ts for p in first}) == 1 and len({p.ts for p in second}) == 1
        assert first[0].ts != second[0].ts
        assert [p.marker for p in first] == [True] + [False] * 4
        assert [TelephoneEvent.parse(p.payload).end for p in first] == [False, False, True, True, True]
        assert [p.seq for p in got] == [(got[0].seq + k) & 0xFFFF for k in range(14)]
        rx = DtmfReceiver()
        assert [d for p in got if p.pt == 96 and (d := rx.feed(p.ts, p.payload, p.marker))] == ["5", "#"]
        s.close()
        phone.close()
    asyncio.run(main())


def test_negotiation_errors_are_value_errors() -> None:
    async def main() -> None:
        ports = PortAllocator(LO, HI)
        s = await open_stream(ports, telephone_event_pt=None)
        with pytest.raises(ValueError, match="telephone-event"):
            s.send_digit("1")
        with pytest.raises(ValueError, match="IP address"):
            s.set_remote("phone.example", 4000)
        with pytest.raises(ValueError, match="IP versions"):
            s.set_remote("::1", 4000)
        with pytest.raises(ValueError, match="codec"):
            s.set_codec("G729")
        s.close()
    asyncio.run(main())
