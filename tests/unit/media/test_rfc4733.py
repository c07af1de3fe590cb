"""firmware.media.rfc4733: telephone-event payloads, the once-per-event receiver, the sender."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from firmware.media.rfc4733 import (END_PACKETS, DtmfReceiver, DtmfSender, TelephoneEvent,
                                    digit_of, event_of)
from firmware.media.rtp import RtpPacket
from tests.unit.media import DTMF_1, DTMF_POUND


def feed_all(rx: DtmfReceiver, packets: list[bytes]) -> list[str]:
    out = []
    for raw in packets:
        p = RtpPacket.parse(raw)
        digit = rx.feed(p.ts, p.payload, p.marker)
        if digit is not None:
            out.append(digit)
    return out


def test_captured_payloads_parse() -> None:
    events = [TelephoneEvent.parse(RtpPacket.parse(p).payload) for p in DTMF_1]
    assert {e.event for e in events} == {1} and {e.volume for e in events} == {10}
    assert [e.end for e in events] == [False] * 7 + [True] * 3
    assert [e.duration for e in events] == [0, 320, 640, 960, 1280, 1600, 1920, 2240, 2240, 2240]
    assert all(e.build() == RtpPacket.parse(p).payload for e, p in zip(events, DTMF_1))


@pytest.mark.parametrize("packets, digit", [(DTMF_1, "1"), (DTMF_POUND, "#")])
def test_captured_key_press_is_one_digit(packets: list[bytes], digit: str) -> None:
    assert feed_all(DtmfReceiver(), packets) == [digit]


def test_retransmitted_start_and_repeated_ends_do_not_repeat_the_digit() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, DTMF_1 + [DTMF_1[0]] + DTMF_1[-3:] + [DTMF_1[0]]) == ["1"]
    assert rx.events == 1


def test_lost_start_packet_still_gives_the_digit_once() -> None:
    assert feed_all(DtmfReceiver(), DTMF_1[3:]) == ["1"]


def test_only_end_packets_give_the_digit_once() -> None:
    assert feed_all(DtmfReceiver(), DTMF_1[-3:]) == ["1"]


def test_same_digit_twice_is_two_events_by_timestamp() -> None:
    rx = DtmfReceiver()
    again = [RtpPacket.parse(p) for p in DTMF_1]
    for p in again:
        p.ts += 4000
        p.seq += 20
    assert feed_all(rx, DTMF_1 + [p.build() for p in again]) == ["1", "1"]


def test_late_duplicate_of_an_earlier_event_is_not_a_new_key_press() -> None:
    rx = DtmfReceiver()
    assert feed_all(rx, DTMF_1 + DTMF_POUND + [DTMF_1[-1], DTMF_1[2]]) == ["1", "#"]


def test_non_dtmf_event_is_ignored() -> None:
    rx = DtmfReceiver()
    assert rx.feed(0, TelephoneEvent(16, False, 10, 160).build(), True) is None   # flash
    assert rx.ignored == 1 and rx.events == 0


def test_long_event_segment_is_not_a_second_digit() -> None:
    # RFC 4733 §2.5.1.3: an event longer than 0xFFFF samples continues with a new timestamp
    rx = DtmfReceiver()
    assert rx.feed(1000, TelephoneEvent(5, False, 10, 0xFFFF).build(), True) == "5"
    assert rx.feed(1000 + 0xFFFF, TelephoneEvent(5, False, 10, 800).build(), False) is None
    assert rx.feed(1000 + 0xFFFF, TelephoneEvent(5, True, 10, 1600).build(), False) is None
    assert rx.feed(200_000, TelephoneEvent(5, False, 10, 160).build(), True) == "5"


def test_short_payload_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="4"):
        DtmfReceiver().feed(0, b"\x01\x0a\x00", True)


def test_digit_mapping() -> None:
    assert [event_of(d) for d in "0123456789*#ABCDabcd"] == list(range(16)) + [12, 13, 14, 15]
    assert digit_of(11) == "#" and digit_of(16) is None
    for bad in ("E", "12", "", 1):
        with pytest.raises(ValueError, match="DTMF digit"):
            event_of(bad)  # type: ignore[arg-type]


def test_sender_packet_sequence_for_100_ms() -> None:
    sender = DtmfSender("7", duration_ms=100)
    packets = []
    while (p := sender.next_packet()) is not None:
        packets.append(p)
    assert sender.done and sender.next_packet() is None
    assert [m for _, m in packets] == [True] + [False] * 6
    events = [TelephoneEvent.parse(pl) for pl, _ in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * END_PACKETS
    assert {e.event for e in events} == {7} and {e.volume for e in events} == {10}


def test_sender_shortest_digit_is_end_packets_only() -> None:
    sender = DtmfSender("#", duration_ms=20)
    packets = [sender.next_packet() for _ in range(3)]
    assert [m for _, m in packets] == [True, False, False]
    assert all(TelephoneEvent.parse(pl).end for pl, _ in packets)


@pytest.mark.parametrize("kwargs", [{"duration_ms": 10}, {"duration_ms": 9000}, {"volume": 64},
                                    {"ptime_ms": 5}])
def test_sender_rejects_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        DtmfSender("1", **kwargs)


@given(st.sampled_from("0123456789*#ABCD"), st.integers(20, 400),
       st.lists(st.integers(0, 30), max_size=40))
def test_any_loss_duplication_or_reorder_of_one_event_gives_at_most_one_digit(
        digit: str, duration_ms: int, picks: list[int]) -> None:
    sender = DtmfSender(digit, duration_ms=duration_ms)
    payloads = []
    while (p := sender.next_packet()) is not None:
        payloads.append(p)
    arrived = [payloads[i % len(payloads)] for i in picks]   # any subset, order, repetition
    rx = DtmfReceiver()
    got = [d for pl, m in arrived if (d := rx.feed(48_000, pl, m)) is not None]
    assert got == ([digit] if arrived else [])
