"""RFC 4733 telephone-events: the payload, a receiver that yields each digit once, a sender.

An event is one key press. Its packets all carry the RTP timestamp of the event's start; the first
has the marker bit, updates follow every packetisation interval with a growing duration, and the
end is sent three times with the E bit. Packets get lost, repeated and reordered, so the receiver
identifies an event by its timestamp, never by counting packets.
"""
from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

#: Event codes 0-15 are the DTMF digits (RFC 4733 §3.2).
DIGITS = "0123456789*#ABCD"
MAX_DURATION = 0xFFFF         # samples; a longer event would need segments (§2.5.1.3)
END_PACKETS = 3               # §2.5.1.4: the final packet is sent three times
_PAYLOAD = struct.Struct("!BBH")


def event_of(digit: str) -> int:
    """The event code of a DTMF digit (``0-9 * # A-D``, any case)."""
    code = DIGITS.find(digit.upper()) if isinstance(digit, str) and len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r} (expected one of {DIGITS})")
    return code


def digit_of(event: int) -> str | None:
    """The digit for an event code, or None for the non-DTMF events (flash, tones, …)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


@dataclass(frozen=True)
class TelephoneEvent:
    """One telephone-event payload: event code, end bit, volume (-dBm0, 0-63), duration (samples)."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    @classmethod
    def parse(cls, payload: bytes | bytearray | memoryview) -> TelephoneEvent:
        """The first event of a payload; ``ValueError`` if shorter than 4 bytes."""
        if len(payload) < 4:
            raise ValueError(f"telephone-event payload of {len(payload)} bytes; need 4")
        event, flags, duration = _PAYLOAD.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def build(self) -> bytes:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= MAX_DURATION:
            raise ValueError(f"duration {self.duration} out of range 0-{MAX_DURATION}")
        return _PAYLOAD.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        return digit_of(self.event)


class DtmfReceiver:
    """Turns one stream's telephone-event packets into digits, each event exactly once.

    ``feed`` returns the digit on the first packet seen of a new event (the start, or whatever
    survived of it) and None for its updates, end packets and any retransmission. The last few
    event timestamps are remembered so a late duplicate of an earlier event is not a new key press.
    """

    def __init__(self, memory: int = 8) -> None:
        self._seen: deque[int] = deque(maxlen=memory)
        self._last: TelephoneEvent | None = None
        self._last_ts = 0
        self.events = 0
        self.ignored = 0        # non-DTMF events

    def reset(self) -> None:
        """Forget the stream's events (its SSRC changed: timestamps start over)."""
        self._seen.clear()
        self._last = None

    def feed(self, ts: int, payload: bytes | bytearray | memoryview, marker: bool = False) -> str | None:
        """One packet (RTP timestamp, payload, marker bit); the digit if it starts an event."""
        ev = TelephoneEvent.parse(payload)
        ts &= 0xFFFFFFFF
        if ts in self._seen:
            if self._last is not None and ts == self._last_ts and not self._last.end:
                self._last = ev   # keep the newest state; an end stays an end
            return None
        last = self._last
        if (last is not None and not marker and not last.end and ev.event == last.event
                and 0 < (ts - self._last_ts) & 0xFFFFFFFF <= last.duration + 8000):
            # a long event's next segment (§2.5.1.3): same key, no marker, starts where it ended
            self._seen.append(ts)
            self._last, self._last_ts = ev, ts
            return None
        self._seen.append(ts)
        self._last, self._last_ts = ev, ts
        digit = ev.digit
        if digit is None:
            self.ignored += 1
            return None
        self.events += 1
        return digit


class DtmfSender:
    """The packets of one digit, one per clock tick: ``next_packet()`` until it returns None.

    Start packet with the marker bit, an update every ``ptime`` with the duration so far, then
    ``END_PACKETS`` end packets with the full duration. All packets share the event's RTP
    timestamp, which the stream chooses when the first one goes out.
    """

    def __init__(self, digit: str, duration_ms: int = 100, volume: int = 10,
                 ptime_ms: int = 20, rate: int = 8000) -> None:
        self.event = event_of(digit)
        self.digit = DIGITS[self.event]
        if not 0 <= volume <= 63:
            raise ValueError(f"volume {volume} out of range 0-63")
        if not 10 <= ptime_ms <= 200:
            raise ValueError(f"ptime {ptime_ms} ms out of range 10-200")
        self.step = ptime_ms * rate // 1000
        self.duration = duration_ms * rate // 1000
        if not self.step <= self.duration <= MAX_DURATION:
            raise ValueError(f"digit duration {duration_ms} ms out of range "
                             f"{ptime_ms}-{MAX_DURATION * 1000 // rate} ms")
        self.volume = volume
        self._sent = 0          # packets so far
        self._ends = 0

    @property
    def done(self) -> bool:
        return self._ends >= END_PACKETS

    def next_packet(self) -> tuple[bytes, bool] | None:
        """(payload, marker) for this tick, or None once the last end packet has gone."""
        if self.done:
            return None
        elapsed = (self._sent + 1) * self.step
        marker = self._sent == 0
        self._sent += 1
        if elapsed < self.duration:
            return TelephoneEvent(self.event, False, self.volume, elapsed).build(), marker
        self._ends += 1
        return TelephoneEvent(self.event, True, self.volume, self.duration).build(), marker
