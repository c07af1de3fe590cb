"""cython_mixer.rtp: the relay's per-packet fast path, against the firmware.media.rtp model."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_mixer import g711
from cython_mixer.rtp import (BAD_CSRC, BAD_EXTENSION, BAD_PADDING, BAD_VERSION, EMPTY, MAX_PACKET,
                              NO_EVENT_PT, OVERSIZED, TRUNCATED, UNKNOWN_PT, RtpRewriter,
                              parse_header, transcode_table, validate)
from firmware.media.rtp import MAX_PACKET as MODEL_MAX
from firmware.media.rtp import RtpError, RtpPacket
from tests.unit.media import DTMF_1, G711A_SPEECH

AUDIO_PT, EVENT_PT = 0, 101
POISON = b"\xff" * 64     # bytes just past the datagram: an over-read would change results


def past_the_end(data: bytes) -> memoryview:
    """``data`` as a view whose underlying buffer continues with poison."""
    return memoryview(data + POISON)[:len(data)]


class ModelRewriter:
    """The rewrite rules in plain Python over RtpPacket (what the Cython class must match)."""

    def __init__(self, ssrc: int, seq: int, ts: int, out_pt: int, out_event_pt: int | None,
                 xlat: bytes | None = None) -> None:
        self.ssrc, self.next_seq, self.next_ts = ssrc, seq, ts
        self.out_pt, self.out_event_pt, self.xlat = out_pt, out_event_pt, xlat
        self.in_ssrc: int | None = None
        self.seq_off = self.ts_off = 0

    def rewrite(self, raw: bytes) -> bytes | None:
        try:
            p = RtpPacket.parse(raw)
        except RtpError:
            return None
        event = p.pt == EVENT_PT
        if not p.payload or not (event or p.pt == AUDIO_PT):
            return None
        marker = p.marker
        if p.ssrc != self.in_ssrc:
            self.seq_off = (self.next_seq - p.seq) & 0xFFFF
            self.ts_off = (self.next_ts - p.ts) & 0xFFFFFFFF
            self.in_ssrc, marker = p.ssrc, True
        seq, ts = (p.seq + self.seq_off) & 0xFFFF, (p.ts + self.ts_off) & 0xFFFFFFFF
        if event and self.out_event_pt is None:
            return None
        payload = p.payload if event or self.xlat is None else p.payload.translate(self.xlat)
        if ((seq - self.next_seq) & 0xFFFF) < 0x8000:
            self.next_seq = (seq + 1) & 0xFFFF
            if not event and 0 < ((ts + len(payload) - self.next_ts) & 0xFFFFFFFF) < 0x80000000:
                self.next_ts = (ts + len(payload)) & 0xFFFFFFFF
        out = RtpPacket(self.out_event_pt if event else self.out_pt, seq, ts, self.ssrc, payload, marker)
        return out.build()


packet_st = st.builds(
    RtpPacket,
    pt=st.sampled_from([AUDIO_PT, AUDIO_PT, AUDIO_PT, EVENT_PT, 8, 13]),
    seq=st.integers(0, 0xFFFF), ts=st.integers(0, 2**32 - 1),
    ssrc=st.sampled_from([0x11111111, 0x11111111, 0x11111111, 0x22222222]),
    payload=st.binary(min_size=0, max_size=200), marker=st.booleans(),
    csrc=st.lists(st.integers(0, 2**32 - 1), max_size=3).map(tuple),
    extension=st.none() | st.tuples(st.integers(0, 0xFFFF), st.sampled_from([b"", b"abcd", b"12345678"])),
    padding=st.sampled_from([0, 0, 1, 4]))


def stream_st() -> st.SearchStrategy[list[RtpPacket]]:
    """Mostly a sensible stream (steps of one frame), with jumps, reorders and SSRC changes."""
    return st.lists(st.tuples(packet_st, st.integers(-3, 3)), min_size=1, max_size=25).map(
        lambda items: [_stream(items)][0])


def _stream(items: list[tuple[RtpPacket, int]]) -> list[RtpPacket]:
    out, seq, ts = [], items[0][0].seq, items[0][0].ts
    for p, step in items:
        seq, ts = (seq + step) & 0xFFFF, (ts + 160 * step) & 0xFFFFFFFF
        if step:                         # step 0: keep the drawn (random) numbers
            p.seq, p.ts = seq, ts
        out.append(p)
    return out


@settings(max_examples=300)
@given(stream_st(), st.integers(0, 2**32 - 1), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
       st.sampled_from([None, "PCMU"]), st.sampled_from([None, 96]))
def test_rewrite_matches_the_python_model(stream: list[RtpPacket], ssrc: int, seq: int, ts: int,
                                          transcode: str | None, out_event_pt: int | None) -> None:
    out_pt = 8 if transcode else 0
    fast = RtpRewriter(ssrc, seq, ts, in_pt=AUDIO_PT, out_pt=out_pt,
                       in_codec=transcode, out_codec="PCMA" if transcode else None,
                       in_event_pt=EVENT_PT, out_event_pt=out_event_pt)
    model = ModelRewriter(ssrc, seq, ts, out_pt, out_event_pt,
                          transcode_table("PCMU") if transcode else None)
    for p in stream:
        raw = p.build()
        want = model.rewrite(raw)
        n = fast.rewrite(past_the_end(raw))
        got = None if n < 0 else bytes(fast.view(n))
        assert got == want, p
        assert (fast.next_seq, fast.next_ts) == (model.next_seq, model.next_ts)


def test_pass_through_keeps_payload_and_source_spacing() -> None:
    rw = RtpRewriter(0xCAFEBABE, 500, 90_000, in_pt=8)
    src = RtpPacket.parse(G711A_SPEECH)
    outs = []
    for k in range(3):
        p = RtpPacket(8, (src.seq + k) & 0xFFFF, src.ts + 240 * k, src.ssrc, src.payload)
        n = rw.rewrite(p.build())
        assert n == len(G711A_SPEECH)
        outs.append(RtpPacket.parse(bytes(rw.view(n))))
    assert [(o.seq, o.ts, o.ssrc, o.pt) for o in outs] == [
        (500, 90_000, 0xCAFEBABE, 8), (501, 90_240, 0xCAFEBABE, 8), (502, 90_480, 0xCAFEBABE, 8)]
    assert [o.marker for o in outs] == [True, False, False]     # a new stream for the receiver
    assert all(o.payload == src.payload for o in outs)
    assert rw.next_seq == 503 and rw.next_ts == 90_720


@pytest.mark.parametrize("src, dst, decode, encode", [
    ("PCMU", "PCMA", g711.ulaw_decode, g711.alaw_encode),
    ("PCMA", "PCMU", g711.alaw_decode, g711.ulaw_encode)])
def test_transcode_equals_g711_decode_then_encode(src, dst, decode, encode) -> None:
    every_code = bytes(range(256))
    rw = RtpRewriter(1, in_pt=0, out_pt=8, in_codec=src, out_codec=dst)
    assert rw.transcoding
    n = rw.rewrite(RtpPacket(0, 1, 2, 3, every_code).build())
    assert bytes(rw.view(n))[12:] == encode(decode(every_code))
    assert bytes(rw.view(n))[1] & 0x7F == 8


def test_same_codec_does_not_transcode() -> None:
    assert not RtpRewriter(1, in_codec="pcmu", out_codec="PCMU").transcoding


def test_events_are_relayed_untranslated_with_mapped_pt_and_reported() -> None:
    seen = []
    rw = RtpRewriter(7, 0, 0, in_pt=0, out_pt=8, in_codec="PCMU", out_codec="PCMA",
                     in_event_pt=101, out_event_pt=96, on_event=lambda *a: seen.append(a))
    for raw in DTMF_1:
        n = rw.rewrite(raw)
        out = RtpPacket.parse(bytes(rw.view(n)))
        assert out.pt == 96 and out.payload == RtpPacket.parse(raw).payload
    assert len(seen) == 10 and seen[0] == (0x0E05384E, 0x33E0, True, bytes.fromhex("010a0000"))


def test_event_without_peer_event_pt_is_reported_then_dropped() -> None:
    seen = []
    rw = RtpRewriter(7, in_pt=0, in_event_pt=101, on_event=lambda *a: seen.append(a))
    assert [rw.rewrite(raw) for raw in DTMF_1] == [-1] * 10
    assert len(seen) == 10 and rw.stats["dropped_no_event_pt"] == 10


def test_new_source_ssrc_reanchors_with_marker_and_continues_numbering() -> None:
    rw = RtpRewriter(9, 100, 1000, in_pt=0)
    rw.rewrite(RtpPacket(0, 40_000, 5_000_000, 1, bytes(160)).build())
    rw.rewrite(RtpPacket(0, 40_001, 5_000_160, 1, bytes(160)).build())
    n = rw.rewrite(RtpPacket(0, 7, 33, 2, bytes(160)).build())      # the phone restarted its stream
    out = RtpPacket.parse(bytes(rw.view(n)))
    assert (out.seq, out.ts, out.marker) == (102, 1320, True)
    assert rw.stats["anchors"] == 2


HOSTILE = [
    (b"", TRUNCATED), (G711A_SPEECH[:11], TRUNCATED),
    (bytes([0x00]) + G711A_SPEECH[1:], BAD_VERSION), (bytes([0x40]) + G711A_SPEECH[1:], BAD_VERSION),
    (bytes([0xC0]) + G711A_SPEECH[1:], BAD_VERSION),
    (bytes([0x8F]) + G711A_SPEECH[1:40], BAD_CSRC), (bytes([0x81]) + G711A_SPEECH[1:12], BAD_CSRC),
    (bytes([0x90]) + G711A_SPEECH[1:14], BAD_EXTENSION),
    (bytes([0x90]) + G711A_SPEECH[1:12] + b"\xbe\xde\xff\xff" + b"x" * 20, BAD_EXTENSION),
    (bytes([0xA0]) + G711A_SPEECH[1:12] + b"xyz\x09", BAD_PADDING),
    (bytes([0xA0]) + G711A_SPEECH[1:12] + b"xyz\x00", BAD_PADDING),
    (bytes([0xA0]) + G711A_SPEECH[1:12] + b"\x00\x00\x03", EMPTY),
    (G711A_SPEECH[:12], EMPTY),
    (G711A_SPEECH + bytes(MAX_PACKET), OVERSIZED),
]


@pytest.mark.parametrize("raw, reason", HOSTILE)
def test_hostile_packets_are_dropped_and_counted_by_reason(raw: bytes, reason: int) -> None:
    rw = RtpRewriter(1, in_pt=8)
    before = bytes(rw.buffer)
    assert rw.rewrite(past_the_end(raw)) == -1
    assert validate(past_the_end(raw)) == reason
    assert bytes(rw.buffer) == before      # nothing written for a dropped packet
    name = [k for k, v in rw.stats.items() if k.startswith("dropped_") and v]
    assert len(name) == 1 and rw.stats[name[0]] == 1


def test_unknown_payload_type_is_dropped() -> None:
    rw = RtpRewriter(1, in_pt=0, in_event_pt=101)
    assert rw.rewrite(RtpPacket(13, 1, 1, 1, b"\x40").build()) == -1    # comfort noise
    assert rw.stats["dropped_unknown_pt"] == 1 and UNKNOWN_PT == 8 and NO_EVENT_PT == 9


@settings(max_examples=400)
@given(st.binary(max_size=120), st.integers(0, 255))
def test_any_bytes_agree_with_the_model_parser(data: bytes, first: int) -> None:
    data = bytes([first]) + data
    try:
        p = RtpPacket.parse(data)
    except RtpError:
        p = None
    h = parse_header(past_the_end(data))
    if p is None:
        assert h is None and validate(data) != 0
    else:
        marker, pt, seq, ts, ssrc, start, end = h
        assert (marker, pt, seq, ts, ssrc) == (p.marker, p.pt, p.seq, p.ts, p.ssrc)
        assert data[start:end] == p.payload
        assert validate(data) == (0 if p.payload else EMPTY)


def test_limits_agree_with_the_model() -> None:
    assert MAX_PACKET == MODEL_MAX
    assert validate(bytes([0x80]) + bytes(MAX_PACKET - 1)) == 0
    assert validate(bytes([0x80]) + bytes(MAX_PACKET)) == OVERSIZED


def test_buffer_is_reused_and_views_are_cached() -> None:
    rw = RtpRewriter(1, in_pt=8)
    n = rw.rewrite(G711A_SPEECH)
    view = rw.view(n)
    assert rw.view(n) is view and bytes(view) == bytes(rw.buffer[:n])
    with pytest.raises(BufferError):
        rw.buffer.extend(b"x")            # never resized under a sendto
    with pytest.raises(ValueError, match="length"):
        rw.view(MAX_PACKET + 1)


def test_accepts_any_bytes_like_datagram() -> None:
    rw = RtpRewriter(1, in_pt=8)
    assert rw.rewrite(bytearray(G711A_SPEECH)) == rw.rewrite(memoryview(G711A_SPEECH)) == 252


@pytest.mark.parametrize("kwargs, message", [
    ({"in_pt": 128}, "in_pt"), ({"in_pt": "0"}, "in_pt"), ({"out_event_pt": -1}, "out_event_pt"),
    ({"in_pt": 101, "in_event_pt": 101}, "also the audio"), ({"in_codec": "PCMU"}, "both"),
    ({"in_codec": "G729", "out_codec": "PCMU"}, "codec"), ({"on_event": 5}, "callable"),
    ({"seq": 70000}, "seq")])
def test_bad_arguments_are_value_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RtpRewriter(1, **kwargs)
