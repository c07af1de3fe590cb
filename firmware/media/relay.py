"""The media of a bridged call: two legs' RtpStreams joined.

Pass-through (the normal case): every datagram from one leg is rewritten by a
``cython_mixer.rtp.RtpRewriter`` for the other leg (its SSRC, its sequence and timestamp
numbering, its payload types) and sent at once; when the legs' codecs differ the payload is
translated PCMU <-> PCMA on the way. Telephone-events are relayed the same way (payload type
mapped) and each key press is also delivered once to the source leg's ``on_digit``. Nothing
waits for the other leg, so a leg that goes quiet (hold, silence suppression) stalls nothing.

Tap mode (the seam for eavesdrop): ``set_tap(tap, clock)`` stops the pass-through; on each clock
tick both legs' decoded frames (from their jitter buffers) go to ``tap.frames(...)`` and what it
returns is encoded and sent to each leg. ``clear_tap()`` returns to pass-through. Sequence
numbers and timestamps continue across the switch.

The relay does not own the streams: ``close()`` detaches it, the channels close their streams.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from cython_mixer.rtp import RtpRewriter

from .clock import MediaClock
from .stream import RtpStream


class Tap(Protocol):
    """Given this tick's frame from each leg (decoded 20 ms PCM, or None when the leg has
    nothing), return the frames to send to leg a and to leg b (None: send nothing)."""

    def frames(self, tick: int, from_a: bytes | None,
               from_b: bytes | None) -> tuple[bytes | None, bytes | None]: ...


class CrossTap:
    """The trivial tap: each leg hears the other, as pass-through does, but through the clock.
    A leg puts one on its relay only while an RFC 4733 digit goes out (``RtpLeg.send_digit``);
    it is ``transient``: any real tap (an eavesdrop) takes the relay over at once, and its ticks
    carry the digit's remaining packets just as well."""

    transient = True

    def frames(self, tick: int, from_a: bytes | None,
               from_b: bytes | None) -> tuple[bytes | None, bytes | None]:
        return from_b, from_a


def _forwarder(rewriter: RtpRewriter, dst: RtpStream) -> Callable[[bytes], None]:
    """The per-datagram path: rewrite, then send from the other leg's socket."""
    rewrite, view, send = rewriter.rewrite, rewriter.view, dst.send_packet

    def forward(data: bytes) -> None:
        n = rewrite(data)
        if n >= 0:
            send(view(n))
    return forward


class Relay:
    """Joins legs ``a`` and ``b`` (already negotiated: codec, payload types, remote address)."""

    def __init__(self, a: RtpStream, b: RtpStream) -> None:
        if a is b:
            raise ValueError("a relay needs two different streams")
        self.a, self.b = a, b
        self._ab: RtpRewriter | None = None     # a -> b
        self._ba: RtpRewriter | None = None
        self._tap: Tap | None = None
        self._clock: MediaClock | None = None
        self._closed = False
        self.start()

    # --- pass-through -------------------------------------------------------------------------

    def start(self) -> None:
        """(Re)build the pass-through from the legs' current negotiation (after a re-INVITE too)."""
        if self._closed:
            raise ValueError("relay is closed")
        self._detach()
        self._ab, self._ba = self._rewriter(self.a, self.b), self._rewriter(self.b, self.a)
        self.a.sink = _forwarder(self._ab, self.b)
        self.b.sink = _forwarder(self._ba, self.a)

    @staticmethod
    def _rewriter(src: RtpStream, dst: RtpStream) -> RtpRewriter:
        ssrc, seq, ts = dst.sender_state
        return RtpRewriter(ssrc, seq, ts, in_pt=src.payload_type, out_pt=dst.payload_type,
                           in_codec=src.codec, out_codec=dst.codec,
                           in_event_pt=src.telephone_event_pt, out_event_pt=dst.telephone_event_pt,
                           on_event=src.event_packet)

    def _detach(self) -> None:
        """Stop whichever mode runs; hand the numbering back to the streams."""
        for src, dst, rw in ((self.a, self.b, self._ab), (self.b, self.a, self._ba)):
            src.sink = None
            if rw is not None and rw.stats["relayed"]:
                dst.resume(rw.next_seq, rw.next_ts)
        self._ab = self._ba = None
        if self._clock is not None:
            self._clock.remove(self._tick)
        self.a.digit_hook = self.b.digit_hook = None
        self._tap = self._clock = None

    @property
    def transcoding(self) -> bool:
        return self.a.codec != self.b.codec

    # --- tap mode (the eavesdrop seam) --------------------------------------------------------

    def set_tap(self, tap: Tap, clock: MediaClock) -> None:
        """Carry the call through ``tap`` on ``clock`` instead of passing packets through."""
        if self._closed:
            raise ValueError("relay is closed")
        if not callable(getattr(tap, "frames", None)):
            raise ValueError(f"tap must have a frames(tick, from_a, from_b) method, got {tap!r}")
        self._detach()
        for leg in (self.a, self.b):
            leg.jitter.reset()                 # nothing stale from before the switch
        self.a.digit_hook = self._digit_to(self.b)
        self.b.digit_hook = self._digit_to(self.a)
        self._tap, self._clock = tap, clock
        clock.add(self._tick)

    def clear_tap(self) -> None:
        """Back to pass-through."""
        if self._tap is not None:
            self.start()

    @property
    def tap(self) -> Tap | None:
        return self._tap

    def _tick(self, tick: int) -> None:
        from_a, from_b = self.a.read_frame(), self.b.read_frame()
        to_a, to_b = self._tap.frames(tick, from_a, from_b)
        # the same gate as pass-through: a leg whose audio another producer owns gets nothing
        if self.a.relay_open:
            self.a.send_frame(to_a)
        if self.b.relay_open:
            self.b.send_frame(to_b)

    @staticmethod
    def _digit_to(dst: RtpStream) -> Callable[[str], None]:
        def relay_digit(digit: str) -> None:
            if dst.telephone_event_pt is not None:
                dst.send_digit(digit)
        return relay_digit

    # --- end ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Detach from both legs (idempotent); the streams stay open."""
        if not self._closed:
            self._stats_at_close = self.stats
            self._detach()
            self._closed = True

    @property
    def stats(self) -> dict:
        if self._closed:
            return self._stats_at_close
        return {"mode": "tap" if self._tap is not None else "pass",
                "a_to_b": self._ab.stats if self._ab is not None else None,
                "b_to_a": self._ba.stats if self._ba is not None else None}
