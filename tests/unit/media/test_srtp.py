"""firmware.media.srtp (libsrtp through pylibsrtp) and SRTP on an RtpStream and through a Relay:
each leg decrypts what it receives and encrypts what it sends with its own keys."""
from __future__ import annotations

import asyncio

import pytest

from firmware.media.clock import ManualTime, MediaClock
from firmware.media.ports import PortAllocator
from firmware.media.relay import CrossTap, Relay
from firmware.media.rtp import RtpPacket
from firmware.media.srtp import SrtpContext
from firmware.media.stream import RtpStream
from firmware.sip import sdes
from tests.unit.media import Phone, until

LO, HI = 31140, 31159
SUITES = list(sdes.SUITES)


def pair(suite: str = "AES_CM_128_HMAC_SHA1_80", **kw) -> tuple[SrtpContext, SrtpContext]:
    """Two ends of one SRTP call: what one sends with the other receives with."""
    k1, k2 = sdes.new_crypto(1, suite).key, sdes.new_crypto(1, suite).key
    return SrtpContext(suite, k1, k2, **kw), SrtpContext(suite, k2, k1)


def rtp(seq: int, payload: bytes = bytes(range(160)), ssrc: int = 0x1234, pt: int = 0) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, payload).build()


@pytest.mark.parametrize("suite", SUITES)
def test_round_trip_encrypts_the_payload_and_restores_the_packet(suite: str) -> None:
    tx, rx = pair(suite)
    plain = rtp(7)
    wire = tx.protect(plain)
    assert wire[:12] == plain[:12] and bytes(range(160)) not in wire    # header clear, payload not
    assert len(wire) == len(plain) + {"AES_CM_128_HMAC_SHA1_80": 10, "AES_CM_128_HMAC_SHA1_32": 4,
                                      "AEAD_AES_128_GCM": 16}[suite]
    assert rx.unprotect(wire) == plain
    assert tx.stats["protected"] == 1 and rx.stats["unprotected"] == 1


@pytest.mark.parametrize("suite", SUITES)
def test_tampered_packet_and_wrong_key_are_dropped_and_counted(suite: str) -> None:
    tx, rx = pair(suite)
    wire = bytearray(tx.protect(rtp(1)))
    wire[40] ^= 0x01
    assert rx.unprotect(bytes(wire)) is None
    stranger, _ = pair(suite)                  # same suite, someone else's key
    assert rx.unprotect(stranger.protect(rtp(2))) is None
    assert rx.stats["auth_failures"] == 2 and rx.stats["unprotected"] == 0
    assert rx.unprotect(tx.protect(rtp(3))) == rtp(3)     # the real stream still gets through


def test_replayed_and_too_old_packets_are_dropped_and_counted() -> None:
    tx, rx = pair()
    wires = [tx.protect(rtp(seq)) for seq in range(300)]
    assert rx.unprotect(wires[0]) == rtp(0)
    assert rx.unprotect(wires[0]) is None                 # replay
    assert rx.unprotect(wires[299]) == rtp(299)
    assert rx.unprotect(wires[5]) is None                 # behind the 128-packet window
    assert rx.unprotect(wires[250]) == rtp(250)           # late but inside the window: fine
    assert rx.stats["replays"] == 2 and rx.stats["unprotected"] == 3


def test_sequence_wrap_rollover_counter_is_kept_by_libsrtp() -> None:
    tx, rx = pair()
    # across the wrap, twice, with a packet lost at the wrap: the ROC must follow
    seqs = [s & 0xFFFF for s in range(65500, 65536 * 2 + 40) if s != 65536]
    for i, seq in enumerate(seqs):
        plain = rtp(seq, payload=i.to_bytes(4, "big") * 40)
        assert rx.unprotect(tx.protect(plain)) == plain, f"packet {i} (seq {seq})"
    # a receiver that wrongly restarts at ROC 0 cannot read packets of the second cycle
    fresh = SrtpContext("AES_CM_128_HMAC_SHA1_80", rx.rx_key, rx.tx_key)
    assert fresh.unprotect(tx.protect(rtp(seqs[-1] + 1))) is None


