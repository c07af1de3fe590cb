"""firmware.media.rtp: RFC 3550 packet parse/build (issue 4, part 3)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.media.rtp import MAX_PACKET, RtpError, RtpPacket
from tests.unit.media import DTMF_1, G711A_FIRST, G711A_SPEECH


def test_captured_pcma_packets_parse_to_their_header_fields() -> None:
    first = RtpPacket.parse(G711A_FIRST)
    assert (first.version, first.pt, first.seq, first.ts, first.ssrc) == (2, 8, 0xE6FD, 0xF0, 0xDEE0EE8F)
    assert first.marker and first.payload == b"\xd5" * 240 and first.csrc == ()
    speech = RtpPacket.parse(G711A_SPEECH)
    assert (speech.pt, speech.seq, speech.ts, speech.marker) == (8, 0xE7C5, 0xBC70, False)
    assert speech.payload == G711A_SPEECH[12:] and len(speech.payload) == 240


def test_captured_packets_rebuild_byte_for_byte() -> None:
    for packet in [G711A_FIRST, G711A_SPEECH, *DTMF_1]:
        assert RtpPacket.parse(packet).build() == packet


def test_captured_telephone_event_header() -> None:
    p = RtpPacket.parse(DTMF_1[0])
    assert (p.pt, p.marker, p.ts, p.payload) == (101, True, 0x33E0, bytes.fromhex("010a0000"))
    assert not RtpPacket.parse(DTMF_1[1]).marker


def test_csrc_extension_and_padding_are_parsed_and_stripped() -> None:
    p = RtpPacket(pt=0, seq=1, ts=2, ssrc=3, payload=b"abc", csrc=(10, 11),
                  extension=(0xBEDE, b"\x01\x02\x03\x04"), padding=5)
    raw = p.build()
    assert len(raw) == 12 + 8 + 4 + 4 + 3 + 5 and raw[0] == 0x80 | 0x20 | 0x10 | 2 and raw[-1] == 5
    q = RtpPacket.parse(raw)
    assert q.payload == b"abc" and q.csrc == (10, 11) and q.extension == (0xBEDE, b"\x01\x02\x03\x04")
    assert q.padding == 5


def test_empty_payload_is_a_valid_packet() -> None:
    assert RtpPacket.parse(RtpPacket(0, 1, 2, 3).build()).payload == b""


HOSTILE = {
    "truncated header": G711A_SPEECH[:11],
    "empty": b"",
    "version 0": bytes([0x00]) + G711A_SPEECH[1:],
    "version 1": bytes([0x40]) + G711A_SPEECH[1:],
    "version 3": bytes([0xC0]) + G711A_SPEECH[1:],
    "CSRC count beyond length": bytes([0x8F]) + G711A_SPEECH[1:40],
    "extension header cut off": bytes([0x90]) + G711A_SPEECH[1:14],
    "extension length beyond packet": bytes([0x90]) + G711A_SPEECH[1:12] + b"\x00\x00\x00\x40" + b"x" * 20,
    "padding length > payload": bytes([0xA0]) + G711A_SPEECH[1:12] + b"xyz" + b"\x09",
    "padding length zero": bytes([0xA0]) + G711A_SPEECH[1:12] + b"xyz" + b"\x00",
    "oversized": G711A_SPEECH[:12] + bytes(MAX_PACKET),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_datagrams_raise_rtp_error(name: str) -> None:
    with pytest.raises(RtpError) as info:
        RtpPacket.parse(HOSTILE[name])
    assert isinstance(info.value, ValueError)


def test_padding_may_fill_everything_after_the_header() -> None:
    raw = bytes([0xA0]) + G711A_SPEECH[1:12] + b"\x00\x00\x03"
    assert RtpPacket.parse(raw).payload == b""


def test_build_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="payload type"):
        RtpPacket(pt=128, seq=0, ts=0, ssrc=0).build()
    with pytest.raises(ValueError, match="CSRC"):
        RtpPacket(pt=0, seq=0, ts=0, ssrc=0, csrc=tuple(range(16))).build()
    with pytest.raises(ValueError, match="words"):
        RtpPacket(pt=0, seq=0, ts=0, ssrc=0, extension=(1, b"abc")).build()


packets = st.builds(
    RtpPacket, pt=st.integers(0, 127), seq=st.integers(0, 0xFFFF), ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1), payload=st.binary(max_size=300), marker=st.booleans(),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF),
                                    st.binary(max_size=40).map(lambda b: b[:len(b) // 4 * 4])),
    padding=st.integers(0, 255))


@given(packets)
def test_build_then_parse_round_trips(p: RtpPacket) -> None:
    assert RtpPacket.parse(p.build()) == p