def test_key_lifetime_stops_sending_and_receiving() -> None:
    tx, rx = pair(tx_lifetime=3)
    sent = [tx.protect(rtp(s)) for s in range(5)]
    assert all(w is not None for w in sent[:3]) and sent[3:] == [None, None]
    assert tx.stats["key_expired"] == 2
    k1, k2 = sdes.new_crypto(1, SUITES[0]).key, sdes.new_crypto(1, SUITES[0]).key
    a, b = SrtpContext(SUITES[0], k1, k2), SrtpContext(SUITES[0], k2, k1, rx_lifetime=1)
    assert b.unprotect(a.protect(rtp(1))) is not None and b.unprotect(a.protect(rtp(2))) is None
    assert b.stats["key_expired"] == 1


def test_bad_arguments_raise_value_error() -> None:
    key = bytes(30)
    with pytest.raises(ValueError, match="unknown SRTP suite"):
        SrtpContext("NULL", key, key)
    with pytest.raises(ValueError, match="rx_key for AES_CM_128_HMAC_SHA1_80 must be 30 bytes"):
        SrtpContext("AES_CM_128_HMAC_SHA1_80", key, bytes(16))
    with pytest.raises(ValueError, match="tx_key for AEAD_AES_128_GCM must be 28 bytes"):
        SrtpContext("AEAD_AES_128_GCM", key, bytes(28))


# --- on the wire: a stream and a relay ---------------------------------------------------------

def test_relay_decrypts_rewrites_and_reencrypts_per_leg_srtp_to_plain_and_back() -> None:
    async def main() -> None:
        ports = PortAllocator(LO, HI)
        pa, pb = Phone(), Phone()
        a = await RtpStream.open(ports, "127.0.0.1")
        b = await RtpStream.open(ports, "127.0.0.1")
        a.set_remote(*pa.addr)
        b.set_remote(*pb.addr)
        phone_a, a.srtp = pair()                 # leg A is SRTP, leg B plain RTP
        relay = Relay(a, b)
        try:
            for k in range(5):
                pa.send(phone_a.protect(rtp(65533 + k, payload=bytes([k]) * 160)), a.local_port)
            got = [RtpPacket.parse(p) for p in await pb.recv_n(5)]
            assert [p.payload for p in got] == [bytes([k]) * 160 for k in range(5)]
            assert {p.ssrc for p in got} == {b.ssrc}         # rewritten for leg B
            # B -> A: plain in, SRTP out with leg A's key
            for k in range(3):
                pb.send(rtp(k, payload=bytes([0x40 + k]) * 160, ssrc=0xB), b.local_port)
            back = [phone_a.unprotect(p) for p in await pa.recv_n(3)]
            assert [RtpPacket.parse(p).payload for p in back] == [bytes([0x40 + k]) * 160 for k in range(3)]
            # forged and replayed packets from A's side go nowhere and are counted
            forged = bytearray(phone_a.protect(rtp(10)))
            forged[20] ^= 0xFF
            pa.send(bytes(forged), a.local_port)
            replay = phone_a.protect(rtp(11))
            pa.send(replay, a.local_port)
            pa.send(replay, a.local_port)
            await until(lambda: a.stats["srtp"]["auth_failures"] == 1 and a.stats["srtp"]["replays"] == 1)
            assert len(await pb.recv_n(1)) == 1
            with pytest.raises(asyncio.TimeoutError):
                await pb.recv(0.2)
            # tap mode (eavesdrop's path): decoded frames through the clock, re-encrypted for A
            t = ManualTime()
            clock = MediaClock(time_source=t)
            relay.set_tap(CrossTap(), clock)
            for k in range(3):
                pb.send(rtp(100 + k, payload=bytes([0xFF]) * 160, ssrc=0xB), b.local_port)
            await until(lambda: b.jitter.stats["received"] == 3)
            for _ in range(3):
                clock.poll()
                t.advance(0.020)
            out = phone_a.unprotect(await pa.recv())
            assert out is not None and RtpPacket.parse(out).ssrc == a.ssrc
        finally:
            relay.close()
            for s in (a, b):
                s.close()
                await s.wait_closed()
            pa.close()
            pb.close()
    asyncio.run(main())
